"""GET /metrics: Prometheus text, parsed by prometheus_client, with values matching the requests."""

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families

from conftest import Daemon


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("metrics")
    (repo / "add_sub").mkdir()
    (repo / "add_sub" / "config.toml").write_text(
        'backend = "builtin"\nmax_batch_size = 8\n[dynamic_batching]\n'
    )
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


def scrape(url):
    with urllib.request.urlopen(f"http://{url}/metrics") as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            # The parser names counter samples *_total; Triton's names have no suffix.
            name = s.name.removesuffix("_total")
            samples[(name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_match_the_requests_sent(server, client):
    for _ in range(5):
        ins = []
        for name in ("INPUT0", "INPUT1"):
            inp = httpclient.InferInput(name, [2, 16], "INT32")
            inp.set_data_from_numpy(np.ones((2, 16), dtype=np.int32))
            ins.append(inp)
        client.infer("add_sub", ins)
    bad = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                                  {"name": "INPUT1", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]})
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(urllib.request.Request(
            f"http://{server.url}/v2/models/add_sub/infer", data=bad.encode()))

    samples = scrape(server.url)

    def m(name, **labels):
        return samples[(name, tuple(sorted({"model": "add_sub", "version": "1", **labels}.items())))]

    def core(name, i):
        return samples[(name, (("core", str(i)),))]

    assert m("nv_inference_request_success") == 5
    assert m("nv_inference_count") == 10
    assert 1 <= m("nv_inference_exec_count") <= 5
    # The bad request is refused before the queue: no failure, as Triton counts.
    assert m("nv_inference_request_failure", reason="OTHER") == 0
    assert m("nv_inference_request_failure", reason="REJECTED") == 0
    assert m("nv_inference_pending_request_count") == 0
    assert m("nv_inference_request_duration_us") > 0
    assert m("tensord_request_duration_seconds_count") == 5
    assert m("tensord_request_duration_seconds_bucket", le="+Inf") == 5
    executions = m("nv_inference_exec_count")
    assert m("tensord_batch_size_count") == executions
    assert m("tensord_batch_size_sum") == 10
    assert m("tensord_queue_duration_seconds_count") == 5
    http_requests = [samples[("tensord_requests", (("core", str(i)), ("protocol", "http")))] for i in range(2)]
    assert sum(http_requests) >= 6, "5 good and 1 bad infer"
    assert sum(core("tensord_connections_accepted", i) for i in range(2)) >= 2
    # Bodies: each good request carries 2 × 128 binary bytes plus its JSON header, the bad
    # one only JSON; each good response 2 × 128 bytes plus its header.
    assert m("tensord_request_bytes_count") == 6
    assert 5 * 256 + len(bad) < m("tensord_request_bytes_sum") < 5 * 1024 + len(bad)
    assert m("tensord_request_bytes_bucket", le="256") == 1, "the bad request alone"
    assert m("tensord_request_bytes_bucket", le="1024") == 6
    assert m("tensord_response_bytes_count") == 5
    assert 5 * 256 < m("tensord_response_bytes_sum") < 5 * 1024


def test_a_hostile_model_name_cannot_break_the_scrape(tmp_path):
    """A model folder named with a backslash, a quote and a newline: escaped, not injected."""
    hostile = 'x"} 1\nnv_inference_count{model="injected",version="1"} 9\\'
    (tmp_path / hostile).mkdir()
    (tmp_path / hostile / "config.toml").write_text('backend = "builtin"\nbuiltin = "identity"\n')
    d = Daemon("--threads", "1", repo=tmp_path)
    try:
        samples = scrape(d.url)
    finally:
        d.stop()
    models = {dict(labels).get("model") for (name, labels) in samples if name == "nv_inference_count"}
    assert models == {hostile}
