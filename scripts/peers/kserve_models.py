"""identity and add_sub as KServe custom models (KServe's Python model server, V2 REST).

Run: python kserve_models.py --http_port PORT  (KServe reads its flags from the command line)."""

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


if __name__ == "__main__":
    ModelServer(enable_grpc=False).start([Identity(), AddSub()])
