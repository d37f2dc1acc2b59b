"""Hostile clients. After each, the daemon answers health and a correct infer request on a
fresh connection, and its memory is back near its baseline."""

import json
import os
import resource
import socket
import struct
import threading
import time

import pytest

from conftest import Daemon

# Short timeouts so the hostile cases end quickly.
FLAGS = ("--threads", "2", "--header-timeout", "2", "--body-timeout", "2", "--write-timeout", "2",
         "--idle-timeout", "30")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(d, timeout=10):
    s = socket.create_connection(("127.0.0.1", d.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed inside a response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head[9:12])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        body += chunk
    return status, head.decode(), body


def request(path, body=b"", extra=""):
    method = "POST" if body else "GET"
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


def infer_body(n, value=1.5):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, n], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 4 * n}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    return header, header + struct.pack("<f", value) * n


def assert_healthy(d, baseline_mb=None, slack_mb=24):
    with connect(d) as s:
        s.sendall(request("/v2/health/ready"))
        assert read_response(s)[0] == 200
        header, body = infer_body(4, 2.5)
        s.sendall(request("/v2/models/identity/infer", body,
                          f"Inference-Header-Content-Length: {len(header)}\r\n"))
        status, _, answer = read_response(s)
        assert status == 200, answer
        assert answer.endswith(struct.pack("<f", 2.5) * 4)
    if baseline_mb is not None:
        # Freed buffers go back to the system (large ones are mapped); allow a little slack.
        deadline = time.time() + 5
        while rss_mb(d.proc.pid) > baseline_mb + slack_mb and time.time() < deadline:
            time.sleep(0.2)
        assert rss_mb(d.proc.pid) <= baseline_mb + slack_mb, (rss_mb(d.proc.pid), baseline_mb)


@pytest.fixture(scope="module")
def d():
    daemon = Daemon(*FLAGS)
    yield daemon
    daemon.stop()


@pytest.fixture
def baseline(d):
    assert_healthy(d)
    return rss_mb(d.proc.pid)


def test_slowloris_gets_408_while_others_are_served(d, baseline):
    slow = [connect(d) for _ in range(50)]
    started = time.time()
    line = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n"
    sent = 0
    while time.time() - started < 1.5:
        for s in slow:
            s.send(line[sent:sent + 1])
        sent += 1
        # A normal client is answered at once meanwhile.
        t = time.time()
        assert_healthy(d)
        assert time.time() - t < 0.5
        time.sleep(0.3)
    for s in slow:
        status, _, body = read_response(s)
        assert status == 408 and b"header" in body
        assert s.recv(1) == b"", "closed after the 408"
        s.close()
    assert time.time() - started < 5
    assert_healthy(d, baseline)


def test_body_that_stops_halfway_gets_408(d, baseline):
    with connect(d) as s:
        header, body = infer_body(1000)
        s.sendall(request("/v2/models/identity/infer", body,
                          f"Inference-Header-Content-Length: {len(header)}\r\n")[:-2000])
        status, _, answer = read_response(s)
        assert status == 408 and b"body" in answer
    assert_healthy(d, baseline)


def test_client_that_never_reads_a_large_response_is_dropped(d, baseline):
    n = 8 * 1024 * 1024  # 32 MiB of output per client
    header, body = infer_body(n)
    raw = request("/v2/models/identity/infer", body, f"Inference-Header-Content-Length: {len(header)}\r\n")
    stuck = []
    for _ in range(4):
        s = connect(d)
        s.sendall(raw)
        stuck.append(s)
    time.sleep(0.5)
    # Each response is written from its request's own buffer: no copy per stuck client.
    assert rss_mb(d.proc.pid) < baseline + 4 * 32 * 1.5 + 24
    assert_healthy(d)
    # The write timeout (2 s without progress) closes them and frees their buffers.
    time.sleep(3.5)
    for s in stuck:
        s.settimeout(5)
        received = 0
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        # What the socket buffers held came through, then the close: not the whole 32 MiB.
        assert received < 4 * n, "the server gave up on the stalled response"
        s.close()
    assert_healthy(d, baseline)


def test_huge_content_length_is_refused_at_once(d, baseline):
    with connect(d) as s:
        s.sendall(b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 107374182400\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 413 and b"107374182400" in body
    assert_healthy(d, baseline)


def test_deep_nesting_a_million_inputs_and_overflowing_shapes_are_400s(d, baseline):
    cases = [
        # Nesting where the header expects inputs is refused on sight; inside a tensor's data it
        # meets the parser's depth limit (no stack overflow either way).
        (b'{"inputs":' + b"[" * 100000 + b"]" * 100000 + b"}", b"invalid inference request JSON"),
        (b'{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP32","data":' + b"[" * 200000
         + b"1" + b"]" * 200000 + b"}]}", b"nested deeper than the shape's rank 1"),
        (b'{"inputs":[{"name":"INPUT0","shape":' + json.dumps([1] * 100000).encode()
         + b',"datatype":"FP32","data":' + b"[" * 100000 + b"1" + b"]" * 100000 + b"}]}",
         b"recursion limit exceeded"),
        (b'{"inputs":[' + b",".join([b'{"name":"a","shape":[1],"datatype":"INT8","data":[1]}'] * 1_000_000)
         + b"]}", b"more than 4096 tensors"),
        (json.dumps({"inputs": [{"name": "INPUT0", "shape": [2**40, 2**40], "datatype": "FP32",
                                 "data": [1]}]}).encode(), b"more elements than fit in 64 bits"),
    ]
    for body, message in cases:
        with connect(d) as s:
            s.sendall(request("/v2/models/identity/infer", body))
            status, _, answer = read_response(s)
            assert status == 400, answer[:200]
            assert message in answer, answer[:300]
        assert_healthy(d, baseline)


def test_disconnect_in_the_middle_of_a_response(d, baseline):
    header, body = infer_body(4 * 1024 * 1024)
    raw = request("/v2/models/identity/infer", body, f"Inference-Header-Content-Length: {len(header)}\r\n")
    for _ in range(5):
        s = connect(d)
        s.sendall(raw)
        s.recv(1024)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()  # reset with most of the response unread
    assert_healthy(d, baseline)


def test_ten_thousand_idle_connections():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10500:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low for 10,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    d = Daemon(*FLAGS)
    try:
        fds = open_fds(d.proc.pid)
        idle = [connect(d) for _ in range(10000)]
        time.sleep(0.5)
        assert open_fds(d.proc.pid) >= fds + 10000 - 100
        assert_healthy(d)
        for s in idle:
            s.close()
        deadline = time.time() + 10
        while open_fds(d.proc.pid) > fds + 5 and time.time() < deadline:
            time.sleep(0.1)
        assert open_fds(d.proc.pid) <= fds + 5, "descriptors back to the baseline"
        assert_healthy(d)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        d.stop()


def test_out_of_descriptors_waits_then_serves():
    """A daemon limited to 128 descriptors: connections beyond wait in the backlog (accept fails
    with EMFILE and backs off), the ones it has keep working, and once idle ones leave, the
    waiting ones are served."""
    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    d = Daemon(*FLAGS, preexec_fn=limit)
    try:
        held = [connect(d) for _ in range(150)]
        time.sleep(0.5)
        waiting = held[-1]
        waiting.sendall(request("/v2/health/live"))
        for s in held[:40]:
            s.close()
        waiting.settimeout(10)
        assert read_response(waiting)[0] == 200
        for s in held[40:]:
            s.close()
        assert_healthy(d)
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_configs_that_ask_for_thousands_of_threads_are_quick_400s(tmp_path):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from conftest import EXPLICIT
    from model_builders import double_graph_bytes

    d = Daemon("--threads", "1", *EXPLICIT, "--max-model-threads", "32", "--max-total-model-threads", "32")
    c = httpclient.InferenceServerClient(d.url)
    try:
        # Threads are counted once start-up (its models' workers) is over.
        deadline = time.monotonic() + 10
        while not c.is_server_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        tasks = len(os.listdir(f"/proc/{d.proc.pid}/task"))
        for config, words in (({"backend": "identity", "instance_group": [{"count": 10000}]},
                               "key 'instance_count' (10000): 10000 threads, over the limit of 32"),
                              ({"backend": "onnxruntime", "instance_group": [{"count": 2}],
                                "parameters": {"intra_op_thread_count": {"string_value": "1000"}}},
                               "keys 'instance_count' (2) and intra-op threads (1000): 2002 threads")):
            started = time.monotonic()
            with pytest.raises(InferenceServerException) as e:
                if config["backend"] == "identity":
                    c.load_model("identity", config=json.dumps(config))
                else:
                    c.load_model("graph", config=json.dumps(config), files={"file:1/model.onnx": double_graph_bytes()})
            assert time.monotonic() - started < 1
            assert e.value.status() == "400" and words in e.value.message(), e.value.message()
        # Within the per-version cap, but past what the server's models have left in total.
        with pytest.raises(InferenceServerException, match="--max-total-model-threads") as e:
            c.load_model("identity", config=json.dumps({"backend": "identity", "instance_group": [{"count": 32}]}))
        assert e.value.status() == "400" and "32 threads for 1 version(s), but only" in e.value.message()
        # Nothing is left behind (a loader thread may take a moment to end after its answer).
        deadline = time.monotonic() + 2
        while len(os.listdir(f"/proc/{d.proc.pid}/task")) != tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(os.listdir(f"/proc/{d.proc.pid}/task")) == tasks
        # The failed new model is kept, not ready (strict readiness), until it is unloaded.
        c.unload_model("graph")
        assert c.is_model_ready("identity") and c.is_server_ready()
    finally:
        c.close()
        d.stop()


def test_a_stuck_load_blocks_no_other_model(tmp_path):
    """A model file that is a FIFO nobody writes: its load hangs inside ONNX Runtime. Unloads,
    the index and inference of other models go on; a second load of it is refused at once."""
    import shutil

    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    from conftest import TEST_REPO

    repo = tmp_path / "repo"
    shutil.copytree(TEST_REPO, repo)
    (repo / "stuck" / "1").mkdir(parents=True)
    fifo = repo / "stuck" / "1" / "model.onnx"
    os.mkfifo(fifo)
    (repo / "stuck" / "config.toml").write_text('backend = "onnx"\n')
    d = Daemon("--threads", "2", "--model-control-mode", "explicit", "--load-model", "add_sub",
               "--load-model", "identity", repo=repo)
    c = httpclient.InferenceServerClient(d.url)
    answers = []
    load = threading.Thread(target=lambda: answers.append(_post_status(d.url, "/v2/repository/models/stuck/load")))
    load.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        c.unload_model("identity")
        assert time.monotonic() - started < 1
        assert {m["name"] for m in c.get_model_repository_index()} >= {"add_sub", "stuck"}
        a = np.ones((1, 16), dtype=np.int32)
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(a)
        assert c.infer("add_sub", inputs).as_numpy("OUTPUT0").tolist() == (a + a).tolist()
        with pytest.raises(InferenceServerException, match="'stuck' is already loading"):
            c.load_model("stuck")
    finally:
        with open(fifo, "wb") as f:  # releases the load: it reads garbage and fails
            f.write(b"not an onnx graph")
        load.join(10)
        c.close()
        d.stop()
    assert answers == [400]


def _post_status(url, path):
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://{url}{path}", data=b"", method="POST")) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_tracing_every_request_keeps_memory_flat(tmp_path):
    """Issue 26's trace probe: every request traced with log_frequency 0 once held about 9 KB
    each until the server stopped. Now traces go to the file in batches, off the io threads."""
    import subprocess

    from conftest import BINARY

    path = tmp_path / "trace.json"
    d = Daemon("--threads", "1", "--trace-file", str(path), "--trace-config", "level=TIMESTAMPS",
               "--trace-config", "rate=1")
    try:
        bench = [str(BINARY.parent / "tensord-bench"), "--url", f"http://{d.url}", "--model", "identity",
                 "--binary", "--shape", "INPUT0:1,16", "--threads", "1", "--concurrency", "8", "--warmup", "0s",
                 "--quiet", "--json", "--values", "off"]
        subprocess.run(bench + ["--duration", "1s"], check=True, capture_output=True)
        before = rss_mb(d.proc.pid)
        done = subprocess.run(bench + ["--duration", "4s"], check=True, capture_output=True, text=True)
        sent = sum(r["requests"] for r in json.loads(done.stdout)["results"])
        assert sent > 10_000, sent
        assert rss_mb(d.proc.pid) - before < 32, (before, rss_mb(d.proc.pid))
    finally:
        d.stop()
    traces = json.loads(path.read_text())
    assert len(traces) >= 2 * 10_000 and traces[0]["model_name"] == "identity"


def test_declared_lengths_reserve_nothing_until_bytes_arrive(d, baseline):
    """40 connections each declare a 256 MiB body and send one byte: the server's address space
    grows by what arrived (64 KiB of room each), not by the 10 GiB declared."""
    def vm_size_mb():
        with open(f"/proc/{d.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) / 1024

    before = vm_size_mb()
    head = ("POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {256 * 1024 * 1024}\r\n\r\n").encode()
    sockets = [connect(d) for _ in range(40)]
    for s in sockets:
        s.sendall(head + b"{")
    time.sleep(0.5)
    grown = vm_size_mb() - before
    for s in sockets:
        s.close()
    assert grown < 512, grown
    assert_healthy(d, baseline)
