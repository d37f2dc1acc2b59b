"""Writes the fuzz seed corpus: requests as tritonclient builds them (JSON and binary, every
datatype, chunked and plain framing), gRPC messages as tritonclient.grpc and ovmsclient build
them, and small JPEG/PNG images as Pillow writes them.
Run by scripts/fuzz (in the test venv) before the first fuzzing run; the kept corpus is
committed minimised."""

import gzip
import io
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from PIL import Image

CORPUS = Path(sys.argv[1] if len(sys.argv) > 1 else "fuzz/corpus")

ARRAYS = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "UINT16": np.array([[0, 65535]], dtype=np.uint16),
    "INT32": np.arange(16, dtype=np.int32).reshape(1, 16),
    "INT64": np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    "UINT64": np.array([[2**64 - 1]], dtype=np.uint64),
    "FP16": np.array([[1.5, -2.25]], dtype=np.float16),
    "FP32": np.array([[0.1, -3.5, 1e30, 1e-30]], dtype=np.float32),
    "FP64": np.array([[0.1, 1e300]], dtype=np.float64),
    "BYTES": np.array([[b"tensord", b"", "é".encode()]], dtype=np.object_),
}


def requests():
    for dtype, array in ARRAYS.items():
        for binary in (False, True):
            inp = httpclient.InferInput("INPUT0", list(array.shape), dtype)
            inp.set_data_from_numpy(array, binary_data=binary)
            out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)
            body, json_size = httpclient.InferenceServerClient.generate_request_body(
                [inp], outputs=[out], request_id="7", parameters={"note": "seed"})
            yield f"{dtype.lower()}-{'binary' if binary else 'json'}", body, json_size
    # A sequence's request, its id a number and a string (Triton's sequence extension).
    inp = httpclient.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[3]], dtype=np.int32))
    for sequence_id in (2**64 - 1, "stream-7"):
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            [inp], sequence_id=sequence_id, sequence_start=True, sequence_end=False)
        yield f"sequence-{type(sequence_id).__name__}", body, json_size
    # Tensors in shared memory (Triton's extension): one input in a region at an offset, one in
    # the body, an output written to a region.
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", 64, offset=64)
    inputs[1].set_data_from_numpy(ARRAYS["INT32"], binary_data=True)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
    out.set_shared_memory("output_data", 64, offset=4096)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=[out])
    yield "shared-memory", body, json_size


def http(body, json_size, chunked):
    head = "POST /v2/models/identity/infer HTTP/1.1\r\nHost: localhost\r\n"
    if json_size is not None:
        head += f"Inference-Header-Content-Length: {json_size}\r\n"
    if not chunked:
        return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    half = len(body) // 2
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:half], body[half:]) if p)
    return f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"


def grpc_messages():
    """gRPC request messages as tritonclient.grpc and ovmsclient build them: ModelInferRequest
    with raw and typed contents, and TF Serving's PredictRequest with tensor_content and typed
    values."""
    import tritonclient.grpc as grpcclient
    from ovmsclient.tfs_compat.grpc.tensors import make_tensor_proto
    from ovmsclient.tfs_compat.protos.tensorflow_serving.apis import predict_pb2
    from tritonclient.grpc import service_pb2

    for dtype, array in ARRAYS.items():
        inp = grpcclient.InferInput("INPUT0", list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        request = service_pb2.ModelInferRequest(model_name="identity", id="7")
        request.inputs.extend([inp._get_tensor()])
        request.raw_input_contents.extend([inp._get_content()])
        request.parameters["timeout"].int64_param = 1000
        yield f"infer-{dtype.lower()}", request.SerializeToString()
    typed = service_pb2.ModelInferRequest(model_name="add_sub")
    for name, field, values in (("INPUT0", "int_contents", [1, -2, 3]), ("INPUT1", "fp32_contents", [0.5]),
                                ("INPUT2", "bytes_contents", [b"x", b""]), ("INPUT3", "bool_contents", [True])):
        tensor = typed.inputs.add(name=name, datatype={"int_contents": "INT32", "fp32_contents": "FP32",
                                                       "bytes_contents": "BYTES", "bool_contents": "BOOL"}[field])
        tensor.shape.extend([1, len(values)])
        getattr(tensor.contents, field).extend(values)
    yield "infer-typed", typed.SerializeToString()
    for sequence_id in (7, "stream-7"):
        request = service_pb2.ModelInferRequest(model_name="simple_sequence")
        if isinstance(sequence_id, str):
            request.parameters["sequence_id"].string_param = sequence_id
        else:
            request.parameters["sequence_id"].int64_param = sequence_id
        request.parameters["sequence_start"].bool_param = True
        request.parameters["sequence_end"].bool_param = True
        yield f"infer-sequence-{type(sequence_id).__name__}", request.SerializeToString()
    request = service_pb2.ModelInferRequest(model_name="simple")
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_shared_memory("input_data", 64, offset=64)
    inputs[1].set_data_from_numpy(ARRAYS["INT32"])
    out = grpcclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("output_data", 64)
    request.inputs.extend([i._get_tensor() for i in inputs])
    request.raw_input_contents.extend([inputs[1]._get_content()])
    request.outputs.extend([out._get_tensor()])
    yield "infer-shared-memory", request.SerializeToString()
    for dtype, array in ARRAYS.items():
        if dtype in ("BYTES",):
            continue
        predict = predict_pb2.PredictRequest()
        predict.model_spec.name = "identity"
        predict.inputs["INPUT0"].CopyFrom(make_tensor_proto(array))
        yield f"predict-{dtype.lower()}", predict.SerializeToString()
    predict = predict_pb2.PredictRequest(output_filter=["OUTPUT0"])
    predict.model_spec.name = "image_probe"
    predict.model_spec.version.value = 1
    predict.inputs["IMAGE"].CopyFrom(make_tensor_proto([b"\xff\xd8not a jpeg"], shape=[1]))
    predict.inputs["SCALAR"].CopyFrom(make_tensor_proto(2.5))
    yield "predict-typed", predict.SerializeToString()


def main():
    for target in ("http_request", "infer_request", "image", "grpc_message"):
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
    # The first byte picks the call's grpc-encoding: identity, gzip, deflate.
    for name, message in grpc_messages():
        (CORPUS / "grpc_message" / name).write_bytes(b"\x00\x00" + struct.pack(">I", len(message)) + message)
        for code, packed in ((1, gzip.compress(message)), (2, zlib.compress(message))):
            framed = bytes([code, 1]) + struct.pack(">I", len(packed)) + packed
            (CORPUS / "grpc_message" / f"{name}-{code}").write_bytes(framed)
    for name, body, json_size in requests():
        length = 0xFFFFFFFF if json_size is None else json_size
        (CORPUS / "infer_request" / name).write_bytes(struct.pack("<I", length) + body)
        (CORPUS / "http_request" / name).write_bytes(http(body, json_size, chunked=False))
        (CORPUS / "http_request" / f"{name}-chunked").write_bytes(http(body, json_size, chunked=True))
    (CORPUS / "http_request" / "ready").write_bytes(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    # Compressed bodies, which the body reader inflates as they arrive.
    body = b'{"inputs":[{"name":"INPUT0","shape":[1,2],"datatype":"FP32","data":[1,2]}]}'
    for coding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        head = f"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Encoding: {coding}\r\nContent-Length: {len(packed)}\r\n\r\n"
        (CORPUS / "http_request" / f"compressed_{coding}").write_bytes(head.encode() + packed)
    pixels = np.arange(8 * 6 * 3, dtype=np.uint8).reshape(6, 8, 3)
    images = {
        "rgb.png": Image.fromarray(pixels),
        "gray.png": Image.fromarray(pixels[:, :, 0]),
        "rgba.png": Image.fromarray(np.dstack([pixels, pixels[:, :, :1]])),
        "palette.png": Image.fromarray(pixels).convert("P"),
        "rgb.jpg": Image.fromarray(pixels),
        "gray.jpg": Image.fromarray(pixels[:, :, 0]),
    }
    for name, image in images.items():
        buf = io.BytesIO()
        if name.endswith(".jpg"):
            image.save(buf, "JPEG", quality=80)
        else:
            image.save(buf, "PNG")
        (CORPUS / "image" / name).write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", progressive=True)
    (CORPUS / "image" / "progressive.jpg").write_bytes(buf.getvalue())


if __name__ == "__main__":
    main()
