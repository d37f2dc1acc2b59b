"""System shared memory (issue 30): Triton's shm client examples' calls (numeric and string, HTTP
and gRPC) through tritonclient and its shared_memory utilities; ports of qa/L0_shared_memory;
and the hardening beyond Triton: keys, foreign objects, truncation (SIGBUS), unregister during
an infer, caps, metrics, and the feature off by default. Runs in the gRPC tests' process."""

import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from onnx import TensorProto, helper
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import TEST_REPO, Daemon
from model_builders import save_onnx

PAGE = os.sysconf("SC_PAGE_SIZE")
SHM = "--allow-client-shm"


def onnx_add_sub(repo, name):
    """QA's onnx_int32_int32_int32: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    t = lambda name: helper.make_tensor_value_info(name, TensorProto.INT32, ["N", 16])  # noqa: E731
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])],
        "add_sub", [t("INPUT0"), t("INPUT1")], [t("OUTPUT0"), t("OUTPUT1")])
    save_onnx(repo, name, graph, config='backend = "onnx"\nmax_batch_size = 8\n')


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("shm-repo")
    shutil.copytree(TEST_REPO, repo, dirs_exist_ok=True)
    for name, builtin, extra in [
        ("simple", "add_sub", "max_batch_size = 8\n"),
        ("simple_string", "add_sub_string", "max_batch_size = 8\n"),
        # Slow enough for a region to be unregistered or truncated while it runs.
        ("slow_identity", "identity", "execution_delay_microseconds = 600000\n"),
        ("slow_simple", "add_sub", "max_batch_size = 8\nexecution_delay_microseconds = 600000\n"),
    ]:
        (repo / name).mkdir()
        (repo / name / "config.toml").write_text(f'backend = "builtin"\nbuiltin = "{builtin}"\n{extra}')
    onnx_add_sub(repo, "onnx_int32_int32_int32")
    return repo


@pytest.fixture(scope="module")
def on(repo):
    d = Daemon("--threads", "2", SHM, "--max-shm-regions", "16", repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def off(repo):
    d = Daemon("--threads", "1", repo=repo)
    yield d
    d.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request, on):
    c = (httpclient.InferenceServerClient(on.url) if request.param == "http"
         else grpcclient.InferenceServerClient(on.grpc_url))
    c.protocol = request.param
    c.unregister_system_shared_memory()
    yield c
    c.unregister_system_shared_memory()
    c.close()


@pytest.fixture
def regions():
    """Creates system shared-memory objects (tritonclient's utilities) and destroys them after."""
    made = []

    def create(name, size, key=None):
        handle = shm.create_shared_memory_region(name, key or f"/{name}_{os.getpid()}", size)
        made.append(handle)
        return handle

    yield create
    for handle in made:
        shm.destroy_shared_memory_region(handle)


def key(handle):
    return handle._shm_key


def status_of(client):
    status = client.get_system_shared_memory_status()
    if client.protocol == "grpc":
        return sorted(({"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size}
                       for r in status.regions.values()), key=lambda r: r["name"])
    return status


def lib(client):
    return httpclient if client.protocol == "http" else grpcclient


def basic(client, regions, model="simple", offset=0, register=True, size=64, in1_size=64):
    """simple_{http,grpc}_shm_client.py's calls: two inputs and two outputs in shm."""
    in0, in1 = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    handles = {}
    for name, data, create in [("input0_data", in0, size), ("input1_data", in1, in1_size),
                               ("output0_data", None, size), ("output1_data", None, size)]:
        h = handles[name] = regions(name, offset + create)
        if data is not None:
            shm.set_shared_memory_region(h, [data], offset=offset)
        if register:
            client.register_system_shared_memory(name, key(h), create, offset=offset)
    c = lib(client)
    inputs = [c.InferInput("INPUT0", [1, 16], "INT32"), c.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input0_data", size)
    inputs[1].set_shared_memory("input1_data", in1_size)
    outputs = [c.InferRequestedOutput("OUTPUT0"), c.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output0_data", size)
    outputs[1].set_shared_memory("output1_data", size)
    result = client.infer(model, inputs, outputs=outputs)
    return in0, in1, handles, result


def contents(handle, datatype, shape, offset=0):
    return shm.get_contents_as_numpy(handle, utils.triton_to_np_dtype(datatype), shape, offset=offset)


@pytest.mark.parametrize("model", ["simple", "onnx_int32_int32_int32"])
def test_the_shm_example_reads_its_outputs_from_the_regions(client, regions, model):
    client.unregister_cuda_shared_memory()  # the examples' first calls
    in0, in1, handles, result = basic(client, regions, model)
    for name, region, expected in [("OUTPUT0", "output0_data", in0 + in1), ("OUTPUT1", "output1_data", in0 - in1)]:
        output = result.get_output(name)
        if client.protocol == "http":
            # Name, datatype and shape only: the bytes are in the region.
            assert output == {"name": name, "datatype": "INT32", "shape": [1, 16]}
            datatype, shape = output["datatype"], output["shape"]
        else:
            datatype, shape = output.datatype, output.shape
            assert result.get_response().raw_output_contents[list(result.get_response().outputs).index(output)] == b""
        np.testing.assert_array_equal(contents(handles[region], datatype, shape), expected.reshape(1, 16))
    assert [r["name"] for r in status_of(client)] == ["input0_data", "input1_data", "output0_data", "output1_data"]
    client.unregister_system_shared_memory()
    assert status_of(client) == []


def test_tensors_share_a_region_at_offsets(client, regions):
    """simple_{http,grpc}_shm_client.py exactly: both inputs in one region (INPUT1 at offset 64),
    both outputs in another."""
    in0, in1 = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    h_in, h_out = regions("input_data", 128), regions("output_data", 128)
    shm.set_shared_memory_region(h_in, [in0])
    shm.set_shared_memory_region(h_in, [in1], offset=64)
    client.register_system_shared_memory("input_data", key(h_in), 128)
    client.register_system_shared_memory("output_data", key(h_out), 128)
    c = lib(client)
    inputs = [c.InferInput("INPUT0", [1, 16], "INT32"), c.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", 64)
    inputs[1].set_shared_memory("input_data", 64, offset=64)
    kw = {"binary_data": True} if client.protocol == "http" else {}
    outputs = [c.InferRequestedOutput("OUTPUT0", **kw), c.InferRequestedOutput("OUTPUT1", **kw)]
    outputs[0].set_shared_memory("output_data", 64)
    outputs[1].set_shared_memory("output_data", 64, offset=64)
    client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(contents(h_out, "INT32", [1, 16]), (in0 + in1)[None])
    np.testing.assert_array_equal(contents(h_out, "INT32", [1, 16], offset=64), (in0 - in1)[None])


def test_the_shm_string_example(client, regions):
    """simple_{http,grpc}_shm_string_client.py: BYTES in and out of shm, 4-byte lengths."""
    in0, in1 = np.arange(16, dtype=np.int32), np.ones(16, dtype=np.int32)
    as_bytes = lambda v: np.array([str(x).encode() for x in v], dtype=object)  # noqa: E731
    ser0, ser1 = utils.serialize_byte_tensor(as_bytes(in0)), utils.serialize_byte_tensor(as_bytes(in1))
    sum_ser = utils.serialize_byte_tensor(as_bytes(in0 + in1))
    diff_ser = utils.serialize_byte_tensor(as_bytes(in0 - in1))
    sizes = {"input0_data": utils.serialized_byte_size(ser0), "input1_data": utils.serialized_byte_size(ser1),
             "output0_data": utils.serialized_byte_size(sum_ser), "output1_data": utils.serialized_byte_size(diff_ser)}
    handles = {name: regions(name, size) for name, size in sizes.items()}
    shm.set_shared_memory_region(handles["input0_data"], [ser0])
    shm.set_shared_memory_region(handles["input1_data"], [ser1])
    for name, size in sizes.items():
        client.register_system_shared_memory(name, key(handles[name]), size)
    c = lib(client)
    inputs = [c.InferInput("INPUT0", [1, 16], "BYTES"), c.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_shared_memory("input0_data", sizes["input0_data"])
    inputs[1].set_shared_memory("input1_data", sizes["input1_data"])
    kw = {"binary_data": True} if client.protocol == "http" else {}
    outputs = [c.InferRequestedOutput("OUTPUT0", **kw), c.InferRequestedOutput("OUTPUT1", **kw)]
    outputs[0].set_shared_memory("output0_data", sizes["output0_data"])
    outputs[1].set_shared_memory("output1_data", sizes["output1_data"])
    client.infer("simple_string", inputs, outputs=outputs)
    got0 = contents(handles["output0_data"], "BYTES", [1, 16])
    got1 = contents(handles["output1_data"], "BYTES", [1, 16])
    assert [int(x) for x in got0.ravel()] == list(in0 + in1)
    assert [int(x) for x in got1.ravel()] == list(in0 - in1)


def test_server_metadata_names_the_extension(on):
    meta = httpclient.InferenceServerClient(on.url).get_server_metadata()
    assert "system_shared_memory" in meta["extensions"]


def test_status_reports_each_region(client, regions):
    h = regions("dummy_data", 2 * PAGE)
    client.register_system_shared_memory("dummy_data", key(h), 8, offset=PAGE)
    assert status_of(client) == [{"name": "dummy_data", "key": key(h), "offset": PAGE, "byte_size": 8}]
    one = client.get_system_shared_memory_status("dummy_data")
    assert (one[0]["byte_size"] if client.protocol == "http" else one.regions["dummy_data"].byte_size) == 8
    with pytest.raises(InferenceServerException, match="Unable to find system shared memory region: 'nope'"):
        client.get_system_shared_memory_status("nope")


def test_unregister_before_and_after_register(client, regions):
    h = regions("dummy_data", 8)
    client.unregister_system_shared_memory("dummy_data")
    assert status_of(client) == []
    client.register_system_shared_memory("dummy_data", key(h), 8)
    client.unregister_system_shared_memory("dummy_data")
    assert status_of(client) == []


def test_reregister_is_refused_and_never_shows_the_other_key(client, regions):
    secret, other = regions("secret", 8), regions("other", 8)
    client.register_system_shared_memory("dummy_data", key(secret), 8)
    with pytest.raises(InferenceServerException) as e:
        client.register_system_shared_memory("dummy_data", key(other), 8)
    assert "shared memory region 'dummy_data' already in manager" in str(e.value)
    assert key(secret) not in str(e.value)
    assert len(status_of(client)) == 1


def test_unregister_all_and_register_after_inference(client, regions):
    basic(client, regions)
    client.unregister_system_shared_memory("output0_data")
    assert len(status_of(client)) == 3
    h = regions("input2_data", 64)
    client.register_system_shared_memory("input2_data", key(h), 64)
    assert len(status_of(client)) == 4
    client.unregister_system_shared_memory()
    assert status_of(client) == []


def test_an_input_region_of_the_wrong_size_is_refused(client, regions):
    with pytest.raises(InferenceServerException,
                       match=r"input byte size mismatch for input 'INPUT1' for model 'simple'. Expected 64, got 128"):
        basic(client, regions, in1_size=128)


@pytest.mark.parametrize("model", ["simple", "onnx_int32_int32_int32"])
def test_a_large_register_offset_is_applied_once(client, regions, model):
    # The region starts a page before the end of a 1024-page object: an offset added twice
    # (register and infer) would read past the object.
    offset = PAGE * 1023
    in0, in1, handles, _ = basic(client, regions, model, offset=offset)
    np.testing.assert_array_equal(contents(handles["output0_data"], "INT32", [1, 16], offset), (in0 + in1)[None])
    np.testing.assert_array_equal(contents(handles["output1_data"], "INT32", [1, 16], offset), (in0 - in1)[None])


def test_shm_and_message_inputs_mix(client, regions):
    h_in0 = regions("input0_data", 64)
    h_out = regions("output0_data", 64)
    shm.set_shared_memory_region(h_in0, [np.arange(16, dtype=np.int32)])
    client.register_system_shared_memory("input0_data", key(h_in0), 64)
    client.register_system_shared_memory("output0_data", key(h_out), 64)
    c = lib(client)
    inputs = [c.InferInput("INPUT0", [1, 16], "INT32"), c.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input0_data", 64)
    inputs[1].set_data_from_numpy(np.full((1, 16), 3, dtype=np.int32))
    outputs = [c.InferRequestedOutput("OUTPUT0"), c.InferRequestedOutput("OUTPUT1")]
    outputs[0].set_shared_memory("output0_data", 64)
    result = client.infer("simple", inputs, outputs=outputs)
    np.testing.assert_array_equal(contents(h_out, "INT32", [1, 16]), np.arange(16)[None] + 3)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.arange(16)[None] - 3)


@pytest.mark.parametrize("case", ["offset", "byte_size", "overflow"])
def test_infer_bounds_are_checked(client, regions, case):
    in0, in1 = regions("in0", PAGE + 64), regions("in1", PAGE + 64)
    out0, out1 = regions("out0", PAGE + 64), regions("out1", PAGE + 64)
    for name, h in [("in0", in0), ("in1", in1), ("out0", out0), ("out1", out1)]:
        client.register_system_shared_memory(name, key(h), 64, offset=PAGE)
    offset, size, message = {
        "offset": (2**64 - 32 if client.protocol == "http" else 64, 64, "Invalid offset for shared memory region: 'out0'"),
        "byte_size": (1, 64, "Invalid offset + byte size for shared memory region: 'out0'"),
        "overflow": (32, 2**64 - 32, "Integer overflow detected: byte_size "),
    }[case]
    if case == "overflow" and client.protocol == "grpc":
        pytest.skip("tritonclient.grpc cannot send a size past int64 (Triton's test expects the client's ValueError)")
    c = lib(client)
    inputs = [c.InferInput("INPUT0", [1, 16], "INT32"), c.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("in0", 64)
    inputs[1].set_shared_memory("in1", 64)
    outputs = [c.InferRequestedOutput("OUTPUT0")]
    outputs[0].set_shared_memory("out0", size, offset=offset)
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple", inputs, outputs=outputs)
    assert message in str(e.value)
    assert "StatusCode.INVALID_ARGUMENT" in str(e.value.status()) or e.value.status() == "400"


@pytest.mark.parametrize("create,size,offset", [(64, 65, 0), (64, 64, 1), (64, 1, 64), (64, 0, 65), (64, 0, 0)])
def test_a_registration_past_the_object_is_refused(client, regions, create, size, offset):
    h = regions("r", create)
    with pytest.raises(InferenceServerException, match="failed to register shared memory region 'r': invalid args"):
        client.register_system_shared_memory("r", key(h), size, offset=offset)
    assert status_of(client) == []


@pytest.mark.parametrize("bad", ["/", "///", "../../etc/passwd", "/a/b", "/..", "/."])
def test_keys_name_one_object_in_dev_shm(client, bad):
    with pytest.raises(InferenceServerException, match=f"cannot register shared memory region 'my_test_shm_name' - invalid shm key '{bad}'"):
        client.register_system_shared_memory("my_test_shm_name", bad, 10000)


@pytest.mark.parametrize("prefix", ["", "/", "///"])
def test_reserved_keys_are_refused(client, prefix):
    k = f"{prefix}triton_python_backend_shm_region__my_test_shm_key"
    with pytest.raises(InferenceServerException) as e:
        client.register_system_shared_memory("my_test_shm_name", k, 10000)
    assert (f"cannot register shared memory region 'my_test_shm_name' with key '{k}' as the key contains the "
            "reserved prefix 'triton_python_backend_shm_region_'") in str(e.value)


def test_missing_objects_links_and_foreign_objects_are_refused(client, tmp_path):
    name = f"tensord_test_{os.getpid()}"
    with pytest.raises(InferenceServerException, match=f"Unable to open shared memory region: '/{name}_missing'"):
        client.register_system_shared_memory("r", f"/{name}_missing", 8)
    target = tmp_path / "outside"
    target.write_bytes(b"\0" * 64)
    link = f"/dev/shm/{name}_link"
    os.symlink(target, link)
    try:
        with pytest.raises(InferenceServerException, match="invalid args: it is a symbolic link"):
            client.register_system_shared_memory("r", f"/{name}_link", 8)
    finally:
        os.unlink(link)
    foreign = f"/dev/shm/{name}_foreign"
    with open(foreign, "wb") as f:
        f.write(b"\0" * 64)
    try:
        if os.geteuid() == 0:
            os.chown(foreign, 65534, 65534)
        elif os.stat(foreign).st_uid == os.geteuid():
            pytest.skip("needs root to make an object another user owns")
        with pytest.raises(InferenceServerException, match="invalid args: it is not owned by the server's user"):
            client.register_system_shared_memory("r", f"/{name}_foreign", 8)
    finally:
        os.unlink(foreign)
    assert status_of(client) == []


def test_classification_and_binary_data_cannot_go_to_shm(on, regions):
    client = httpclient.InferenceServerClient(on.url)
    h = regions("out", 64)
    client.register_system_shared_memory("out", key(h), 64)
    body = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": [0] * 16} for n in ("INPUT0", "INPUT1")]}
    for parameters, message in [
        ({"binary_data": True}, "Output can't set both 'shared_memory_region' and 'binary_data'"),
        ({"classification": 2}, "Output can't set both 'shared_memory_region' and 'classification'"),
    ]:
        parameters.update(shared_memory_region="out", shared_memory_byte_size=64)
        status, answer = post(on.url, "/v2/models/simple/infer", dict(body, outputs=[{"name": "OUTPUT0", "parameters": parameters}]))
        assert (status, answer) == (400, {"error": message})
    # data and a region together: Triton's words.
    status, answer = post(on.url, "/v2/models/simple/infer", {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16,
         "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 64}}]})
    assert status == 400
    assert answer["error"] == ("Input must set only one of the following fields: 'data', 'binary_data_size' in "
                               "'parameters', 'shared_memory_region' in 'parameters'. But set 'data' 'shared_memory_region'")
    status, answer = post(on.url, "/v2/models/simple/infer", {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": [0] * 16, "parameters": {"shared_memory_offset": 0}}]})
    assert answer == {"error": "'shared_memory_offset' can not be specified without 'shared_memory_region' parameter "
                               "for tensor 'INPUT0'"}
    client.unregister_system_shared_memory()


def test_grpc_demands_triton_parameter_types(on, regions):
    client = grpcclient.InferenceServerClient(on.grpc_url)
    h = regions("in", 64)
    client.register_system_shared_memory("in", key(h), 64)
    cases = [
        ({"shared_memory_region": "in"}, "'shared_memory_byte_size' must be specified along with 'shared_memory_region' parameter for tensor 'INPUT0'"),
        ({"shared_memory_region": "in", "shared_memory_byte_size": True}, "invalid value type for 'shared_memory_byte_size' parameter for tensor 'INPUT0', expected int64_param."),
        ({"shared_memory_region": 7, "shared_memory_byte_size": 64}, "invalid value type for 'shared_memory_region' parameter for tensor 'INPUT0', expected string_param."),
    ]
    for parameters, message in cases:
        request = grpcclient.service_pb2.ModelInferRequest(model_name="simple")
        tensor = request.inputs.add(name="INPUT0", datatype="INT32", shape=[1, 16])
        for k, v in parameters.items():
            if isinstance(v, bool):
                tensor.parameters[k].bool_param = v
            elif isinstance(v, int):
                tensor.parameters[k].int64_param = v
            else:
                tensor.parameters[k].string_param = v
        with pytest.raises(Exception) as e:
            client._client_stub.ModelInfer(request)
        assert message in str(e.value), str(e.value)
    client.unregister_system_shared_memory()


def post(url, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{url}{path}", data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url, path):
    try:
        with urllib.request.urlopen(f"http://{url}{path}") as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_off_by_default_every_call_answers_as_triton(off, regions):
    disabled = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
    h = regions("dummy_data", 8)
    for client in (httpclient.InferenceServerClient(off.url), grpcclient.InferenceServerClient(off.grpc_url)):
        client.protocol = "http" if isinstance(client, httpclient.InferenceServerClient) else "grpc"
        assert status_of(client) == []
        for call in (lambda: client.register_system_shared_memory("dummy_data", key(h), 8),
                     lambda: client.unregister_system_shared_memory("dummy_data"),
                     lambda: client.unregister_system_shared_memory(),
                     lambda: client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8),
                     lambda: client.unregister_cuda_shared_memory()):
            with pytest.raises(InferenceServerException) as e:
                call()
            assert disabled in str(e.value)
            assert e.value.status() in ("501", "StatusCode.UNIMPLEMENTED")
        assert status_of(client) == []
        cuda = client.get_cuda_shared_memory_status()
        assert (cuda if client.protocol == "http" else list(cuda.regions)) == []
    # Raw: 501 and Triton's text; status stays 200 [].
    assert post(off.url, "/v2/systemsharedmemory/region/x/register", {"key": key(h), "byte_size": 8}) == (501, {"error": disabled})
    assert get(off.url, "/v2/systemsharedmemory/status") == (200, [])
    assert get(off.url, "/v2/cudasharedmemory/status") == (200, [])
    # An infer naming a region finds none.
    status, answer = post(off.url, "/v2/models/simple/infer", {"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"shared_memory_region": "dummy_data", "shared_memory_byte_size": 64}}]})
    assert (status, answer) == (404, {"error": "Unable to find shared memory region: 'dummy_data'"})


def test_cuda_routes_answer_as_a_host_without_gpus(client):
    cuda = client.get_cuda_shared_memory_status()
    assert (cuda if client.protocol == "http" else list(cuda.regions)) == []
    client.unregister_cuda_shared_memory()
    client.unregister_cuda_shared_memory("c")
    with pytest.raises(InferenceServerException, match="failed to register CUDA shared memory region: 'c', GPUs not supported"):
        client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8)
    with pytest.raises(InferenceServerException, match="Unable to find cuda shared memory region: 'c'"):
        client.get_cuda_shared_memory_status("c")


def test_register_request_fields(on):
    assert post(on.url, "/v2/systemsharedmemory/register", {"key": "/k", "byte_size": 8}) == (
        400, {"error": "'region name' is necessary to register system shared memory region"})
    assert post(on.url, "/v2/systemsharedmemory/region/r/register", {"byte_size": 8}) == (
        400, {"error": "Shared memory register request has no 'key' field"})
    assert post(on.url, "/v2/systemsharedmemory/region/r/register", {"key": "/k"}) == (
        400, {"error": "Shared memory register request has no 'byte_size' field"})
    status, answer = post(on.url, "/v2/systemsharedmemory/region/r/register", {"key": "/k", "byte_size": 8, "size": 1})
    assert status == 400 and "unknown field `size`" in answer["error"]


def slow_request(client, model, inputs_in_shm, output_in_shm=None):
    c = lib(client)
    inputs = [c.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")[: len(inputs_in_shm)]]
    for i, name in zip(inputs, inputs_in_shm):
        i.set_shared_memory(name, 64)
    outputs = None
    if output_in_shm:
        outputs = [c.InferRequestedOutput("OUTPUT0")]
        outputs[0].set_shared_memory(output_in_shm, 64)
    box = {}
    if client.protocol == "http":
        # tritonclient.http's own async call (its gevent client cannot run on another thread).
        handle = client.async_infer(model, inputs, outputs=outputs)

        def finish():
            try:
                box["result"] = handle.get_result()
            except InferenceServerException as e:
                box["error"] = e
    else:
        def done(result, error):
            box.update({"error": error} if error else {"result": result})
            finished.set()

        finished = threading.Event()
        client.async_infer(model, inputs, done, outputs=outputs)
        finish = finished.wait
    time.sleep(0.25)
    return finish, box


def test_unregister_during_an_infer_waits_for_it(client, regions, on):
    in0, in1, out0 = regions("input0_data", 64), regions("input1_data", 64), regions("output0_data", 64)
    shm.set_shared_memory_region(in0, [np.arange(16, dtype=np.int32)])
    shm.set_shared_memory_region(in1, [np.full(16, 2, dtype=np.int32)])
    for name, h in [("input0_data", in0), ("input1_data", in1), ("output0_data", out0)]:
        client.register_system_shared_memory(name, key(h), 64)
    finish, box = slow_request(client, "slow_simple", ["input0_data", "input1_data"], "output0_data")
    second = httpclient.InferenceServerClient(on.url)
    second.unregister_system_shared_memory()
    # As Triton: the regions stay listed (and their names taken) until the infer ends.
    assert len(second.get_system_shared_memory_status()) == 3
    with pytest.raises(InferenceServerException, match="already in manager"):
        second.register_system_shared_memory("input0_data", key(in0), 64)
    finish()
    assert "error" not in box, box
    np.testing.assert_array_equal(contents(out0, "INT32", [1, 16]), np.arange(16)[None] + 2)
    assert second.get_system_shared_memory_status() == []


@pytest.mark.parametrize("where", ["input", "output"])
def test_a_region_truncated_during_an_infer_fails_that_request_not_the_server(client, regions, on, where):
    """The object shrinks after the per-request size check: touching the mapping raises SIGBUS,
    which the guard turns into this request's 400."""
    h = regions("victim", 64)
    shm.set_shared_memory_region(h, [np.arange(16, dtype=np.int32)])
    client.register_system_shared_memory("victim", key(h), 64)
    if where == "input":
        # identity returns the input's view; its copy for the answer reads the truncated pages.
        finish, box = slow_request(client, "slow_identity", ["victim"])
    else:
        src = regions("src", 64)
        client.register_system_shared_memory("src", key(src), 64)
        finish, box = slow_request(client, "slow_simple", ["src", "src"], "victim")
    os.truncate(f"/dev/shm{key(h)}", 0)
    finish()
    assert "error" in box, box
    assert "shared memory region 'victim' lost bytes" in str(box["error"])
    assert box["error"].status() in ("400", "StatusCode.INVALID_ARGUMENT")
    # Later requests naming it are refused before they touch it; the server goes on.
    i = lib(client).InferInput("INPUT0", [1, 16], "INT32")
    i.set_shared_memory("victim", 64)
    with pytest.raises(InferenceServerException, match="'victim' lost bytes"):
        client.infer("identity", [i])
    assert httpclient.InferenceServerClient(on.url).is_server_live()
    client.unregister_system_shared_memory()


def test_a_shrunk_region_is_refused_before_use(client, regions):
    h = regions("victim", 64)
    client.register_system_shared_memory("victim", key(h), 64)
    os.truncate(f"/dev/shm{key(h)}", 32)
    c = lib(client)
    i = c.InferInput("INPUT0", [1, 16], "INT32")
    i.set_shared_memory("victim", 64)
    with pytest.raises(InferenceServerException, match="shared memory region 'victim' lost bytes"):
        client.infer("identity", [i])


def test_regions_are_capped_and_counted_in_metrics(on, regions):
    client = httpclient.InferenceServerClient(on.url)
    client.unregister_system_shared_memory()
    handles = [regions(f"cap{i}", PAGE) for i in range(17)]
    for i, h in enumerate(handles[:16]):
        client.register_system_shared_memory(f"cap{i}", key(h), PAGE)
    with urllib.request.urlopen(f"http://{on.url}/metrics") as r:
        metrics = r.read().decode()
    assert "tensord_shm_regions 16\n" in metrics
    assert f"tensord_shm_mapped_bytes {16 * PAGE}\n" in metrics
    status, answer = post(on.url, "/v2/systemsharedmemory/region/cap16/register", {"key": key(handles[16]), "byte_size": PAGE})
    assert status == 503
    assert "the server holds at most 16 regions (--max-shm-regions)" in answer["error"]
    client.unregister_system_shared_memory()
    with urllib.request.urlopen(f"http://{on.url}/metrics") as r:
        assert "tensord_shm_regions 0\n" in r.read().decode()


def test_the_shared_memory_api_group_can_be_restricted(repo, regions):
    d = Daemon("--threads", "1", SHM, "--http-restricted-api", "shared-memory:admin-key=s3cret", repo=repo)
    try:
        h = regions("r", 8)
        status, answer = post(d.url, "/v2/systemsharedmemory/region/r/register", {"key": key(h), "byte_size": 8})
        assert status == 403, answer
        status, _ = post(d.url, "/v2/systemsharedmemory/region/r/register", {"key": key(h), "byte_size": 8},
                         headers={"admin-key": "s3cret"})
        assert status == 200
    finally:
        d.stop()
