"""HTTP/2 on the gRPC port, on a raw socket: malformed frames, oversized messages, a reset flood
and a CONTINUATION flood. Each time the offending connection is closed (or the call refused),
the daemon stays up, and other connections keep being served."""

import socket
import struct
import time

import grpc
import pytest

from conftest import Daemon

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4


@pytest.fixture(scope="module")
def daemon():
    d = Daemon("--threads", "2", "--max-body-bytes", "65536", "--max-header-bytes", "8192")
    yield d
    d.stop()


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, with a new (plain) name."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def request_headers(path=b"/inference.GRPCInferenceService/ServerLive"):
    return (b"\x83\x86"  # :method POST, :scheme http (static table)
            + b"\x04" + bytes([len(path)]) + path  # :path, literal with the indexed name
            + literal(b":authority", b"localhost") + literal(b"content-type", b"application/grpc")
            + literal(b"te", b"trailers"))


def connect(daemon):
    s = socket.create_connection(("127.0.0.1", int(daemon.grpc_url.rsplit(":", 1)[1])), timeout=10)
    s.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return s


def frames(s, until=GOAWAY, limit=5.0):
    """Reads frames until one of kind `until` or the end of the connection, for up to `limit`
    seconds; returns (kind, flags, stream, payload) of each, and ("closed",) if the server
    closed the connection."""
    seen, buf, deadline = [], b"", time.time() + limit
    while time.time() < deadline:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            seen.append((buf[3], buf[4], stream, buf[9:9 + length]))
            buf = buf[9 + length:]
            if seen[-1][0] == until:
                return seen
        s.settimeout(max(0.01, deadline - time.time()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            seen.append(("closed",))
            return seen
        buf += chunk
    return seen


def goaway_code(seen):
    payloads = [f[3] for f in seen if f[0] == GOAWAY]
    return struct.unpack(">I", payloads[0][4:8])[0] if payloads else None


def assert_serving(daemon):
    with grpc.insecure_channel(daemon.grpc_url) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        assert check(b"", timeout=10) == b"\x08\x01"


def test_a_well_formed_raw_call_is_answered(daemon):
    s = connect(daemon)
    s.sendall(frame(HEADERS, END_HEADERS, 1, request_headers())
              + frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"))
    seen = frames(s, until=None, limit=1)
    data = [f[3] for f in seen if f[0] == DATA]
    assert data and data[0] == b"\x00\x00\x00\x00\x02\x08\x01"  # ServerLiveResponse{live: true}
    s.close()


@pytest.mark.parametrize("bad,code", [
    (frame(DATA, 0, 0, b"x"), 0x1),  # DATA on stream 0: PROTOCOL_ERROR
    # A window above 2^31-1 (RFC 9113 names FLOW_CONTROL_ERROR; h2 answers PROTOCOL_ERROR).
    (frame(SETTINGS, 0, 0, b"\x00\x04\xff\xff\xff\xff"), 0x1),
    (frame(HEADERS, END_HEADERS, 2, request_headers()), 0x1),  # an even (server) stream id
    (struct.pack(">I", 2 << 20)[1:] + bytes([DATA, 0]) + struct.pack(">I", 1), 0x6),  # FRAME_SIZE_ERROR
])
def test_malformed_frames_close_only_their_connection(daemon, bad, code):
    s = connect(daemon)
    s.sendall(bad)
    seen = frames(s)
    assert goaway_code(seen) == code, seen
    s.close()
    assert_serving(daemon)


def test_not_http2_at_all_is_closed(daemon):
    s = socket.create_connection(("127.0.0.1", int(daemon.grpc_url.rsplit(":", 1)[1])), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert frames(s)[-1][0] in ("closed", GOAWAY)
    s.close()
    assert_serving(daemon)


def test_oversized_messages_are_refused(daemon):
    # A length prefix that claims 4 GiB: RESOURCE_EXHAUSTED at once, without waiting for it.
    s = connect(daemon)
    s.sendall(frame(HEADERS, END_HEADERS, 1, request_headers(b"/inference.GRPCInferenceService/ModelInfer"))
              + frame(DATA, 0, 1, b"\x00\xff\xff\xff\xff"))
    seen = frames(s, until=None, limit=1)
    # The answer is whole (headers, then trailers that end the stream) without the 4 GiB.
    assert [(f[0], f[1] & END_STREAM) for f in seen if f[0] == HEADERS and f[2] == 1] == [
        (HEADERS, 0), (HEADERS, END_STREAM)], seen
    s.close()
    # Through grpcio: a message over --max-body-bytes (64 KiB) gets RESOURCE_EXHAUSTED.
    with grpc.insecure_channel(daemon.grpc_url) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            infer(b"\x0a\x02id" + b"\x00" * 100_000, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than the limit of 65536 bytes" in e.value.details()
    assert_serving(daemon)


def test_rapid_reset_flood_is_cut_off(daemon):
    # CVE-2023-44487: streams opened and reset at once, thousands of times. h2 counts the resets
    # and ends the connection with GOAWAY (ENHANCE_YOUR_CALM) long before the flood is over.
    s = connect(daemon)
    headers = request_headers()
    flood = b"".join(frame(HEADERS, END_HEADERS, sid, headers) + frame(RST_STREAM, 0, sid, b"\x00\x00\x00\x08")
                     for sid in range(1, 40_001, 2))
    try:
        s.sendall(flood)
    except (BrokenPipeError, ConnectionResetError):
        pass
    seen = frames(s, limit=10)
    assert goaway_code(seen) == 0xB, seen[-3:]
    s.close()
    assert_serving(daemon)


def test_continuation_flood_is_cut_off(daemon):
    # CVE-2024-27316 and kin: a header block that never ends, in CONTINUATION frames. A server
    # that buffers the block until END_HEADERS waits forever here; the daemon must end the
    # connection with an error GOAWAY once the block passes --max-header-bytes (8 KiB). The
    # client sends a fixed 256 KiB and then listens: counting bytes until the send fails would
    # measure the kernel's socket buffers (tcp_rmem autotunes to tens of MiB), not the server.
    s = connect(daemon)
    s.sendall(frame(HEADERS, 0, 1, request_headers()))
    piece = frame(CONTINUATION, 0, 1, literal(b"x-flood", b"y" * 100) * 40)
    try:
        for _ in range((256 << 10) // len(piece)):
            s.sendall(piece)
    except (BrokenPipeError, ConnectionResetError):
        pass
    seen = frames(s, limit=5)
    assert goaway_code(seen) not in (None, 0), seen[-3:]
    s.close()
    assert_serving(daemon)


def rgb_png(side):
    """A valid RGB PNG of side × side zeros: a few KB sent, side² × 3 bytes decoded."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(1 + 3 * side)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def length_delimited(number, payload):
    """A protobuf length-delimited field (lengths here stay under 2^21)."""
    n, varint = len(payload), b""
    while True:
        byte, n = n & 0x7F, n >> 7
        varint += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([number << 3 | 2]) + varint + payload


def image_probe_request(png):
    """ModelInferRequest{model_name, inputs: [IMAGE BYTES [1]], raw_input_contents: [png]}."""
    tensor = length_delimited(1, b"IMAGE") + length_delimited(2, b"BYTES") + length_delimited(3, b"\x01")
    return (length_delimited(1, b"image_probe") + length_delimited(5, tensor)
            + length_delimited(7, struct.pack("<I", len(png)) + png))


def test_a_stream_client_that_never_reads_is_cut_off_with_bounded_memory():
    """ModelStreamInfer with a receive window of 0: each answer (12 MB decoded from a 12 KB PNG)
    waits for the window, so the server stops reading the stream's requests, and after the
    write timeout resets it. h2 would otherwise buffer every answer."""
    d = Daemon("--threads", "1", "--write-timeout", "2")
    try:
        s = socket.create_connection(("127.0.0.1", int(d.grpc_url.rsplit(":", 1)[1])), timeout=10)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))  # INITIAL_WINDOW_SIZE 0
        frames(s, until=SETTINGS, limit=2)
        s.sendall(frame(SETTINGS, 0x1, 0))  # ACK: the server's 4 MiB receive window applies
        message = image_probe_request(rgb_png(2048))
        framed = b"\x00" + struct.pack(">I", len(message)) + message
        before = rss_kb(d.proc.pid)
        path = b"/inference.GRPCInferenceService/ModelStreamInfer"
        s.sendall(frame(HEADERS, END_HEADERS, 1, request_headers(path))
                  + b"".join(frame(DATA, 0, 1, framed) for _ in range(150)))
        started = time.time()
        seen = frames(s, until=RST_STREAM, limit=10)
        resets = [f for f in seen if f[0] == RST_STREAM and f[2] == 1]
        assert resets and struct.unpack(">I", resets[0][3])[0] == 0xB, seen[-3:]  # ENHANCE_YOUR_CALM
        assert 1.5 < time.time() - started < 6
        assert rss_kb(d.proc.pid) - before < 64 * 1024
        s.close()
        assert_serving(d)
    finally:
        d.stop()


def test_unary_calls_a_client_never_reads_are_held_to_the_connection_cap():
    """60 unary ModelInfer calls on one connection whose receive window is 0, each answer 3 MB
    (a small PNG decoded). Past half of --grpc-max-pending-bytes the connection's calls wait
    before they run; the write timeout resets the answers that wait; the calls still waiting
    when the client leaves are dropped. Memory stays near the cap instead of 60 answers
    (180 MB). (An answer that would take the connection past the cap is refused: unit test.)"""
    d = Daemon("--threads", "1", "--write-timeout", "2", "--grpc-max-pending-bytes", str(16 << 20))
    try:
        s = socket.create_connection(("127.0.0.1", int(d.grpc_url.rsplit(":", 1)[1])), timeout=10)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))  # INITIAL_WINDOW_SIZE 0
        frames(s, until=SETTINGS, limit=2)
        s.sendall(frame(SETTINGS, 0x1, 0))
        message = image_probe_request(rgb_png(1024))
        framed = b"\x00" + struct.pack(">I", len(message)) + message
        before = peak_kb(d.proc.pid)
        path = b"/inference.GRPCInferenceService/ModelInfer"
        s.sendall(b"".join(frame(HEADERS, END_HEADERS, n, request_headers(path))
                           + frame(DATA, END_STREAM, n, framed) for n in range(1, 121, 2)))
        seen = frames(s, until=None, limit=5)
        resets = {f[2] for f in seen if f[0] == RST_STREAM and struct.unpack(">I", f[3])[0] == 0xB}
        grown = peak_kb(d.proc.pid) - before
        s.close()
        assert len(resets) >= 2, seen[-3:]
        assert len(resets) < 30, "later calls waited for room instead of running"
        assert grown < 64 * 1024, f"peak RSS grew {grown} KiB"
        assert_serving(d)
    finally:
        started = time.time()
        d.stop()
    assert time.time() - started < 5


def peak_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_an_idle_connection_gets_goaway():
    d = Daemon("--threads", "1", "--idle-timeout", "1")
    try:
        s = socket.create_connection(("127.0.0.1", int(d.grpc_url.rsplit(":", 1)[1])), timeout=10)
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        seen = frames(s, until=GOAWAY, limit=5)
        assert goaway_code(seen) == 0, seen  # NO_ERROR: a graceful goodbye
        s.close()
    finally:
        d.stop()


def test_a_peer_that_does_not_answer_pings_is_dropped():
    """Triton's keepalive flags: a PING every --grpc-keepalive-time ms; no answer within
    --grpc-keepalive-timeout ms ends the connection. A peer that answers stays."""
    d = Daemon("--threads", "1", "--grpc-keepalive-time", "300", "--grpc-keepalive-timeout", "300")
    try:
        port = int(d.grpc_url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        silent.sendall(PREFACE + frame(SETTINGS, 0, 0))
        seen = frames(silent, until="closed", limit=5)
        assert any(f[0] == PING for f in seen[:-1]), seen
        assert seen[-1] == ("closed",), seen
        # One that answers every PING is still open after several rounds.
        polite = socket.create_connection(("127.0.0.1", port), timeout=10)
        polite.sendall(PREFACE + frame(SETTINGS, 0, 0))
        deadline = time.time() + 2
        while time.time() < deadline:
            for f in frames(polite, until=PING, limit=1):
                if f[0] == PING and not f[1] & 0x1:
                    polite.sendall(frame(PING, 0x1, 0, f[3]))  # ACK with the same payload
                assert f != ("closed",), "a connection that answers PINGs was dropped"
        polite.close()
        silent.close()
    finally:
        d.stop()
