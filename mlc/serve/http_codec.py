"""The HTTP/REST form of inference requests and responses: JSON, with the binary tensor
extension.

A request body is a JSON object ``{"id", "parameters", "inputs": [{"name", "datatype", "shape",
"data", "parameters"}], "outputs": [{"name", "parameters"}]}``. With the binary extension the
header ``Inference-Header-Content-Length: N`` says the JSON is the body's first N bytes; each
input whose ``parameters.binary_data_size`` is set takes that many of the following bytes, in
input order, in the raw form (``mlc.serve.tensors``). Outputs come back in binary when the
request's ``parameters.binary_data_output`` is true or the output's own ``parameters.binary_data``
is: the response is then the JSON header followed by their bytes, with the same header.
"""

from __future__ import annotations

import json
from typing import Any

from mlc.serve import datatypes
from mlc.serve.errors import BadRequest
from mlc.serve.protocol import InferRequest, InferResponse, RequestedOutput
from mlc.serve.tensors import Tensor, checked_shape, from_raw, from_values, json_values, to_raw

HEADER_LENGTH = "inference-header-content-length"


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request in ``body``; ``header_length`` is the ``Inference-Header-Content-Length`` header."""
    if header_length is None:
        head, binary = body, b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length is {n}, but the body has {len(body)} bytes")
        head, binary = body[:n], body[n:]
    try:
        doc = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"the request is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadRequest("the request must be a JSON object")
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list) or not inputs_doc:
        raise BadRequest("the request must have a non-empty 'inputs' list")
    offset = 0
    inputs = []
    for i, item in enumerate(inputs_doc):
        tensor, used = _input(item, i, binary, offset)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise BadRequest(f"the request has {len(binary) - offset} binary bytes that no input claims")
    params = _parameters(doc.get("parameters"), "the request")
    outputs = None
    if "outputs" in doc:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list")
        outputs = [_requested_output(o, i) for i, o in enumerate(doc["outputs"])]
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferRequest(inputs=inputs, outputs=outputs, id=request_id, parameters=params)


def _parameters(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: 'parameters' must be an object")
    return value


def _input(item: Any, i: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise BadRequest(f"input {i} must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"input {i} has no 'name'")
    where = f"input {name!r}"
    datatype = item.get("datatype")
    if datatype not in datatypes.DATATYPES:
        raise BadRequest(f"{where}: unknown datatype {datatype!r} (the protocol's are {', '.join(datatypes.DATATYPES)})")
    shape = checked_shape(item.get("shape"), where)
    params = _parameters(item.get("parameters"), where)
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise BadRequest(f"{where}: binary_data_size is {size}, but only {len(binary) - offset} binary bytes remain (truncated body?)")
        if "data" in item:
            raise BadRequest(f"{where}: has both 'data' and binary_data_size")
        return from_raw(name, datatype, shape, binary[offset : offset + size], where), size
    if "data" not in item:
        raise BadRequest(f"{where}: has no 'data' (and no binary_data_size)")
    return from_values(name, datatype, shape, item["data"], where), 0


def _requested_output(item: Any, i: int) -> RequestedOutput:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise BadRequest(f"requested output {i} must be an object with a 'name'")
    params = _parameters(item.get("parameters"), f"output {item['name']!r}")
    binary = params.get("binary_data")
    return RequestedOutput(item["name"], None if binary is None else bool(binary))


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    asked = {o.name: o.binary for o in request.outputs or ()}
    outputs, chunks = [], []
    for tensor in response.outputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        binary = asked.get(tensor.name)
        if binary is None:
            binary = default_binary
        if binary:
            raw = to_raw(tensor)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(tensor)
        outputs.append(entry)
    doc = {"model_name": response.model_name, "model_version": response.model_version, "outputs": outputs}
    if response.id:
        doc["id"] = response.id
    head = json.dumps(doc, allow_nan=True).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
