"""Sequence benchmark: one step of Silero VAD (a 512-sample chunk with its 64-sample context; the
recurrent state kept by the server) through tensord, against bare onnxruntime (Python) running
the same graph with the state carried by hand, at 1 and 16 concurrent streams, in one run.

Run through scripts/bench-sequences. tensord is driven by tensord-bench (compiled client, one
keep-alive connection per stream, binary tensors over HTTP, and gRPC); each stream is a sequence
restarted every 100 steps. The reference runs as many Python threads, each with its own state,
on as many sessions as tensord has instances, with the same intra-op thread count. Two models:
silero's graph as it ships (its state's batch dimension is second, [2, batch, 128], so every step
runs alone), and silero_vad_batched, the same graph with the state's batch dimension moved first
(tests/python/model_builders.py), whose steps of different streams the `oldest` strategy runs
in batches.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Daemon  # noqa: E402
from model_builders import silero_batched  # noqa: E402

WHEEL = ROOT / "target" / "wheels" / "silero_vad-6.2.3-py3-none-any.whl"
MODEL = "silero_vad/data/silero_vad_16k_op15.onnx"
STREAMS = (1, 16)
# The floor: tensord over bare onnxruntime at 16 streams.
TARGET = 0.8


def build_repo(repo, instances, threads):
    graph = zipfile.ZipFile(WHEEL).read(MODEL)
    for name, model in (("silero_vad", graph), ("silero_vad_batched", silero_batched(graph))):
        (repo / name / "1").mkdir(parents=True)
        config = (ROOT / "examples" / "models" / name / "config.toml").read_text()
        config = config.replace('backend = "onnx"\n', f'backend = "onnx"\ninstance_count = {instances}\n'
                                f'onnxruntime = {{ intra_op_threads = {threads} }}\n')
        (repo / name / "config.toml").write_text(config)
        (repo / name / "1" / "model.onnx").write_bytes(model)


def chunk():
    return np.random.default_rng(1).uniform(-0.3, 0.3, (1, 576)).astype(np.float32)


def tensord(url, model, streams, seconds, grpc, inputs):
    """tensord-bench, `streams` sequences at once: steps/s."""
    cmd = [str(ROOT / "target" / "release" / "tensord-bench"), "--url", f"http://{url}", "--model", model,
           "--concurrency", str(streams), "--duration", f"{seconds}s", "--warmup", "300ms", "--threads", "1",
           "--input-data", str(inputs), "--sequence-length", "100", "--quiet", "--json"]
    if grpc:
        cmd += ["--grpc", "--shape", "input:1,576"]
        cmd += ["--shape", "sr:", "--datatype", "sr:INT64"] if model == "silero_vad" else []
    else:
        cmd += ["--binary"]
    level = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["results"][0]
    assert level["errors"] == 0, level["first_errors"]
    return level["throughput_rps"]


def reference(sessions, streams, seconds):
    """Bare onnxruntime: `streams` threads, each stepping its own sequence: steps/s."""
    x, sr = chunk(), np.array(16000, np.int64)
    counts = [0] * streams
    stop = time.perf_counter() + seconds

    def run(k):
        session, state = sessions[k % len(sessions)], np.zeros((2, 1, 128), np.float32)
        while time.perf_counter() < stop:
            for _ in range(100):
                _, state = session.run(None, {"input": x, "state": state, "sr": sr})
                counts[k] += 1
            state = np.zeros((2, 1, 128), np.float32)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--compute-threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        build_repo(repo, args.instances, args.compute_threads)
        chunk_only = {"input": {"content": chunk().ravel().tolist(), "shape": [1, 576]}}
        inputs = {"silero_vad": Path(tmp) / "chunk.json", "silero_vad_batched": Path(tmp) / "chunk_only.json"}
        inputs["silero_vad"].write_text(json.dumps({"data": [{**chunk_only, "sr": {"content": [16000], "shape": []}}]}))
        inputs["silero_vad_batched"].write_text(json.dumps({"data": [chunk_only]}))
        daemon = Daemon("--log-level", "warn", repo=repo)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.compute_threads
        model = zipfile.ZipFile(WHEEL).read(MODEL)
        sessions = [ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
                    for _ in range(args.instances)]
        print(f"silero VAD step; {args.instances} instances, {args.compute_threads} intra-op thread(s) each")
        print("| model | streams | tensord HTTP steps/s | tensord gRPC steps/s | onnxruntime steps/s | ratio (HTTP) |")
        print("|---|---|---|---|---|---|")
        ratios = {}
        for name in ("silero_vad", "silero_vad_batched"):
            for streams in STREAMS:
                http, grpc, ref = [], [], []
                share = args.seconds / args.rounds
                # Alternated in short rounds, so that drift in this VM's speed falls on all alike.
                for _ in range(args.rounds):
                    http.append(tensord(daemon.url, name, streams, share, False, inputs[name]))
                    grpc.append(tensord(daemon.grpc_url, name, streams, share, True, inputs[name]))
                    ref.append(reference(sessions, streams, share))
                http, grpc, ref = (float(np.median(v)) for v in (http, grpc, ref))
                ratios[name, streams] = http / ref
                print(f"| {name} | {streams} | {http:.0f} | {grpc:.0f} | {ref:.0f} | {http / ref:.2f} |", flush=True)
        daemon.stop()
    best = ratios["silero_vad_batched", 16]
    met = best >= TARGET
    print(f"target (16 streams, oldest batching, ≥ {TARGET}× onnxruntime): {'met' if met else 'missed'} ({best:.2f})")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
