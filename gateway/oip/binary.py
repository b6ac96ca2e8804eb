"""Triton's binary tensor data extension of the REST protocol (``binary_tensor_data``).

Follows Triton's ``docs/protocol/extension_binary_data.md``. A request whose
``Inference-Header-Content-Length`` header is N holds the JSON inference request in its first
N bytes and then the raw bytes of the inputs that carry ``parameters.binary_data_size``, in the
order of the inputs (layout: ``raw.py``); the other inputs keep their JSON ``data``. A response
writes an output as binary data when the request asks (the output's ``binary_data`` parameter,
else the request's ``binary_data_output``): its JSON entry carries
``parameters.binary_data_size`` instead of ``data``, and its bytes follow the JSON in output
order. ``tritonclient.http`` works this way by default.

A header of 0 is a raw binary request: the whole body is the one input of a model whose shape
the bytes determine, and every output goes back as binary data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from gateway.errors import InvalidInputError
from gateway.oip.codec import HEADER, NonFinite, decode_request, encode_response_parts
from gateway.oip.messages import InferInput, InferRequest, InferResponse, check_shape
from gateway.oip.raw import decode_raw, strings_array
from gateway.tensors import DataType, TensorSpec, numpy_dtype

__all__ = [
    "HEADER",
    "BinaryBody",
    "decode_binary_request",
    "decode_raw_request",
    "encode_binary_response",
    "parse_header_length",
]


class BinaryBody(NamedTuple):
    """A response body; ``header_length`` is None when it is plain JSON (no binary output)."""

    body: bytes
    header_length: int | None


def parse_header_length(value: str, body_length: int) -> int:
    """The value of the ``Inference-Header-Content-Length`` header, checked against the body.

    Raises:
        InvalidInputError: not an integer from 0 to the body's length.
    """
    text = value.strip()
    # isascii: str.isdigit also accepts "²" and other digits int() refuses; the length cap
    # keeps int() below its limit on digits.
    length = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else -1
    if not 0 <= length <= body_length:
        raise InvalidInputError(
            f"{HEADER} must be an integer from 0 to the body's length ({body_length}); "
            f"got {value!r}"
        )
    return length


def decode_binary_request(body: bytes, header_length: int, *, max_elements: int) -> InferRequest:
    """Read a request whose first ``header_length`` bytes (> 0) are JSON, the rest binary data.

    Raises:
        InvalidInputError: as ``codec.decode_request``, and for binary data that does not
            match the inputs' ``binary_data_size`` (too little, or bytes left over).
    """
    view = memoryview(body)
    blob = _Blob(view[header_length:])
    request = decode_request(view[:header_length], max_elements=max_elements, binary=blob)
    blob.finish()
    return request


def decode_raw_request(
    body: bytes, inputs: Sequence[TensorSpec], *, max_elements: int
) -> InferRequest:
    """Read a raw binary request (header 0): the body is the model's only input, all binary.

    As in Triton: the model must have one input; for BYTES, of one element (the body is that
    element's bytes, without a length prefix); otherwise with at most one variable dimension,
    whose size the body's length gives. Every output is then asked for as binary data.

    Args:
        body: the request body.
        inputs: the model's inputs, as its signature declares them (-1: any size).
        max_elements: the most elements the input may have.

    Raises:
        InvalidInputError: a model this cannot apply to, or a body that fits no shape.
    """
    if len(inputs) != 1:
        raise InvalidInputError(
            f"a raw binary request ({HEADER}: 0) needs a model with exactly one input; this "
            f"one has {len(inputs)}: send a JSON header with the inputs' names and shapes"
        )
    spec = inputs[0]
    where = f'input "{spec.name}"'
    if spec.datatype is DataType.BYTES:
        if any(d not in (1, -1) for d in spec.shape):
            raise InvalidInputError(
                f"{where}: a raw binary request carries one BYTES element, but the model's "
                f"shape is {list(spec.shape)}: send a JSON header with the shape"
            )
        dims = tuple(1 for _ in spec.shape)
        array = strings_array(where, [bytes(body)], dims)
    else:
        dims = _deduce_shape(where, spec, len(body))
        dims, count = check_shape(where, dims, max_elements=max_elements)
        array = decode_raw(where, spec.datatype, dims, count, body)
    return InferRequest(
        inputs=(InferInput(name=spec.name, datatype=spec.datatype, array=array),),
        parameters={"binary_data_output": True},
    )


def encode_binary_response(
    response: InferResponse, request: InferRequest, *, non_finite: NonFinite = NonFinite.TRITON
) -> BinaryBody:
    """The response body, with the outputs the request wants as binary data after the JSON.

    Returns:
        The body and the length of its JSON part, for the ``Inference-Header-Content-Length``
        header (and ``Content-Type: application/octet-stream``); when no output is binary, the
        plain JSON body and None.
    """
    binary = {o.name for o in response.outputs if request.binary_output(o.name)}
    header, blobs = encode_response_parts(response, binary=binary, non_finite=non_finite)
    if not binary:
        return BinaryBody(header, None)
    return BinaryBody(b"".join([header, *blobs]), len(header))


def _deduce_shape(where: str, spec: TensorSpec, size: int) -> tuple[int, ...]:
    itemsize = numpy_dtype(spec.datatype).itemsize
    variable = [i for i, d in enumerate(spec.shape) if d < 0]
    if len(variable) > 1:
        raise InvalidInputError(
            f"{where}: the shape of a raw binary request cannot be deduced: the model's shape "
            f"{list(spec.shape)} has more than one variable dimension; send a JSON header"
        )
    row = math.prod(d for d in spec.shape if d >= 0) * itemsize
    if variable and row and size % row == 0:
        dims = list(spec.shape)
        dims[variable[0]] = size // row
        return tuple(dims)
    if not variable and size == row:
        return spec.shape
    raise InvalidInputError(
        f"{where}: a raw binary request of {size} bytes fits no tensor of shape "
        f"{list(spec.shape)} of {spec.datatype.value} ({row} bytes"
        f"{' per step of the variable dimension' if variable else ''})"
    )


class _Blob:
    """The binary part of a request body, handed out to inputs in order."""

    def __init__(self, data: memoryview) -> None:
        self.view = data
        self.offset = 0

    def take(self, where: str, size: int) -> memoryview:
        left = len(self.view) - self.offset
        if size > left:
            raise InvalidInputError(
                f"{where}: parameters.binary_data_size is {size} but only {left} bytes of "
                "binary data remain after the JSON header and the inputs before it"
            )
        self.offset += size
        return self.view[self.offset - size : self.offset]

    def finish(self) -> None:
        if self.offset != len(self.view):
            raise InvalidInputError(
                f"the body has {len(self.view) - self.offset} bytes after the binary data of "
                f"the inputs, whose binary_data_size add up to {self.offset}; expected none"
            )
