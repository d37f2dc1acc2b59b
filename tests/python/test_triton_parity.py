"""Places where tensord once answered differently from Triton 2.51 on the same repository
(issue 28): each case here is Triton's answer."""

import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import Daemon


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("parity")
    (repo / "add_sub").mkdir()
    (repo / "add_sub" / "config.toml").write_text('backend = "builtin"\n')
    (repo / "id_mv").mkdir()
    for v in (1, 2, 3):
        (repo / "id_mv" / str(v)).mkdir()
    (repo / "id_mv" / "config.pbtxt").write_text("""
        backend: "identity"
        version_policy { specific { versions: [ 1, 3 ] } }
        input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] } ]
    """)
    (repo / "id_bytes").mkdir()
    (repo / "id_bytes" / "config.pbtxt").write_text("""
        backend: "identity"
        input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
        output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
    """)
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


def stats(server, model):
    s = httpclient.InferenceServerClient(server.url).get_inference_statistics(model)["model_stats"][0]
    i = s["inference_stats"]
    return {"executions": s["execution_count"], "success": i["success"]["count"], "fail": i["fail"]["count"]}


def add_sub_inputs(values=None, datatype="INT32"):
    a = np.arange(16, dtype=np.int32).reshape(1, 16) if values is None else values
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        i = httpclient.InferInput(name, list(a.shape), datatype)
        i.set_data_from_numpy(a)
        inputs.append(i)
    return inputs


def refused(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    return e.value


def test_outputs_are_checked_before_the_model_runs(server):
    client = httpclient.InferenceServerClient(server.url)
    before = stats(server, "add_sub")
    out = httpclient.InferRequestedOutput
    for outputs, text in [([out("OUTPUT9")], "unknown output 'OUTPUT9'"),
                          ([out("OUTPUT0"), out("OUTPUT0")], "output 'OUTPUT0' requested twice")]:
        e = refused(lambda: client.infer("add_sub", add_sub_inputs(), outputs=outputs))
        assert e.status() == "400" and text in e.message(), e
    assert stats(server, "add_sub") == before
    # Classification of a BYTES output cannot be done: refused, and the model never runs.
    before = stats(server, "id_bytes")
    i = httpclient.InferInput("INPUT0", [2], "BYTES")
    i.set_data_from_numpy(np.array([b"a", b"b"], dtype=np.object_))
    e = refused(lambda: client.infer("id_bytes", [i], outputs=[out("OUTPUT0", class_count=1)]))
    assert "classification needs a numeric output, not BYTES" in e.message()
    assert stats(server, "id_bytes") == before


def test_failures_are_counted_as_triton_counts_them(server):
    """Triton's core records a failure only for a request that reached the model's scheduler
    (InferenceRequest::RespondIfError after enqueue: a backend error, a full queue, a queue
    timeout); a request refused while it is normalised (a shape, a datatype, an unknown
    output) returns its error to the frontend and is counted nowhere."""
    client = httpclient.InferenceServerClient(server.url)
    before = stats(server, "add_sub")
    client.infer("add_sub", add_sub_inputs())
    refused(lambda: client.infer("add_sub", add_sub_inputs(np.zeros((1, 15), np.int32))))  # shape
    refused(lambda: client.infer("add_sub", add_sub_inputs(np.zeros((1, 16), np.int64), "INT64")))  # datatype
    refused(lambda: client.infer("add_sub", add_sub_inputs(),
                                 outputs=[httpclient.InferRequestedOutput("NOPE")]))  # output
    refused(lambda: client.infer("add_sub", add_sub_inputs()[:1]))  # missing input
    client.infer("add_sub", add_sub_inputs())
    after = stats(server, "add_sub")
    assert {k: after[k] - before[k] for k in after} == {"executions": 2, "success": 2, "fail": 0}


def test_identity_models_report_the_identity_backend(server):
    h = httpclient.InferenceServerClient(server.url)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    assert h.get_model_metadata("id_bytes")["platform"] == "identity"
    config = h.get_model_config("id_bytes")
    assert (config["platform"], config["backend"]) == ("identity", "identity")
    assert g.get_model_metadata("id_bytes").platform == "identity"
    c = g.get_model_config("id_bytes").config
    assert (c.platform, c.backend) == ("identity", "identity")
    assert h.get_model_metadata("add_sub")["platform"] == "builtin"


def test_per_version_metadata_lists_that_version(server):
    h = httpclient.InferenceServerClient(server.url)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    assert h.get_model_metadata("id_mv")["versions"] == ["1", "3"]
    assert h.get_model_metadata("id_mv", model_version="1")["versions"] == ["1"]
    assert list(g.get_model_metadata("id_mv", model_version="3").versions) == ["3"]
    assert list(g.get_model_metadata("id_mv").versions) == ["1", "3"]


def post(server, model, body, headers=None):
    req = urllib.request.Request(f"http://{server.url}/v2/models/{model}/infer", data=body,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_classification_zero_is_no_classification(server):
    """tritonclient leaves out class_count=0 (its default); a client that sends it gets the
    tensor itself, as from Triton."""
    body = {"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "INT32", "data": [5, 6, 7, 8]}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 0}}]}
    status, answer = post(server, "id_mv", json.dumps(body).encode())
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0] == {"name": "OUTPUT0", "datatype": "INT32", "shape": [4],
                                                "data": [5, 6, 7, 8]}


def test_json_minus_zero_is_zero_for_integers(server):
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "INT32", "data": [1, 2, 3, 4]}]})
    status, answer = post(server, "id_mv", body.replace("[1, 2, 3, 4]", "[-0, 2, -0, 4]").encode())
    assert status == 200, answer
    assert json.loads(answer)["outputs"][0]["data"] == [0, 2, 0, 4]
    status, answer = post(server, "id_mv", body.replace("[1, 2, 3, 4]", "[1E2, 2, 3, 4]").encode())
    assert status == 400, answer  # a float literal is not an INT32, as Triton's parser has it


def test_a_raw_bytes_body_needs_an_input_of_shape_one(server):
    """Triton's qa/L0_http test_byte_too_many_elements: the count of a raw BYTES body cannot be
    known, so it is refused rather than guessed."""
    status, answer = post(server, "id_bytes", b"427", {"Inference-Header-Content-Length": "0"})
    assert status == 400
    assert json.loads(answer) == {
        "error": "For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"}
    with socket.create_connection(server.url.split(":")) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
