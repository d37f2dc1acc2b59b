"""Stateful models through Triton's sequence batcher (issue 29): the calls and expected answers
of Triton's sequence examples (simple_{http,grpc}_sequence_{sync,stream}_infer_client.py, with
and without --dyna) through tritonclient http, grpc and grpc.aio; implicit state in a built-in
and in an ONNX graph; slots, backlog and idle timeout; and each refusal with Triton's text.
Runs in the gRPC tests' process."""

import asyncio
import json
import queue
import shutil
import threading
import time
import uuid
import zipfile

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.utils import InferenceServerException

from conftest import ROOT, TEST_REPO, Daemon
from model_builders import save_onnx, silero_batched
from serving import call

VALUES = [11, 7, 5, 3, 2, 0, 1]
SILERO_WHEEL = ROOT / "target" / "wheels" / "silero_vad-6.2.3-py3-none-any.whl"
SILERO_MODEL = "silero_vad/data/silero_vad_16k_op15.onnx"
CHUNK, CONTEXT = 512, 64


def accumulator_graph():
    """OUTPUT = ACC_OUT = (START ? 0 : ACC) + INPUT, INT32 [N, 1]: state kept by the server."""
    int32 = lambda name: helper.make_tensor_value_info(name, TensorProto.INT32, ["N", 1])  # noqa: E731
    one = helper.make_tensor("one", TensorProto.INT32, [1], [1])
    nodes = [
        helper.make_node("Sub", ["one", "START"], ["keep"]),
        helper.make_node("Mul", ["ACC", "keep"], ["prev"]),
        helper.make_node("Add", ["prev", "INPUT"], ["sum"]),
        helper.make_node("Identity", ["sum"], ["OUTPUT"]),
        helper.make_node("Identity", ["sum"], ["ACC_OUT"]),
    ]
    return helper.make_graph(nodes, "accumulator", [int32("INPUT"), int32("START"), int32("ACC")],
                             [int32("OUTPUT"), int32("ACC_OUT")], initializer=[one])


def sequence_toml(extra=""):
    return ('[sequence_batching]\n' + extra +
            'control_input = [{ name = "START", control = [{ kind = "CONTROL_SEQUENCE_START", '
            'int32_false_true = [0, 1] }] }]\n'
            'state = [{ input_name = "ACC", output_name = "ACC_OUT", data_type = "TYPE_INT32", dims = [1] }]\n')


ONNX_CONFIG = ('backend = "onnx"\nmax_batch_size = 4\n'
               '[[input]]\nname = "INPUT"\ndatatype = "INT32"\ndims = [1]\n'
               '[[output]]\nname = "OUTPUT"\ndatatype = "INT32"\ndims = [1]\n' + sequence_toml())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    repo = tmp_path_factory.mktemp("sequences") / "repo"
    shutil.copytree(TEST_REPO, repo)
    accumulator = (repo / "simple_string_dyna_sequence" / "config.toml").read_text()
    builtin = 'builtin = "simple_string_dyna_sequence"\nmax_batch_size = '
    # One slot: a second sequence waits in the backlog.
    (repo / "one_slot").mkdir()
    (repo / "one_slot" / "config.toml").write_text(accumulator.replace("max_batch_size = ", builtin).replace(
        f"{builtin}8", f"{builtin}1"))
    (repo / "forgetful").mkdir()
    (repo / "forgetful" / "config.toml").write_text(accumulator.replace("max_batch_size = ", builtin).replace(
        "[sequence_batching]\n", "[sequence_batching]\nmax_sequence_idle_microseconds = 300000\n"))
    # Room for 10,000 live sequences, each reclaimed half a second after its last request.
    (repo / "many").mkdir()
    (repo / "many" / "config.toml").write_text(accumulator.replace("max_batch_size = ", builtin).replace(
        "[sequence_batching]\n", "[sequence_batching]\nmax_sequence_idle_microseconds = 500000\n"
        "oldest = { max_candidate_sequences = 10000 }\n"))
    save_onnx(repo, "onnx_accumulator", accumulator_graph(), config=ONNX_CONFIG)
    # Its state's output declared: a client may ask for it (qa/L0_implicit_state test_request_output).
    save_onnx(repo, "state_output", accumulator_graph(), config=ONNX_CONFIG.replace(
        '[sequence_batching]', '[[output]]\nname = "ACC_OUT"\ndatatype = "INT32"\ndims = [1]\n[sequence_batching]'))
    # A batch waits up to 300 ms for both of its slots to be ready (qa/L0_sequence_batcher
    # test_queue_delay_full_min_util).
    save_onnx(repo, "full_slots", accumulator_graph(), config=ONNX_CONFIG.replace("max_batch_size = 4", "max_batch_size = 2")
              .replace("[sequence_batching]\n", "[sequence_batching]\ndirect = { max_queue_delay_microseconds = 300000, "
                       "minimum_slot_utilization = 1.0 }\n"))
    (repo / "silero_vad" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "models" / "silero_vad" / "config.toml", repo / "silero_vad")
    (repo / "silero_vad" / "1" / "model.onnx").write_bytes(zipfile.ZipFile(SILERO_WHEEL).read(SILERO_MODEL))
    (repo / "silero_vad_batched" / "1").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "models" / "silero_vad_batched" / "config.toml", repo / "silero_vad_batched")
    (repo / "silero_vad_batched" / "1" / "model.onnx").write_bytes(
        silero_batched(zipfile.ZipFile(SILERO_WHEEL).read(SILERO_MODEL)))
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def rest(daemon):
    return httpclient.InferenceServerClient(daemon.url)


@pytest.fixture(scope="module")
def grpc(daemon):
    return grpcclient.InferenceServerClient(daemon.grpc_url)


def one(module, value, name="INPUT"):
    tensor = module.InferInput(name, [1, 1], "INT32")
    tensor.set_data_from_numpy(np.full([1, 1], value, dtype=np.int32))
    return [tensor]


def example_sequences(dyna, offset=0):
    """The examples' three sequences: (model, id, values), as they send them."""
    int_model = "simple_dyna_sequence" if dyna else "simple_sequence"
    string_model = "simple_string_dyna_sequence" if dyna else "simple_sequence"
    string_id = str(1002 + offset) if dyna else str(uuid.uuid4())
    return [(int_model, 1000 + offset * 2, [0] + VALUES), (int_model, 1001 + offset * 2, [100] + [-v for v in VALUES]),
            (string_model, string_id, [20] + [-v for v in VALUES])]


def check_example(dyna, sequences, results):
    """The examples' own check of each answer."""
    (_, id0, _), (_, id1, _), (_, sid, _) = sequences
    r0, r1, rs = results
    for i in range(len(r0)):
        e0 = 1 if i == 0 else VALUES[i - 1]
        e1 = 101 if i == 0 else -VALUES[i - 1]
        if i == 0:
            es = 20 if dyna else 21
        elif dyna:
            es = -VALUES[i - 1] + rs[i - 1]
        else:
            es = -VALUES[i - 1]
        if dyna and i != 0 and VALUES[i - 1] == 1:
            e0, e1, es = e0 + id0, e1 + id1, es + int(sid)
        assert (r0[i], r1[i], rs[i]) == (e0, e1, es), (i, results)


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_sequence_examples_sync(rest, grpc, protocol, dyna):
    client, module = (rest, httpclient) if protocol == "http" else (grpc, grpcclient)
    sequences = example_sequences(dyna)
    results = []
    for model, sequence_id, values in sequences:
        answers = []
        for count, value in enumerate(values, 1):
            result = client.infer(model, one(module, value), outputs=[module.InferRequestedOutput("OUTPUT")],
                                  sequence_id=sequence_id, sequence_start=count == 1, sequence_end=count == len(values))
            answers.append(int(result.as_numpy("OUTPUT")[0][0]))
        results.append(answers)
    check_example(dyna, sequences, results)


@pytest.mark.parametrize("dyna", [False, True], ids=["simple", "dyna"])
def test_the_sequence_examples_over_a_grpc_stream(daemon, dyna):
    client = grpcclient.InferenceServerClient(daemon.grpc_url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sequences = example_sequences(dyna, offset=5)
    # The three sequences' requests interleaved on the one stream, as the example sends them.
    for model, sequence_id, values in sequences:
        for count, value in enumerate(values, 1):
            client.async_stream_infer(model, one(grpcclient, value), request_id=f"{sequence_id}_{count}",
                                      sequence_id=sequence_id, sequence_start=count == 1,
                                      sequence_end=count == len(values))
    by_id = {str(s[1]): [] for s in sequences}
    for _ in range(sum(len(s[2]) for s in sequences)):
        result, error = answers.get(timeout=30)
        assert error is None, error
        by_id[result.get_response().id.split("_")[0]].append(int(result.as_numpy("OUTPUT")[0][0]))
    client.stop_stream()
    check_example(dyna, sequences, [by_id[str(s[1])] for s in sequences])


def test_the_aio_stream_example(daemon):
    async def run():
        client = aioclient.InferenceServerClient(daemon.grpc_url)
        sequences = example_sequences(True, offset=9)

        async def requests():
            for model, sequence_id, values in sequences:
                for count, value in enumerate(values, 1):
                    yield {"model_name": model, "inputs": one(grpcclient, value), "request_id": f"{sequence_id}_{count}",
                           "sequence_id": sequence_id, "sequence_start": count == 1, "sequence_end": count == len(values)}

        by_id = {str(s[1]): [] for s in sequences}
        async for result, error in client.stream_infer(requests()):
            assert error is None, error
            by_id[result.get_response().id.split("_")[0]].append(int(result.as_numpy("OUTPUT")[0][0]))
        await client.close()
        check_example(True, sequences, [by_id[str(s[1])] for s in sequences])
    asyncio.run(run())


def accumulate(client, module, model, sequence_id, values, **kwargs):
    out = []
    for count, value in enumerate(values, 1):
        result = client.infer(model, one(module, value), sequence_id=sequence_id, sequence_start=count == 1,
                              sequence_end=count == len(values), **kwargs)
        out.append(int(result.as_numpy("OUTPUT")[0][0]))
    return out


def test_server_metadata_lists_the_sequence_extension(rest, grpc):
    assert "sequence" in rest.get_server_metadata()["extensions"]
    assert "sequence" in grpc.get_server_metadata().extensions


def test_an_onnx_graph_keeps_its_state_in_the_server(rest, grpc):
    assert accumulate(rest, httpclient, "onnx_accumulator", 7, [1, 2, 3, 4]) == [1, 3, 6, 10]
    assert accumulate(grpc, grpcclient, "onnx_accumulator", "seven", [5, 5]) == [5, 10]
    # The state and the control are the server's: the client sees INPUT and OUTPUT only.
    metadata = rest.get_model_metadata("onnx_accumulator")
    assert [t["name"] for t in metadata["inputs"]] == ["INPUT"]
    assert [t["name"] for t in metadata["outputs"]] == ["OUTPUT"]
    for config in (rest.get_model_config("onnx_accumulator"),
                   grpc.get_model_config("onnx_accumulator", as_json=True)["config"]):
        sequence = config["sequence_batching"]
        assert sequence["state"][0]["input_name"] == "ACC" and sequence["max_sequence_idle_microseconds"] in (1000000, "1000000")
        assert [c["name"] for c in sequence["control_input"]] == ["START"]


def test_interleaved_sequences_keep_their_own_state(rest):
    ids = list(range(500, 504))  # as many as the model has slots (max_batch_size 4)
    sums = {i: 0 for i in ids}
    for step in range(5):
        for i in ids:
            result = rest.infer("onnx_accumulator", one(httpclient, i + step), sequence_id=i,
                                sequence_start=step == 0, sequence_end=step == 4)
            sums[i] += i + step
            assert int(result.as_numpy("OUTPUT")[0][0]) == sums[i]


def test_the_number_42_and_the_string_42_are_different_sequences(rest):
    rest.infer("onnx_accumulator", one(httpclient, 1), sequence_id=42, sequence_start=True)
    with pytest.raises(InferenceServerException) as e:
        rest.infer("onnx_accumulator", one(httpclient, 1), sequence_id="42")
    assert "must specify the START flag on the first request of the sequence" in e.value.message()
    result = rest.infer("onnx_accumulator", one(httpclient, 2), sequence_id=42, sequence_end=True)
    assert int(result.as_numpy("OUTPUT")[0][0]) == 3


def test_a_start_on_a_live_sequence_starts_it_afresh(rest):
    assert accumulate(rest, httpclient, "simple_string_dyna_sequence", "77", [5, 6]) == [5, 11 + 77]
    rest.infer("simple_string_dyna_sequence", one(httpclient, 5), sequence_id="3", sequence_start=True)
    rest.infer("simple_string_dyna_sequence", one(httpclient, 5), sequence_id="3")
    again = rest.infer("simple_string_dyna_sequence", one(httpclient, 1), sequence_id="3", sequence_start=True)
    assert int(again.as_numpy("OUTPUT")[0][0]) == 1


def test_an_idle_sequence_loses_its_slot(rest):
    rest.infer("forgetful", one(httpclient, 5), sequence_id="9", sequence_start=True)
    assert int(rest.infer("forgetful", one(httpclient, 1), sequence_id="9").as_numpy("OUTPUT")[0][0]) == 6
    time.sleep(0.6)
    with pytest.raises(InferenceServerException) as e:
        rest.infer("forgetful", one(httpclient, 1), sequence_id="9")
    assert e.value.message() == ("inference request for sequence 9 to model 'forgetful' must specify the START flag "
                                 "on the first request of the sequence")


def test_a_new_sequence_waits_for_a_slot_and_may_time_out_there(daemon, rest):
    rest.infer("one_slot", one(httpclient, 1), sequence_id="1", sequence_start=True)
    # The one slot is taken: a second sequence waits in the backlog, and its timeout refuses it.
    with pytest.raises(InferenceServerException) as e:
        rest.infer("one_slot", one(httpclient, 2), sequence_id="2", sequence_start=True, timeout=100_000)
    assert (e.value.status(), e.value.message()) == ("503", "timeout of the corresponding sequence has been expired")
    # Without a timeout it waits, and runs once the first sequence ends.
    waiting = httpclient.InferenceServerClient(daemon.url, concurrency=2)
    pending = waiting.async_infer("one_slot", one(httpclient, 2), sequence_id="2", sequence_start=True,
                                  sequence_end=True)
    time.sleep(0.2)
    assert int(rest.infer("one_slot", one(httpclient, 3), sequence_id="1", sequence_end=True)
               .as_numpy("OUTPUT")[0][0]) == 4 + 1
    assert int(pending.get_result(timeout=10).as_numpy("OUTPUT")[0][0]) == 2 + 2


def test_concurrent_sequences_share_batches(daemon, rest):
    before = rest.get_inference_statistics("simple_dyna_sequence")["model_stats"][0]
    clients = [httpclient.InferenceServerClient(daemon.url) for _ in range(8)]
    threads = [threading.Thread(target=accumulate, args=(c, httpclient, "simple_dyna_sequence", 3000 + i, [1, 2, 3]))
               for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = rest.get_inference_statistics("simple_dyna_sequence")["model_stats"][0]
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 24 and executions < inferences, (inferences, executions)


def refused(call_it):
    with pytest.raises(InferenceServerException) as e:
        call_it()
    return str(e.value.status()), e.value.message()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_refusal_has_tritons_text(rest, grpc, protocol):
    client, module = (rest, httpclient) if protocol == "http" else (grpc, grpcclient)
    invalid = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    m = "simple_dyna_sequence"
    assert refused(lambda: client.infer(m, one(module, 1))) == (
        invalid, f"inference request to model '{m}' must specify a non-zero or non-empty correlation ID")
    assert refused(lambda: client.infer(m, one(module, 1), sequence_id=123456)) == (
        invalid, f"inference request for sequence 123456 to model '{m}' must specify the START flag on the first "
        "request of the sequence")
    two = module.InferInput("INPUT", [2, 1], "INT32")
    two.set_data_from_numpy(np.ones([2, 1], np.int32))
    assert refused(lambda: client.infer(m, [two], sequence_id=5, sequence_start=True)) == (
        invalid, f"inference request to model '{m}' must specify batch-size 1 due to requirements of sequence batcher")
    assert refused(lambda: client.infer(m, one(module, 1), sequence_id="5", sequence_start=True)) == (
        invalid, f"sequence batching control 'CORRID' data-type is 'BYTES', but model '{m}' expects 'UINT64'")
    s = "simple_string_dyna_sequence"
    assert refused(lambda: client.infer(s, one(module, 1), sequence_id=5, sequence_start=True)) == (
        invalid, f"sequence batching control 'CORRID' data-type is 'UINT64', but model '{s}' expects 'BYTES'")
    hidden = [module.InferRequestedOutput("ACCUMULATOR_NEXT")]
    assert refused(lambda: client.infer(s, one(module, 1), outputs=hidden, sequence_id="5", sequence_start=True)) == (
        invalid, f"unexpected inference output 'ACCUMULATOR_NEXT' for model '{s}'")
    # The daemon serves on.
    assert accumulate(client, module, s, "8", [1, 1]) == [1, 2 + 8]


def test_malformed_sequence_parameters_are_a_400(daemon):
    def post(parameters):
        body = {"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [1]}],
                "parameters": parameters}
        status, _, answer = call(f"http://{daemon.url}/v2/models/simple_sequence/infer", json.dumps(body).encode())
        return status, json.loads(answer)

    for parameters, text in [({"sequence_id": 1.5, "sequence_start": True}, "'sequence_id' must be an unsigned"),
                             ({"sequence_id": -3, "sequence_start": True}, "'sequence_id' must be an unsigned"),
                             ({"sequence_id": 3, "sequence_start": "yes"}, "'sequence_start' must be a boolean")]:
        status, answer = post(parameters)
        assert status == 400 and text in answer["error"], (parameters, answer)
    # The full 64-bit range, as Triton reads it.
    status, answer = post({"sequence_id": 2**64 - 1, "sequence_start": True, "sequence_end": True})
    assert status == 200 and answer["outputs"][0]["data"] == [2], answer


def test_a_grpc_stream_reports_errors_in_band_and_serves_on(daemon):
    client = grpcclient.InferenceServerClient(daemon.grpc_url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    client.async_stream_infer("simple_sequence", one(grpcclient, 1), sequence_id=31337)  # no START
    client.async_stream_infer("simple_sequence", one(grpcclient, 4), sequence_id=31337, sequence_start=True,
                              sequence_end=True)
    (_, error), (result, ok) = answers.get(timeout=10), answers.get(timeout=10)
    client.stop_stream()
    assert "must specify the START flag" in error.message() and ok is None
    assert int(result.as_numpy("OUTPUT")[0][0]) == 5


def test_grpc_sequence_id_must_be_an_int64_or_a_string_param(daemon):
    import grpc as grpclib
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpclib.insecure_channel(daemon.grpc_url))
    request = service_pb2.ModelInferRequest(model_name="simple_sequence")
    tensor = request.inputs.add(name="INPUT", datatype="INT32", shape=[1, 1])
    tensor.contents.int_contents.append(1)
    request.parameters["sequence_start"].bool_param = True
    for kind, value in [("double_param", 4.0), ("uint64_param", 4), ("bool_param", True)]:
        request.parameters["sequence_id"].Clear()
        setattr(request.parameters["sequence_id"], kind, value)
        with pytest.raises(grpclib.RpcError) as e:
            stub.ModelInfer(request)
        assert (e.value.code(), e.value.details()) == (
            grpclib.StatusCode.INVALID_ARGUMENT,
            "invalid value type for 'sequence_id' parameter, expected int64_param or string_param."), kind
    request.parameters["sequence_id"].Clear()
    request.parameters["sequence_id"].int64_param = 4
    request.parameters["sequence_end"].bool_param = True
    assert stub.ModelInfer(request).outputs[0].name == "OUTPUT"


def audio(seconds, seed):
    """Vowel-like synthetic audio at 16 kHz: a gliding pitch whose harmonics follow three
    formants, in bursts between pauses, over faint noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 110 + 30 * rng.random() + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    formants = [(700, 130), (1200, 150), (2600, 250)]
    voiced = sum(sum(np.exp(-((k * f0 - f) / b) ** 2) for f, b in formants) * np.sin(k * phase) / k ** 0.5
                 for k in range(1, 30))
    bursts = (np.sin(2 * np.pi * 0.25 * t + rng.random()) > 0) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (0.2 * voiced * bursts + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


def chunks_of(samples):
    """Silero's model input for each 512-sample chunk: the chunk after the last 64 samples
    before it (zeros at the start), as silero's own wrapper feeds it."""
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), samples])
    return [padded[i * CHUNK:(i + 1) * CHUNK + CONTEXT].reshape(1, -1) for i in range(len(samples) // CHUNK)]


def silero_by_hand(samples):
    """Silero's model called chunk by chunk with its state carried by hand (onnxruntime)."""
    import onnxruntime as ort
    session = ort.InferenceSession(zipfile.ZipFile(SILERO_WHEEL).read(SILERO_MODEL))
    state, out = np.zeros((2, 1, 128), np.float32), []
    for chunk in chunks_of(samples):
        probability, state = session.run(None, {"input": chunk, "state": state, "sr": np.array(16000, np.int64)})
        out.append(float(probability[0, 0]))
    return np.array(out)


def vad_inputs(module, chunk):
    tensor, rate = module.InferInput("input", list(chunk.shape), "FP32"), module.InferInput("sr", [], "INT64")
    tensor.set_data_from_numpy(chunk)
    rate.set_data_from_numpy(np.array(16000, np.int64))
    return [tensor, rate]


def test_silero_vad_streams_as_its_own_loop_over_rest_and_a_grpc_stream(daemon, rest):
    samples = audio(30, seed=1)
    expected = silero_by_hand(samples)
    assert expected.max() > 0.5 and expected.min() < 0.1, "the audio has voice and pauses"
    chunks = chunks_of(samples)
    over_rest = [float(rest.infer("silero_vad", vad_inputs(httpclient, chunk), sequence_id=71, sequence_start=i == 0,
                                  sequence_end=i == len(chunks) - 1).as_numpy("output")[0, 0])
                 for i, chunk in enumerate(chunks)]
    np.testing.assert_allclose(over_rest, expected, rtol=0, atol=1e-6)
    client = grpcclient.InferenceServerClient(daemon.grpc_url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for i, chunk in enumerate(chunks):
        client.async_stream_infer("silero_vad", vad_inputs(grpcclient, chunk), sequence_id="vad-stream",
                                  sequence_start=i == 0, sequence_end=i == len(chunks) - 1)
    over_grpc = []
    for _ in chunks:
        result, error = answers.get(timeout=60)
        assert error is None, error
        over_grpc.append(float(result.as_numpy("output")[0, 0]))
    client.stop_stream()
    np.testing.assert_allclose(over_grpc, expected, rtol=0, atol=1e-6)


def test_ten_interleaved_vad_streams_answer_as_ten_separate_ones(daemon):
    streams = [audio(3, seed=10 + k) for k in range(10)]
    expected = [silero_by_hand(s) for s in streams]
    client = grpcclient.InferenceServerClient(daemon.grpc_url)
    answers = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    split = [chunks_of(samples) for samples in streams]
    chunks = len(split[0])
    for i in range(chunks):
        for k, stream in enumerate(split):
            client.async_stream_infer("silero_vad", vad_inputs(grpcclient, stream[i]), request_id=f"{k}",
                                      sequence_id=9000 + k, sequence_start=i == 0, sequence_end=i == chunks - 1)
    got = {k: [] for k in range(10)}
    for _ in range(chunks * 10):
        result, error = answers.get(timeout=60)
        assert error is None, error
        got[int(result.get_response().id)].append(float(result.as_numpy("output")[0, 0]))
    client.stop_stream()
    for k in range(10):
        np.testing.assert_allclose(got[k], expected[k], rtol=0, atol=1e-6)


def test_vad_streams_batched_together_answer_as_separate_ones(daemon):
    """silero_vad_batched: the steps of 12 streams, each on its own gRPC stream, run in batches
    (oldest strategy), and each stream's probabilities are still silero's own loop's."""
    streams = [audio(3, seed=40 + k) for k in range(12)]
    expected = [silero_by_hand(s) for s in streams]
    split = [chunks_of(samples) for samples in streams]
    chunks = len(split[0])
    answers = [queue.Queue() for _ in streams]
    clients = [grpcclient.InferenceServerClient(daemon.grpc_url) for _ in streams]
    for client, box in zip(clients, answers):
        client.start_stream(callback=lambda result, error, box=box: box.put((result, error)))
    for i in range(chunks):
        for k, (client, stream) in enumerate(zip(clients, split)):
            tensor = grpcclient.InferInput("input", list(stream[i].shape), "FP32")
            tensor.set_data_from_numpy(stream[i])
            client.async_stream_infer("silero_vad_batched", [tensor], sequence_id=9100 + k,
                                      sequence_start=i == 0, sequence_end=i == chunks - 1)
    for k, (client, box) in enumerate(zip(clients, answers)):
        got = []
        for _ in range(chunks):
            result, error = box.get(timeout=60)
            assert error is None, error
            got.append(float(result.as_numpy("output")[0, 0]))
        client.stop_stream()
        np.testing.assert_allclose(got, expected[k], rtol=0, atol=1e-6)
    stats = httpclient.InferenceServerClient(daemon.url).get_inference_statistics("silero_vad_batched")
    stats = stats["model_stats"][0]
    assert stats["inference_count"] == chunks * 12
    assert stats["execution_count"] < stats["inference_count"] / 2, stats


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_abandoned_sequences_are_reclaimed_and_their_memory_with_them(daemon):
    import http.client

    connection = http.client.HTTPConnection(daemon.url, timeout=10)

    def start(sequence_id):
        body = json.dumps({"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [1]}],
                           "parameters": {"sequence_id": sequence_id, "sequence_start": True}})
        connection.request("POST", "/v2/models/many/infer", body)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()

    def open_and_abandon(first):
        for i in range(10_000):
            start(str(first + i))
        time.sleep(1.0)  # twice the idle time

    open_and_abandon(1)
    settled = rss_kib(daemon.proc.pid)
    open_and_abandon(100_001)
    # Every sequence lost its slot: the next request without START is refused.
    connection.request("POST", "/v2/models/many/infer", json.dumps(
        {"inputs": [{"name": "INPUT", "shape": [1, 1], "datatype": "INT32", "data": [1]}],
         "parameters": {"sequence_id": "100001"}}))
    response = connection.getresponse()
    assert response.status == 400 and b"must specify the START flag" in response.read()
    assert rss_kib(daemon.proc.pid) - settled < 4096, (settled, rss_kib(daemon.proc.pid))


def test_a_declared_state_output_may_be_asked_for(rest):
    outputs = [httpclient.InferRequestedOutput("ACC_OUT"), httpclient.InferRequestedOutput("OUTPUT")]
    first = rest.infer("state_output", one(httpclient, 4), outputs=outputs, sequence_id=1, sequence_start=True)
    second = rest.infer("state_output", one(httpclient, 3), outputs=outputs, sequence_id=1, sequence_end=True)
    assert [int(first.as_numpy(n)[0][0]) for n in ("ACC_OUT", "OUTPUT")] == [4, 4]
    assert [int(second.as_numpy(n)[0][0]) for n in ("ACC_OUT", "OUTPUT")] == [7, 7]


def test_sequences_of_one_id_follow_each_other_through_the_backlog(daemon, rest):
    # qa/L0_sequence_batcher test_backlog_same_correlation_id: the one slot is taken, and two
    # sequences of the same id queue behind it, each kept apart from the other.
    rest.infer("one_slot", one(httpclient, 1), sequence_id="50", sequence_start=True)
    client = httpclient.InferenceServerClient(daemon.url, concurrency=4)
    later = [client.async_infer("one_slot", one(httpclient, v), sequence_id="60", sequence_start=start,
                                sequence_end=end) for v, start, end in [(10, True, False), (1, False, True)]]
    time.sleep(0.1)
    again = [client.async_infer("one_slot", one(httpclient, v), sequence_id="60", sequence_start=start,
                                sequence_end=end) for v, start, end in [(100, True, False), (5, False, True)]]
    time.sleep(0.1)
    rest.infer("one_slot", one(httpclient, 1), sequence_id="50", sequence_end=True)
    answers = [int(r.get_result(timeout=10).as_numpy("OUTPUT")[0][0]) for r in later + again]
    assert answers == [10, 11 + 60, 100, 105 + 60], answers


def test_a_direct_batch_waits_for_its_minimum_slot_utilization(daemon, rest):
    # Alone, a request waits the full delay for the other slot; with both slots ready, at once.
    started = time.perf_counter()
    rest.infer("full_slots", one(httpclient, 1), sequence_id=1, sequence_start=True)
    alone = time.perf_counter() - started
    client = httpclient.InferenceServerClient(daemon.url, concurrency=2)
    rest.infer("full_slots", one(httpclient, 1), sequence_id=2, sequence_start=True)  # waits, too
    started = time.perf_counter()
    pair = [client.async_infer("full_slots", one(httpclient, 5), sequence_id=i) for i in (1, 2)]
    results = [int(r.get_result(timeout=10).as_numpy("OUTPUT")[0][0]) for r in pair]
    together = time.perf_counter() - started
    assert results == [6, 6]
    assert alone >= 0.3 and together < 0.25, (alone, together)
