"""Starts the real tensord binary for the integration tests."""

import atexit
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("TENSORD_BIN", ROOT / "target" / "release" / "tensord"))
sys.path.insert(0, str(ROOT / "scripts"))
from serving import call, free_port, logged, repository_with_any_identity, start, stop  # noqa: E402

# The flags that let the repository API load and unload (the default mode refuses both), with
# every model loaded at start.
EXPLICIT = ("--model-control-mode", "explicit", "--load-model", "*")

# The shipped models, identity taking any datatype and shape: what the tests drive by default.
TEST_REPO = Path(repository_with_any_identity(tempfile.mkdtemp(prefix="tensord-test-repo-")))
atexit.register(shutil.rmtree, TEST_REPO, True)


# Every model a test daemon served ready, copied with the config it reported: test_doors loads
# each back through the load API (scripts/test shares one folder between its two processes).
if os.environ.get("TENSORD_SERVED_MODELS"):
    SERVED_MODELS = Path(os.environ["TENSORD_SERVED_MODELS"])
else:
    SERVED_MODELS = Path(tempfile.mkdtemp(prefix="tensord-served-"))
    atexit.register(shutil.rmtree, SERVED_MODELS, True)


def record_served_models(url, repo):
    """Copies each model `url` reports ready, with its reported config, into SERVED_MODELS
    (`repo/<name>-<digest>` and `configs/<name>-<digest>.json`; equal ones once). A daemon that
    restricts or no longer answers these APIs has nothing to record."""
    if repo is None or Path(repo).is_relative_to(SERVED_MODELS):
        return
    try:
        status, _, body = call(f"http://{url}/v2/repository/index", b"{}", method="POST", timeout=10)
    except OSError:
        return
    if status != 200:
        return
    # Each model's ready versions: a test may have written others into its folder since.
    ready = {}
    for entry in json.loads(body):
        if entry.get("state") == "READY":
            ready.setdefault(entry["name"], set()).add(str(entry.get("version", "")))
    for name, versions in ready.items():
        folder = Path(repo) / name
        # A name made to be hostile (test_metrics) is no config to load back.
        if not folder.is_dir() or not re.fullmatch(r"[\w.-]+", name):
            continue
        status, _, config = call(f"http://{url}/v2/models/{name}/config", timeout=10)
        # An ensemble loads only beside its steps' models: test_ensembles loads its configs back.
        if status != 200 or json.loads(config).get("platform") == "ensemble":
            continue
        files = sorted((str(f.relative_to(folder)), f.stat().st_size) for f in folder.rglob("*") if f.is_file())
        digest = hashlib.sha1(json.dumps([json.loads(config), files], sort_keys=True).encode()).hexdigest()[:10]
        copy = f"{name}-{digest}"
        if (SERVED_MODELS / "configs" / f"{copy}.json").exists():
            continue

        def unserved(where, names):
            return [n for n in names if where == str(folder) and n.isdigit() and n not in versions]
        shutil.copytree(folder, SERVED_MODELS / "repo" / copy, ignore=unserved, dirs_exist_ok=True)
        (SERVED_MODELS / "configs").mkdir(parents=True, exist_ok=True)
        (SERVED_MODELS / "configs" / f"{copy}.json").write_bytes(config)


def unavailable_reason(client, model):
    """Why `model` is not ready, as its metadata request (over REST, a 503) says it."""
    from tritonclient.utils import InferenceServerException
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata(model)
    assert e.value.status() == "503", e.value
    assert f"model '{model}' is not ready: " in e.value.message(), e.value
    return e.value.message()


class Daemon:
    """The real binary on a free port; waits until it answers (live, not ready: a repository
    with a broken model is never ready)."""

    def __init__(self, *args, repo=TEST_REPO, port=None, preexec_fn=None, env=None, binary=BINARY,
                 wait_for="/v2/health/live"):
        self.port = port or free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.grpc_url = f"127.0.0.1:{free_port()}"
        self.repo = repo
        # The last --drain-delay (or --grpc-addr) wins: `args` may set another.
        # repo None: the args name the models (--ovms-config).
        cmd = [str(binary), "--http-addr", self.url, "--grpc-addr", self.grpc_url,
               *(["--model-repository", str(repo)] if repo is not None else []), "--drain-delay", "0", *args]
        # wait_for None: until the port accepts a connection (when health itself is restricted).
        self.proc = start(cmd, self.port, wait_for, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
                          env=env)

    def stop(self):
        if self.proc.poll() is None:
            record_served_models(self.url, self.repo)
        code = stop(self.proc)
        log = logged(self.proc)
        assert "panicked" not in log, log
        assert code == 0, log
        return log


@pytest.fixture(scope="session")
def daemon():
    d = Daemon("--threads", "2")
    yield d
    d.stop()


@pytest.fixture(scope="session")
def url(daemon):
    return daemon.url


@pytest.fixture(scope="module")
def server(request, repo):
    """The daemon on the module's own `repo` fixture (a model repository it writes), with the
    module's SERVER_ARGS if it has them."""
    d = Daemon("--threads", "2", *getattr(request.module, "SERVER_ARGS", ()), repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def client(server):
    """A tritonclient for the module's own `server` fixture (a Daemon on its own repository)."""
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(server.url, network_timeout=120)
    yield c
    c.close()
