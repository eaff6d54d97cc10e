"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``), with grpc.aio.

Tensors travel in ``raw_input_contents`` / ``raw_output_contents`` (the raw form of
``mlc.serve.tensors``), or in a tensor's typed ``contents``; responses always use the raw form.
Errors abort the call with the gRPC status of ``mlc.serve.errors`` and the message; the mlc
error code is in the trailing metadata as ``mlc-error-code``. A message over
``max_body_bytes`` is refused by grpc itself (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import grpc

from mlc.serve import datatypes
from mlc.serve.errors import BadRequest, message_of, status_of
from mlc.serve.grpc_messages import CLASSES, METHODS, PACKAGE, SERVICE
from mlc.serve.protocol import InferRequest, InferResponse, RequestedOutput
from mlc.serve.service import InferenceService
from mlc.serve.tensors import checked_shape, from_raw, from_values, to_raw

# InferTensorContents field for each datatype
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}


def parameter_value(p):
    choice = p.WhichOneof("parameter_choice")
    return None if choice is None else getattr(p, choice)


def parse_request(msg) -> InferRequest:
    raw = list(msg.raw_input_contents)
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs")
    inputs = []
    for i, t in enumerate(msg.inputs):
        where = f"input {t.name!r}"
        if not t.name:
            raise BadRequest(f"input {i} has no name")
        if t.datatype not in datatypes.DATATYPES:
            raise BadRequest(f"{where}: unknown datatype {t.datatype!r} (the protocol's are {', '.join(datatypes.DATATYPES)})")
        shape = checked_shape(list(t.shape), where)
        if raw:
            inputs.append(from_raw(t.name, t.datatype, shape, raw[i], where))
        else:
            if t.datatype == "FP16":
                raise BadRequest(f"{where}: FP16 tensors travel in raw_input_contents (the protocol has no typed FP16 contents)")
            values = list(getattr(t.contents, _CONTENTS[t.datatype]))
            inputs.append(from_values(t.name, t.datatype, shape, values, where))
    outputs = [RequestedOutput(o.name) for o in msg.outputs] or None
    params = {k: parameter_value(v) for k, v in msg.parameters.items()}
    return InferRequest(inputs=inputs, outputs=outputs, id=msg.id, parameters=params)


def encode_response(response: InferResponse):
    msg = CLASSES["ModelInferResponse"](model_name=response.model_name, model_version=response.model_version, id=response.id)
    for tensor in response.outputs:
        msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=[int(d) for d in tensor.shape])
        msg.raw_output_contents.append(to_raw(tensor))
    return msg


class Servicer:
    def __init__(self, service: InferenceService):
        self.service = service

    async def ServerLive(self, request, context):
        return CLASSES["ServerLiveResponse"](live=self.service.live)

    async def ServerReady(self, request, context):
        return CLASSES["ServerReadyResponse"](ready=self.service.ready)

    async def ModelReady(self, request, context):
        try:
            served = self.service.find(request.name, request.version or None)
        except Exception as e:  # noqa: BLE001
            await _abort(context, e)
        return CLASSES["ModelReadyResponse"](ready=served.ready)

    async def ServerMetadata(self, request, context):
        return CLASSES["ServerMetadataResponse"](**self.service.server_metadata())

    async def ModelMetadata(self, request, context):
        try:
            meta = self.service.model_metadata(request.name, request.version or None)
        except Exception as e:  # noqa: BLE001
            await _abort(context, e)
        msg = CLASSES["ModelMetadataResponse"](name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for key in ("inputs", "outputs"):
            for t in meta[key]:
                getattr(msg, key).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return msg

    async def ModelInfer(self, request, context):
        try:
            parsed = parse_request(request)
        except Exception as e:  # noqa: BLE001
            self.service.metrics.requests.labels(request.model_name, request.model_version, "grpc", str(status_of(e)[0])).inc()
            await _abort(context, e)
        try:
            response = await self.service.infer(request.model_name, request.model_version or None, parsed, "grpc")
            return encode_response(response)
        except Exception as e:  # noqa: BLE001 - counted and logged by the service
            await _abort(context, e)


async def _abort(context, error: BaseException):
    _, grpc_status, code = status_of(error)
    context.set_trailing_metadata((("mlc-error-code", code),))
    await context.abort(getattr(grpc.StatusCode, grpc_status), message_of(error))


def generic_handler(service: InferenceService):
    servicer = Servicer(service)
    handlers = {}
    for method, (req, resp) in METHODS.items():
        handlers[method] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method),
            request_deserializer=CLASSES[req].FromString,
            response_serializer=CLASSES[resp].SerializeToString,
        )
    return grpc.method_handlers_generic_handler(f"{PACKAGE}.{SERVICE}", handlers)


def create_server(service: InferenceService, *, host: str, port: int, max_body_bytes: int) -> tuple[grpc.aio.Server, int]:
    """The gRPC server (not started) and the port it bound (``port`` 0: a free one)."""
    options = [("grpc.max_receive_message_length", max_body_bytes), ("grpc.max_send_message_length", -1)]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((generic_handler(service),))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return server, bound


