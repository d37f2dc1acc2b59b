"""Triton ensembles (issue 31): qa/L0_simple_ensemble's ensemble of six steps over two versions
of `simple`; two steps, a fan-out and a diamond, over REST and gRPC, binary and JSON, at batch 1
and 8; steps skipped when no one needs their outputs (seen in the composing model's statistics);
a failing step's error with Triton's prefix; the load-time checks in Triton's words. Runs in the
gRPC tests' process."""

import io as iolib
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import EXPLICIT, Daemon

TENSOR = """  {{ name: "{name}" data_type: {datatype} dims: [ 16 ] }}"""


def io(names, datatype="TYPE_INT32"):
    return ",\n".join(TENSOR.format(name=n, datatype=datatype) for n in names)


def step(model, inputs, outputs, version=-1):
    maps = "".join(f' input_map {{ key: "{k}" value: "{v}" }}' for k, v in inputs.items())
    maps += "".join(f' output_map {{ key: "{k}" value: "{v}" }}' for k, v in outputs.items())
    return f'{{ model_name: "{model}" model_version: {version}{maps} }}'


def ensemble(steps, inputs=("INPUT0", "INPUT1"), outputs=("OUTPUT0", "OUTPUT1"), batch=8, datatype="TYPE_INT32"):
    return (f'platform: "ensemble"\nmax_batch_size: {batch}\ninput [\n{io(inputs, datatype)}\n]\n'
            f'output [\n{io(outputs, datatype)}\n]\nensemble_scheduling {{ step [ {", ".join(steps)} ] }}\n')


# qa/L0_simple_ensemble's ensemble_add_sub_int32_int32_int32: OUTPUT0 = INPUT0 + INPUT1 and
# OUTPUT1 = INPUT0 - INPUT1, reached through six steps over versions -1 (newest) and 1.
L0_STEPS = [
    step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT0"}, {"OUTPUT0": "double_input0"}),
    step("simple", {"INPUT0": "INPUT1", "INPUT1": "INPUT1"}, {"OUTPUT0": "double_input1"}, 1),
    step("simple", {"INPUT0": "double_input0", "INPUT1": "INPUT0"}, {"OUTPUT1": "input0_val"}),
    step("simple", {"INPUT0": "double_input1", "INPUT1": "INPUT1"}, {"OUTPUT1": "input1_val"}, 1),
    step("simple", {"INPUT0": "input0_val", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"}),
    step("simple", {"INPUT0": "INPUT0", "INPUT1": "input1_val"}, {"OUTPUT1": "OUTPUT1"}, 1),
]

MODELS = {
    "ensemble_add_sub_int32_int32_int32": ensemble(L0_STEPS),
    # Two steps: (a + b) then ((a + b) + b, (a + b) - b).
    "two_steps": ensemble([
        step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "sum"}),
        step("simple", {"INPUT0": "sum", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"}),
    ]),
    # A fan-out: the sum feeds two steps, one per output.
    "fan_out": ensemble([
        step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "sum"}),
        step("simple", {"INPUT0": "sum", "INPUT1": "sum"}, {"OUTPUT0": "OUTPUT0"}),
        step("simple", {"INPUT0": "sum", "INPUT1": "INPUT1"}, {"OUTPUT1": "OUTPUT1"}),
    ]),
    # A diamond: sum and difference, each doubled on its own branch, joined again.
    "diamond": ensemble([
        step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "sum", "OUTPUT1": "diff"}),
        step("simple", {"INPUT0": "sum", "INPUT1": "sum"}, {"OUTPUT0": "sum2"}),
        step("simple", {"INPUT0": "diff", "INPUT1": "diff"}, {"OUTPUT0": "diff2"}),
        step("simple", {"INPUT0": "sum2", "INPUT1": "diff2"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"}),
    ]),
    # A step that fails on its input: strings that are not numbers.
    "strings": ensemble([step("simple_string", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"},
                              {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})], datatype="TYPE_STRING"),
}


def expected(model, a, b):
    return {
        "ensemble_add_sub_int32_int32_int32": (a + b, a - b),
        "two_steps": (a + 2 * b, a),
        "fan_out": (2 * (a + b), a),
        "diamond": (2 * (a + b) + 2 * (a - b), 2 * (a + b) - 2 * (a - b)),
    }[model]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    repo = tmp_path_factory.mktemp("ensembles")
    # `simple` in two versions, as qa/L0_simple_ensemble serves it.
    for version in (1, 2):
        (repo / "simple" / str(version)).mkdir(parents=True)
    (repo / "simple" / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "add_sub"\nmax_batch_size = 8\nversion_policy = { all = true }\n'
        "[dynamic_batching]\nmax_queue_delay_microseconds = 100\n")
    (repo / "simple_string").mkdir()
    (repo / "simple_string" / "config.toml").write_text('backend = "builtin"\nbuiltin = "add_sub_string"\nmax_batch_size = 8\n')
    for name, config in MODELS.items():
        (repo / name).mkdir()
        (repo / name / "config.pbtxt").write_text(config)
    (repo / "ensemble_add_sub_int32_int32_int32" / "1").mkdir()  # an empty version folder, as in L0
    # Images at the first step: JPEG/PNG bytes decoded by image_probe, handed on to `pixels`.
    (repo / "image_probe").mkdir()
    (repo / "image_probe" / "config.toml").write_text('backend = "builtin"\n')
    (repo / "pixels").mkdir()
    (repo / "pixels" / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "identity"\n[[input]]\nname = "INPUT0"\ndatatype = "UINT8"\n'
        'dims = [-1, -1, -1, 3]\n[[output]]\nname = "OUTPUT0"\ndatatype = "UINT8"\ndims = [-1, -1, -1, 3]\n')
    (repo / "image_chain").mkdir()
    (repo / "image_chain" / "config.pbtxt").write_text(
        'platform: "ensemble"\ninput [ { name: "IMAGE" data_type: TYPE_STRING dims: [ -1 ] } ]\n'
        'output [ { name: "PIXELS" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ] } ]\n'
        'ensemble_scheduling { step [ '
        + step("image_probe", {"IMAGE": "IMAGE"}, {"OUTPUT0": "decoded"}) + ", "
        + step("pixels", {"INPUT0": "decoded"}, {"OUTPUT0": "PIXELS"}) + " ] }\n")
    d = Daemon("--threads", "2", *EXPLICIT, repo=repo)
    yield d
    d.stop()


@pytest.fixture(params=["http", "grpc"])
def client(request, daemon):
    c = (httpclient.InferenceServerClient(daemon.url) if request.param == "http"
         else grpcclient.InferenceServerClient(daemon.grpc_url))
    c.protocol = request.param
    yield c
    c.close()


def lib(client):
    return httpclient if client.protocol == "http" else grpcclient


def infer(client, model, a, b, outputs=("OUTPUT0", "OUTPUT1"), binary=True):
    c = lib(client)
    inputs = [c.InferInput("INPUT0", list(a.shape), "INT32"), c.InferInput("INPUT1", list(b.shape), "INT32")]
    kw = {"binary_data": binary} if client.protocol == "http" else {}
    inputs[0].set_data_from_numpy(a, **kw)
    inputs[1].set_data_from_numpy(b, **kw)
    wanted = [c.InferRequestedOutput(o, **kw) for o in outputs]
    return client.infer(model, inputs, outputs=wanted)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("model", ["ensemble_add_sub_int32_int32_int32", "two_steps", "fan_out", "diamond"])
def test_ensembles_return_exact_values(client, model, batch, binary):
    if client.protocol == "grpc" and not binary:
        pytest.skip("gRPC has no JSON tensors")
    rng = np.random.default_rng(batch)
    a = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, (batch, 16), dtype=np.int32)
    result = infer(client, model, a, b, binary=binary)
    out0, out1 = expected(model, a, b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), out0)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), out1)


def test_steps_no_output_needs_are_skipped(daemon):
    """qa/L0_simple_ensemble test_ensemble_add_sub_one_output: asking for OUTPUT0 alone runs
    the three steps that lead to it (versions -1, i.e. 2), none of the three over version 1."""
    client = httpclient.InferenceServerClient(daemon.url)
    count = lambda: {s["version"]: s["inference_stats"]["success"]["count"]  # noqa: E731
                     for s in client.get_inference_statistics("simple")["model_stats"]}
    a, b = np.arange(16, dtype=np.int32)[None], np.ones((1, 16), np.int32)
    before = count()
    client.protocol = "http"
    infer(client, "ensemble_add_sub_int32_int32_int32", a, b)
    after_all = count()
    assert {v: after_all[v] - before[v] for v in before} == {"1": 3, "2": 3}
    result = infer(client, "ensemble_add_sub_int32_int32_int32", a, b, outputs=("OUTPUT0",))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    assert result.as_numpy("OUTPUT1") is None
    after_one = count()
    assert {v: after_one[v] - after_all[v] for v in before} == {"1": 0, "2": 3}
    # The ensemble counts its own requests.
    stats = client.get_inference_statistics("ensemble_add_sub_int32_int32_int32")["model_stats"][0]
    assert stats["inference_stats"]["success"]["count"] >= 2


def test_a_failing_step_fails_the_request_with_trition_prefix(client):
    c = lib(client)
    inputs = [c.InferInput(n, [1, 16], "BYTES") for n in ("INPUT0", "INPUT1")]
    for i in inputs:
        i.set_data_from_numpy(np.array([[b"x"] * 16], dtype=object))
    with pytest.raises(InferenceServerException) as e:
        client.infer("strings", inputs)
    assert "in ensemble 'strings', 'x' is not a decimal INT32" in str(e.value)
    assert e.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
    # It keeps serving.
    for i in inputs:
        i.set_data_from_numpy(np.array([[b"3"] * 16], dtype=object))
    result = client.infer("strings", inputs)
    assert list(result.as_numpy("OUTPUT0").ravel()) == [b"6"] * 16


def test_metadata_and_config_say_ensemble(client):
    if client.protocol == "http":
        assert client.get_model_metadata("diamond")["platform"] == "ensemble"
        config = client.get_model_config("diamond")
        assert config["platform"] == "ensemble" and config["instance_group"] == []
        steps = config["ensemble_scheduling"]["step"]
    else:
        assert client.get_model_metadata("diamond").platform == "ensemble"
        config = client.get_model_config("diamond", as_json=True)["config"]
        assert config["platform"] == "ensemble"
        steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["simple"] * 4
    assert steps[3]["input_map"] == {"INPUT0": "sum2", "INPUT1": "diff2"}


def test_the_reported_config_loads_back(daemon):
    client = httpclient.InferenceServerClient(daemon.url)
    config = client.get_model_config("diamond")
    (daemon.repo / "diamond_copy").mkdir(exist_ok=True)
    client.load_model("diamond_copy", config=json.dumps(config))
    assert client.get_model_config("diamond_copy") == dict(config, name="diamond_copy")
    a, b = np.arange(16, dtype=np.int32)[None], np.full((1, 16), 5, np.int32)
    client.protocol = "http"
    np.testing.assert_array_equal(infer(client, "diamond_copy", a, b).as_numpy("OUTPUT1"), expected("diamond", a, b)[1])


@pytest.mark.parametrize("config,message", [
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"})]),
     "ensemble output 'OUTPUT1' for ensemble bad' is not used"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0"}),
               step("simple", {"INPUT0": "ghost", "INPUT1": "INPUT1"}, {"OUTPUT1": "OUTPUT1"})]),
     "output 'OUTPUT1' for ensemble 'bad' is not written: at least one of its depending tensors, 'ghost', is not "
     "connected"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "t"}),
               step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT1": "OUTPUT1"})]),
     "ensemble tensor 't' is unused in ensemble 'bad'"),
    (ensemble([step("simple", {"INPUT0": "INPUT0"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})], inputs=("INPUT0",)),
     "in ensemble bad, input INPUT1 in model simple is not mapped to any ensemble tensors"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})],
              batch=16),
     "ensemble bad allows maximum batch size 16, but it contains model simple which only allows maximum batch size to be 8"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})],
              datatype="TYPE_FP32"),
     "inconsistent data type: TYPE_FP32 is inferred from model bad while TYPE_INT32 is inferred from model simple"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT9": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})]),
     "in ensemble bad, ensemble tensor INPUT1 is mapping to non-existing input INPUT9 in model simple"),
    ('platform: "ensemble"\nmax_batch_size: 8\ninput [\n' + io(["INPUT0"]) + '\n]\noutput [\n' + io(["OUTPUT0"])
     + '\n]\nensemble_scheduling { }\n', "must specify 'step' for ensemble 'bad'"),
    (ensemble([step("simple", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"},
                    version=3)]),
     "ensemble 'bad' depends on 'simple' whose required version 3 is not loaded."),
], ids=["not-used", "not-written", "unused", "unmapped", "batch", "datatype", "no-such-input", "no-steps", "version"])
def test_load_checks_use_triton_words(daemon, config, message):
    (daemon.repo / "bad").mkdir(exist_ok=True)
    (daemon.repo / "bad" / "config.pbtxt").write_text(config)
    client = httpclient.InferenceServerClient(daemon.url)
    with pytest.raises(InferenceServerException) as e:
        client.load_model("bad")
    assert message in str(e.value)
    assert not client.is_model_ready("bad")


def image_bytes(fmt, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:24, 0:32]
    rgb = np.stack([x * 8, y * 10, (x + y) * 4], axis=-1) + rng.integers(0, 8, (24, 32, 3))
    buf = iolib.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_images_are_decoded_at_the_first_step(client, fmt):
    """BYTES sent to the ensemble reach image_probe's image input and are decoded there, with
    the same rules as when image_probe is called alone: the chain returns the same pixels."""
    c = lib(client)
    images = np.array([image_bytes(fmt, 1), image_bytes(fmt, 2)], dtype=np.object_)

    def run(model, name, output):
        tensor = c.InferInput(name, [2], "BYTES")
        tensor.set_data_from_numpy(images)
        return client.infer(model, [tensor]).as_numpy(output)

    alone = run("image_probe", "IMAGE", "OUTPUT0")
    chained = run("image_chain", "IMAGE", "PIXELS")
    assert chained.shape == (2, 24, 32, 3) and chained.dtype == np.uint8
    np.testing.assert_array_equal(chained, alone)
    # A body that is no image fails at that step, with the ensemble's prefix.
    tensor = c.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as e:
        client.infer("image_chain", [tensor])
    assert str(e.value.message()).startswith("in ensemble 'image_chain', input 'IMAGE': ")


def test_an_ensemble_is_ready_only_while_its_models_are(daemon):
    """As Triton's dependency graph: unloading a composing model makes the ensemble not ready,
    with Triton's reason; loading it again makes it ready; an ensemble loaded without its
    models fails to load with the same words."""
    (daemon.repo / "extra").mkdir(exist_ok=True)
    (daemon.repo / "extra" / "config.toml").write_text('backend = "builtin"\nbuiltin = "add_sub"\nmax_batch_size = 8\n')
    (daemon.repo / "needs_extra").mkdir(exist_ok=True)
    (daemon.repo / "needs_extra" / "config.pbtxt").write_text(ensemble([
        step("extra", {"INPUT0": "INPUT0", "INPUT1": "INPUT1"}, {"OUTPUT0": "OUTPUT0", "OUTPUT1": "OUTPUT1"})]))
    client = httpclient.InferenceServerClient(daemon.url)
    grpc = grpcclient.InferenceServerClient(daemon.grpc_url)
    client.protocol = "http"
    a, b = np.arange(16, dtype=np.int32)[None], np.full((1, 16), 3, np.int32)
    client.load_model("extra")
    client.load_model("needs_extra")
    assert client.is_model_ready("needs_extra") and grpc.is_model_ready("needs_extra")
    reason = "ensemble 'needs_extra' depends on 'extra' which has no loaded version."

    client.unload_model("extra")
    assert not client.is_model_ready("needs_extra") and not grpc.is_model_ready("needs_extra")
    index = {(m["name"], m.get("version")): m for m in client.get_model_repository_index()}
    assert index[("needs_extra", "1")]["state"] == "UNAVAILABLE"
    assert index[("needs_extra", "1")]["reason"] == reason
    with pytest.raises(InferenceServerException) as e:
        infer(client, "needs_extra", a, b)
    assert reason in str(e.value)

    client.load_model("extra")
    assert client.is_model_ready("needs_extra")
    np.testing.assert_array_equal(infer(client, "needs_extra", a, b).as_numpy("OUTPUT0"), a + b)

    # unload_dependents takes the composing models with the ensemble, except those another
    # ensemble composes (`simple` stays for the other tests).
    grpc.unload_model("needs_extra", unload_dependents=True)
    assert not client.is_model_ready("extra") and client.is_model_ready("simple")
    with pytest.raises(InferenceServerException) as e:
        client.load_model("needs_extra")
    assert f"model 'needs_extra' failed to load: {reason}" in str(e.value)
    client.load_model("extra")
    assert client.is_model_ready("needs_extra")
    client.unload_model("needs_extra")
    client.unload_model("extra")


def test_unknown_unload_parameters_are_refused(daemon):
    for body in (b'{"parameters": {"unload_dependents": 1}}', b'{"parameters": {"cascade": true}}'):
        request = urllib.request.Request(f"http://{daemon.url}/v2/repository/models/simple/unload", data=body)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request)
        assert e.value.code == 400 and "unload" in json.load(e.value)["error"]
    assert httpclient.InferenceServerClient(daemon.url).is_model_ready("simple")
