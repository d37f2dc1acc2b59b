"""Soak: a mixed load on one tensord for a set time — JSON and binary requests, large tensors,
bad requests, abrupt disconnects and the hostile probes of issue 26 (a PNG decompression bomb,
endless chunked trailers, a declared 256 MiB body that never comes) — sampling the daemon's RSS and open descriptors every
second. Pass: no error answer to a good request, every bad one answered 4xx, RSS growth under
5% after warm-up, descriptors back to the baseline afterwards. Called by scripts/soak."""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from serving import free_port, repository_with_any_identity, start

ROOT = Path(__file__).resolve().parents[1]
DURATION = int(os.environ.get("DURATION", "120"))
OUT = ROOT / "target" / "soak"
BIN = ROOT / "target" / "release"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def with_length(head, body):
    return head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def png_bomb(side):
    """A valid grayscale PNG of side × side zeros: under a megabyte, side² bytes decoded."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(bytes(1 + side)) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_requests(port, stop, tally):
    """Malformed, lying, hostile and abandoned requests, each on a fresh connection."""
    good_header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32",
                                          "parameters": {"binary_data_size": 16}}]}).encode()
    cases = [
        ("malformed JSON", b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"inputs\"", True),
        ("wrong size", b"POST /v2/models/identity/infer HTTP/1.1\r\nInference-Header-Content-Length: "
         + str(len(good_header)).encode() + b"\r\nContent-Length: " + str(len(good_header) + 8).encode()
         + b"\r\n\r\n" + good_header + b"\0" * 8, True),
        ("huge length", b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", True),
        ("corrupt image", with_length(b"POST /v2/models/image_probe/infer HTTP/1.1\r\n",
                                      b'{"inputs":[{"name":"IMAGE","shape":[1],"datatype":"BYTES",'
                                      b'"data":["\\u00ff\\u00d8not an image"]}]}'), True),
        ("half body, then gone", b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"in", False),
        ("image bomb", image_request(png_bomb(16384)), True),
        ("endless trailers", b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
         + b"X-T: 1\r\n" * 3000, True),
        ("declared 256 MiB, one byte, gone",
         b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 268435456\r\n\r\n{", False),
        ("gone before reading a large answer", None, False),
    ]
    large_header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 1 << 20], "datatype": "FP32",
                                           "parameters": {"binary_data_size": 4 << 20}}]}).encode()
    large = (b"POST /v2/models/identity/infer HTTP/1.1\r\nInference-Header-Content-Length: "
             + str(len(large_header)).encode() + b"\r\nContent-Length: " + str(len(large_header) + (4 << 20)).encode()
             + b"\r\n\r\n" + large_header + b"\x01" * (4 << 20))
    i = 0
    while not stop.is_set():
        name, raw, answered = cases[i % len(cases)]
        i += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(raw if raw is not None else large)
                if answered:
                    status = int(s.recv(64)[9:12])
                    tally[name] = tally.get(name, []) + [status]
                elif raw is None:
                    s.recv(1024)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ValueError) as e:
            tally.setdefault("client errors", []).append(f"{name}: {e}")
        time.sleep(0.01)


def image_request(png):
    """One image to image_probe, binary."""
    body = struct.pack("<I", len(png)) + png
    header = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(body)}}]}).encode()
    return with_length(b"POST /v2/models/image_probe/infer HTTP/1.1\r\nInference-Header-Content-Length: "
                       + str(len(header)).encode() + b"\r\n", header + body)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    port = free_port()
    daemon = start([str(BIN / "tensord"), "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", "off", "--drain-delay", "0",
                    "--model-repository", repository_with_any_identity(str(OUT / "models")), "--log-level", "error"],
                   port, "/v2/health/ready")
    time.sleep(0.5)
    base_rss, base_fds = rss_mb(daemon.pid), fds(daemon.pid)
    url = f"http://127.0.0.1:{port}"
    loads = [
        ("identity JSON [1,16]", ["--model", "identity", "--shape", "INPUT0:1,16", "--concurrency", "4"]),
        ("identity binary [1,16]", ["--model", "identity", "--shape", "INPUT0:1,16", "--binary", "--concurrency", "4"]),
        ("identity binary [1,150528]", ["--model", "identity", "--shape", "INPUT0:1,150528", "--binary",
                                        "--concurrency", "2"]),
        ("identity JSON [1,150528]", ["--model", "identity", "--shape", "INPUT0:1,150528", "--concurrency", "1"]),
        ("add_sub JSON", ["--model", "add_sub", "--concurrency", "2"]),
    ]
    benches = [(name, subprocess.Popen([str(BIN / "tensord-bench"), "--url", url, "--duration", f"{DURATION}s",
                                        "--warmup", "0s", "--threads", "1", "--quiet", "--json", *args],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
               for name, args in loads]
    stop, tally = threading.Event(), {}
    bad = threading.Thread(target=bad_requests, args=(port, stop, tally))
    bad.start()
    samples = []
    started = time.time()
    while any(p.poll() is None for _, p in benches):
        samples.append((time.time() - started, rss_mb(daemon.pid), fds(daemon.pid)))
        time.sleep(1)
    stop.set()
    bad.join()
    time.sleep(3)
    after_rss, after_fds = rss_mb(daemon.pid), fds(daemon.pid)
    daemon.terminate()
    daemon.wait(timeout=30)

    ok = True
    lines = [f"Soak: {DURATION} s on {os.cpu_count()} cores; baseline RSS {base_rss:.1f} MiB, {base_fds} descriptors."]
    for name, p in benches:
        out, err = p.communicate()
        r = json.loads(out)["results"][0] if out.strip() else {"requests": 0, "errors": "no report",
                                                                 "throughput_rps": 0, "latency_us": {"p99": 0}}
        good = p.returncode == 0 and r["errors"] == 0
        ok &= good
        lines.append(f"- {name}: {r['requests']:,} requests, {r['errors']} errors, {r['throughput_rps']:,.0f}/s, "
                     f"p99 {r['latency_us']['p99'] / 1000:.1f} ms{'' if good else '  <-- FAILED ' + err[-300:]}")
    for name, statuses in sorted(tally.items()):
        if name == "client errors":
            lines.append(f"- client-side errors on bad requests: {len(statuses)} (first: {statuses[:2]})")
            continue
        bad_status = [s for s in statuses if not 400 <= s < 500]
        ok &= not bad_status
        lines.append(f"- bad request '{name}': {len(statuses)} answered, statuses {sorted(set(statuses))}")
    n = len(samples)
    # RSS moves with the large requests in flight at each sample (each maps its own buffer), so
    # compare medians of wide windows: after warm-up (20-50% of the run) against the last 30%.
    warm = sorted(rss for _, rss, _ in samples[n // 5: max(n // 5 + 1, n // 2)])
    end = sorted(rss for _, rss, _ in samples[-max(1, 3 * n // 10):])
    warm_mb, end_mb = warm[len(warm) // 2], end[len(end) // 2]
    growth = end_mb / warm_mb - 1
    ok &= growth < 0.05
    ok &= after_fds <= base_fds + 2
    peak = max(rss for _, rss, _ in samples)
    lines.append(f"- RSS median after warm-up {warm_mb:.1f} MiB, over the last 30% {end_mb:.1f} MiB: "
                 f"growth {growth * 100:+.1f}% (limit +5%); peak {peak:.1f} MiB; {after_rss:.1f} MiB after the load")
    lines.append(f"- descriptors: {base_fds} before, peak {max(f for *_, f in samples)}, {after_fds} after "
                 f"(limit {base_fds + 2})")
    lines.append(f"Result: {'PASS' if ok else 'FAIL'}")
    report = "\n".join(lines) + "\n"
    (OUT / "report.md").write_text(report)
    with open(OUT / "samples.csv", "w") as f:
        f.write("seconds,rss_mib,fds\n" + "".join(f"{t:.1f},{r:.1f},{d}\n" for t, r, d in samples))
    print(report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
