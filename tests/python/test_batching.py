"""Dynamic batching through the real daemon: correctness under concurrency, Triton's release
rules, queue limits, timeouts, cancellation of requests whose client left, and statistics."""

import json
import socket
import struct
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import Daemon
from serving import call


def slow_identity(repo, name, delay_us, extra=""):
    (repo / name).mkdir()
    (repo / name / "config.toml").write_text(
        f'backend = "builtin"\nbuiltin = "identity"\nexecution_delay_microseconds = {delay_us}\n{extra}'
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("batching")
    for name in ("add_sub", "identity"):
        (repo / name).mkdir()
        (repo / name / "config.toml").write_text(
            'backend = "builtin"\nmax_batch_size = 64\n[dynamic_batching]\nmax_queue_delay_microseconds = 100\n'
        )
    slow_identity(repo, "preferred", 50_000,
                  'max_batch_size = 8\n[dynamic_batching]\npreferred_batch_size = [4]\n'
                  'max_queue_delay_microseconds = 2000000\n')
    slow_identity(repo, "delayed", 1_000,
                  'max_batch_size = 8\n[dynamic_batching]\nmax_queue_delay_microseconds = 300000\n')
    slow_identity(repo, "no_delay", 100_000, 'max_batch_size = 8\n[dynamic_batching]\n')
    slow_identity(repo, "small_queue", 300_000, "max_queue_size = 2\n")
    slow_identity(repo, "slow", 300_000)
    slow_identity(repo, "busy", 500_000)
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


def post(url, model, body, headers=None):
    return call(f"http://{url}/v2/models/{model}/infer", body, headers, timeout=60)


def one_row(model_input="INPUT0", value=1.0, params=None):
    body = {"inputs": [{"name": model_input, "shape": [1, 2], "datatype": "FP32", "data": [value, value]}]}
    if params:
        body["parameters"] = params
    return json.dumps(body).encode()


def stats(url, model):
    with urllib.request.urlopen(f"http://{url}/v2/models/{model}/stats") as r:
        return json.load(r)["model_stats"][0]


def timed_post(url, model, body):
    t = time.perf_counter()
    status, _, data = post(url, model, body)
    return status, time.perf_counter() - t, data


def test_64_clients_each_get_exactly_their_rows(server):
    """Random shapes, datatypes, output subsets and binary choices; every value checked."""

    def client_run(seed):
        rng = np.random.default_rng(seed)
        c = httpclient.InferenceServerClient(server.url, network_timeout=60)
        try:
            for i in range(30):
                rows = int(rng.integers(1, 5))
                if i % 3 == 0:
                    # identity with a per-client width and datatype: batches must not mix them.
                    width = 1 + seed % 5
                    dtype = [np.float32, np.int64, np.uint8][seed % 3]
                    x = (rng.standard_normal((rows, width)) * 50).astype(dtype)
                    inp = httpclient.InferInput("INPUT0", list(x.shape), httpclient.np_to_triton_dtype(x.dtype))
                    inp.set_data_from_numpy(x, binary_data=bool(i % 2))
                    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=bool(seed % 2))
                    r = c.infer("identity", [inp], outputs=[out])
                    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), x)
                    continue
                a = rng.integers(-1000, 1000, (rows, 16), dtype=np.int32)
                b = rng.integers(-1000, 1000, (rows, 16), dtype=np.int32)
                ins = []
                for name, arr in (("INPUT0", a), ("INPUT1", b)):
                    inp = httpclient.InferInput(name, [rows, 16], "INT32")
                    inp.set_data_from_numpy(arr, binary_data=bool(i % 2))
                    ins.append(inp)
                wanted = [["OUTPUT0", "OUTPUT1"], ["OUTPUT1"], ["OUTPUT0"]][int(rng.integers(0, 3))]
                outs = [httpclient.InferRequestedOutput(n, binary_data=bool(rng.integers(0, 2))) for n in wanted]
                r = c.infer("add_sub", ins, outputs=outs, request_id=f"{seed}/{i}")
                assert r.get_response()["id"] == f"{seed}/{i}"
                assert [o["name"] for o in r.get_response()["outputs"]] == wanted
                expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
                for name in wanted:
                    np.testing.assert_array_equal(r.as_numpy(name), expected[name])
            return 30
        finally:
            c.close()

    with ThreadPoolExecutor(max_workers=64) as pool:
        assert sum(pool.map(client_run, range(64))) == 64 * 30
    s = stats(server.url, "add_sub")
    assert s["inference_stats"]["success"]["count"] == 64 * 20
    # Requests really were batched: fewer executions than requests.
    assert s["execution_count"] < s["inference_stats"]["success"]["count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in s["batch_stats"]) == s["inference_count"]


def test_preferred_batch_goes_without_waiting_out_the_delay(server):
    # Delay 2 s, preferred 4: four concurrent requests are released together at once.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda v: timed_post(server.url, "preferred", one_row(value=v)), range(4)))
    for v, (status, took, data) in enumerate(results):
        assert status == 200
        assert json.loads(data)["outputs"][0]["data"] == [v, v]
        assert took < 1.0, f"waited {took:.2f} s: the preferred batch did not go at once"
    s = stats(server.url, "preferred")
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in s["batch_stats"]] == [(4, 1)]


def test_lone_request_waits_the_delay_and_no_delay_never_waits(server):
    status, took, _ = timed_post(server.url, "delayed", one_row())
    assert status == 200
    assert took >= 0.28, f"released after {took:.3f} s, before the 300 ms delay"
    status, took, _ = timed_post(server.url, "no_delay", one_row())
    assert status == 200
    assert took < 0.25 + 0.1, f"a lone request waited {took:.3f} s with no delay configured"
    s = stats(server.url, "delayed")
    assert s["inference_stats"]["queue"]["ns"] >= 280_000_000


def test_full_queue_answers_503_with_retry_after(server):
    first = threading.Thread(target=post, args=(server.url, "small_queue", one_row()))
    first.start()
    time.sleep(0.1)  # the first request now runs (300 ms); the next two fill the queue of 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: post(server.url, "small_queue", one_row()), range(4)))
    first.join()
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 503, 503]
    refused = [r for r in results if r[0] == 503]
    for _, headers, body in refused:
        assert headers["Retry-After"] == "1"
        assert "queue is full" in json.loads(body)["error"]


def test_timeout_parameter_expires_queued_requests(server):
    first = threading.Thread(target=post, args=(server.url, "slow", one_row()))
    first.start()
    time.sleep(0.1)
    status, _, body = post(server.url, "slow", one_row(params={"timeout": 20_000}))
    first.join()
    assert status == 503
    assert "timed out" in json.loads(body)["error"]


def test_timeout_expires_while_the_worker_is_still_busy(server):
    # One request holds the only worker for 0.5 s; the next, with a 100 ms timeout, gets its
    # 503 after 100 ms, not when the worker next looks at the queue (0.45 s on).
    first = threading.Thread(target=post, args=(server.url, "busy", one_row()))
    started = time.perf_counter()
    first.start()
    time.sleep(0.05)
    status, took, body = timed_post(server.url, "busy", one_row(params={"timeout": 100_000}))
    answered = time.perf_counter() - started
    first.join()
    assert status == 503 and "timed out after" in json.loads(body)["error"]
    assert 0.1 <= took < 0.3, took
    assert answered < 0.5, "answered while the first request still ran"


def half_closed(port, body):
    """Sends a request and shuts down the sending side (as `nc -q` does), then reads."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := s.recv(65536):
        answer += chunk
    s.close()
    return answer


def test_half_closed_clients_and_the_cancellation_flag(tmp_path):
    # By default EOF cancels a queued request: a half-closed client gets no answer and its
    # request never runs. With --cancel-on-disconnect false it is answered.
    slow_identity(tmp_path, "slow", 300_000)
    for flag, answered in (("true", False), ("false", True)):
        d = Daemon("--threads", "1", "--cancel-on-disconnect", flag, repo=tmp_path)
        try:
            first = threading.Thread(target=post, args=(d.url, "slow", one_row(value=1)))
            first.start()
            time.sleep(0.1)
            answer = half_closed(d.port, one_row(value=2))
            first.join()
            executed = stats(d.url, "slow")["execution_count"]
            if answered:
                assert answer.startswith(b"HTTP/1.1 200") and b'"data":[2.0,2.0]' in answer, answer
                assert executed == 2
            else:
                assert answer == b"" and executed == 1, (answer, executed)
        finally:
            d.stop()


def test_request_of_a_client_that_left_is_not_executed(server):
    before = stats(server.url, "slow")["execution_count"]
    first = threading.Thread(target=post, args=(server.url, "slow", one_row(value=1)))
    first.start()
    time.sleep(0.1)
    # A raw client sends a request that must queue behind the first, then hangs up.
    body = one_row(value=2)
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.05)
    s.close()
    first.join()
    status, _, data = post(server.url, "slow", one_row(value=3))
    assert status == 200 and json.loads(data)["outputs"][0]["data"] == [3, 3]
    after = stats(server.url, "slow")
    assert after["execution_count"] - before == 2, "the abandoned request was executed"


def test_statistics_match_the_requests_sent(server):
    c = httpclient.InferenceServerClient(server.url)
    before = c.get_inference_statistics("identity")["model_stats"][0]
    rows_sent = 0
    for rows in (1, 2, 3):
        x = np.zeros((rows, 4), dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", [rows, 4], "FP32")
        inp.set_data_from_numpy(x)
        c.infer("identity", [inp])
        rows_sent += rows
    with pytest.raises(Exception):
        bad = httpclient.InferInput("INPUT0", [65, 1], "FP32")
        bad.set_data_from_numpy(np.zeros((65, 1), dtype=np.float32))
        c.infer("identity", [bad])
    after = c.get_inference_statistics("identity", "1")["model_stats"][0]
    c.close()
    d = lambda *k: after["inference_stats"][k[0]][k[1]] - before["inference_stats"][k[0]][k[1]]  # noqa: E731
    assert after["name"] == "identity" and after["version"] == "1"
    assert d("success", "count") == 3
    # Over max_batch_size is refused before the queue: counted nowhere, as in Triton.
    assert d("fail", "count") == 0
    assert d("queue", "count") == 3
    assert d("compute_infer", "count") == 3
    assert after["inference_count"] - before["inference_count"] == rows_sent
    assert after["execution_count"] - before["execution_count"] == 3
    assert after["last_inference"] >= int(time.time() * 1000) - 60_000
    assert d("success", "ns") >= d("compute_infer", "ns") > 0
    all_models = {m["name"] for m in json.load(urllib.request.urlopen(f"http://{server.url}/v2/models/stats"))["model_stats"]}
    assert {"identity", "add_sub", "slow"} <= all_models


def test_batch_dimension_over_max_is_refused(server):
    x = struct.pack("<130f", *range(130))
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [65, 2], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(x)}}]}).encode()
    status, _, data = post(server.url, "identity", body + x, {"Inference-Header-Content-Length": str(len(body))})
    assert status == 400
    assert "batch size 65, over the model's max_batch_size 64" in json.loads(data)["error"]
