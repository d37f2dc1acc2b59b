"""Runs the same load sweep against tensord, KServe's Python server, MLServer, an nginx fixed
responder (the floor) and the echo responder on tensord's runtime, plus gRPC ModelInfer against
tensord and KServe, and writes a markdown table of requests/s with ratios, plus one SVG plot per
case. Called by scripts/compare-peers."""

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import serving
from serving import free_port, stop

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(os.environ.get("OUT_DIR", ROOT / "target" / "compare-peers"))
DURATION = os.environ.get("DURATION", "5s")
CONCURRENCY = os.environ.get("CONCURRENCY", "1,8,32")
BENCH = str(ROOT / "target" / "release" / "tensord-bench")
SMALL, LARGE = 16, 150528
# Python servers can take a while to import their frameworks.
start = functools.partial(serving.start, timeout=90, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

WHEEL = ROOT / "target" / "wheels" / "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
# The shape of one request to each model, and which servers serve it.
PPOCR_SHAPE = "1,3,48,192"
PPOCR_SERVERS = ("tensord", "kserve")

# (case, model, elements of [1,n], binary)
CASES = [
    ("json-small", "identity", SMALL, False),
    ("binary-small", "identity", SMALL, True),
    ("binary-large", "identity", LARGE, True),
    ("json-large", "identity", LARGE, False),
    ("add_sub-json", "add_sub", SMALL, False),
    ("ppocr_cls-binary", "ppocr_cls", None, True),
]
# gRPC ModelInfer with raw contents, against the servers that serve gRPC: (case, elements of [1,n]).
GRPC_CASES = [("grpc-small", SMALL), ("grpc-large", LARGE)]
GRPC_SERVERS = ("tensord", "kserve")


def servers(work):
    """(name, port, start function, V2?) for every server; each started only for its runs."""
    repo = work / "models"
    for model in ("identity", "add_sub"):
        (repo / model).mkdir(parents=True)
        # Like the peers' models: no dynamic batching.
        (repo / model / "config.toml").write_text('backend = "builtin"\n')
    # A real graph, which tensord batches (as Triton would be configured for this load).
    (repo / "ppocr_cls" / "1").mkdir(parents=True)
    ppocr = repo / "ppocr_cls" / "1" / "model.onnx"
    with zipfile.ZipFile(WHEEL) as wheel:
        ppocr.write_bytes(wheel.read("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    (repo / "ppocr_cls" / "config.toml").write_text(
        'backend = "onnx"\nmax_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_microseconds = 2000\n')
    nginx_conf = work / "nginx.conf"

    def tensord(port, grpc_port):
        return start([str(ROOT / "target/release/tensord"), "--http-addr", f"127.0.0.1:{port}",
                      "--grpc-addr", f"127.0.0.1:{grpc_port}", "--model-repository", str(repo), "--log-level", "warn"],
                     port, "/v2/health/ready")

    def kserve(port, grpc_port):
        return start([str(ROOT / "target/venv-kserve/bin/python"), str(ROOT / "scripts/peers/kserve_models.py"),
                      "--http_port", str(port), "--grpc_port", str(grpc_port)], port, "/v2/health/ready",
                     env=dict(os.environ, PPOCR_CLS=str(ppocr)))

    def mlserver(port, _grpc_port):
        env = dict(os.environ, PYTHONPATH=str(ROOT / "scripts/peers/mlserver"),
                   MLSERVER_HTTP_PORT=str(port), MLSERVER_GRPC_PORT=str(free_port()),
                   MLSERVER_METRICS_PORT=str(free_port()))
        return start([str(ROOT / "target/venv-mlserver/bin/mlserver"), "start", str(ROOT / "scripts/peers/mlserver")],
                     port, "/v2/models/add_sub/ready", env=env)

    def nginx(port, _grpc_port):
        nginx_conf.write_text(f"""
daemon off; worker_processes 2; error_log {work}/nginx-error.log; pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000000; client_body_temp_path {work};
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 '{{}}'; }} }} }}
""")
        return start(["nginx", "-p", str(work), "-c", str(nginx_conf)], port, "/")

    def echo(port, _grpc_port):
        return start([str(ROOT / "target/release/examples/echo"), f"127.0.0.1:{port}", "2", "epoll"], port, None)

    return [("tensord", tensord, True), ("kserve", kserve, True), ("mlserver", mlserver, True),
            ("nginx-floor", nginx, False), ("echo", echo, False)]


def bench(port, label, model, n, binary, v2, result, grpc=False):
    cmd = [BENCH, "--url", f"http://127.0.0.1:{port}", "--model", model, "--concurrency", CONCURRENCY,
           "--duration", DURATION, "--warmup", "1s", "--threads", "2", "--quiet", "--label", label,
           "--output", str(result)]
    if model == "ppocr_cls":
        cmd += ["--shape", f"x:{PPOCR_SHAPE}", "--datatype", "x:FP32"]
    else:
        dtype = "INT32" if model == "add_sub" else "FP32"
        inputs = ["INPUT0", "INPUT1"] if model == "add_sub" else ["INPUT0"]
        for name in inputs:
            cmd += ["--shape", f"{name}:1,{n}", "--datatype", f"{name}:{dtype}"]
    if binary:
        cmd.append("--binary")
    if grpc:
        cmd.append("--grpc")
    if not v2:
        cmd += ["--check", "framing"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        first = [line.strip() for line in done.stderr.splitlines() if line.startswith("  ")][:1]
        print(f"{label}: {model} {'binary' if binary else 'JSON'} [{n or PPOCR_SHAPE}]: errors: {first}", flush=True)
        return None
    return json.loads(result.read_text())


def at(report, concurrency, key="throughput_rps"):
    if report is None:
        return None
    for r in report["results"]:
        if r["concurrency"] == concurrency:
            return r[key] if key != "bytes" else r["sent_bytes_per_s"] + r["received_bytes_per_s"]
    return None


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    results = {}  # (server, case) -> report
    for name, launch, v2 in servers(work):
        if not v2 and shutil.which("nginx") is None and name == "nginx-floor":
            continue
        port, grpc_port = free_port(), free_port()
        proc = launch(port, grpc_port)
        try:
            for case, n in GRPC_CASES if name in GRPC_SERVERS else []:
                out = OUT / f"{case}-{name}.json"
                results[(name, case)] = bench(grpc_port, name, "identity", n, True, True, out, grpc=True)
            for case, model, n, binary in CASES:
                if model == "ppocr_cls" and name not in PPOCR_SERVERS:
                    continue
                if not v2 and (model != "identity" or (name == "nginx-floor" and n == LARGE)
                               or (name == "echo" and case != "binary-large")):
                    continue
                out = OUT / f"{case}-{name}.json"
                results[(name, case)] = bench(port, name, model, n, binary, v2, out)
        finally:
            stop(proc)
    top = max(int(c) for c in CONCURRENCY.split(","))
    lines = [f"Requests/s at concurrency {top} (tensord-bench, {DURATION} per level, 2 load threads); "
             "ratios are tensord's over the other's, from this one run. — means the server refused the "
             "case (errors).", "",
             "| case | tensord | KServe | MLServer | nginx floor | tensord/KServe | tensord/MLServer | tensord/floor |",
             "|---|---|---|---|---|---|---|---|"]

    def fmt(v):
        return "—" if v is None else f"{v:,.0f}"

    def ratio(a, b):
        return "—" if a is None or not b else f"{a / b:.1f}×"

    for case, *_ in CASES + GRPC_CASES:
        t, k, m, f = (at(results.get((s, case)), top) for s in ("tensord", "kserve", "mlserver", "nginx-floor"))
        lines.append(f"| {case} | {fmt(t)} | {fmt(k)} | {fmt(m)} | {fmt(f)} | {ratio(t, k)} | {ratio(t, m)} | {ratio(t, f)} |")
    tb, eb = at(results.get(("tensord", "binary-large")), top, "bytes"), at(results.get(("echo", "binary-large")), top, "bytes")
    if tb and eb:
        lines += ["", f"binary-large bytes/s (sent + received): tensord {tb / 1e6:,.0f} MB/s, echo responder on the "
                      f"same runtime {eb / 1e6:,.0f} MB/s: tensord/echo {tb / eb:.2f}×."]
    grpc_small, rest_small = (at(results.get(("tensord", c)), top) for c in ("grpc-small", "binary-small"))
    grpc_large, rest_large = (at(results.get(("tensord", c)), top, "bytes") for c in ("grpc-large", "binary-large"))
    if grpc_small and rest_small and grpc_large and rest_large:
        lines += ["", f"tensord gRPC against tensord REST (binary), same run: [1,{SMALL}] {grpc_small:,.0f} against "
                      f"{rest_small:,.0f} requests/s ({grpc_small / rest_small:.2f}×); [1,{LARGE}] "
                      f"{grpc_large / 1e6:,.0f} against {rest_large / 1e6:,.0f} MB/s ({grpc_large / rest_large:.2f}×)."]
    table = "\n".join(lines) + "\n"
    (OUT / "results.md").write_text(table)
    print("\n" + table)
    for case, *_ in CASES + GRPC_CASES:
        files = [str(OUT / f"{case}-{s}.json") for s in ("tensord", "kserve", "mlserver", "nginx-floor", "echo")
                 if results.get((s, case)) is not None]
        if files:
            subprocess.run([BENCH, "--from", ",".join(files), "--plot", str(OUT / f"{case}.svg")], check=True)
    print(f"results, JSON and plots in {OUT}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
