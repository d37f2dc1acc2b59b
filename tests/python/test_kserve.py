"""KServe's InferenceRESTClient against the running daemon."""

import asyncio

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


def run(coro):
    return asyncio.run(coro)


async def infer(url, request, model, headers=None):
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        return await client.infer(f"http://{url}", request, model_name=model, response_headers=headers)
    finally:
        await client.close()


def test_binary_round_trip(url):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 5, dtype=np.int32)
    inputs = []
    for name, arr in (("INPUT0", a), ("INPUT1", b)):
        i = InferInput(name, list(arr.shape), "INT32")
        i.set_data_from_numpy(arr, binary_data=True)
        inputs.append(i)
    request = InferRequest(
        model_name="add_sub", infer_inputs=inputs, request_id="k1",
        parameters={"binary_data_output": True},
    )
    headers = {}
    response = run(infer(url, request, "add_sub", headers))
    assert headers["content-type"] == "application/octet-stream"
    json_len = int(headers["inference-header-content-length"])
    assert int(headers["content-length"]) == json_len + 2 * 128
    assert response.id == "k1"
    assert response.model_name == "add_sub"
    got = {o.name: o.as_numpy() for o in response.outputs}
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)


def test_json_round_trip_fp32(url):
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    i = InferInput("INPUT0", [3, 4], "FP32")
    i.set_data_from_numpy(x, binary_data=False)
    response = run(infer(url, InferRequest(model_name="identity", infer_inputs=[i]), "identity"))
    np.testing.assert_array_equal(response.outputs[0].as_numpy(), x)
    assert response.outputs[0].datatype == "FP32"
