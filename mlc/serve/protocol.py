"""One inference request and its response, whatever the transport (HTTP/REST or gRPC)."""

from __future__ import annotations

import dataclasses

from mlc.serve.tensors import Tensor


@dataclasses.dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # HTTP binary tensor extension: per output ``binary_data``


@dataclasses.dataclass
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None  # None: every output
    id: str = ""
    parameters: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class InferResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    id: str = ""
