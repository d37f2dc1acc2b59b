"""Triton's HTTP behaviours that its clients rely on: compression both ways, timeout 0, raw
binary bodies to batching models, JSON health answers, Triton's wording where clients parse it,
and BYTES that cannot travel as JSON."""

import asyncio
import gzip
import http.client
import json
import time
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aioclient
from conftest import Daemon
from tritonclient.utils import InferenceServerException


def identity_inputs(mod, array):
    inp = mod.InferInput("INPUT0", list(array.shape), "FP32")
    inp.set_data_from_numpy(array, binary_data=True)
    return [inp]


def raw(url, method, path, body=b"", headers=None):
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


@pytest.mark.parametrize("request_coding", ["gzip", "deflate", None])
@pytest.mark.parametrize("response_coding", ["gzip", "deflate", None])
def test_compression_sync(url, request_coding, response_coding):
    array = np.arange(4096, dtype=np.float32).reshape(1, 4096)
    c = httpclient.InferenceServerClient(url)
    try:
        result = c.infer("identity", identity_inputs(httpclient, array),
                         request_compression_algorithm=request_coding,
                         response_compression_algorithm=response_coding)
    finally:
        c.close()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), array)


@pytest.mark.parametrize("coding", ["gzip", "deflate", None])
def test_compression_aio(url, coding):
    array = np.linspace(-1, 1, 3000, dtype=np.float32).reshape(1, 3000)

    async def go():
        c = aioclient.InferenceServerClient(url)
        try:
            return await c.infer("identity", identity_inputs(aioclient, array),
                                 request_compression_algorithm=coding,
                                 response_compression_algorithm=coding)
        finally:
            await c.close()

    np.testing.assert_array_equal(asyncio.run(go()).as_numpy("OUTPUT0"), array)


def json_request(n=2000):
    return json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, n], "datatype": "INT32",
                                   "data": list(range(n))}]}).encode()


@pytest.mark.parametrize("coding,unpack", [("gzip", gzip.decompress), ("deflate", zlib.decompress)])
def test_request_inflated_and_response_compressed_on_the_wire(url, coding, unpack):
    body = json_request()
    packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    status, headers, data = raw(url, "POST", "/v2/models/identity/infer", packed,
                                {"Content-Encoding": coding, "Accept-Encoding": f"br;q=1, {coding};q=0.8"})
    assert status == 200, data
    assert headers["content-encoding"] == coding
    assert int(headers["content-length"]) == len(data) < len(body) / 2
    answer = json.loads(unpack(data))
    assert answer["outputs"][0]["data"] == list(range(2000))


def test_small_responses_and_other_endpoints_stay_plain(url):
    small = json_request(2)
    status, headers, data = raw(url, "POST", "/v2/models/identity/infer", small, {"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in headers
    assert json.loads(data)["outputs"][0]["data"] == [0, 1]
    status, headers, data = raw(url, "GET", "/v2/models/identity", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and "content-encoding" not in headers


def test_unknown_or_broken_encodings_are_refused(url):
    status, _, data = raw(url, "POST", "/v2/models/identity/infer", json_request(), {"Content-Encoding": "br"})
    assert status == 415
    assert "gzip, deflate" in json.loads(data)["error"]
    status, _, data = raw(url, "POST", "/v2/models/identity/infer", b"not gzip at all",
                          {"Content-Encoding": "gzip"})
    assert status == 400 and "gzip" in json.loads(data)["error"]
    status, _, data = raw(url, "POST", "/v2/models/identity/infer", b"0\r\n\r\n",
                          {"Transfer-Encoding": "gzip, chunked"})
    assert status == 501
    assert "chunked" in json.loads(data)["error"]


def test_a_gzip_bomb_is_a_413():

    d = Daemon("--threads", "1", "--max-body-bytes", "1000000")
    try:
        bomb = gzip.compress(b"\0" * (64 << 20))
        status, _, data = raw(d.url, "POST", "/v2/models/identity/infer", bomb, {"Content-Encoding": "gzip"})
        assert status == 413
        assert "inflated" in json.loads(data)["error"]
        status, _, _ = raw(d.url, "GET", "/v2/health/live")
        assert status == 200
    finally:
        d.stop()


def test_timeout_zero_means_no_timeout(url):
    c = httpclient.InferenceServerClient(url)
    try:
        array = np.ones((1, 8), dtype=np.float32)
        result = c.infer("identity", identity_inputs(httpclient, array), timeout=0)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), array)
    finally:
        c.close()


def test_raw_binary_body_to_a_batching_model_has_batch_one(url):
    array = np.arange(6, dtype=np.float32)
    status, headers, data = raw(url, "POST", "/v2/models/identity/infer", array.tobytes(),
                                {"Inference-Header-Content-Length": "0"})
    assert status == 200, data
    header_len = int(headers["inference-header-content-length"])
    header = json.loads(data[:header_len])
    # identity takes any datatype: a raw body is UINT8, one row of 24 bytes.
    assert (header["outputs"][0]["datatype"], header["outputs"][0]["shape"]) == ("UINT8", [1, 24])
    assert data[header_len:] == array.tobytes()


def test_health_answers_in_json(url):
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        status, headers, data = raw(url, "GET", path)
        assert status == 200 and headers["content-type"] == "application/json"
        assert json.loads(data) == {key: True}
    status, _, data = raw(url, "GET", "/v2/models/identity/ready")
    assert json.loads(data) == {"name": "identity", "ready": True}


def test_kserve_health_calls(url):
    from kserve import InferenceRESTClient, RESTConfig

    async def go():
        c = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
        try:
            base = f"http://{url}"
            return (await c.is_server_live(base), await c.is_server_ready(base),
                    await c.is_model_ready(base, "identity"))
        finally:
            await c.close()

    assert asyncio.run(go()) == (True, True, True)


def test_unknown_model_in_tritons_words(url):
    c = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
            c.infer("nope", identity_inputs(httpclient, np.ones((1, 2), np.float32)))
    finally:
        c.close()


def test_non_utf8_bytes_are_not_replaced_in_json(url):
    inp = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    inp.set_data_from_numpy(np.array([[b"ok", b"\xff\xfe"]], dtype=np.object_), binary_data=True)
    c = httpclient.InferenceServerClient(url)
    try:
        with pytest.raises(InferenceServerException, match="binary") as e:
            c.infer("identity", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
        assert e.value.status() == "400"
        result = c.infer("identity", [inp], outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
        assert result.as_numpy("OUTPUT0").tolist() == [[b"ok", b"\xff\xfe"]]
    finally:
        c.close()


def test_logging_settings_change_the_log_while_serving():
    d = Daemon("--threads", "1", "--log-level", "info")
    try:
        c = httpclient.InferenceServerClient(d.url)
        settings = c.get_log_settings()
        assert settings == {"log_file": "", "log_info": True, "log_warning": True, "log_error": True,
                            "log_verbose_level": 0, "log_format": "default"}
        raw(d.url, "POST", "/v2/models/identity/infer", b"{not json before}")
        assert c.update_log_settings({"log_verbose_level": 1})["log_verbose_level"] == 1
        raw(d.url, "POST", "/v2/models/identity/infer", b"{not json after}")
        for bad, words in (({"log_file": "/tmp/tensord.log"}, "log_file"),
                           ({"log_format": "ISO8601"}, "log_format"),
                           ({"log_error": False}, "nest"),
                           ({"log_level": 3}, "unknown field")):
            with pytest.raises(InferenceServerException, match=words) as e:
                c.update_log_settings(bad)
            assert e.value.status() == "400"
        assert c.get_log_settings()["log_verbose_level"] == 1
        assert "logging" in c.get_server_metadata()["extensions"]
        c.close()
    finally:
        log = d.stop()
    # Failed requests are logged at debug level: only the one after the change shows.
    assert log.count("invalid inference request JSON") == 1, log


def wait_for_file(path, timeout=10):
    """The trace writer's thread writes files soon after the requests, not during them."""
    deadline = time.time() + timeout
    while not path.exists() and time.time() < deadline:
        time.sleep(0.02)
    return path


def test_trace_settings_and_trace_files(tmp_path):
    path = tmp_path / "trace.json"
    d = Daemon("--threads", "1", "--trace-file", str(path), "--trace-config", "triton,rate=1",
               "--trace-config", "level=TIMESTAMPS", "--trace-file-max", "2")
    try:
        c = httpclient.InferenceServerClient(d.url)
        settings = c.get_trace_settings()
        assert settings["trace_level"] == ["TIMESTAMPS"] and settings["trace_file"] == str(path)
        assert (settings["trace_rate"], settings["trace_count"], settings["log_frequency"]) == ("1", "-1", "0")
        array = np.ones((1, 4), dtype=np.float32)
        for _ in range(3):
            c.infer("identity", identity_inputs(httpclient, array))
        # log_frequency 2: the traces taken under 0 go to the file first, then every two
        # traces to <file>.<k>, the newest two kept.
        c.update_trace_settings(settings={"log_frequency": "2"})
        for _ in range(6):
            c.infer("identity", identity_inputs(httpclient, array))
        indexed = [tmp_path / f"trace.json.{k}" for k in range(3)]
        wait_for_file(indexed[2])
        time.sleep(0.1)
        assert [p.exists() for p in indexed] == [False, True, True]
        for p in indexed[1:]:
            assert len([t for t in json.loads(p.read_text()) if "model_name" in t]) == 2
        traces = json.loads(wait_for_file(path).read_text())
        heads = [t for t in traces if "model_name" in t]
        assert [(t["model_name"], t["model_version"]) for t in heads] == [("identity", 1)] * 3
        stages = [t for t in traces if "timestamps" in t]
        order = ["HTTP_RECV_START", "HTTP_RECV_END", "REQUEST_START", "QUEUE_START", "COMPUTE_START",
                 "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END", "HTTP_SEND_START"]
        for trace in stages:
            names = [s["name"] for s in trace["timestamps"]]
            assert names == order, names
            ns = [s["ns"] for s in trace["timestamps"]]
            assert ns == sorted(ns) and ns[0] > 0
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        # Per model: its own rate and count on top of the global settings; null restores.
        model = c.update_trace_settings(model_name="identity", settings={"trace_count": "1"})
        assert (model["trace_count"], model["trace_rate"]) == ("1", "1")
        assert c.get_trace_settings()["trace_count"] == "-1"
        assert c.update_trace_settings(model_name="identity", settings={"trace_count": None})["trace_count"] == "-1"
        for bad in ({"trace_level": ["TENSORS"]}, {"trace_rate": "0"}, {"trace_rat": "1"}):
            with pytest.raises(InferenceServerException) as e:
                c.update_trace_settings(settings=bad)
            assert e.value.status() == "400"
        assert "trace" in c.get_server_metadata()["extensions"]
        # Traces still queued are written when the server stops.
        c.update_trace_settings(settings={"log_frequency": "0"})
        c.infer("identity", identity_inputs(httpclient, array))
        c.close()
    finally:
        d.stop()
    assert len([t for t in json.loads(path.read_text()) if "model_name" in t]) == 4
