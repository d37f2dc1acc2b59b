"""tritonclient.http against the running daemon: every datatype, binary and JSON."""

import json

import ml_dtypes
import numpy as np
import pytest
import tritonclient.http as httpclient
from serving import call
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

NUMERIC = [
    np.bool_, np.uint8, np.uint16, np.uint32, np.uint64,
    np.int8, np.int16, np.int32, np.int64,
    np.float16, np.float32, np.float64,
]


@pytest.fixture(scope="module")
def client(url):
    c = httpclient.InferenceServerClient(url, connection_timeout=30, network_timeout=60)
    yield c
    c.close()


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def identity(client, array, binary_in, binary_out, datatype=None):
    inp = httpclient.InferInput("INPUT0", list(array.shape), datatype or np_to_triton_dtype(array.dtype))
    inp.set_data_from_numpy(array, binary_data=binary_in)
    return identity_request(client, inp, binary_out)


def identity_request(client, inp, binary_out):
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary_out)
    return client.infer("identity", [inp], outputs=[out])


def test_server_and_model_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    meta = client.get_server_metadata()
    assert meta["name"] == "tensord"
    assert "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("add_sub")
    assert model["name"] == "add_sub"
    assert model["versions"] == ["1"]
    assert [i["name"] for i in model["inputs"]] == ["INPUT0", "INPUT1"]
    assert model["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    assert [o["name"] for o in model["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert client.get_model_metadata("add_sub", model_version="1")["name"] == "add_sub"


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_every_numeric_datatype(client, dtype, binary_in, binary_out):
    array = sample(dtype, (2, 3), seed=7)
    result = identity(client, array, binary_in, binary_out)
    got = result.as_numpy("OUTPUT0")
    assert got.dtype == array.dtype
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, array)
    out = result.get_output("OUTPUT0")
    assert out["datatype"] == np_to_triton_dtype(array.dtype)
    assert ("binary_data_size" in out.get("parameters", {})) == binary_out


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_bytes(client, binary_in, binary_out):
    array = np.array([[b"hello", b""], [b"tensor \xe2\x9c\x93", b"d"]], dtype=np.object_)
    got = identity(client, array, binary_in, binary_out, "BYTES").as_numpy("OUTPUT0")
    assert got.shape == (2, 2)
    if binary_out:
        assert got.tolist() == array.tolist()
    else:
        # JSON carries BYTES as strings; tritonclient hands them back as str.
        assert got.tolist() == [[v.decode() for v in row] for row in array.tolist()]


def test_bf16_binary_round_trip(client):
    # tritonclient carries BF16 only in binary, as ml_dtypes.bfloat16; tensord also answers in JSON.
    values = np.array([[1.0, -2.5, 3.140625, 65280.0]], dtype=ml_dtypes.bfloat16)
    inp = httpclient.InferInput("INPUT0", [1, 4], "BF16")
    inp.set_data_from_numpy(values, binary_data=True)
    result = identity_request(client, inp, binary_out=True)
    got = result.as_numpy("OUTPUT0")
    assert got.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(got.astype(np.float32), values.astype(np.float32))
    as_json = identity_request(client, inp, binary_out=False)
    assert as_json.get_output("OUTPUT0")["data"] == [1.0, -2.5, 3.140625, 65280.0]


def test_add_sub_mixed_inputs_and_per_output_choice(client):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    in0 = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    in0.set_data_from_numpy(a, binary_data=True)
    in1 = httpclient.InferInput("INPUT1", [1, 16], "INT32")
    in1.set_data_from_numpy(b, binary_data=False)
    outs = [
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
    ]
    result = client.infer("add_sub", [in0, in1], outputs=outs, request_id="req-42")
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "add_sub"
    assert response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    assert response["outputs"][0]["data"] == (a - b).ravel().tolist()
    assert response["outputs"][1]["parameters"] == {"binary_data_size": 64}
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_output_subset(client):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    ins = []
    for name, arr in (("INPUT0", a), ("INPUT1", a * 2)):
        i = httpclient.InferInput(name, [2, 16], "INT32")
        i.set_data_from_numpy(arr)
        ins.append(i)
    result = client.infer("add_sub", ins, outputs=[httpclient.InferRequestedOutput("OUTPUT1")])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), -a)
    assert result.as_numpy("OUTPUT0") is None


def test_binary_data_output_is_inherited(client):
    # No per-output choice: the request-level flag decides (tritonclient sends it when outputs=None).
    a = np.arange(64, dtype=np.int32).reshape(4, 16)
    ins = []
    for name, arr in (("INPUT0", a), ("INPUT1", a)):
        i = httpclient.InferInput(name, [4, 16], "INT32")
        i.set_data_from_numpy(arr, binary_data=True)
        ins.append(i)
    result = client.infer("add_sub", ins)
    outputs = result.get_response()["outputs"]
    assert all(o["parameters"]["binary_data_size"] == 256 for o in outputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(a))


def test_batch_of_four_json(client):
    a = np.arange(64, dtype=np.int32).reshape(4, 16)
    b = np.arange(64, 128, dtype=np.int32).reshape(4, 16)
    ins = []
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        i = httpclient.InferInput(name, [4, 16], "INT32")
        i.set_data_from_numpy(arr, binary_data=False)
        ins.append(i)
    outs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("OUTPUT0", "OUTPUT1")]
    result = client.infer("add_sub", ins, outputs=outs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_output("OUTPUT0")["shape"] == [4, 16]


def test_sixteen_mib_tensor(client):
    array = sample(np.float32, (4, 1024, 1024), seed=3)
    assert array.nbytes == 16 * 1024 * 1024
    got = identity(client, array, True, True).as_numpy("OUTPUT0")
    np.testing.assert_array_equal(got, array)


def test_errors_are_raised_with_messages(client):
    a = np.zeros((1, 15), dtype=np.int32)
    ins = []
    for name in ("INPUT0", "INPUT1"):
        i = httpclient.InferInput(name, [1, 15], "INT32")
        i.set_data_from_numpy(a)
        ins.append(i)
    with pytest.raises(InferenceServerException, match=r"shape \[1, 15\].*\[-1, 16\]") as e:
        client.infer("add_sub", ins)
    assert e.value.status() == "400"
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'nope' is not found"):
        client.infer("nope", ins)
    with pytest.raises(InferenceServerException, match="Request for unknown model: 'add_sub' version 7 is not found"):
        client.infer("add_sub", ins, model_version="7")
    assert not client.is_model_ready("nope")
    assert client.is_server_live()


def test_parameters_no_model_reads_are_refused_not_ignored(client, url):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    ins = []
    for name in ("INPUT0", "INPUT1"):
        i = httpclient.InferInput(name, [1, 16], "INT32")
        i.set_data_from_numpy(a)
        ins.append(i)
    cases = [
        ({"parameters": {"my_custom_parameter": 42}},
         "request parameter 'my_custom_parameter': not supported"),
        ({"sequence_id": 7}, "request parameter 'sequence_id': model 'add_sub' has no sequence batching"),
        ({"priority": 1}, "request parameter 'priority': tensord models have no priority levels"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InferenceServerException) as e:
            client.infer("add_sub", ins, **kwargs)
        assert e.value.status() == "400" and message in e.value.message(), (kwargs, e.value.message())
    # Their "not set" values (0, "" or false) are no-ops; the known parameters work as before.
    def post(body):
        status, _, answer = call(f"http://{url}/v2/models/add_sub/infer", json.dumps(body).encode())
        return status, json.loads(answer)

    data = list(range(16))
    tensor = {"shape": [1, 16], "datatype": "INT32", "data": data}
    body = {"parameters": {"sequence_id": 0, "sequence_start": False, "priority": 0, "timeout": 0},
            "inputs": [dict(name="INPUT0", **tensor), dict(name="INPUT1", **tensor)],
            "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": False}}]}
    status, answer = post(body)
    assert status == 200 and answer["outputs"][0]["data"] == [2 * v for v in data], answer
    # tritonclient sends sequence_start only with an id; alone, it is refused as well.
    status, answer = post(dict(body, parameters={"sequence_start": True}))
    assert status == 400 and answer["error"].startswith(
        "request parameter 'sequence_start': model 'add_sub' has no sequence batching"), answer
    # Shared memory is read (test_shared_memory): a region no one registered is not found.
    body["outputs"][0]["parameters"]["shared_memory_region"] = "r"
    status, answer = post(body)
    assert (status, answer) == (404, {"error": "Unable to find shared memory region: 'r'"})
    del body["outputs"][0]["parameters"]["shared_memory_region"]
    body["inputs"][1]["parameters"] = {"scale": 2}
    status, answer = post(body)
    assert status == 400 and answer["error"].startswith("input 'INPUT1' parameter 'scale': not supported"), answer
    assert answer["error"].endswith("(this takes: binary_data_size, shared_memory_region, shared_memory_offset, "
                                    "shared_memory_byte_size)")
    # Keys no V2 object defines are refused too; KServe's model_name must name the URL's model.
    del body["inputs"][1]["parameters"]
    status, answer = post(dict(body, output=[{"name": "OUTPUT1"}]))
    assert status == 400 and "output: not a field of an inference request" in answer["error"], answer
    status, answer = post(dict(body, model_name="identity"))
    assert (status, answer) == (400, {"error": "the body's model_name 'identity' is not the URL's model 'add_sub'"})
    status, answer = post(dict(body, model_name="add_sub"))
    assert status == 200 and answer["outputs"][0]["data"] == [2 * v for v in data], answer
