"""Model repository and backends (ONNX Runtime, safetensors on candle), checked against onnxruntime
and numpy."""

import json
import math
import shutil
import urllib.error
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx import helper, numpy_helper
from tritonclient.utils import InferenceServerException

import model_builders
from conftest import EXPLICIT, unavailable_reason

# The repository API loads and unloads in these tests.
SERVER_ARGS = EXPLICIT
from model_builders import (
    PPOCR_CLS, add_sub_graph, cnn_graph, fp32_input, mlp_graph, save_onnx, wheel_file, write_safetensors_cnn,
    write_safetensors_mlp,
)

RNG = np.random.default_rng(1234)
# The safetensors weights the repository fixture wrote, for the numpy references.
WEIGHTS = {}


def weights(*shape, scale=0.5):
    return model_builders.weights(RNG, *shape, scale=scale)


def single_op(op, inputs, attrs, initializers=(), out_dims=None):
    """A graph of one node on input X [N, 4, 6, 8]."""
    node = helper.make_node(op, ["X", *inputs], ["Y"], **attrs)
    return helper.make_graph(
        [node], op.lower(), [fp32_input("X", "N", 4, 6, 8)], [fp32_input("Y", *(out_dims or ["N"]))],
        initializer=list(initializers),
    )


OPS = {
    "global_average_pool": (single_op("GlobalAveragePool", [], {}), 13),
    "hard_sigmoid": (single_op("HardSigmoid", [], {"alpha": 0.3, "beta": 0.4}), 13),
    "layer_norm": (
        single_op(
            "LayerNormalization", ["S", "B"], {"axis": -1, "epsilon": 1e-5},
            [numpy_helper.from_array(weights(8), "S"), numpy_helper.from_array(weights(8), "B")],
        ),
        17,
    ),
    "conv_unequal_strides": (
        single_op(
            "Conv", ["W", "Wb"], {"strides": [2, 1], "pads": [1, 1, 1, 1], "kernel_shape": [3, 3]},
            [numpy_helper.from_array(weights(5, 4, 3, 3), "W"), numpy_helper.from_array(weights(5), "Wb")],
        ),
        13,
    ),
}


def add_constant_graph(c):
    init = [numpy_helper.from_array(np.array([c], dtype=np.float32), "c")]
    node = helper.make_node("Add", ["x", "c"], ["y"])
    return helper.make_graph([node], "addc", [fp32_input("x", "N", 2)], [fp32_input("y", "N", 2)], init)


TRITON_CONFIG = """
name: "triton_add_sub"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
instance_group [ { count: 2 kind: KIND_CPU } ]
"""


def gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def conv2d(x, w, b, stride=1, pad=1):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, oh, ow), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out + b[None, :, None, None]


CNN_STAGES = [4, 8]


def resnet_reference(x, t, stages):
    relu = lambda v: np.maximum(v, 0)  # noqa: E731
    x = relu(conv2d(x, t["stem.weight"], t["stem.bias"]))
    previous = stages[0]
    for i, ch in enumerate(stages):
        stride = 1 if i == 0 else 2
        p = f"stages.{i}."
        short = x
        if stride != 1 or ch != previous:
            short = conv2d(x, t[p + "proj.weight"], t[p + "proj.bias"], stride, 0)
        y = relu(conv2d(x, t[p + "conv1.weight"], t[p + "conv1.bias"], stride))
        x = relu(conv2d(y, t[p + "conv2.weight"], t[p + "conv2.bias"]) + short)
        previous = ch
    pooled = x.mean(axis=(2, 3))
    return pooled @ t["fc.weight"].T + t["fc.bias"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    for name, (graph, opset) in OPS.items():
        save_onnx(repo, "op_" + name, graph, opset)
    save_onnx(repo, "cnn", cnn_graph(RNG))
    save_onnx(repo, "mlp", mlp_graph(RNG), 17)
    for v in (1, 2, 3):
        save_onnx(repo, "versioned", add_constant_graph(float(v)), version=v,
                  config='backend = "onnx"\nversion_policy = { latest = 2 }\n')
    save_onnx(repo, "triton_add_sub", add_sub_graph(), config=None)
    (repo / "triton_add_sub" / "config.pbtxt").write_text(TRITON_CONFIG)
    (repo / "ppocr_cls" / "1").mkdir(parents=True)
    (repo / "ppocr_cls" / "1" / "model.onnx").write_bytes(wheel_file(PPOCR_CLS))
    (repo / "ppocr_cls" / "config.toml").write_text('backend = "onnx"\n')
    (repo / "broken").mkdir()
    (repo / "broken" / "config.toml").write_text('backend = "onnx"\ninstance_count = 0\n')
    WEIGHTS["mlp"] = write_safetensors_mlp(
        RNG, repo, "st_mlp", [8, 16, 4], "gelu",
        'max_batch_size = 16\n[[input]]\nname = "features"\ndatatype = "FP32"\ndims = [8]\n',
    )
    WEIGHTS["cnn"] = write_safetensors_cnn(RNG, repo, "st_cnn", CNN_STAGES, 6)
    # A GPU this machine lacks (or a build without CUDA): the model is UNAVAILABLE with the reason.
    write_safetensors_mlp(RNG, repo, "st_on_gpu", [8, 4], "gelu", 'device = "cuda:0"\n')
    return repo


def infer(client, model, arrays, version=""):
    meta = client.get_model_metadata(model, model_version=version)
    inputs = []
    for spec, arr in zip(meta["inputs"], arrays):
        i = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
        i.set_data_from_numpy(arr)
        inputs.append(i)
    result = client.infer(model, inputs, model_version=version)
    return [result.as_numpy(o["name"]) for o in meta["outputs"]]


def onnxruntime_outputs(path, arrays):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, arrays)))


def assert_close(got, ref, rel=1e-4):
    err = np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert err <= rel, f"relative error {err}"


@pytest.mark.parametrize("op", sorted(OPS))
def test_single_ops_match_onnxruntime(client, repo, op):
    x = RNG.standard_normal((2, 4, 6, 8)).astype(np.float32)
    (got,) = infer(client, "op_" + op, [x])
    (ref,) = onnxruntime_outputs(repo / ("op_" + op) / "1" / "model.onnx", [x])
    assert got.shape == ref.shape
    assert_close(got, ref)


@pytest.mark.parametrize("model,shape", [("cnn", (3, 3, 16, 16)), ("mlp", (5, 12)), ("ppocr_cls", (2, 3, 48, 192))])
def test_graphs_match_onnxruntime(client, repo, model, shape):
    x = RNG.standard_normal(shape).astype(np.float32)
    (got,) = infer(client, model, [x])
    (ref,) = onnxruntime_outputs(repo / model / "1" / "model.onnx", [x])
    assert got.shape == ref.shape
    assert_close(got, ref)


def test_pp_ocr_metadata_comes_from_the_graph(client):
    meta = client.get_model_metadata("ppocr_cls")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert meta["outputs"] == [{"name": "save_infer_model/scale_0.tmp_1", "datatype": "FP32", "shape": [-1, 2]}]


def test_safetensors_mlp_matches_numpy(client, repo):
    w = WEIGHTS["mlp"]
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    (got,) = infer(client, "st_mlp", [x])
    ref = gelu(x @ w["layers.0.weight"].T + w["layers.0.bias"]) @ w["layers.1.weight"].T + w["layers.1.bias"]
    assert_close(got, ref)
    meta = client.get_model_metadata("st_mlp")
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}]
    assert client.get_model_config("st_mlp")["max_batch_size"] == 16


def test_safetensors_cnn_matches_numpy(client, repo):
    x = RNG.standard_normal((2, 3, 12, 12)).astype(np.float32)
    (got,) = infer(client, "st_cnn", [x])
    ref = resnet_reference(x.astype(np.float64), WEIGHTS["cnn"], CNN_STAGES)
    assert got.shape == (2, 6)
    assert_close(got, ref)


def test_triton_pbtxt_config(client):
    a = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    b = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    total, diff = infer(client, "triton_add_sub", [a, b])
    np.testing.assert_array_equal(total, a + b)
    np.testing.assert_array_equal(diff, a - b)
    config = client.get_model_config("triton_add_sub")
    assert config["max_batch_size"] == 8
    assert {k: config["input"][0][k] for k in ("name", "data_type", "dims", "format")} == {
        "name": "INPUT0", "data_type": "TYPE_INT32", "dims": [16], "format": "FORMAT_NONE"}
    assert [{k: g[k] for k in ("count", "kind")} for g in config["instance_group"]] == [{"count": 2, "kind": "KIND_CPU"}]
    assert client.get_model_metadata("triton_add_sub")["inputs"][0]["shape"] == [-1, 16]
    big = np.zeros((9, 16), dtype=np.int32)
    with pytest.raises(InferenceServerException, match="batch size 9, over the model's max_batch_size 8"):
        infer(client, "triton_add_sub", [big, big])


def test_version_policy_and_version_routes(client):
    x = np.zeros((1, 2), dtype=np.float32)
    assert client.get_model_metadata("versioned")["versions"] == ["2", "3"]
    np.testing.assert_array_equal(infer(client, "versioned", [x])[0], x + 3)
    np.testing.assert_array_equal(infer(client, "versioned", [x], version="2")[0], x + 2)
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'versioned' version 1 is not found") as e:
        infer(client, "versioned", [x], version="1")
    assert e.value.status() == "404"
    assert client.is_model_ready("versioned", "3")


def test_broken_model_beside_good_ones(client, server):
    assert not client.is_model_ready("broken")
    assert not client.is_server_ready(), "strict readiness: a broken model keeps the server not ready"
    assert client.is_model_ready("cnn")
    reason = unavailable_reason(client, "broken")
    assert "instance_count" in reason and "config.toml" in reason
    req = urllib.request.Request(f"http://{server.url}/v2/models/broken/infer", data=b'{"inputs":[]}')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 503
    assert "instance_count" in json.load(e.value)["error"]


def test_a_model_on_a_missing_gpu_is_unavailable_with_the_reason(client, server):
    reason = unavailable_reason(client, "st_on_gpu")
    assert "key 'device': cuda:0:" in reason, reason
    assert "\n" not in reason.split("cuda:0:")[1], "one line, no backtrace"
    assert not client.is_model_ready("st_on_gpu")
    req = urllib.request.Request(f"http://{server.url}/v2/models/st_on_gpu/infer", data=b'{"inputs":[]}')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 503 and "cuda:0" in json.load(e.value)["error"]
    assert client.is_model_ready("st_mlp"), "the CPU models beside it serve"


def test_repository_index_unload_load(client, repo):
    index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
    assert index[("versioned", "3")]["state"] == "READY"
    assert index[("broken", None)]["state"] == "UNAVAILABLE"
    ready_only = client.get_model_repository_index(query_params=None)
    assert len(ready_only) >= len(OPS)

    client.unload_model("versioned")
    assert not client.is_model_ready("versioned")
    index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
    assert index[("versioned", None)]["reason"] == "unloaded"

    # A fourth version appears on disk; loading picks it up (latest 2: versions 3 and 4).
    save_onnx(repo, "versioned", add_constant_graph(4.0), version=4, config=None)
    client.load_model("versioned")
    assert client.get_model_metadata("versioned")["versions"] == ["3", "4"]
    x = np.ones((2, 2), dtype=np.float32)
    np.testing.assert_array_equal(infer(client, "versioned", [x])[0], x + 4)

    # A broken reload leaves the serving model serving.
    config = repo / "versioned" / "config.toml"
    good = config.read_text()
    config.write_text('backend = "onnx"\ndevice = "tpu"\n')
    try:
        with pytest.raises(InferenceServerException, match="kept serving"):
            client.load_model("versioned")
        assert client.is_model_ready("versioned")
        np.testing.assert_array_equal(infer(client, "versioned", [x])[0], x + 4)
    finally:
        config.write_text(good)
    shutil.rmtree(repo / "versioned" / "4")
    client.load_model("versioned")
    assert client.get_model_metadata("versioned")["versions"] == ["2", "3"]
