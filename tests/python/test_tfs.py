"""TensorFlow Serving's REST API: ovmsclient end to end, raw row/columnar requests, errors."""

import base64
import io
import json
import urllib.request

import numpy as np
import ovmsclient
import pytest
import tritonclient.http as httpclient
from PIL import Image
from serving import call

RNG = np.random.default_rng(11)


def http(url, path, body=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, _, answer = call(f"http://{url}{path}", data, method=method, timeout=30)
    return status, json.loads(answer)


def jpeg_and_png():
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, (x + y) * 4], -1).clip(0, 255).astype(np.uint8)
    out = []
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def tfs(url):
    return ovmsclient.make_http_client(url)


def test_ovmsclient_status_and_metadata(tfs):
    assert tfs.get_model_status("add_sub") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    assert tfs.get_model_status("add_sub", model_version=1)[1]["state"] == "AVAILABLE"
    meta = tfs.get_model_metadata("add_sub")
    assert meta["model_version"] == 1
    assert meta["inputs"] == {
        "INPUT0": {"dtype": "DT_INT32", "shape": [-1, 16]},
        "INPUT1": {"dtype": "DT_INT32", "shape": [-1, 16]},
    }
    assert meta["outputs"]["OUTPUT1"] == {"dtype": "DT_INT32", "shape": [-1, 16]}
    assert tfs.get_model_metadata("image_probe")["inputs"]["IMAGE"] == {"dtype": "DT_UINT8", "shape": [-1, -1, -1, 3]}


def test_ovmsclient_predict_numpy(tfs):
    a = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    b = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    out = tfs.predict({"INPUT0": a, "INPUT1": b}, "add_sub")
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    x = RNG.standard_normal((2, 5)).astype(np.float32)
    np.testing.assert_allclose(tfs.predict({"INPUT0": x}, "identity"), x, rtol=1e-6)


def test_ovmsclient_predict_raw_images(tfs):
    for data in jpeg_and_png():
        got = np.asarray(tfs.predict({"IMAGE": data}, "image_probe"))
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
        assert got.shape == (1, 24, 32, 3)
        assert np.abs(got[0].astype(int) - ref.astype(int)).mean() < 2


def test_kserve_and_tfs_paths_decode_identically(url, tfs):
    jpeg, _ = jpeg_and_png()
    client = httpclient.InferenceServerClient(url)
    inp = httpclient.InferInput("IMAGE", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    via_v2 = client.infer("image_probe", [inp]).as_numpy("OUTPUT0")
    client.close()
    via_tfs = np.asarray(tfs.predict({"IMAGE": jpeg}, "image_probe")).astype(np.uint8)
    assert via_v2.tobytes() == via_tfs.tobytes()


def b64(data):
    return {"b64": base64.b64encode(data).decode()}


def test_row_and_columnar_formats(url):
    a = [list(range(16)), list(range(16, 32))]
    ones = [[1] * 16, [1] * 16]
    status, body = http(url, "/v1/models/add_sub:predict",
                        {"instances": [{"INPUT0": a[0], "INPUT1": ones[0]}, {"INPUT0": a[1], "INPUT1": ones[1]}]})
    assert status == 200
    assert body["predictions"][1]["OUTPUT0"] == [v + 1 for v in a[1]]
    assert body["predictions"][0]["OUTPUT1"] == [v - 1 for v in a[0]]
    status, body = http(url, "/v1/models/add_sub/versions/0:predict", {"inputs": {"INPUT0": a, "INPUT1": ones}})
    assert status == 200
    assert body["outputs"]["OUTPUT0"] == [[v + 1 for v in row] for row in a]
    # Unnamed values for a one-input model, nested instances, one output unwrapped.
    nested = [[[1.5, 2.5], [3.5, 4.5]], [[5.5, 6.5], [7.5, 8.5]]]
    status, body = http(url, "/v1/models/identity:predict", {"instances": nested})
    assert (status, body) == (200, {"predictions": nested})
    status, body = http(url, "/v1/models/identity:predict", {"inputs": nested, "signature_name": "serving_default"})
    assert (status, body) == (200, {"outputs": nested})


def test_b64_for_bytes_and_images(url):
    status, body = http(url, "/v1/models/identity:predict", {"instances": [b64(b"\x00\xffbinary"), "text"]})
    assert status == 200
    assert body["predictions"] == [b64(b"\x00\xffbinary"), "text"]
    jpeg, png = jpeg_and_png()
    status, body = http(url, "/v1/models/image_probe:predict", {"instances": [b64(png), b64(png)]})
    assert status == 200
    got = np.array(body["predictions"], dtype=np.uint8)
    ref = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[:, :, ::-1]
    assert got.shape == (2, 24, 32, 3)
    np.testing.assert_array_equal(got[1], ref)
    status, body = http(url, "/v1/models/image_probe:predict", {"inputs": {"IMAGE": [b64(jpeg)]}})
    assert status == 200 and np.array(body["outputs"]).shape == (1, 24, 32, 3)


def test_errors(url):
    cases = [
        ("/v1/models/identity:predict", b"{not json", 400, "invalid predict request JSON"),
        ("/v1/models/identity:predict", {"instances": [1], "inputs": [1]}, 400, "exactly one of"),
        ("/v1/models/identity:predict", {}, 400, "exactly one of"),
        ("/v1/models/identity:predict", {"instances": [1], "output_filter": ["OUTPUT0"]}, 400,
         "unknown field `output_filter`"),
        ("/v1/models/identity:predict", {"instances": []}, 400, "'instances' is empty"),
        ("/v1/models/identity:predict", {"instances": [1], "signature_name": "other"}, 400, "unknown signature_name"),
        ("/v1/models/identity:predict", {"instances": [[1, 2], [3]]}, 400, "does not match the shape"),
        ("/v1/models/identity:predict", {"instances": [{"b64": "***"}]}, 400, "invalid base64"),
        ("/v1/models/add_sub:predict", {"instances": [[1] * 16]}, 400, "one input"),
        ("/v1/models/add_sub:predict", {"instances": [{"INPUT0": [1] * 16, "INPUT1": [1] * 16}, {"INPUT0": [1] * 16}]},
         400, "instance 1 names other inputs"),
        ("/v1/models/add_sub:predict", {"inputs": {"INPUT0": [[1.5] * 16], "INPUT1": [[1] * 16]}}, 400, "not a valid INT32"),
        ("/v1/models/add_sub:predict", {"inputs": {"INPUT0": [[1] * 15], "INPUT1": [[1] * 15]}}, 400, "model expects"),
        ("/v1/models/image_probe:predict", {"instances": [b64(b"GIF89a")]}, 400, "image 0: unsupported image format"),
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Request for unknown model: 'nope' is not found"),
        ("/v1/models/identity/versions/7", None, 404, "Request for unknown model: 'identity' version 7 is not found"),
        ("/v1/models/nope/metadata", None, 404, "Request for unknown model"),
    ]
    for path, body, code, message in cases:
        status, answer = http(url, path, body)
        assert status == code, (path, body, answer)
        assert message in answer["error"], (path, answer)
    status, answer = http(url, "/v1/models/identity:predict", method="GET")
    assert status == 405
    with urllib.request.urlopen(f"http://{url}/v2/health/live") as r:
        assert r.status == 200
