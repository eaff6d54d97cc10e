"""The Open Inference Protocol's gRPC messages (package ``inference``), built at import from a
table of their fields rather than from generated code, so they work with whichever protobuf
runtime is installed.

The messages and field numbers are those the protocol defines (KServe's
``grpc_predict_v2.proto``; Triton's ``grpc_service.proto`` is a superset with the same numbers):
the subset that health, metadata and inference use. ``tests/serve/test_grpc_messages.py``
checks every field against the descriptors ``tritonclient`` ships.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = "GRPCInferenceService"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64, "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
}
_PARAMETERS = ("map", "InferParameter")

# message -> [(field, number, type, repeated, oneof)]; a type that is not a scalar names a message;
# ("map", V) is map<string, V>.
MESSAGES: dict[str, list[tuple]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, "bool")],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, "bool")],
    "ModelReadyRequest": [("name", 1, "string"), ("version", 2, "string")],
    "ModelReadyResponse": [("ready", 1, "bool")],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, "string"), ("version", 2, "string"), ("extensions", 3, "string", True)],
    "ModelMetadataRequest": [("name", 1, "string"), ("version", 2, "string")],
    "ModelMetadataResponse.TensorMetadata": [("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "int64", True)],
    "ModelMetadataResponse": [
        ("name", 1, "string"), ("versions", 2, "string", True), ("platform", 3, "string"),
        ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True), ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True),
    ],
    "InferParameter": [
        ("bool_param", 1, "bool", False, "parameter_choice"), ("int64_param", 2, "int64", False, "parameter_choice"),
        ("string_param", 3, "string", False, "parameter_choice"), ("double_param", 4, "double", False, "parameter_choice"),
        ("uint64_param", 5, "uint64", False, "parameter_choice"),
    ],
    "InferTensorContents": [
        ("bool_contents", 1, "bool", True), ("int_contents", 2, "int32", True), ("int64_contents", 3, "int64", True),
        ("uint_contents", 4, "uint32", True), ("uint64_contents", 5, "uint64", True), ("fp32_contents", 6, "float", True),
        ("fp64_contents", 7, "double", True), ("bytes_contents", 8, "bytes", True),
    ],
    "ModelInferRequest.InferInputTensor": [
        ("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "int64", True), ("parameters", 4, _PARAMETERS),
        ("contents", 5, "InferTensorContents"),
    ],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", 1, "string"), ("parameters", 2, _PARAMETERS)],
    "ModelInferRequest": [
        ("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"), ("parameters", 4, _PARAMETERS),
        ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
        ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True), ("raw_input_contents", 7, "bytes", True),
    ],
    "ModelInferResponse.InferOutputTensor": [
        ("name", 1, "string"), ("datatype", 2, "string"), ("shape", 3, "int64", True), ("parameters", 4, _PARAMETERS),
        ("contents", 5, "InferTensorContents"),
    ],
    "ModelInferResponse": [
        ("model_name", 1, "string"), ("model_version", 2, "string"), ("id", 3, "string"), ("parameters", 4, _PARAMETERS),
        ("outputs", 5, "ModelInferResponse.InferOutputTensor", True), ("raw_output_contents", 6, "bytes", True),
    ],
}

# rpc -> (request, response)
METHODS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="mlc/serve/open_inference_protocol.proto", package=PACKAGE, syntax="proto3")
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full in MESSAGES:  # outer messages first: nested ones are added to their parent
        outer, _, inner = full.partition(".")
        if not inner:
            protos[full] = f.message_type.add(name=full)
    for full, fields in MESSAGES.items():
        outer, _, inner = full.partition(".")
        proto = protos[full] if not inner else protos.setdefault(full, protos[outer].nested_type.add(name=inner))
        oneofs: dict[str, int] = {}
        for field in fields:
            _add_field(proto, full, field, oneofs)
    return f


def _add_field(proto, owner: str, field: tuple, oneofs: dict[str, int]) -> None:
    name, number, kind, repeated, oneof = (*field, *(False, None)[len(field) - 3 :])
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if isinstance(kind, tuple):  # map<string, V>: a repeated nested *Entry message
        entry = proto.nested_type.add(name="".join(p.capitalize() for p in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_F.TYPE_STRING)
        entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE, type_name=f".{PACKAGE}.{kind[1]}")
        proto.field.add(name=name, number=number, label=_F.LABEL_REPEATED, type=_F.TYPE_MESSAGE,
                        type_name=f".{PACKAGE}.{owner}.{entry.name}")
        return
    added = proto.field.add(name=name, number=number, label=label)
    if kind in _TYPES:
        added.type = _TYPES[kind]
    else:
        added.type, added.type_name = _F.TYPE_MESSAGE, f".{PACKAGE}.{kind}"
    if oneof is not None:
        if oneof not in oneofs:
            oneofs[oneof] = len(proto.oneof_decl)
            proto.oneof_decl.add(name=oneof)
        added.oneof_index = oneofs[oneof]


def _classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {full: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{full}")) for full in MESSAGES}


CLASSES = _classes()
