"""Backend benchmark: each backend on CPU at batch sizes 1, 8, 32, one client, binary tensors.

Run through scripts/bench-models. For every ONNX model the same graph also runs in-process in
onnxruntime with the same thread count, measured in the same run: the ratio column compares
tensord's end-to-end throughput (HTTP included) with onnxruntime's bare compute.
"""

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import Daemon  # noqa: E402
from model_builders import cnn_graph, mlp_graph, save_onnx, write_safetensors_cnn, write_safetensors_mlp  # noqa: E402

WHEEL = ROOT / "target" / "wheels" / "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
MLP = (256, 512, 512, 10)


def build_repo(repo):
    rng = np.random.default_rng(7)
    onnx_files = {
        "onnx_cnn": save_onnx(repo, "onnx_cnn", cnn_graph(rng, size=64, channels=(16, 32), classes=10)),
        "onnx_mlp": save_onnx(repo, "onnx_mlp", mlp_graph(rng, MLP), 17),
    }
    (repo / "ppocr_cls" / "1").mkdir(parents=True)
    with zipfile.ZipFile(WHEEL) as wheel:
        data = wheel.read("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    (repo / "ppocr_cls" / "1" / "model.onnx").write_bytes(data)
    (repo / "ppocr_cls" / "config.toml").write_text('backend = "onnx"\n')
    onnx_files["ppocr_cls"] = repo / "ppocr_cls" / "1" / "model.onnx"
    write_safetensors_mlp(rng, repo, "st_mlp", MLP, "relu")
    write_safetensors_cnn(rng, repo, "st_cnn", (16, 32), 10)
    (repo / "add_sub").mkdir()
    (repo / "add_sub" / "config.toml").write_text('backend = "builtin"\n')
    return onnx_files


SHAPES = {
    "add_sub": (16,),
    "onnx_cnn": (3, 64, 64),
    "onnx_mlp": (MLP[0],),
    "ppocr_cls": (3, 48, 192),
    "st_mlp": (MLP[0],),
    "st_cnn": (3, 64, 64),
}


def timed(call, seconds, max_calls=500):
    for _ in range(2):
        call()
    latencies, start = [], time.perf_counter()
    while time.perf_counter() - start < seconds and len(latencies) < max_calls:
        t = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t)
    return np.array(latencies)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--compute-threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        onnx_files = build_repo(repo)
        daemon = Daemon("--compute-threads", str(args.compute_threads), "--log-level", "warn", repo=repo)
        client = httpclient.InferenceServerClient(daemon.url, network_timeout=300)
        rng = np.random.default_rng(0)
        print(f"compute threads: {args.compute_threads}")
        print("| model | batch | tensord inf/s | p50 ms | p99 ms | onnxruntime inf/s | ratio |")
        print("|---|---|---|---|---|---|---|")
        for model, shape in SHAPES.items():
            meta = client.get_model_metadata(model)
            sess = None
            if model in onnx_files:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = args.compute_threads
                opts.inter_op_num_threads = 1
                sess = ort.InferenceSession(str(onnx_files[model]), opts, providers=["CPUExecutionProvider"])
            for batch in (1, 8, 32):
                if meta["inputs"][0]["datatype"] == "INT32":
                    arrays = [rng.integers(-9, 9, (batch, *shape), dtype=np.int32) for _ in meta["inputs"]]
                else:
                    arrays = [rng.standard_normal((batch, *shape)).astype(np.float32) for _ in meta["inputs"]]
                inputs = []
                for spec, arr in zip(meta["inputs"], arrays):
                    i = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
                    i.set_data_from_numpy(arr)
                    inputs.append(i)
                lat = timed(lambda: client.infer(model, inputs), args.seconds)
                ours = batch / lat.mean()
                ref = ratio = "-"
                if sess is not None:
                    feed = {sess.get_inputs()[0].name: arrays[0]}
                    ref_lat = timed(lambda: sess.run(None, feed), args.seconds)
                    ref = f"{batch / ref_lat.mean():.0f}"
                    ratio = f"{ours / (batch / ref_lat.mean()):.2f}"
                p50, p99 = np.percentile(lat, 50) * 1e3, np.percentile(lat, 99) * 1e3
                print(f"| {model} | {batch} | {ours:.0f} | {p50:.2f} | {p99:.2f} | {ref} | {ratio} |", flush=True)
        client.close()
        daemon.stop()


if __name__ == "__main__":
    main()
