"""OVMS's config.json (issue 31): `--ovms-config` serves its ONNX models and its DAG pipelines,
the pipelines as ensembles. The ensembles of test_ensembles, written as OVMS pipelines, return
the same values through ovmsclient (TF Serving's API, REST and gRPC) and tritonclient (REST and
gRPC); OVMS keys tensord cannot honour stop the daemon with their names. Runs in the gRPC
tests' process (ovmsclient and tritonclient.grpc together)."""

import json
import subprocess

import numpy as np
import ovmsclient
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import BINARY, Daemon
from model_builders import add_sub_graph, save_onnx


def node(name, inputs, outputs, model="add_sub"):
    """A `DL model` node: inputs {model input: (node, data item)}, outputs {model output: alias}."""
    return {"name": name, "model_name": model, "type": "DL model",
            "inputs": [{i: {"node_name": n, "data_item": d}} for i, (n, d) in inputs.items()],
            "outputs": [{"data_item": o, "alias": a} for o, a in outputs.items()]}


def pipeline(name, nodes, outputs, inputs=("INPUT0", "INPUT1")):
    return {"name": name, "inputs": list(inputs), "nodes": nodes,
            "outputs": [{o: {"node_name": n, "data_item": d}} for o, (n, d) in outputs.items()]}


REQUEST = {"INPUT0": ("request", "INPUT0"), "INPUT1": ("request", "INPUT1")}
OUTPUTS = {"OUTPUT0": ("last", "out0"), "OUTPUT1": ("last", "out1")}
BOTH = {"OUTPUT0": "out0", "OUTPUT1": "out1"}
# test_ensembles' two steps, fan-out and diamond, as OVMS pipelines.
PIPELINES = [
    pipeline("two_steps", [
        node("first", REQUEST, {"OUTPUT0": "sum"}),
        node("last", {"INPUT0": ("first", "sum"), "INPUT1": ("request", "INPUT1")}, BOTH),
    ], OUTPUTS),
    pipeline("fan_out", [
        node("first", REQUEST, {"OUTPUT0": "sum"}),
        node("twice", {"INPUT0": ("first", "sum"), "INPUT1": ("first", "sum")}, {"OUTPUT0": "out0"}),
        node("less", {"INPUT0": ("first", "sum"), "INPUT1": ("request", "INPUT1")}, {"OUTPUT1": "out1"}),
    ], {"OUTPUT0": ("twice", "out0"), "OUTPUT1": ("less", "out1")}),
    pipeline("diamond", [
        node("first", REQUEST, {"OUTPUT0": "sum", "OUTPUT1": "diff"}),
        node("sum2", {"INPUT0": ("first", "sum"), "INPUT1": ("first", "sum")}, {"OUTPUT0": "x"}),
        node("diff2", {"INPUT0": ("first", "diff"), "INPUT1": ("first", "diff")}, {"OUTPUT0": "x"}),
        node("last", {"INPUT0": ("sum2", "x"), "INPUT1": ("diff2", "x")}, BOTH),
    ], OUTPUTS),
]


def expected(model, a, b):
    return {
        "add_sub": (a + b, a - b),
        "two_steps": (a + 2 * b, a),
        "fan_out": (2 * (a + b), a),
        "diamond": (2 * (a + b) + 2 * (a - b), 2 * (a + b) - 2 * (a - b)),
    }[model]


def write_models(folder):
    """add_sub in OVMS's layout: a numbered folder holding one .onnx file of any name."""
    path = save_onnx(folder / "models", "add_sub", add_sub_graph(), config=None)
    path.rename(path.with_name("simple.onnx"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ovms")
    write_models(folder)
    config = {"model_config_list": [{"config": {"name": "add_sub", "base_path": "models/add_sub", "nireq": 2}}],
              "pipeline_config_list": PIPELINES}
    (folder / "config.json").write_text(json.dumps(config))
    d = Daemon("--threads", "2", "--ovms-config", str(folder / "config.json"), repo=None)
    yield d
    d.stop()


@pytest.mark.parametrize("model", ["add_sub", "two_steps", "fan_out", "diamond"])
@pytest.mark.parametrize("door", ["ovms-grpc", "ovms-rest", "triton-http", "triton-grpc"])
def test_pipelines_return_exact_values(daemon, door, model):
    rng = np.random.default_rng(7)
    a = rng.integers(-1000, 1000, (3, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (3, 16), dtype=np.int32)
    if door.startswith("ovms"):
        client = (ovmsclient.make_grpc_client(daemon.grpc_url) if door == "ovms-grpc"
                  else ovmsclient.make_http_client(daemon.url))
        got = client.predict({"INPUT0": a, "INPUT1": b}, model)
        out0, out1 = got["OUTPUT0"], got["OUTPUT1"]
    else:
        lib = httpclient if door == "triton-http" else grpcclient
        client = lib.InferenceServerClient(daemon.url if door == "triton-http" else daemon.grpc_url)
        inputs = [lib.InferInput("INPUT0", [3, 16], "INT32"), lib.InferInput("INPUT1", [3, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer(model, inputs)
        out0, out1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    want0, want1 = expected(model, a, b)
    np.testing.assert_array_equal(out0, want0)
    np.testing.assert_array_equal(out1, want1)


def test_pipeline_metadata_is_its_nodes_tensors(daemon):
    tfs = ovmsclient.make_grpc_client(daemon.grpc_url)
    meta = tfs.get_model_metadata("diamond")
    assert meta["inputs"]["INPUT0"] == {"dtype": "DT_INT32", "shape": [-1, 16]}
    assert meta["outputs"]["OUTPUT1"] == {"dtype": "DT_INT32", "shape": [-1, 16]}
    assert tfs.get_model_status("diamond") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    triton = httpclient.InferenceServerClient(daemon.url)
    assert triton.get_model_metadata("diamond")["platform"] == "ensemble"
    steps = triton.get_model_config("diamond")["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["add_sub"] * 4
    assert steps[3]["input_map"] == {"INPUT0": "sum2/x", "INPUT1": "diff2/x"}
    # nireq is the model's instance count.
    assert triton.get_model_config("add_sub")["instance_group"][0]["count"] == 2
    # Models and pipelines are in the repository index.
    names = sorted(m["name"] for m in triton.get_model_repository_index())
    assert names == ["add_sub", "diamond", "fan_out", "two_steps"]


def refusal(tmp_path, config):
    write_models(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    run = subprocess.run([str(BINARY), "--ovms-config", str(tmp_path / "config.json"), "--http-addr", "127.0.0.1:0",
                          "--grpc-addr", "off"], capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    return run.stderr


MODEL = {"config": {"name": "add_sub", "base_path": "models/add_sub"}}


@pytest.mark.parametrize("config,message", [
    ({"model_config_list": [MODEL], "pipeline_config_list": [dict(PIPELINES[0], nodes=[
        {"name": "crop", "type": "custom", "library_name": "lib", "inputs": [], "outputs": []}])]},
     "pipeline 'two_steps': node 'crop': custom nodes are not supported by tensord"),
    ({"model_config_list": [MODEL], "pipeline_config_list": [dict(PIPELINES[0], nodes=[
        dict(PIPELINES[0]["nodes"][0], demultiply_count=0)])]},
     "node 'first': demultiply_count is not supported by tensord"),
    ({"model_config_list": [MODEL], "pipeline_config_list": [dict(PIPELINES[0], nodes=[
        dict(PIPELINES[0]["nodes"][0], gather_from_node="x")])]},
     "node 'first': gather_from_node is not supported by tensord"),
    ({"model_config_list": [MODEL], "mediapipe_config_list": []},
     "MediaPipe graphs (mediapipe_config_list) are not supported by tensord"),
    ({"model_config_list": [{"config": dict(MODEL["config"], plugin_config={"NUM_STREAMS": 2})}]},
     "model 'add_sub': plugin_config 'NUM_STREAMS' is an OpenVINO plugin setting"),
    ({"model_config_list": [{"config": dict(MODEL["config"], stateful=True)}]}, "unknown field `stateful`"),
    ({"model_config_list": [{"config": dict(MODEL["config"], base_path="s3://bucket/add_sub")}]},
     "cloud storage is not supported"),
    ({"model_config_list": [{"config": dict(MODEL["config"], layout="NCHW:NHWC")}]}, "layout 'NCHW:NHWC'"),
    ({"model_config_list": [MODEL], "pipeline_config_list": [dict(PIPELINES[0], nodes=[
        node("first", {"INPUT0": ("request", "INPUT0"), "INPUT1": ("request", "ghost")}, {"OUTPUT0": "sum"})])]},
     "input 'INPUT1' reads request item 'ghost', which is not among the pipeline's inputs"),
], ids=["custom", "demultiply", "gather", "mediapipe", "plugin", "unknown", "cloud", "layout", "ghost"])
def test_unsupported_ovms_keys_stop_the_daemon_with_their_names(tmp_path, config, message):
    assert message in refusal(tmp_path, config)


@pytest.mark.parametrize("shape,message", [
    ({"INPUT0": "(-1,15)"}, "input 'INPUT0': shape (-1,15) does not fit the graph's [-1, 16]"),
    ("(1,16)", "a shape without an input name needs a model with one input; this one has 2"),
])
def test_a_pipeline_over_a_model_that_failed_is_not_ready(tmp_path, shape, message):
    """A shape is checked against the graph when the model loads. As OVMS: the pipeline is
    listed, not available, with the reason."""
    write_models(tmp_path)
    shaped = dict(MODEL["config"], shape=shape)
    config = {"model_config_list": [{"config": shaped}], "pipeline_config_list": [PIPELINES[0]]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    d = Daemon("--ovms-config", str(tmp_path / "config.json"), repo=None)
    try:
        triton = httpclient.InferenceServerClient(d.url)
        assert not triton.is_model_ready("add_sub") and not triton.is_model_ready("two_steps")
        index = {m["name"]: m for m in triton.get_model_repository_index()}
        assert message in index["add_sub"]["reason"]
        assert "pipeline 'two_steps' depends on 'add_sub'" in index["two_steps"]["reason"]
    finally:
        d.stop()
