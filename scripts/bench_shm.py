"""Shared-memory benchmark, one daemon, one run:

1. identity FP32 [1,150528] (a 224×224×3 image, 602 KB each way) driven by perf_analyzer over
   REST, with binary tensors and with `--shared-memory system`, at concurrency 1 and 8, in
   alternating rounds (medians). Bytes/s counts the input and the output of every request.
2. PP-OCR's text-direction classifier (from the rapidocr wheel), its [1,3,48,192] input from
   shared memory (perf_analyzer, concurrency 1), against bare onnxruntime (Python) on the same
   graph with the same intra-op thread count.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Daemon  # noqa: E402
from model_builders import PPOCR_CLS, wheel_file  # noqa: E402

PA = ROOT / "target" / "perf_analyzer" / "perf_analyzer"
ELEMENTS = 150528
# The goal: shm bytes/s over REST binary bytes/s.
TARGET = 2.0


def perf(url, model, shape, concurrency, seconds, shm):
    cmd = [str(PA), "-m", model, "-u", url, "-i", "http", "--shape", shape,
           "--concurrency-range", str(concurrency), "-p", str(int(seconds * 1000 / 3)),
           "--stability-percentage", "100"]
    if shm:
        cmd += ["--shared-memory", "system", "--output-shared-memory-size", str(4 * ELEMENTS)]
    env = dict(os.environ, LD_LIBRARY_PATH=str(PA.parent))
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return float(re.search(r"Throughput: ([\d.]+) infer/sec", run.stdout).group(1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compute-threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "identity").mkdir()
        (repo / "identity" / "config.toml").write_text(
            'backend = "builtin"\nbuiltin = "identity"\n'
            f'[[input]]\nname = "INPUT0"\ndatatype = "FP32"\ndims = [1, {ELEMENTS}]\n'
            f'[[output]]\nname = "OUTPUT0"\ndatatype = "FP32"\ndims = [1, {ELEMENTS}]\n')
        (repo / "ppocr_cls" / "1").mkdir(parents=True)
        model = wheel_file(PPOCR_CLS)
        (repo / "ppocr_cls" / "1" / "model.onnx").write_bytes(model)
        (repo / "ppocr_cls" / "config.toml").write_text(
            f'backend = "onnx"\nonnxruntime = {{ intra_op_threads = {args.compute_threads} }}\n')
        daemon = Daemon("--log-level", "warn", "--allow-client-shm", repo=repo)
        try:
            print(f"identity FP32 [1,{ELEMENTS}] over REST, perf_analyzer, {args.rounds} rounds of {args.seconds} s (medians)")
            print("| concurrency | binary req/s | binary MB/s | shm req/s | shm MB/s | shm / binary |")
            print("|---|---|---|---|---|---|")
            size = 2 * 4 * ELEMENTS / 1e6
            met = True
            for concurrency in (1, 8):
                binary, shm = [], []
                for _ in range(args.rounds):
                    binary.append(perf(daemon.url, "identity", f"INPUT0:1,{ELEMENTS}", concurrency, args.seconds, False))
                    shm.append(perf(daemon.url, "identity", f"INPUT0:1,{ELEMENTS}", concurrency, args.seconds, True))
                b, s = statistics.median(binary), statistics.median(shm)
                print(f"| {concurrency} | {b:.0f} | {b * size:.0f} | {s:.0f} | {s * size:.0f} | {s / b:.2f} |", flush=True)
                met = met and s / b >= TARGET
            print(f"target (shm ≥ {TARGET}× REST binary bytes/s at both): {'met' if met else 'missed'}")
            served = perf(daemon.url, "ppocr_cls", "x:1,3,48,192", 1, args.seconds, True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.compute_threads
            session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
            x = np.random.default_rng(1).random((1, 3, 48, 192), dtype=np.float32)
            for _ in range(20):
                session.run(None, {"x": x})
            count, stop = 0, time.perf_counter() + args.seconds
            started = time.perf_counter()
            while time.perf_counter() < stop:
                session.run(None, {"x": x})
                count += 1
            bare = count / (time.perf_counter() - started)
            print(f"\nppocr_cls [1,3,48,192] from shm, concurrency 1, {args.compute_threads} intra-op threads")
            print("| tensord shm req/s | onnxruntime runs/s | ratio |")
            print("|---|---|---|")
            print(f"| {served:.0f} | {bare:.0f} | {served / bare:.2f} |")
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
