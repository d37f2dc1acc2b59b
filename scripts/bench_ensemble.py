"""Ensemble benchmark, one daemon, one run: a 2-step ensemble (one request) against the same
two models called one after the other by the client (two requests, the intermediate tensor
downloaded and sent back), at concurrency 1 and 16, through tritonclient's gRPC client (one
client per thread), in alternating rounds (medians). Two pairs:

- `light`: two element-wise graphs on FP32 [1, 150528] (602 KB in, between and out), where the
  transport dominates;
- `ppocr`: a normalising graph, then PP-OCR's text-direction classifier (from the rapidocr
  wheel) on FP32 [1, 3, 48, 192], where the model's compute dominates.

Every model batches dynamically (up to 16), so concurrent requests share executions in both.

The client and the daemon share the machine's cores, as a sidecar would.
"""

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Daemon  # noqa: E402
from model_builders import PPOCR_CLS, PPOCR_CLS_OUTPUT, fp32_input, save_onnx, wheel_file  # noqa: E402

BATCH = 16


def affine_graph(name, dims, scale, shift):
    """y = x * scale + shift."""
    consts = [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]), helper.make_tensor("b", TensorProto.FLOAT, [], [shift])]
    nodes = [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    return helper.make_graph(nodes, name, [fp32_input("x", *dims)], [fp32_input("y", *dims)], initializer=consts)


def ensemble(name, first, second, dims, between, out, out_dims):
    tensor = lambda n, d: f'{{ name: "{n}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, d))} ] }}'  # noqa: E731
    return (f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {BATCH}\n'
            f'input [ {tensor("INPUT", dims)} ]\noutput [ {tensor("OUTPUT", out_dims)} ]\n'
            'ensemble_scheduling { step [\n'
            f'  {{ model_name: "{first}" model_version: -1 input_map {{ key: "x" value: "INPUT" }} '
            f'output_map {{ key: "y" value: "between" }} }},\n'
            f'  {{ model_name: "{second}" model_version: -1 input_map {{ key: "{between}" value: "between" }} '
            f'output_map {{ key: "{out}" value: "OUTPUT" }} }}\n] }}\n')


def build(repo, threads):
    """Every model batches dynamically (up to BATCH), as a deployment serving concurrent clients would."""
    onnx_config = (f'backend = "onnx"\nmax_batch_size = {BATCH}\nonnxruntime = {{ intra_op_threads = {threads} }}\n'
                   '[dynamic_batching]\n')
    light = [150528]
    save_onnx(repo, "light_a", affine_graph("light_a", ["N", *light], 2.0, 1.0), config=onnx_config)
    save_onnx(repo, "light_b", affine_graph("light_b", ["N", *light], 0.5, -0.5), config=onnx_config)
    (repo / "light" / "1").mkdir(parents=True)
    (repo / "light" / "config.pbtxt").write_text(ensemble("light", "light_a", "light_b", light, "x", "y", light))
    image = [3, 48, 192]
    save_onnx(repo, "normalise", affine_graph("normalise", ["N", *image], 1 / 127.5, -1.0), config=onnx_config)
    (repo / "ppocr_cls" / "1").mkdir(parents=True)
    (repo / "ppocr_cls" / "1" / "model.onnx").write_bytes(wheel_file(PPOCR_CLS))
    (repo / "ppocr_cls" / "config.toml").write_text(onnx_config)
    (repo / "ppocr" / "1").mkdir(parents=True)
    (repo / "ppocr" / "config.pbtxt").write_text(ensemble("ppocr", "normalise", "ppocr_cls", image, "x", PPOCR_CLS_OUTPUT, [2]))
    return {"light": ([1, *light], ("light_a", "y"), ("light_b", "x", "y")),
            "ppocr": ([1, *image], ("normalise", "y"), ("ppocr_cls", "x", PPOCR_CLS_OUTPUT))}


def call(client, model, name, data, output):
    tensor = grpcclient.InferInput(name, list(data.shape), "FP32")
    tensor.set_data_from_numpy(data)
    return client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(output)]).as_numpy(output)


def load(url, concurrency, seconds, work):
    """Requests per second of `work(client)` from `concurrency` threads, each with its own client."""
    counts = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop = threading.Event()

    def worker(i):
        client = grpcclient.InferenceServerClient(url)
        work(client)
        start.wait()
        while not stop.is_set():
            work(client)
            counts[i] += 1
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    elapsed = time.perf_counter() - began
    for t in threads:
        t.join()
    return sum(counts) / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compute-threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = build(Path(tmp), args.compute_threads)
        daemon = Daemon("--log-level", "warn", repo=Path(tmp))
        try:
            url = daemon.grpc_url
            print(f"2-step ensemble against the client calling both models, tritonclient gRPC, "
                  f"{args.rounds} rounds of {args.seconds} s (medians), {args.compute_threads} intra-op thread(s) per model")
            print("| pair | concurrency | ensemble inf/s | client chain inf/s | ensemble / chain |")
            print("|---|---|---|---|---|")
            for pair, (dims, (first, between), (second, second_in, out)) in pairs.items():
                x = np.random.default_rng(1).random(dims, dtype=np.float32) * 255

                def ensemble_work(client, pair=pair, x=x):
                    return call(client, pair, "INPUT", x, "OUTPUT")

                def chain_work(client, first=first, between=between, second=second, second_in=second_in, out=out, x=x):
                    return call(client, second, second_in, call(client, first, "x", x, between), out)

                with grpcclient.InferenceServerClient(url) as client:
                    assert np.array_equal(ensemble_work(client), chain_work(client)), pair
                for concurrency in (1, 16):
                    ens, chain = [], []
                    for _ in range(args.rounds):
                        ens.append(load(url, concurrency, args.seconds, ensemble_work))
                        chain.append(load(url, concurrency, args.seconds, chain_work))
                    e, c = statistics.median(ens), statistics.median(chain)
                    print(f"| {pair} | {concurrency} | {e:.0f} | {c:.0f} | {e / c:.2f} |", flush=True)
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
