"""The same cases through every front door, expecting the same outcome: V2 over REST
(tritonclient.http) and gRPC (tritonclient.grpc), TF Serving over REST and gRPC (ovmsclient).
The engine owns the lifecycle (lookup, version, trace, statistics), so a door that disagrees has
translated something wrongly. Also the model config round trip: the config a door reports,
changed in one field, loads back through the load API of either protocol.

scripts/test runs this module in the gRPC process (tritonclient.grpc and KServe's protos
cannot share one)."""

import json
import shutil

import numpy as np
import ovmsclient
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from conftest import EXPLICIT, SERVED_MODELS, TEST_REPO, Daemon, record_served_models
from model_builders import double_graph, save_onnx, write_safetensors_mlp

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)
DOORS = ("v2_rest", "v2_grpc", "tfs_rest", "tfs_grpc")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    repo = tmp_path_factory.mktemp("doors") / "repo"
    shutil.copytree(TEST_REPO, repo)
    (repo / "broken").mkdir()
    (repo / "broken" / "config.toml").write_text('backend = "builtin"\nbuiltin = "identity"\ninstance_count = 0\n')
    save_onnx(repo, "double", double_graph(),
              config='backend = "onnx"\n[onnxruntime]\nintra_op_threads = 1\ngraph_optimization_level = "basic"\n')
    # The same graph under a Triton config, lists of messages written without a colon as Triton's are.
    save_onnx(repo, "double_pbtxt", double_graph(), config=None)
    (repo / "double_pbtxt" / "config.pbtxt").write_text(
        'name: "double_pbtxt"\nbackend: "onnxruntime"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n'
        'output [\n  {\n    name: "y"\n    data_type: TYPE_FP32\n    dims: [ -1, 3 ]\n  }\n]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    # tensord's own settings, which Triton's message has no field for.
    (repo / "slow_add").mkdir()
    (repo / "slow_add" / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "add_sub"\nexecution_delay_microseconds = 1000\n')
    (repo / "probe").mkdir()
    spec = 'datatype = "UINT8"\ndims = [-1, "8:64", "8:64", 3]\nlayout = "NHWC"\n'
    (repo / "probe" / "config.toml").write_text(
        f'backend = "builtin"\nbuiltin = "identity"\n[[input]]\nname = "IMAGE"\n{spec}'
        f'[input.image]\nexif_orientation = true\n[[output]]\nname = "OUTPUT0"\n{spec}')
    write_safetensors_mlp(np.random.default_rng(5), repo, "st_mlp", [8, 16, 4], "gelu",
                          'max_batch_size = 16\n[[input]]\nname = "features"\ndatatype = "FP32"\ndims = [8]\n')
    d = Daemon("--threads", "2", *EXPLICIT, repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def clients(daemon):
    return {
        "v2_rest": httpclient.InferenceServerClient(daemon.url),
        "v2_grpc": grpcclient.InferenceServerClient(daemon.grpc_url),
        "tfs_rest": ovmsclient.make_http_client(daemon.url),
        "tfs_grpc": ovmsclient.make_grpc_client(daemon.grpc_url),
    }


def outcome(call):
    """("ok", outputs) or ("error", kind) in the protocol-neutral words of each door's status."""
    try:
        return "ok", call()
    except InferenceServerException as e:
        kinds = {"400": "invalid", "404": "not_found", "503": "unavailable", "StatusCode.INVALID_ARGUMENT": "invalid",
                 "StatusCode.NOT_FOUND": "not_found", "StatusCode.UNAVAILABLE": "unavailable"}
        return "error", kinds.get(str(e.status()), str(e.status()))
    except ovmsclient.tfs_compat.base.errors.InvalidInputError:
        return "error", "invalid"
    except ovmsclient.tfs_compat.base.errors.ModelNotFoundError:
        return "error", "not_found"
    except ConnectionError as e:
        # ovmsclient's word for 503 and UNAVAILABLE alike.
        return "error", "unavailable" if "not ready" in str(e) else f"connection: {e}"


def infer(clients, door, model, inputs):
    """Runs `inputs` (name → array) on `model` through `door`; returns name → array."""
    client = clients[door]
    if door.startswith("tfs"):
        out = client.predict(inputs, model)
        return out if isinstance(out, dict) else {"only": out}
    module = httpclient if door == "v2_rest" else grpcclient
    tensors = []
    for name, array in inputs.items():
        datatype = {np.int32: "INT32", np.float32: "FP32", np.int64: "INT64"}[array.dtype.type]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    response = result.get_response()
    names = [o["name"] for o in response["outputs"]] if door == "v2_rest" else [o.name for o in response.outputs]
    return {name: result.as_numpy(name) for name in names}


def metadata(clients, door, model):
    client = clients[door]
    if door.startswith("tfs"):
        return client.get_model_metadata(model)
    return client.get_model_metadata(model)


CASES = [
    # (what, model, inputs, expected outcome)
    ("good request", "add_sub", {"INPUT0": A, "INPUT1": B},
     ("ok", {"OUTPUT0": A + B, "OUTPUT1": A - B})),
    ("unknown model", "no_such_model", {"INPUT0": A}, ("error", "not_found")),
    ("missing input", "add_sub", {"INPUT0": A}, ("error", "invalid")),
    ("unknown input", "add_sub", {"INPUT0": A, "INPUT1": B, "EXTRA": B}, ("error", "invalid")),
    ("wrong datatype", "add_sub", {"INPUT0": A.astype(np.int64), "INPUT1": B}, ("error", "invalid")),
    ("over max_batch_size", "add_sub", {"INPUT0": np.zeros((65, 16), np.int32), "INPUT1": np.zeros((65, 16), np.int32)},
     ("error", "invalid")),
    ("broken model", "broken", {"INPUT0": A}, ("error", "unavailable")),
    ("onnx graph", "double", {"x": np.array([[1.5, -2.0, 0.25]], np.float32)},
     ("ok", {"y": np.array([[3.0, -4.0, 0.5]], np.float32)})),
    ("config.pbtxt model", "double_pbtxt", {"x": np.array([[1.5, -2.0, 0.25]], np.float32)},
     ("ok", {"y": np.array([[3.0, -4.0, 0.5]], np.float32)})),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("what,model,inputs,expected", CASES, ids=[c[0] for c in CASES])
def test_every_door_gives_the_same_outcome(clients, door, what, model, inputs, expected):
    if (door, what) == ("tfs_rest", "wrong datatype"):
        pytest.skip("TF Serving's JSON carries no datatype: its numbers take the input's")
    got = outcome(lambda: infer(clients, door, model, inputs))
    assert got[0] == expected[0], (door, what, got)
    if got[0] == "error":
        assert got[1] == expected[1], (door, what, got)
        return
    outputs = got[1]
    if "only" in outputs:  # TF Serving answers a one-output model with the tensor itself
        outputs = {next(iter(expected[1])): outputs["only"]}
    assert set(outputs) == set(expected[1]), (door, outputs)
    for name, want in expected[1].items():
        np.testing.assert_array_equal(outputs[name], want)


@pytest.mark.parametrize("door", DOORS)
def test_metadata_of_a_broken_model_is_unavailable_through_every_door(clients, door):
    assert outcome(lambda: metadata(clients, door, "broken")) == ("error", "unavailable")


def test_each_door_is_counted_once_per_request_in_the_statistics(clients):
    client = clients["v2_rest"]

    def counts():
        stats = client.get_inference_statistics("add_sub")["model_stats"][0]
        return stats["inference_count"], stats["inference_stats"]["success"]["count"]

    before = counts()
    for door in DOORS:
        infer(clients, door, "add_sub", {"INPUT0": A, "INPUT1": B})
        # A request refused before the model runs costs it nothing.
        outcome(lambda: infer(clients, door, "add_sub", {"INPUT0": A}))
    after = counts()
    assert (after[0] - before[0], after[1] - before[1]) == (len(DOORS), len(DOORS))
    grpc_stats = clients["v2_grpc"].get_inference_statistics("add_sub").model_stats[0]
    assert grpc_stats.inference_count == after[0]


def changed_config(client, name, protocol):
    """The model's config as `protocol` reports it, with its instance count changed to 2."""
    if protocol == "rest":
        config = client.get_model_config(name)
    else:
        config = client.get_model_config(name, as_json=True)["config"]
    config["instance_group"][0]["count"] = 2
    return config


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_the_config_a_door_reports_loads_back_with_one_field_changed(clients, protocol):
    client = clients["v2_rest" if protocol == "rest" else "v2_grpc"]
    features = {"features": np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)}
    mlp_before = infer(clients, "v2_rest", "st_mlp", features)
    for name in ("add_sub", "identity", "image_probe", "double", "double_pbtxt", "slow_add", "probe", "st_mlp"):
        before = clients["v2_rest"].get_model_config(name)
        config = changed_config(client, name, protocol)
        client.load_model(name, config=json.dumps(config))
        assert client.is_model_ready(name), name
        reported = clients["v2_rest"].get_model_config(name)
        assert reported["instance_group"][0]["count"] == 2, (name, reported)
        assert reported["parameters"] == before["parameters"], (name, reported)
        if name == "st_mlp":  # its architecture came back with the config: the same answers
            after = infer(clients, "v2_rest", name, features)
            for output, values in mlp_before.items():
                np.testing.assert_array_equal(after[output], values)
        if name in ("slow_add", "probe", "st_mlp"):
            assert "tensord" in reported["parameters"], reported
        assert reported["input"] == clients["v2_rest"].get_model_config(name)["input"]
        if name == "add_sub":
            assert outcome(lambda: infer(clients, "v2_rest", name, {"INPUT0": A, "INPUT1": B}))[0] == "ok"
        if name == "double":  # the onnxruntime backend's settings are reported, and load back
            assert reported["parameters"] == {"intra_op_thread_count": {"string_value": "1"}}, reported
            assert reported["optimization"]["graph"] == {"level": -1}, reported
        if name.startswith("double"):
            out = infer(clients, "v2_grpc", name, {"x": np.array([[2.0, 0.5, -1.0]], np.float32)})
            np.testing.assert_array_equal(out["y"], [[4.0, 1.0, -2.0]])
        client.load_model(name)  # back to the repository's own config


def test_a_config_with_a_typo_is_refused_naming_the_field(clients):
    config = clients["v2_rest"].get_model_config("add_sub")
    config["max_batch_sise"] = config.pop("max_batch_size")
    with pytest.raises(InferenceServerException) as e:
        clients["v2_rest"].load_model("add_sub", config=json.dumps(config))
    assert e.value.status() == "400" and "max_batch_sise" in e.value.message(), e.value.message()
    assert clients["v2_rest"].is_model_ready("add_sub"), "the served version stays"


def test_a_load_request_cannot_make_a_model_hold_its_workers_without_end(clients):
    config = clients["v2_rest"].get_model_config("slow_add")
    config["parameters"]["tensord"]["string_value"] = 'builtin = "add_sub"\nexecution_delay_microseconds = 86400000000\n'
    with pytest.raises(InferenceServerException) as e:
        clients["v2_rest"].load_model("slow_add", config=json.dumps(config))
    assert e.value.status() == "400" and "over the limit of 10000000" in e.value.message(), e.value.message()
    assert clients["v2_rest"].is_model_ready("slow_add")


def zeros_outcome(client, name):
    """The outcome of `name` run on zeros of its metadata's shapes (-1 read as 1); None for a
    model that takes BYTES (images, strings) or any datatype, which zeros cannot stand for, or
    a stateful one."""
    inputs = []
    if "sequence_batching" in client.get_model_config(name):
        return None
    for spec in client.get_model_metadata(name)["inputs"]:
        if spec["datatype"] == "BYTES" or triton_to_np_dtype(spec["datatype"]) is None:
            return None
        shape = [1 if d == -1 else d for d in spec["shape"]]
        tensor = httpclient.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(np.zeros(shape, triton_to_np_dtype(spec["datatype"])))
        inputs.append(tensor)

    def run():
        result = client.infer(name, inputs)
        return {o["name"]: result.as_numpy(o["name"]).tolist() for o in result.get_response()["outputs"]}
    return outcome(run)


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_every_model_the_tests_served_loads_back_with_one_field_changed(daemon, protocol):
    """Each model any test daemon served ready (the shipped ones, and those the tests built:
    conftest records them as each daemon stops), loaded by the config it reported with its
    instance count changed, reports that config and answers as it did."""
    record_served_models(daemon.url, daemon.repo)
    configs = sorted((SERVED_MODELS / "configs").glob("*.json"))
    checker = Daemon("--threads", "2", "--model-control-mode", "explicit", repo=SERVED_MODELS / "repo")
    try:
        rest = httpclient.InferenceServerClient(checker.url, network_timeout=120)
        client = rest if protocol == "rest" else grpcclient.InferenceServerClient(checker.grpc_url)
        served = 0
        for path in configs:
            name = path.stem
            config = json.loads(path.read_text())
            config["name"] = name
            client.load_model(name, config=json.dumps(config))
            assert rest.get_model_config(name) == config, name
            before = zeros_outcome(rest, name)
            config["instance_group"][0]["count"] = 2
            client.load_model(name, config=json.dumps(config))
            assert rest.is_model_ready(name), name
            assert rest.get_model_config(name) == config, name
            assert zeros_outcome(rest, name) == before, name
            served += before is not None and before[0] == "ok"
            rest.unload_model(name)
        assert len(configs) >= 8 and served >= len(configs) // 2, (len(configs), served)
    finally:
        checker.stop()
