"""Starts the real tensord binary for the integration tests."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("TENSORD_BIN", ROOT / "target" / "release" / "tensord"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """The real binary on a free port; waits until it answers (live, not ready: a repository
    with a broken model is never ready)."""

    def __init__(self, *args, repo=ROOT / "models", port=None, preexec_fn=None, env=None, binary=BINARY):
        self.port = port or free_port()
        self.url = f"127.0.0.1:{self.port}"
        # The last --drain-delay wins: `args` may set another.
        cmd = [str(binary), "--http-addr", self.url, "--model-repository", str(repo), "--drain-delay", "0", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/live", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tensord did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        log = self.proc.stderr.read()
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
def server(repo):
    """The daemon on the module's own `repo` fixture (a model repository it writes)."""
    d = Daemon("--threads", "2", repo=repo)
    yield d
    d.stop()


@pytest.fixture(scope="module")
def client(server):
    """A tritonclient for the module's own `server` fixture (a Daemon on its own repository)."""
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(server.url, network_timeout=120)
    yield c
    c.close()
