"""The ONNX Runtime backend: real PP-OCR graphs, every datatype, batching, settings and failures,
through tritonclient, against onnxruntime in Python on the same graphs."""

import concurrent.futures
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import EXPLICIT, BINARY, ROOT, Daemon, unavailable_reason

# The repository API loads and unloads in these tests.
SERVER_ARGS = EXPLICIT
from serving import call
from model_builders import save_onnx, wheel_file

PPOCR = {
    "det": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", (3, 160, 224)),
    "cls": ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (3, 48, 192)),
    "rec": ("rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", (3, 48, 320)),
}
RNG = np.random.default_rng(4321)

# Triton's config for a PP-OCR graph: batching, its dims without the batch dimension, and the
# onnxruntime backend's session parameters.
PPOCR_PBTXT = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 3, -1, -1 ] }} ]
output [ {{ name: "{output}" data_type: TYPE_FP32 dims: [ {out_dims} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 50000 }}
parameters {{ key: "intra_op_thread_count" value: {{ string_value: "2" }} }}
optimization {{ graph: {{ level: 0 }} }}
"""
PPOCR_OUTPUTS = {
    "det": ("sigmoid_0.tmp_0", "1, -1, -1"),
    "cls": ("save_infer_model/scale_0.tmp_1", "2"),
    "rec": ("softmax_11.tmp_0", "-1, 6625"),
}

# V2 datatype → (ONNX element type, numpy type as tritonclient sends it).
DATATYPES = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "BF16": (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
}


def ppocr_bytes(which):
    return wheel_file(PPOCR[which][0])


def write_model(repo, name, data, config, config_file="config.toml"):
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.onnx").write_bytes(data)
    (repo / name / config_file).write_text(config)


def typed_graph(datatype):
    """X → Identity → Y (the same type), and X → Cast → F (FP32): ONNX Runtime computes on X."""
    elem = DATATYPES[datatype][0]
    nodes = [
        helper.make_node("Identity", ["X"], ["Y"]),
        helper.make_node("Cast", ["X"], ["F"], to=TensorProto.FLOAT),
    ]
    return helper.make_graph(
        nodes, "typed",
        [helper.make_tensor_value_info("X", elem, ["N", 3])],
        [helper.make_tensor_value_info("Y", elem, ["N", 3]), helper.make_tensor_value_info("F", TensorProto.FLOAT, ["N", 3])],
    )


def strings_graph():
    """Strings in and out: S passes through; N (INT32) is turned into strings by ONNX Runtime."""
    nodes = [
        helper.make_node("Identity", ["S"], ["S_OUT"]),
        helper.make_node("Cast", ["N"], ["N_TEXT"], to=TensorProto.STRING),
    ]
    return helper.make_graph(
        nodes, "strings",
        [helper.make_tensor_value_info("S", TensorProto.STRING, ["K"]), helper.make_tensor_value_info("N", TensorProto.INT32, ["K"])],
        [helper.make_tensor_value_info("S_OUT", TensorProto.STRING, ["K"]), helper.make_tensor_value_info("N_TEXT", TensorProto.STRING, ["K"])],
    )


def scalar_graph():
    """A scalar input (shape []) squared, and added to a vector."""
    nodes = [helper.make_node("Mul", ["s", "s"], ["square"]), helper.make_node("Add", ["v", "s"], ["shifted"])]
    return helper.make_graph(
        nodes, "scalar",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, []), helper.make_tensor_value_info("v", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("square", TensorProto.FLOAT, []), helper.make_tensor_value_info("shifted", TensorProto.FLOAT, [4])],
    )


def reshape_graph():
    """Reshapes x to the shape the request gives: a wrong shape fails inside ONNX Runtime."""
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    return helper.make_graph(
        [node], "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]), helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", "B"])],
    )


def fixed_batch_graph():
    node = helper.make_node("Relu", ["x"], ["y"])
    return helper.make_graph(
        [node], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ort_repo")
    for which in PPOCR:
        data = ppocr_bytes(which)
        write_model(repo, f"{which}_toml", data, 'backend = "onnx"\n')
        output, out_dims = PPOCR_OUTPUTS[which]
        write_model(repo, f"{which}_pbtxt", data,
                    PPOCR_PBTXT.format(name=f"{which}_pbtxt", output=output, out_dims=out_dims), "config.pbtxt")
    for datatype in DATATYPES:
        save_onnx(repo, f"type_{datatype.lower()}", typed_graph(datatype), 13)
    save_onnx(repo, "strings", strings_graph(), 13)
    save_onnx(repo, "scalar", scalar_graph(), 13)
    save_onnx(repo, "reshape", reshape_graph(), 13)
    # Models that must not load, each for its own reason, beside the good ones.
    write_model(repo, "corrupt", b"this is not an onnx graph", 'backend = "onnx"\n')
    save_onnx(repo, "on_gpu", fixed_batch_graph(), 13, config='backend = "onnx"\ndevice = "cuda:0"\n')
    save_onnx(repo, "openvino", fixed_batch_graph(), 13,
              config='backend = "onnx"\n[onnxruntime]\nexecution_accelerators = ["openvino"]\n')
    save_onnx(repo, "fixed_batch", fixed_batch_graph(), 13,
              config='backend = "onnx"\nmax_batch_size = 4\n[[input]]\nname = "x"\ndatatype = "FP32"\ndims = [4]\n')
    save_onnx(repo, "wrong_dims", fixed_batch_graph(), 13,
              config='backend = "onnx"\n[[input]]\nname = "x"\ndatatype = "FP32"\ndims = [1, 5]\n')
    save_onnx(repo, "wrong_type", fixed_batch_graph(), 13,
              config='backend = "onnx"\n[[input]]\nname = "x"\ndatatype = "FP16"\ndims = [1, 4]\n')
    save_onnx(repo, "threads", fixed_batch_graph(), 13,
              config='backend = "onnx"\n[onnxruntime]\nintra_op_threads = 1\n')
    (repo / "add_sub").mkdir()
    (repo / "add_sub" / "config.toml").write_text('backend = "builtin"\n')
    return repo


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def assert_close(got, ref, rel=1e-4):
    assert got.shape == ref.shape
    err = np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12)
    assert err <= rel, f"relative error {err}"


def infer_one(client, model, x, output):
    i = httpclient.InferInput("x", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return client.infer(model, [i]).as_numpy(output)


@pytest.mark.parametrize("config", ["toml", "pbtxt"])
@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("which", sorted(PPOCR))
def test_pp_ocr_matches_onnxruntime(client, repo, which, batch, config):
    model = f"{which}_{config}"
    x = RNG.random((batch, *PPOCR[which][1]), dtype=np.float32)
    output = PPOCR_OUTPUTS[which][0]
    got = infer_one(client, model, x, output)
    (ref,) = session(repo / model / "1" / "model.onnx").run([output], {"x": x})
    assert_close(got, ref)


def test_pbtxt_models_carry_triton_config(client):
    config = client.get_model_config("rec_pbtxt")
    assert config["platform"] == "onnxruntime_onnx" and config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == 8
    assert [{k: i[k] for k in ("name", "data_type", "dims")} for i in config["input"]] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [3, -1, -1]}]
    meta = client.get_model_metadata("rec_toml")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert meta["outputs"] == [{"name": "softmax_11.tmp_0", "datatype": "FP32", "shape": [-1, -1, 6625]}]


def test_dynamic_batching_gathers_and_scatters(client, server, repo):
    """Eight single requests at once: each gets its own rows, computed in fewer executions."""
    output = PPOCR_OUTPUTS["cls"][0]
    xs = [RNG.random((1, 3, 48, 192), dtype=np.float32) for _ in range(8)]
    before = client.get_inference_statistics("cls_pbtxt")["model_stats"][0]
    clients = [httpclient.InferenceServerClient(server.url) for _ in xs]
    with concurrent.futures.ThreadPoolExecutor(len(xs)) as pool:
        got = list(pool.map(lambda cx: infer_one(cx[0], "cls_pbtxt", cx[1], output), zip(clients, xs)))
    sess = session(repo / "cls_pbtxt" / "1" / "model.onnx")
    for x, g in zip(xs, got):
        assert_close(g, sess.run([output], {"x": x})[0])
    after = client.get_inference_statistics("cls_pbtxt")["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 8
    assert executions < 8, f"{executions} executions for 8 requests: nothing was batched"


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_every_datatype_in_and_out(client, datatype):
    np_type = DATATYPES[datatype][1]
    if datatype == "BOOL":
        x = np.array([[True, False, True], [False, False, True]])
    elif datatype in ("BF16", "FP16"):
        x = np.array([[1.5, -2.0, 0.1], [1024.0, -0.0, 3.3e-3]], dtype=np_type)
    else:
        x = np.array([[1, 2, 3], [100, 7, 0]], dtype=np_type)
        if np.issubdtype(np_type, np.signedinteger):
            x[1, 1] = -7
    i = httpclient.InferInput("X", list(x.shape), datatype)
    i.set_data_from_numpy(x)
    model = f"type_{datatype.lower()}"
    result = client.infer(model, [i])
    y, f = result.as_numpy("Y"), result.as_numpy("F")
    assert result.get_output("Y")["datatype"] == datatype
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(f, x.astype(np.float32))
    assert client.get_model_metadata(model)["inputs"] == [{"name": "X", "datatype": datatype, "shape": [-1, 3]}]


def test_strings_in_and_out_byte_for_byte(client, repo):
    s = np.array([b"hello", b"", b"\x00nul\x00inside", b"\xff\xfe not utf-8", "ünïcode".encode()], dtype=np.object_)
    n = np.array([7, -12, 0, 2147483647, 5], dtype=np.int32)
    inputs = [httpclient.InferInput("S", [5], "BYTES"), httpclient.InferInput("N", [5], "INT32")]
    inputs[0].set_data_from_numpy(s)
    inputs[1].set_data_from_numpy(n)
    result = client.infer("strings", inputs)
    assert list(result.as_numpy("S_OUT")) == list(s)
    ref = session(repo / "strings" / "1" / "model.onnx").run(["N_TEXT"], {"S": np.array(["x"] * 5), "N": n})[0]
    assert [v.decode() for v in result.as_numpy("N_TEXT")] == list(ref) == ["7", "-12", "0", "2147483647", "5"]
    # JSON in, JSON out: the same strings as text.
    inputs = [httpclient.InferInput("S", [2], "BYTES"), httpclient.InferInput("N", [2], "INT32")]
    inputs[0].set_data_from_numpy(np.array([b"a b", b"c"], dtype=np.object_), binary_data=False)
    inputs[1].set_data_from_numpy(np.array([1, 2], dtype=np.int32), binary_data=False)
    outputs = [httpclient.InferRequestedOutput("S_OUT", binary_data=False)]
    assert list(client.infer("strings", inputs, outputs=outputs).as_numpy("S_OUT")) == ["a b", "c"]


def test_scalar_input(client, repo):
    s, v = np.array(1.5, dtype=np.float32), np.arange(4, dtype=np.float32)
    inputs = [httpclient.InferInput("s", [], "FP32"), httpclient.InferInput("v", [4], "FP32")]
    inputs[0].set_data_from_numpy(s)
    inputs[1].set_data_from_numpy(v)
    result = client.infer("scalar", inputs)
    square, shifted = session(repo / "scalar" / "1" / "model.onnx").run(None, {"s": s, "v": v})
    assert result.as_numpy("square").shape == ()
    np.testing.assert_array_equal(result.as_numpy("square"), square)
    np.testing.assert_array_equal(result.as_numpy("shifted"), shifted)


def post(server, model, body):
    status, _, answer = call(f"http://{server.url}/v2/models/{model}/infer", json.dumps(body).encode())
    return status, json.loads(answer)


def test_bad_requests_are_400_naming_the_input(server):
    status, body = post(server, "cls_toml", {"inputs": [
        {"name": "x", "shape": [1, 4, 2, 2], "datatype": "FP32", "data": [0.0] * 16}]})
    assert status == 400 and "'x'" in body["error"], body
    status, body = post(server, "cls_toml", {"inputs": [
        {"name": "x", "shape": [1, 3, 2, 2], "datatype": "FP64", "data": [0.0] * 12}]})
    assert status == 400 and "'x'" in body["error"] and "FP32" in body["error"], body
    # A BOOL byte that is neither 0 nor 1 (binary data) is refused, not handed to C++ as a bool.
    header = json.dumps({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "BOOL",
                                     "parameters": {"binary_data_size": 3}}]}).encode()
    req = urllib.request.Request(f"http://{server.url}/v2/models/type_bool/infer", data=header + b"\x01\x02\x00",
                                 headers={"Inference-Header-Content-Length": str(len(header))})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and "BOOL element 1" in json.load(e.value)["error"]


def test_failure_inside_onnxruntime_is_500_and_the_worker_survives(server):
    body = lambda shape: {"inputs": [  # noqa: E731
        {"name": "x", "shape": [6], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
        {"name": "shape", "shape": [2], "datatype": "INT64", "data": shape}]}
    status, err = post(server, "reshape", body([4, 4]))
    assert status == 500
    assert "Reshape" in err["error"] and "cannot be reshaped" in err["error"], err
    status, ok = post(server, "reshape", body([2, 3]))
    assert status == 200
    assert ok["outputs"][0]["shape"] == [2, 3] and ok["outputs"][0]["data"] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("model,reason", [
    ("corrupt", "model.onnx"),
    ("on_gpu", "CUDAExecutionProvider"),
    ("openvino", "OpenVINOExecutionProvider"),
    ("fixed_batch", "batching needs a dynamic first dimension"),
    ("wrong_dims", "input[0].dims"),
    ("wrong_type", "input[0].datatype"),
])
def test_models_that_cannot_load_say_why(client, model, reason):
    why = unavailable_reason(client, model)
    assert reason in why, why
    assert not client.is_model_ready(model)
    assert client.is_model_ready("cls_toml")


def test_corrupt_graph_carries_onnxruntime_reason(client):
    reason = unavailable_reason(client, "corrupt")
    assert "Protobuf parsing failed" in reason or "INVALID_PROTOBUF" in reason, reason


def thread_count(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def wait_for_threads(pid, want):
    deadline = time.time() + 10
    while thread_count(pid) != want and time.time() < deadline:
        time.sleep(0.05)
    return thread_count(pid)


def test_intra_op_threads_setting_takes_effect(client, server, repo):
    """ONNX Runtime starts intra_op_threads - 1 pool threads per session: 1 → 6 adds five."""
    pid = server.proc.pid
    config = repo / "threads" / "config.toml"
    base = thread_count(pid)
    try:
        config.write_text('backend = "onnx"\ninstance_count = 2\n[onnxruntime]\nintra_op_threads = 6\n')
        client.load_model("threads")
        # Two sessions of five pool threads, and one more worker thread, replace one worker.
        assert wait_for_threads(pid, base + 11) == base + 11
    finally:
        config.write_text('backend = "onnx"\n[onnxruntime]\nintra_op_threads = 1\n')
        client.load_model("threads")
    assert wait_for_threads(pid, base) == base


FAKE_OLD_RUNTIME = """
typedef struct { const void *(*GetApi)(unsigned); const char *(*GetVersionString)(void); } Base;
static const void *api(unsigned v) { (void)v; return 0; }
static const char *version(void) { return "1.10.0"; }
static const Base base = { api, version };
const Base *OrtGetApiBase(void) { return &base; }
"""


def test_without_a_usable_library_onnx_models_are_unavailable_and_others_serve(tmp_path):
    repo = tmp_path / "repo"
    save_onnx(repo, "graph", fixed_batch_graph(), 13)
    (repo / "add_sub").mkdir()
    (repo / "add_sub" / "config.toml").write_text('backend = "builtin"\n')
    bogus = tmp_path / "libonnxruntime.so"
    bogus.write_bytes(b"not a shared library")
    # A library that says it is ONNX Runtime 1.10, older than the API tensord asks for.
    (tmp_path / "old.c").write_text(FAKE_OLD_RUNTIME)
    old = tmp_path / "libold.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(old), str(tmp_path / "old.c")], check=True)
    cases = [
        (["--onnxruntime-lib", str(tmp_path / "missing.so")], None, "missing.so: no such file"),
        ([], str(bogus), f"{bogus}: {bogus}: "),  # the loader's own words follow
        (["--config", str(tmp_path / "tensord.toml")], None, "expected version >= '1.17.x', but got '1.10.0'"),
    ]
    # The config file's key, as an operator writes it.
    (tmp_path / "tensord.toml").write_text(f'onnxruntime_lib = "{old}"\n')
    for args, env_path, why in cases:
        env = {**os.environ, "ORT_DYLIB_PATH": env_path} if env_path else None
        d = Daemon("--threads", "1", *args, repo=repo, env=env)
        try:
            c = httpclient.InferenceServerClient(d.url)
            reason = unavailable_reason(c, "graph")
            assert "--onnxruntime-lib" in reason and why in reason, reason
            a = np.arange(16, dtype=np.int32).reshape(1, 16)
            inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(a)
            np.testing.assert_array_equal(c.infer("add_sub", inputs).as_numpy("OUTPUT0"), a + a)
            with pytest.raises(InferenceServerException, match="--onnxruntime-lib"):
                infer_one(c, "graph", np.zeros((1, 4), np.float32), "y")
            c.close()
        finally:
            d.stop()


def test_installed_binary_finds_the_library_beside_it(tmp_path):
    staged = tmp_path / "staged"
    subprocess.run([str(ROOT / "scripts" / "install")], check=True, capture_output=True,
                   env={**os.environ, "DESTDIR": str(staged), "TENSORD_BIN": str(BINARY)})
    library = staged / "usr" / "local" / "bin" / "libonnxruntime.so"
    assert library.is_file() and not library.is_symlink()
    repo = tmp_path / "repo"
    save_onnx(repo, "graph", fixed_batch_graph(), 13)
    env = {k: v for k, v in os.environ.items() if k != "ORT_DYLIB_PATH"}
    d = Daemon("--threads", "1", repo=repo, env=env, binary=staged / "usr" / "local" / "bin" / "tensord")
    try:
        c = httpclient.InferenceServerClient(d.url)
        x = np.array([[-1, 2, -3, 4]], dtype=np.float32)
        np.testing.assert_array_equal(infer_one(c, "graph", x, "y"), np.maximum(x, 0))
        c.close()
    finally:
        d.stop()
    shutil.rmtree(staged)


def minor_faults(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def test_a_connection_reuses_its_buffer_for_large_requests(client, server):
    """A 1.2 MB request is read into the buffer the previous one used: the worker releases a
    request's inputs before answering it, so the buffer is unshared again. A fresh buffer per
    request would page-fault in about 290 pages."""
    x = RNG.random((8, 3, 48, 192), dtype=np.float32)
    output = PPOCR_OUTPUTS["cls"][0]
    for _ in range(5):
        infer_one(client, "cls_toml", x, output)
    before = minor_faults(server.proc.pid)
    for _ in range(20):
        infer_one(client, "cls_toml", x, output)
    per_request = (minor_faults(server.proc.pid) - before) / 20
    assert per_request < 64, f"{per_request} page faults per request"
