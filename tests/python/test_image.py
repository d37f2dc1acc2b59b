"""The OCI image scripts/build-image writes (scripts/test builds it first): its size, user, ports
and entrypoint; its root filesystem unpacked and its entrypoint run in it (chroot, as the
image's user), answering tritonclient over HTTP and gRPC from outside: the shipped models as
the image runs them, and an ONNX model in KServe's /mnt/models with the KServe runtime's args
(ONNX Runtime's library from inside the image). Runs in the gRPC tests' process."""

import json
import os
import shutil
import subprocess
import tarfile

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from conftest import ROOT, call, free_port, start, stop
from model_builders import PPOCR_CLS, PPOCR_CLS_OUTPUT, wheel_file

ARCHIVE = ROOT / "target" / "image" / "tensord.oci.tar"


def blob(archive, digest):
    return archive.extractfile("blobs/sha256/" + digest.split(":", 1)[1])


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(the image's config, its root filesystem unpacked)."""
    assert ARCHIVE.exists(), "scripts/build-image writes the image; scripts/test runs it first"
    root = tmp_path_factory.mktemp("image") / "rootfs"
    root.mkdir()
    with tarfile.open(ARCHIVE) as archive:
        (entry,) = json.load(archive.extractfile("index.json"))["manifests"]
        manifest = json.load(blob(archive, entry["digest"]))
        config = json.load(blob(archive, manifest["config"]["digest"]))
        for layer in manifest["layers"]:
            assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
            with tarfile.open(fileobj=blob(archive, layer["digest"]), mode="r:gz") as files:
                files.extractall(root, filter="tar")
    yield config, root
    shutil.rmtree(root, ignore_errors=True)


def test_the_image_is_small_and_runs_unprivileged(image):
    config, root = image
    assert ARCHIVE.stat().st_size < 80e6
    run = config["config"]
    assert run["User"] == "1000:1000"
    assert set(run["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    assert run["Entrypoint"][:3] == ["/opt/tensord/bin/tensord", "--model-repository", "/models"]
    assert (root / "opt/tensord/bin/libonnxruntime.so").is_file()
    assert sorted(p.name for p in (root / "models").iterdir()) == sorted(p.name for p in (ROOT / "models").iterdir())
    assert "tensord:x:1000:1000" in (root / "etc/passwd").read_text()


def run_in_image(root, entrypoint, args):
    """The entrypoint in the unpacked image as its user, on free loopback ports; (proc, http, grpc, metrics)."""
    http, grpc, metrics = free_port(), free_port(), free_port()
    chroot = [shutil.which("chroot"), "--userspec=1000:1000", str(root)] if os.geteuid() == 0 else \
        [shutil.which("unshare"), "--map-root-user", shutil.which("chroot"), str(root)]
    cmd = [*chroot, *entrypoint, *args, "--http-addr", f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{grpc}",
           "--metrics-addr", f"127.0.0.1:{metrics}", "--drain-delay", "0"]
    proc = start(cmd, http, "/v2/health/ready", env={}, stderr=subprocess.PIPE, text=True)
    return proc, http, grpc, metrics


def test_the_entrypoint_serves_the_shipped_models(image):
    config, root = image
    proc, http, grpc, metrics = run_in_image(root, config["config"]["Entrypoint"], [])
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {"1000"}
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        b = np.full((1, 16), 3, dtype=np.int32)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_data_from_numpy(a, binary_data=True)
        inputs[1].set_data_from_numpy(b, binary_data=False)
        result = client.infer("add_sub", inputs)
        assert np.array_equal(result.as_numpy("OUTPUT0"), a + b)
        assert np.array_equal(result.as_numpy("OUTPUT1"), a - b)
        shipped = {m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"}
        assert shipped == {p.name for p in (ROOT / "models").iterdir()}
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as g:
            inputs = [grpcclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
            inputs[0].set_data_from_numpy(a)
            inputs[1].set_data_from_numpy(b)
            assert np.array_equal(g.infer("add_sub", inputs).as_numpy("OUTPUT1"), a - b)
        status, _, body = call(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and b'nv_inference_count{model="add_sub",version="1"} 2' in body
    finally:
        stop(proc)


def test_the_kserve_runtime_serves_an_onnx_model_from_mnt_models(image):
    config, root = image
    spec = yaml.safe_load((ROOT / "deploy" / "kserve" / "clusterservingruntime.yaml").read_text())["spec"]
    (container,) = spec["containers"]
    model = wheel_file(PPOCR_CLS)
    folder = root / "mnt" / "models" / "ppocr_cls"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(model)
    (folder / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 8\n')
    proc, http, grpc, _ = run_in_image(root, config["config"]["Entrypoint"], container["args"])
    try:
        x = np.random.default_rng(7).random((2, 3, 48, 192), dtype=np.float32)
        (expected,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        out = PPOCR_CLS_OUTPUT
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http}")
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        np.testing.assert_array_equal(client.infer("ppocr_cls", [tensor]).as_numpy(out), expected)
        with grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}") as g:
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            np.testing.assert_array_equal(g.infer("ppocr_cls", [tensor]).as_numpy(out), expected)
    finally:
        stop(proc)
