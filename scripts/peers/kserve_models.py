"""identity and add_sub as KServe custom models (KServe's Python model server, V2 REST), and with
PPOCR_CLS=path/to/model.onnx also ppocr_cls, that graph on onnxruntime (2 intra-op threads), as a
KServe user would serve it.

Run: python kserve_models.py --http_port PORT --grpc_port PORT  (KServe reads its flags from the
command line; its gRPC server serves the same models)."""

import os

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


def output(name, array, datatype, request):
    out = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
    out.set_data_from_numpy(array, binary_data=request.use_binary_outputs)
    return out


class Identity(Model):
    def __init__(self):
        super().__init__("identity")
        self.ready = True

    # Metadata, which load generators such as perf_analyzer read.
    def get_input_types(self):
        return [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]

    def get_output_types(self):
        return [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, -1]}]

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        tensor = payload.inputs[0]
        outputs = [output("OUTPUT0", tensor.as_numpy(), tensor.datatype, payload)]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


class AddSub(Model):
    def __init__(self):
        super().__init__("add_sub")
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        a, b = (payload.inputs[i].as_numpy() for i in range(2))
        outputs = [output("OUTPUT0", a + b, "INT32", payload), output("OUTPUT1", a - b, "INT32", payload)]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


class OnnxGraph(Model):
    def __init__(self, name, path):
        import onnxruntime

        super().__init__(name)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 2
        self.session = onnxruntime.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feed = {t.name: t.as_numpy() for t in payload.inputs}
        names = [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feed)
        outputs = [output(n, r, "FP32", payload) for n, r in zip(names, results)]
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


if __name__ == "__main__":
    models = [Identity(), AddSub()]
    if os.environ.get("PPOCR_CLS"):
        models.append(OnnxGraph("ppocr_cls", os.environ["PPOCR_CLS"]))
    ModelServer().start(models)
