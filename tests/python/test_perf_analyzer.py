"""perf_analyzer, Triton's load generator (from the tritonclient 2.40.0 wheel, installed by
scripts/test), against every shipped model but image_probe with only -m and -u (and -i http: its
default protocol is gRPC), sync and async. Its client-side request count must agree with the
server-side count it reads from tensord's statistics within 1%. Latency stability is not what is
tested (a 2-core machine under load varies by more than perf_analyzer's default 10%), so the
stability threshold is relaxed."""

import json
import os
import re
import subprocess
import urllib.request

import pytest

from conftest import ROOT, Daemon

PERF_ANALYZER = ROOT / "target" / "perf_analyzer" / "perf_analyzer"
# image_probe takes images; perf_analyzer (2.40) sends only numeric sequence ids, and
# simple_string_dyna_sequence takes string ones.
MODELS = sorted(p.name for p in (ROOT / "models").iterdir()
                if p.is_dir() and p.name not in ("image_probe", "simple_string_dyna_sequence"))


@pytest.fixture(scope="module")
def shipped():
    d = Daemon("--threads", "2", repo=ROOT / "models")
    yield d
    d.stop()


def counts(stdout):
    """perf_analyzer's client-side request count, and the server-side one it read from /stats."""
    client = int(re.search(r"Client:\s+Request count: (\d+)", stdout).group(1))
    server = int(re.search(r"Successful request count: (\d+)", stdout).group(1))
    return client, server


@pytest.mark.parametrize("mode", [[], ["--async", "--concurrency-range", "4"]], ids=["sync", "async"])
@pytest.mark.parametrize("model", MODELS)
def test_perf_analyzer_runs_every_shipped_model(shipped, model, mode):
    assert PERF_ANALYZER.exists(), "scripts/test installs perf_analyzer"
    env = dict(os.environ, LD_LIBRARY_PATH=str(PERF_ANALYZER.parent))
    run = subprocess.run(
        [str(PERF_ANALYZER), "-m", model, "-u", shipped.url, "-i", "http", "-p", "1000", "--stability-percentage", "100", *mode],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    client, server = counts(run.stdout)
    assert client > 100
    assert abs(server - client) <= client / 100, run.stdout


def test_perf_analyzer_on_a_model_without_a_queue(tmp_path):
    # An unbatched built-in runs inline, on the io thread; its statistics still count the queue,
    # which perf_analyzer needs to find the model version (before, it needed -x 1).
    (tmp_path / "add_sub_inline").mkdir()
    (tmp_path / "add_sub_inline" / "config.toml").write_text('backend = "builtin"\nbuiltin = "add_sub"\n')
    d = Daemon("--threads", "1", repo=tmp_path)
    try:
        env = dict(os.environ, LD_LIBRARY_PATH=str(PERF_ANALYZER.parent))
        run = subprocess.run(
            [str(PERF_ANALYZER), "-m", "add_sub_inline", "-u", d.url, "-i", "http", "-p", "1000", "--stability-percentage", "100",
             "--shape", "INPUT0:1,16", "--shape", "INPUT1:1,16"],
            env=env, capture_output=True, text=True, timeout=180,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Successful request count" in run.stdout
    finally:
        d.stop()


@pytest.mark.parametrize("mode", [[], ["--async"]], ids=["sync", "async"])
def test_perf_analyzer_over_grpc(shipped, mode):
    env = dict(os.environ, LD_LIBRARY_PATH=str(PERF_ANALYZER.parent))
    run = subprocess.run(
        [str(PERF_ANALYZER), "-m", "add_sub", "-u", shipped.grpc_url, "-i", "grpc", "-p", "1000", "--stability-percentage", "100", *mode],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    client, server = counts(run.stdout)
    assert client > 100
    assert abs(server - client) <= client / 100, run.stdout


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_with_system_shared_memory(protocol):
    """`--shared-memory system`: perf_analyzer registers its regions, sends every tensor through
    them, and unregisters them at the end. (Its output validation cannot read shm outputs, with
    Triton too; test_shared_memory checks values.)"""
    d = Daemon("--threads", "2", "--allow-client-shm", repo=ROOT / "models")
    try:
        env = dict(os.environ, LD_LIBRARY_PATH=str(PERF_ANALYZER.parent))
        url = d.url if protocol == "http" else d.grpc_url
        run = subprocess.run(
            [str(PERF_ANALYZER), "-m", "add_sub", "-u", url, "-i", protocol, "--shared-memory", "system",
             "-p", "1000", "--stability-percentage", "100"],
            env=env, capture_output=True, text=True, timeout=180,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        client, server = counts(run.stdout)
        assert client > 100
        assert abs(server - client) <= client / 100, run.stdout
        with urllib.request.urlopen(f"http://{d.url}/v2/systemsharedmemory/status") as r:
            assert json.loads(r.read()) == []
    finally:
        d.stop()
