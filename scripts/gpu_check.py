"""The GPU check of issue 18, for one command on a GPU machine: the CUDA build of tensord
(scripts/build-cuda) serves safetensors models on cuda:0 and the same weights on the CPU; every
GPU output is compared with the CPU's and, where PyTorch has the GPU, with PyTorch eager on the
same weights; dynamic batching on the GPU is measured at concurrency 1, 8 and 32 with
tensord-bench, against PyTorch eager at batch 1, 8 and 32. Then /metrics must report the GPU's
memory, and a batch that runs out of GPU memory (PyTorch holds all but 512 MiB) must fail alone
with a 500 while the model goes on serving. Prints one table; exits 1 on any mismatch over 1e-3,
a GPU model that does not load, or a failed memory check.

Needs numpy (and torch for the PyTorch columns). GPU_CHECK_DEVICE=cpu runs the same steps with
every model on the CPU (a dry run on a machine without a GPU)."""

import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import call, free_port, start, stop  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TENSORD = os.environ.get("TENSORD_BIN", str(ROOT / "target/cuda/tensord"))
BENCH = os.environ.get("BENCH_BIN", str(ROOT / "target/cuda/tensord-bench"))
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda:0")
DURATION = os.environ.get("DURATION", "4s")
TOLERANCE = 1e-3
RNG = np.random.default_rng(18)
# name: (architecture, the shape of one input row)
MODELS = {
    "mlp": ({"kind": "mlp", "layers": [512, 2048, 2048, 512], "activation": "gelu"}, [512]),
    "cnn": ({"kind": "cnn", "in_channels": 3, "stages": [16, 32], "num_classes": 10}, [3, 32, 32]),
    # Larger than the toys, so that the GPU has work: 224x224 with wider stages.
    "cnn224": ({"kind": "cnn", "in_channels": 3, "stages": [64, 128, 256], "num_classes": 1000}, [3, 224, 224]),
}


def weights_of(arch):
    w = lambda *shape, fan: (RNG.standard_normal(shape) / np.sqrt(fan)).astype(np.float32)  # noqa: E731
    if arch["kind"] == "mlp":
        sizes = arch["layers"]
        out = {}
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = w(b, a, fan=a), w(b, fan=a)
        return out
    stages = arch["stages"]
    out = {"stem.weight": w(stages[0], 3, 3, 3, fan=27), "stem.bias": w(stages[0], fan=27)}
    previous = stages[0]
    for i, ch in enumerate(stages):
        p = f"stages.{i}."
        out[p + "conv1.weight"], out[p + "conv1.bias"] = w(ch, previous, 3, 3, fan=9 * previous), w(ch, fan=9)
        out[p + "conv2.weight"], out[p + "conv2.bias"] = w(ch, ch, 3, 3, fan=9 * ch), w(ch, fan=9)
        if i > 0 or ch != previous:
            out[p + "proj.weight"], out[p + "proj.bias"] = w(ch, previous, 1, 1, fan=previous), w(ch, fan=1)
        previous = ch
    out["fc.weight"], out["fc.bias"] = w(arch["num_classes"], previous, fan=previous), w(arch["num_classes"], fan=1)
    return out


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_model(repo, name, arch, weights, device):
    (repo / name / "1").mkdir(parents=True)
    write_safetensors(repo / name / "1" / "model.safetensors", weights)
    fields = ", ".join(f"{k} = {json.dumps(v)}" for k, v in arch.items())
    (repo / name / "config.toml").write_text(
        f'backend = "safetensors"\ndevice = "{device}"\narchitecture = {{ {fields} }}\n'
        "max_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_microseconds = 500\n")


def http(port, path, body=None, headers=None):
    return call(f"http://127.0.0.1:{port}{path}", body, headers, timeout=120)


def http_infer(port, model, x):
    header = json.dumps({"inputs": [{"name": "INPUT0", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return http(port, f"/v2/models/{model}/infer", header + x.tobytes(),
                {"Inference-Header-Content-Length": str(len(header))})


def infer(port, model, x):
    status, headers, body = http_infer(port, model, x)
    if status != 200:
        raise RuntimeError(f"{model}: {status} {body[:300]!r}")
    length = int(headers["Inference-Header-Content-Length"])
    out = json.loads(body[:length])["outputs"][0]
    return np.frombuffer(body[length:], np.float32).reshape(out["shape"])


def relative_error(got, ref):
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-6))


def torch_net(arch, weights, device):
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v).to(device) for k, v in weights.items()}

    def forward(x):
        if arch["kind"] == "mlp":
            n = len(arch["layers"]) - 1
            for i in range(n):
                x = F.linear(x, t[f"layers.{i}.weight"], t[f"layers.{i}.bias"])
                if i + 1 < n:
                    x = F.gelu(x)
            return x
        x = F.relu(F.conv2d(x, t["stem.weight"], t["stem.bias"], padding=1))
        for i, _ in enumerate(arch["stages"]):
            p, stride = f"stages.{i}.", 1 if i == 0 else 2
            shortcut = (F.conv2d(x, t[p + "proj.weight"], t[p + "proj.bias"], stride=stride)
                        if p + "proj.weight" in t else x)
            y = F.relu(F.conv2d(x, t[p + "conv1.weight"], t[p + "conv1.bias"], stride=stride, padding=1))
            x = F.relu(F.conv2d(y, t[p + "conv2.weight"], t[p + "conv2.bias"], padding=1) + shortcut)
        return F.linear(x.mean(dim=(2, 3)), t["fc.weight"], t["fc.bias"])

    return forward


def torch_device():
    try:
        import torch
    except ImportError:
        return None
    if DEVICE == "cpu":
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else None


def torch_rate(forward, row, batch, device):
    import torch

    x = torch.from_numpy(RNG.standard_normal([batch, *row]).astype(np.float32)).to(device)
    with torch.no_grad():
        for _ in range(3):
            forward(x)
        if device != "cpu":
            torch.cuda.synchronize()
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < 2:
            forward(x)
            n += 1
        if device != "cpu":
            torch.cuda.synchronize()
        return n * batch / (time.perf_counter() - started)


def bench(port, model, row):
    out = subprocess.run([BENCH, "--url", f"http://127.0.0.1:{port}", "--model", model, "--binary",
                          "--shape", "INPUT0:" + ",".join(str(d) for d in [1, *row]), "--concurrency", "1,8,32",
                          "--duration", DURATION, "--warmup", "1s", "--quiet", "--json", "--values", "off"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"tensord-bench on {model}: {out.stderr[-500:]}")
    return [r["throughput_rps"] for r in json.loads(out.stdout)["results"]]


def gpu_memory(port):
    """nv_gpu_memory_{total,used}_bytes from /metrics, as {(name, uuid): bytes}."""
    _, _, body = http(port, "/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("nv_gpu_memory_"):
            name, _, value = line.partition("{")
            out[(name, value.split('"')[1])] = int(value.rsplit(" ", 1)[1])
    return out


def memory_checks(port, x_row, failed):
    """/metrics reports the GPU; under memory pressure a batch of 32 on cnn224 fails with a 500
    and the model goes on serving: batch 1 still answers, and batch 32 again once memory is free."""
    notes = []
    memory = gpu_memory(port)
    if DEVICE == "cpu":
        if memory:
            failed.append(f"/metrics reports GPU memory without a GPU: {memory}")
        return ["/metrics: no GPU memory families (no GPU opened)"]
    totals = [v for (n, _), v in memory.items() if n == "nv_gpu_memory_total_bytes"]
    used = [v for (n, _), v in memory.items() if n == "nv_gpu_memory_used_bytes"]
    if len(totals) != 1 or len(used) != 1 or not 0 < used[0] < totals[0]:
        failed.append(f"/metrics GPU memory: {memory}")
        return notes
    notes.append(f"/metrics: {used[0] / 2**30:.1f} of {totals[0] / 2**30:.1f} GiB used ({next(iter(memory))[1]})")
    if torch_device() is None:
        failed.append("the out-of-memory check needs PyTorch on the GPU")
        return notes
    import torch

    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - 512 * 2**20, dtype=torch.uint8, device="cuda:0")
    try:
        after = [v for (n, _), v in gpu_memory(port).items() if n == "nv_gpu_memory_used_bytes"]
        if not after or after[0] < used[0] + hog.numel() * 0.9:
            failed.append(f"/metrics used bytes did not follow a {hog.numel() >> 20} MiB allocation: {after}")
        big = RNG.standard_normal([32, *x_row]).astype(np.float32)
        status, _, body = http_infer(port, "cnn224_gpu", big)
        notes.append(f"out of memory: batch 32 -> {status} {body[:160]!r}")
        if status != 500:
            failed.append(f"cnn224 batch 32 with 512 MiB free: {status}, not 500")
        small = RNG.standard_normal([1, *x_row]).astype(np.float32)
        err = relative_error(infer(port, "cnn224_gpu", small), infer(port, "cnn224_cpu", small))
        notes.append(f"then batch 1 -> 200, vs CPU {err:.1e}")
        if err > TOLERANCE:
            failed.append(f"cnn224 batch 1 after the OOM: relative error {err:.2e}")
    finally:
        del hog
        torch.cuda.empty_cache()
    err = relative_error(infer(port, "cnn224_gpu", big), infer(port, "cnn224_cpu", big))
    notes.append(f"memory released: batch 32 -> 200, vs CPU {err:.1e}")
    if err > TOLERANCE:
        failed.append(f"cnn224 batch 32 after the OOM: relative error {err:.2e}")
    return notes


def main():
    failed = []
    repo = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    weights = {name: weights_of(arch) for name, (arch, _) in MODELS.items()}
    for name, (arch, _) in MODELS.items():
        write_model(repo, f"{name}_gpu", arch, weights[name], DEVICE)
        write_model(repo, f"{name}_cpu", arch, weights[name], "cpu")
    port = free_port()
    proc = start([TENSORD, "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", "off", "--model-repository",
                  str(repo), "--log-level", "warn", "--drain-delay", "0"], port)
    rows, notes = [], []
    try:
        tdev = torch_device()
        for name, (arch, row) in MODELS.items():
            status, _, body = http(port, f"/v2/models/{name}_gpu")
            meta = json.loads(body)
            if status != 200 or meta.get("state", "READY") != "READY":
                failed.append(f"{name} on {DEVICE} did not load: {meta.get('reason', body[:300])}")
                continue
            x = RNG.standard_normal([4, *row]).astype(np.float32)
            gpu, cpu = infer(port, f"{name}_gpu", x), infer(port, f"{name}_cpu", x)
            vs_cpu = relative_error(gpu, cpu)
            vs_torch, torch_rates = None, [None] * 3
            if tdev is not None:
                import torch
                forward = torch_net(arch, weights[name], tdev)
                with torch.no_grad():
                    ref = forward(torch.from_numpy(x).to(tdev)).cpu().numpy()
                vs_torch = relative_error(gpu, ref)
                torch_rates = [torch_rate(forward, row, b, tdev) for b in (1, 8, 32)]
            for label, err in (("CPU", vs_cpu), ("PyTorch", vs_torch)):
                if err is not None and err > TOLERANCE:
                    failed.append(f"{name}: {DEVICE} against {label}: relative error {err:.2e}")
            rows.append((name, vs_cpu, vs_torch, bench(port, f"{name}_gpu", row), torch_rates))
        if any(r[0] == "cnn224" for r in rows):
            notes = memory_checks(port, MODELS["cnn224"][1], failed)
    finally:
        stop(proc)
    fmt = lambda v, f="{:,.0f}": "—" if v is None else f.format(v)  # noqa: E731
    print(f"\nGPU check on {DEVICE}: outputs (max relative error, batch of 4) and inferences/s "
          f"(tensord: dynamic batching at concurrency 1/8/32, one row per request; PyTorch eager: batch 1/8/32)\n")
    print("| model | vs CPU | vs PyTorch | tensord c=1 | c=8 | c=32 | PyTorch b=1 | b=8 | b=32 | tensord/PyTorch at 32 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, vs_cpu, vs_torch, ours, theirs in rows:
        ratio = ours[2] / theirs[2] if theirs[2] else None
        print(f"| {name} | {vs_cpu:.1e} | {fmt(vs_torch, '{:.1e}')} | " + " | ".join(fmt(v) for v in ours) + " | "
              + " | ".join(fmt(v) for v in theirs) + f" | {fmt(ratio, '{:.2f}×')} |")
    print()
    for n in notes:
        print(n)
    for f in failed:
        print("FAILED:", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
