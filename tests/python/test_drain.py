"""The drain timeline on SIGTERM, on raw sockets: readiness turns 503 at once; when the
listeners close (after --drain-delay), idle keep-alive connections are closed at once, and a
request read before that but answered after says Connection: close."""

import json
import signal
import socket
import threading
import time

from conftest import Daemon


def request(body=None):
    if body is None:
        return b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
    return (b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, body


def test_drain_timeline(tmp_path):
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "config.toml").write_text(
        'backend = "builtin"\nbuiltin = "identity"\nexecution_delay_microseconds = 1500000\n')
    d = Daemon("--threads", "1", "--drain-delay", "1", repo=tmp_path)
    idle = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    idle.sendall(request())
    assert read_response(idle)[1]["connection"] == "keep-alive"
    busy = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    closed_at = []
    watcher = threading.Thread(target=lambda: (idle.recv(1), closed_at.append(time.perf_counter())))
    watcher.start()
    sigterm = time.perf_counter()
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    busy.sendall(request(body.encode()))  # read at +0.5 s, answered at about +2 s
    status, headers, answer = read_response(busy)
    answered = time.perf_counter() - sigterm
    watcher.join(5)
    assert status == 200 and json.loads(answer)["outputs"][0]["data"] == [1, 2]
    assert answered > 1.5 and headers["connection"] == "close", (answered, headers)
    # The listeners close at +1 s (the drain delay); the idle connection with them.
    assert closed_at and 0.95 <= closed_at[0] - sigterm <= 1.1, closed_at[0] - sigterm
    assert busy.recv(1) == b"", "closed after the answer"
    assert d.proc.wait(10) == 0
    idle.close()
    busy.close()
