"""The gRPC front door through tritonclient.grpc, grpcio's generated stubs and KServe's gRPC
client (health, metadata, config, statistics, repository, ModelInfer with raw and typed contents,
compression, errors with their statuses), and TF Serving's API through ovmsclient and its
generated messages (status, metadata, predict with tensors and images, errors).

scripts/test runs this module in a pytest process of its own: tritonclient.grpc and KServe
register the same protobuf names, which one process cannot hold both of."""

import fcntl
import io
import os
import socket
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import grpc
import ml_dtypes
import numpy as np
import ovmsclient
import pytest
import tritonclient.grpc as grpcclient
from ovmsclient.tfs_compat.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import BINARY, EXPLICIT, TEST_REPO, Daemon, free_port, logged, start, stop

RNG = np.random.default_rng(17)


@pytest.fixture(scope="module")
def grpc_daemon(tmp_path_factory):
    trace = tmp_path_factory.mktemp("grpc-trace") / "trace.json"
    d = Daemon("--threads", "2", *EXPLICIT, "--trace-file", str(trace))
    d.trace_file = trace
    yield d
    d.stop()


@pytest.fixture(scope="module")
def grpc_url(grpc_daemon):
    return grpc_daemon.grpc_url


@pytest.fixture(scope="module")
def client(grpc_url):
    c = grpcclient.InferenceServerClient(grpc_url)
    yield c
    c.close()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta.name == "tensord" and "binary_tensor_data" in meta.extensions
    model = client.get_model_metadata("add_sub")
    assert (model.name, list(model.versions), model.platform) == ("add_sub", ["1"], "builtin")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]


def test_grpc_health_check(grpc_url):
    # grpc.health.v1.Health/Check, called with grpcio directly: an empty request, and the reply's
    # field 1 (status) is 1, SERVING.
    with grpc.insecure_channel(grpc_url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"


@pytest.mark.parametrize("dtype,datatype", [
    (np.float32, "FP32"), (np.float16, "FP16"), (ml_dtypes.bfloat16, "BF16"), (np.bool_, "BOOL"),
    (np.int64, "INT64"), (np.uint8, "UINT8"), (np.object_, "BYTES"),
])
def test_identity_raw_contents_every_kind(client, dtype, datatype):
    if dtype is np.object_:
        x = np.array([[b"a", b"\x00\xffz", b""]], dtype=np.object_)
    else:
        x = (np.arange(6).reshape(2, 3) % 2).astype(dtype)
    inp = grpcclient.InferInput("INPUT0", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    result = client.infer("identity", [inp], request_id="r7")
    assert result.get_response().id == "r7"
    got = result.as_numpy("OUTPUT0")
    assert got.shape == x.shape
    if datatype == "BF16":
        assert got.tobytes() == x.tobytes()
    else:
        assert got.tolist() == x.tolist()


def add_sub_inputs(a, b):
    ins = [grpcclient.InferInput("INPUT0", list(a.shape), "INT32"),
           grpcclient.InferInput("INPUT1", list(b.shape), "INT32")]
    ins[0].set_data_from_numpy(a)
    ins[1].set_data_from_numpy(b)
    return ins


def test_add_sub_and_output_subset(client):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    ins = add_sub_inputs(a, b)
    result = client.infer("add_sub", ins, outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.as_numpy("OUTPUT0") is None


def test_errors_carry_grpc_statuses(client):
    x = np.zeros((1, 15), dtype=np.int32)
    ins = [grpcclient.InferInput(n, [1, 15], "INT32") for n in ("INPUT0", "INPUT1")]
    for i in ins:
        i.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as e:
        client.infer("add_sub", ins)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "[-1, 16]" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("nope", ins)
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert "Request for unknown model: 'nope' is not found" in e.value.message()
    # CUDA shared memory answers as Triton does on a host without GPUs.
    assert list(client.get_cuda_shared_memory_status().regions) == []
    assert client.is_server_live()


def test_parameters_no_model_reads_are_refused_not_ignored(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    cases = [
        ({"parameters": {"my_custom_parameter": 42}},
         "request parameter 'my_custom_parameter': not supported"),
        ({"sequence_id": 7, "sequence_start": True},
         "request parameter 'sequence_id': model 'add_sub' has no sequence batching (only 0, \"\" or false is "
         "accepted)"),
        ({"priority": 1}, "request parameter 'priority': tensord models have no priority levels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer("add_sub", add_sub_inputs(a, a), **kwargs)
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and message in e.value.message(), \
            (kwargs, e.value.message())
    # Input and output parameters likewise (tritonclient has no public setter for either).
    # binary_data_size (KServe's client sends it) must be the raw contents' size; an output's
    # binary_data may only be true, as gRPC outputs are always raw.
    def with_parameters(on_input=(), on_output=()):
        ins, out = add_sub_inputs(a, a), grpcclient.InferRequestedOutput("OUTPUT0")
        for key, kind, value in on_input:
            setattr(ins[0]._input.parameters[key], kind, value)
        for key, kind, value in on_output:
            setattr(out._output.parameters[key], kind, value)
        return client.infer("add_sub", ins, outputs=[out])

    refused = [
        ({"on_output": [("shared_memory_region", "string_param", "r")]},
         "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor "
         "'OUTPUT0'"),
        ({"on_input": [("scale", "int64_param", 2)]},
         "input 'INPUT0' parameter 'scale': not supported"),
        ({"on_input": [("scale", "int64_param", 2)]},
         "(this takes: binary_data_size, shared_memory_region, shared_memory_offset, shared_memory_byte_size)"),
        ({"on_input": [("binary_data_size", "int64_param", 60)]},
         "input 'INPUT0': binary_data_size 60, but its raw_input_contents hold 64 bytes"),
        ({"on_output": [("binary_data", "bool_param", False)]},
         "output 'OUTPUT0': binary_data may only be true over gRPC"),
    ]
    for kwargs, message in refused:
        with pytest.raises(InferenceServerException) as e:
            with_parameters(**kwargs)
        assert message in e.value.message(), (kwargs, e.value.message())
    result = with_parameters([("binary_data_size", "int64_param", 64)], [("binary_data", "bool_param", True)])
    assert result.as_numpy("OUTPUT0").tolist() == (2 * a).tolist()
    # The known ones still work: a class count and a zero timeout.
    out = grpcclient.InferRequestedOutput("OUTPUT0", class_count=1)
    result = client.infer("add_sub", add_sub_inputs(a, a), outputs=[out], timeout=0)
    assert result.as_numpy("OUTPUT0").tolist() == [[b"30:15"]]


KSERVE_CLIENT = """
import asyncio, sys
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest

async def go():
    c = InferenceGRPCClient(sys.argv[1])
    try:
        assert await c.is_server_live()
        assert await c.is_server_ready()
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = []
        for name in ("INPUT0", "INPUT1"):
            i = InferInput(name, [1, 16], "INT32")
            i.set_data_from_numpy(a, binary_data=True)
            inputs.append(i)
        response = await c.infer(InferRequest(model_name="add_sub", infer_inputs=inputs))
        outputs = {o.name: o.as_numpy() for o in response.outputs}
        assert (outputs["OUTPUT0"] == a * 2).all() and (outputs["OUTPUT1"] == 0).all(), outputs
    finally:
        await c.close()

asyncio.run(go())
print("ok")
"""


def test_kserve_grpc_client(grpc_url):
    # KServe's client registers the same protobuf names as tritonclient.grpc: its own process.
    run = subprocess.run([sys.executable, "-c", KSERVE_CLIENT, grpc_url], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr


def typed_request(model, inputs):
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, shape, field, values in inputs:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
    return request


def test_typed_contents(grpc_url):
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        values = list(range(16))
        response = stub.ModelInfer(typed_request("add_sub", [
            ("INPUT0", "INT32", [1, 16], "int_contents", values),
            ("INPUT1", "INT32", [1, 16], "int_contents", [1] * 16)]))
        out = {o.name: i for i, o in enumerate(response.outputs)}
        summed = np.frombuffer(response.raw_output_contents[out["OUTPUT0"]], dtype=np.int32)
        assert summed.tolist() == [v + 1 for v in values]
        for datatype, field, vals, shape in (("BOOL", "bool_contents", [True, False], [2]),
                                             ("BYTES", "bytes_contents", [b"x", b"\x00yz"], [2]),
                                             ("FP64", "fp64_contents", [0.1, -2.5], [2]),
                                             ("UINT16", "uint_contents", [65535, 0], [2])):
            response = stub.ModelInfer(typed_request("identity", [("INPUT0", datatype, shape, field, vals)]))
            assert response.outputs[0].datatype == datatype
            raw = response.raw_output_contents[0]
            if datatype == "BYTES":
                assert raw == b"\x01\x00\x00\x00x\x03\x00\x00\x00\x00yz"
            else:
                dtype = {"BOOL": np.bool_, "FP64": np.float64, "UINT16": np.uint16}[datatype]
                assert np.frombuffer(raw, dtype=dtype).tolist() == vals
        for bad, words in (
            (("INPUT0", "INT8", [1], "int_contents", [300]), "300 is not a valid INT8"),
            (("INPUT0", "FP32", [3], "fp32_contents", [1.0]), "INPUT0"),
            (("INPUT0", "FP16", [1], "fp32_contents", [1.0]), "raw_input_contents"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(typed_request("identity", [bad]))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in e.value.details(), e.value.details()


def test_model_config_and_statistics(client):
    config = client.get_model_config("add_sub", as_json=True)["config"]
    assert (config["name"], config["backend"], config["max_batch_size"]) == ("add_sub", "builtin", 64)
    assert config["input"][0] == {"name": "INPUT0", "data_type": "TYPE_INT32", "dims": ["16"]}
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "100"
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    before = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
    a = np.zeros((1, 16), dtype=np.int32)
    ins = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for i in ins:
        i.set_data_from_numpy(a)
    for _ in range(3):
        client.infer("add_sub", ins)
    after = client.get_inference_statistics("add_sub", as_json=True)["model_stats"][0]
    count = lambda s: int(s["inference_stats"]["success"].get("count", 0))  # noqa: E731
    assert count(after) - count(before) == 3
    assert (after["name"], after["version"]) == ("add_sub", "1")
    with pytest.raises(InferenceServerException) as e:
        client.get_inference_statistics("add_sub", model_version="9")
    assert e.value.status() == "StatusCode.NOT_FOUND"


def test_repository_rpcs_in_tritons_and_kserves_numbering(client, grpc_url):
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["add_sub"].state == "READY" and index["add_sub"].version == "1"
    client.unload_model("identity")
    assert not client.is_model_ready("identity")
    client.load_model("identity")
    assert client.is_model_ready("identity")
    override = '{"backend": "identity", "max_batch_size": 4, "dynamic_batching": {}}'
    client.load_model("identity", config=override)
    assert client.get_model_config("identity").config.max_batch_size == 4
    with pytest.raises(InferenceServerException) as e:
        client.load_model("identity", config="{not json")
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.get_model_config("identity").config.max_batch_size == 4
    # KServe's RepositoryModelLoadRequest: model_name in field 1; its response: name, isLoaded.
    with grpc.insecure_channel(grpc_url) as channel:
        load = channel.unary_unary("/inference.GRPCInferenceService/RepositoryModelLoad")
        name = b"identity"
        assert load(b"\x0a" + bytes([len(name)]) + name, timeout=30) == b"\x0a\x08identity\x10\x01"
    # Back to the any-datatype identity the other tests use.
    client.load_model("identity")


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_calls(client, algorithm):
    x = np.arange(4096, dtype=np.float32).reshape(1, 4096)
    inp = grpcclient.InferInput("INPUT0", [1, 4096], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("identity", [inp], compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_stream_infer_answers_each_request_in_order(grpc_url):
    import queue

    c = grpcclient.InferenceServerClient(grpc_url)
    answers = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for n in range(5):
            x = np.full((1, 3), n, dtype=np.float32)
            inp = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
            inp.set_data_from_numpy(x)
            c.async_stream_infer("identity", [inp], request_id=str(n))
        bad = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
        c.async_stream_infer("nope", [bad], request_id="bad")
        got = [answers.get(timeout=30) for _ in range(6)]
    finally:
        c.stop_stream()
        c.close()
    for n, (result, error) in enumerate(got[:5]):
        assert error is None
        assert result.get_response().id == str(n)
        assert result.as_numpy("OUTPUT0").tolist() == [[n, n, n]]
    result, error = got[5]
    assert result is None and "Request for unknown model: 'nope' is not found" in str(error)


def test_calls_are_traced_and_streams_mark_final_responses(client, grpc_daemon, grpc_url):
    import json
    import queue

    trace = grpc_daemon.trace_file
    on = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "log_frequency": "1"}
    client.update_trace_settings(model_name="identity", settings=on)
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    inp = grpcclient.InferInput("INPUT0", [1, 3], "FP32")
    inp.set_data_from_numpy(x)
    stream = grpcclient.InferenceServerClient(grpc_url)
    answers = queue.Queue()
    try:
        assert client.infer("identity", [inp]).as_numpy("OUTPUT0").tolist() == x.tolist()
        stream.start_stream(callback=lambda result, error: answers.put((result, error)))
        stream.async_stream_infer("identity", [inp], enable_empty_final_response=True)
        stream.async_stream_infer("identity", [inp])
        (marked, e1), (plain, e2) = answers.get(timeout=30), answers.get(timeout=30)
    finally:
        stream.stop_stream()
        stream.close()
        client.update_trace_settings(model_name="identity", settings={k: None for k in on})
    # Every tensord response is final; a stream marks it so when the request asks (perf_analyzer
    # and tritonclient's decoupled callers wait for the mark).
    assert e1 is None and e2 is None
    assert marked.get_response().parameters["triton_final_response"].bool_param is True
    assert "triton_final_response" not in plain.get_response().parameters
    assert marked.as_numpy("OUTPUT0").tolist() == x.tolist()
    order = ["GRPC_WAITREAD_START", "GRPC_WAITREAD_END", "REQUEST_START", "QUEUE_START", "COMPUTE_START",
             "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END", "GRPC_SEND_START"]
    for k in range(3):  # the unary call and the two stream messages, one file each
        written = trace.parent / f"{trace.name}.{k}"
        deadline = time.time() + 10  # the trace writer's thread writes them
        while not written.exists() and time.time() < deadline:
            time.sleep(0.02)
        head, stages = json.loads(written.read_text())
        assert (head["model_name"], head["model_version"]) == ("identity", 1)
        assert [s["name"] for s in stages["timestamps"]] == order
        ns = [s["ns"] for s in stages["timestamps"]]
        assert ns == sorted(ns) and ns[0] > 0


def test_log_and_trace_settings(client, tmp_path):
    log = client.get_log_settings(as_json=True)["settings"]
    assert log["log_info"] == {"bool_param": True}
    assert log["log_format"] == {"string_param": "default"}
    changed = client.update_log_settings({"log_verbose_level": 1}, as_json=True)["settings"]
    assert changed["log_verbose_level"] == {"uint32_param": 1}
    with pytest.raises(InferenceServerException) as e:
        client.update_log_settings({"log_file": "/tmp/x.log"})
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    client.update_log_settings({"log_verbose_level": 0})
    trace = client.get_trace_settings(as_json=True)["settings"]
    assert trace["trace_level"]["value"] == ["OFF"]
    model = client.update_trace_settings(model_name="add_sub", settings={"trace_rate": "7"}, as_json=True)
    assert model["settings"]["trace_rate"]["value"] == ["7"]
    assert client.get_trace_settings(as_json=True)["settings"]["trace_rate"]["value"] == ["1000"]
    cleared = client.update_trace_settings(model_name="add_sub", settings={"trace_rate": None}, as_json=True)
    assert cleared["settings"]["trace_rate"]["value"] == ["1000"]
    # The file is the operator's: refused with Triton's status and words, globally and per model.
    for model in ("", "add_sub"):
        with pytest.raises(InferenceServerException) as e:
            client.update_trace_settings(model_name=model, settings={"trace_file": str(tmp_path / "x")})
        assert e.value.status() == "StatusCode.UNIMPLEMENTED"
        assert "trace file location can not be updated through network protocol" in str(e.value)
    assert not (tmp_path / "x").exists()


# TF Serving's gRPC API, through ovmsclient (its default protocol) and its generated messages.


@pytest.fixture(scope="module")
def tfs(grpc_url):
    return ovmsclient.make_grpc_client(grpc_url)


def tf_tensor(dtype, shape, **values):
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape]
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), **values)


def tf_predict(grpc_url, model, inputs, output_filter=(), version=None, signature=""):
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=predict_pb2.PredictRequest.SerializeToString,
                                   response_deserializer=predict_pb2.PredictResponse.FromString)
        return call(request, timeout=10)


def test_ovmsclient_grpc_status_and_metadata(tfs):
    assert tfs.get_model_status("add_sub") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": ""}}
    assert tfs.get_model_status("add_sub", model_version=1)[1]["state"] == "AVAILABLE"
    meta = tfs.get_model_metadata("add_sub")
    assert meta == {
        "model_version": 1,
        "inputs": {"INPUT0": {"dtype": "DT_INT32", "shape": [-1, 16]},
                   "INPUT1": {"dtype": "DT_INT32", "shape": [-1, 16]}},
        "outputs": {"OUTPUT0": {"dtype": "DT_INT32", "shape": [-1, 16]},
                    "OUTPUT1": {"dtype": "DT_INT32", "shape": [-1, 16]}},
    }
    assert tfs.get_model_metadata("image_probe")["inputs"]["IMAGE"] == {"dtype": "DT_UINT8", "shape": [-1, -1, -1, 3]}
    with pytest.raises(ovmsclient.ModelNotFoundError):
        tfs.get_model_status("nope")
    with pytest.raises(ovmsclient.ModelNotFoundError):
        tfs.get_model_metadata("add_sub", model_version=7)


def test_ovmsclient_grpc_predict(tfs):
    a = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    b = RNG.integers(-100, 100, (3, 16), dtype=np.int32)
    out = tfs.predict({"INPUT0": a, "INPUT1": b}, "add_sub")
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    x = RNG.standard_normal((2, 16)).astype(np.float32)
    np.testing.assert_array_equal(tfs.predict({"INPUT0": x}, "identity", model_version=1), x)


def test_ovmsclient_grpc_predict_images(grpc_url, tfs, url):
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, (x + y) * 4], -1).clip(0, 255).astype(np.uint8)
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt)
        data = buf.getvalue()
        got = np.asarray(tfs.predict({"IMAGE": data}, "image_probe"))
        ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[:, :, ::-1]
        assert got.shape == (1, 24, 32, 3) and got.dtype == np.uint8
        if fmt == "PNG":
            np.testing.assert_array_equal(got[0], ref)
        else:
            assert np.abs(got[0].astype(int) - ref.astype(int)).mean() < 2
        # The same bytes over TF Serving's REST API decode to the same pixels.
        rest = ovmsclient.make_http_client(url).predict({"IMAGE": data}, "image_probe")
        assert np.asarray(rest).astype(np.uint8).tobytes() == got.tobytes()


def test_tfs_grpc_typed_values_and_output_filter(grpc_url):
    ones = tf_tensor(types_pb2.DT_INT32, [2, 16], int_val=[1])  # one value fills every element
    counting = tf_tensor(types_pb2.DT_INT32, [2, 16], int_val=list(range(32)))
    reply = tf_predict(grpc_url, "add_sub", {"INPUT0": counting, "INPUT1": ones}, output_filter=["OUTPUT1"])
    assert list(reply.outputs) == ["OUTPUT1"]
    out = reply.outputs["OUTPUT1"]
    assert out.dtype == types_pb2.DT_INT32 and [d.size for d in out.tensor_shape.dim] == [2, 16]
    assert np.frombuffer(out.tensor_content, np.int32).tolist() == [v - 1 for v in range(32)]
    assert (reply.model_spec.name, reply.model_spec.version.value) == ("add_sub", 1)
    # Half floats travel as their bit patterns in half_val; strings in string_val.
    half = np.array([1.5, -2.25, 65504], np.float16)
    reply = tf_predict(grpc_url, "identity", {"INPUT0": tf_tensor(
        types_pb2.DT_HALF, [1, 3], half_val=half.view(np.uint16).tolist())})
    assert np.frombuffer(reply.outputs["OUTPUT0"].tensor_content, np.float16).tolist() == half.tolist()
    reply = tf_predict(grpc_url, "identity", {"INPUT0": tf_tensor(
        types_pb2.DT_STRING, [1, 2], string_val=[b"\x00\xffbinary", b"text"])})
    out = reply.outputs["OUTPUT0"]
    assert out.dtype == types_pb2.DT_STRING and list(out.string_val) == [b"\x00\xffbinary", b"text"]


@pytest.mark.parametrize("inputs,signature,code,message", [
    ({"INPUT0": tf_tensor(types_pb2.DT_UINT8, [1, 2], int_val=[1, 300])}, "", "INVALID_ARGUMENT",
     "300 is not a valid UINT8"),
    ({"INPUT0": tf_tensor(types_pb2.DT_FLOAT, [1, 2], float_val=[1, 2, 3])}, "", "INVALID_ARGUMENT",
     "has 3 values for 2 elements"),
    ({"INPUT0": tf_tensor(types_pb2.DT_FLOAT, [1, 2])}, "", "INVALID_ARGUMENT", "has no values"),
    ({"INPUT0": tf_tensor(types_pb2.DT_FLOAT, [1, 2], tensor_content=b"\0" * 12)}, "", "INVALID_ARGUMENT",
     "INPUT0"),
    ({"INPUT0": tf_tensor(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1, 2])}, "", "INVALID_ARGUMENT",
     "DT_COMPLEX64"),
    ({"INPUT0": tf_tensor(types_pb2.DT_FLOAT, [1, -1], float_val=[1])}, "", "INVALID_ARGUMENT", "negative"),
    ({"INPUT0": tf_tensor(types_pb2.DT_FLOAT, [1], float_val=[1])}, "other", "INVALID_ARGUMENT",
     "signature_name 'other'"),
])
def test_tfs_grpc_errors(grpc_url, inputs, signature, code, message):
    with pytest.raises(grpc.RpcError) as e:
        tf_predict(grpc_url, "identity", inputs, signature=signature)
    assert e.value.code().name == code and message in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        tf_predict(grpc_url, "nope", inputs)
    assert e.value.code().name == "NOT_FOUND"


def test_tfs_grpc_refuses_fields_it_does_not_read(grpc_url):
    # TF Serving's PredictRequest has fields tensord does not read (client_id is field 6); one that
    # is set is refused, where protobuf decoding alone would skip it without a word.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "identity"
    request.inputs["INPUT0"].CopyFrom(tf_tensor(types_pb2.DT_FLOAT, [1], float_val=[1.5]))
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                   request_serializer=lambda body: body,
                                   response_deserializer=predict_pb2.PredictResponse.FromString)
        reply = call(request.SerializeToString(), timeout=10)
        assert np.frombuffer(reply.outputs["OUTPUT0"].tensor_content, np.float32).tolist() == [1.5]
        with pytest.raises(grpc.RpcError) as e:
            call(request.SerializeToString() + b"\x32\x03abc", timeout=10)
    assert e.value.code().name == "INVALID_ARGUMENT"
    assert e.value.details().startswith(
        "PredictRequest field 6 is not supported (tensord reads model_spec, inputs, output_filter)")


def test_tfs_grpc_metadata_message_and_unimplemented(grpc_url):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "identity"
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary("/tensorflow.serving.PredictionService/GetModelMetadata",
                                   request_serializer=get_model_metadata_pb2.GetModelMetadataRequest.SerializeToString,
                                   response_deserializer=get_model_metadata_pb2.GetModelMetadataResponse.FromString)
        reply = call(request, timeout=10)
        any_ = reply.metadata["signature_def"]
        assert any_.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
        signatures = get_model_metadata_pb2.SignatureDefMap.FromString(any_.value).signature_def
        assert signatures["serving_default"].method_name == "tensorflow/serving/predict"
        request.metadata_field[:] = ["other"]
        with pytest.raises(grpc.RpcError) as e:
            call(request, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'other'" in e.value.details()
        classify = channel.unary_unary("/tensorflow.serving.PredictionService/Classify")
        with pytest.raises(grpc.RpcError) as e:
            classify(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_socket_activation_serves_grpc_on_its_port():
    # As systemd passes two ListenStream= sockets: fd 3 and fd 4. The one on --grpc-addr's port
    # serves gRPC, the other HTTP; the addresses themselves are never bound.
    sockets = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        sockets.append(s)
    http_port, grpc_port = (s.getsockname()[1] for s in sockets)
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 20) for s in sockets]
    shell = f'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@" 3<&{high[1]} 4<&{high[0]}'  # gRPC first
    proc = start(["bash", "-c", shell, str(BINARY), "--http-addr", "192.0.2.1:9", "--grpc-addr",
                  f"192.0.2.1:{grpc_port}", "--model-repository", str(TEST_REPO), "--threads", "2",
                  "--drain-delay", "0"], http_port, pass_fds=high, stderr=subprocess.PIPE, text=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            assert check(b"", timeout=10) == b"\x08\x01"
        c = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert c.is_model_ready("add_sub")
        c.close()
    finally:
        assert stop(proc) == 0, logged(proc)
        for fd in high:
            os.close(fd)
        for s in sockets:
            s.close()


def scrape(url):
    """/metrics as {(name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        pairs = tuple(sorted(tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",") if kv))
        samples[(name, tuple((k, v.strip('"')) for k, v in pairs))] = float(value)
    return samples


def test_metrics_count_grpc_requests_by_protocol():
    d = Daemon("--threads", "1")
    try:
        c = grpcclient.InferenceServerClient(d.grpc_url)
        inputs = add_sub_inputs(np.ones((1, 16), np.int32), np.ones((1, 16), np.int32))
        for _ in range(3):
            c.infer("add_sub", inputs)
        assert c.is_server_live()
        c.close()
        samples = scrape(d.url)
        assert samples[("tensord_requests", (("core", "0"), ("protocol", "grpc")))] == 4
        assert samples[("nv_inference_request_success", (("model", "add_sub"), ("version", "1")))] == 3
        # This scrape is the HTTP request counted (the daemon's start-up probe is one more).
        assert samples[("tensord_requests", (("core", "0"), ("protocol", "http")))] >= 1
    finally:
        d.stop()


def test_shutdown_lets_grpc_calls_in_progress_finish(tmp_path):
    # A call that runs 0.8 s is in progress when SIGTERM arrives: it is answered in full, the
    # daemon exits 0, and a call made after the listeners closed is refused.
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "identity"\nexecution_delay_microseconds = 800000\n')
    d = Daemon("--threads", "1", "--drain-delay", "0", repo=tmp_path)
    c = grpcclient.InferenceServerClient(d.grpc_url)
    inp = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    inp.set_data_from_numpy(x)
    results = []
    worker = threading.Thread(target=lambda: results.append(c.infer("slow", [inp], client_timeout=20)))
    worker.start()
    time.sleep(0.3)
    started = time.time()
    d.proc.send_signal(signal.SIGTERM)
    worker.join(20)
    assert results and np.array_equal(results[0].as_numpy("OUTPUT0"), x)
    assert d.proc.wait(20) == 0
    assert time.time() - started < 5
    with pytest.raises(InferenceServerException):
        grpcclient.InferenceServerClient(d.grpc_url).is_server_live()
    c.close()
