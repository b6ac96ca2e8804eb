"""REST JSON of the Open Inference Protocol: read an inference request body, write a response.

Decisions (the protocol leaves them to the server; see also ``raw.py`` for BYTES):

- ``data`` is a row-major list, flat or nested exactly as the shape (the protocol's two
  spellings); elements are strict as in the gateway's GraphQL ``infer`` (``gateway.tensors``):
  BOOL takes only booleans, integer types only integers within range, BYTES only strings.
- Non-finite floats. JSON has no NaN or infinity, and the servers differ. Triton parses and
  writes the bare tokens ``NaN``, ``Infinity`` and ``-Infinity`` (rapidjson's
  ``kParseNanAndInfFlag`` / ``kWriteNanAndInfFlag``), and tritonclient sends and reads them;
  MLServer (and KServe, both on orjson) writes ``null`` and reads ``null`` as NaN. A request may
  use any of these spellings, or the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` that the
  gateway's GraphQL API uses. A response writes Triton's tokens by default (:class:`NonFinite`):
  they keep the sign of an infinity and are what the protocol's reference server and client
  speak; a strict JSON parser (a browser's, orjson) refuses them, so such clients should ask
  for ``binary_data`` outputs, or the server may pick ``NonFinite.NULL`` or ``STRING``.
- ``"outputs": []`` means every output, as in Triton. Unknown keys are ignored (Triton's own
  examples send ``model_name`` in the body).
- Parameter values must be strings, numbers or booleans, as the protocol says; ``binary_data``
  and ``binary_data_output`` must be booleans and ``binary_data_size`` an integer >= 0.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Container
from itertools import chain
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from gateway.errors import InferenceError, InvalidInputError
from gateway.oip.messages import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
    check_parameters,
    check_shape,
    kind_of,
    parse_datatype,
)
from gateway.oip.raw import decode_raw, encode_raw
from gateway.tensors import DataType, TensorSpec, datatype_of, decode_tensor, encode_data

__all__ = [
    "HEADER",
    "BinaryData",
    "NonFinite",
    "decode_request",
    "encode_response",
    "encode_response_parts",
]

#: The HTTP header that gives the length of the JSON part of a body with binary data.
HEADER = "Inference-Header-Content-Length"


class BinaryData(Protocol):
    """The bytes after a request's JSON header, handed to the binary inputs in order."""

    def take(self, where: str, size: int) -> memoryview:
        """The next ``size`` bytes, for the input ``where`` names."""
        ...


_FLOATS = {DataType.FP16, DataType.FP32, DataType.FP64}
# A JSON string (skipped as it is) or a bare non-finite token as rapidjson reads them.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?Infinity|-?Inf|NaN)', re.DOTALL)
_QUOTED = {b"NaN": b'"NaN"', b"Infinity": b'"Infinity"', b"Inf": b'"Infinity"'}


class NonFinite(enum.Enum):
    """How a JSON response writes the NaN and infinities of FP16, FP32 and FP64 outputs."""

    #: Bare ``NaN``, ``Infinity``, ``-Infinity``, as Triton writes them and tritonclient reads.
    TRITON = (b"NaN", b"Infinity", b"-Infinity")
    #: ``null``, as MLServer and KServe write them (the sign of an infinity is lost).
    NULL = (b"null", b"null", b"null")
    #: The strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as the gateway's GraphQL API.
    STRING = (b'"NaN"', b'"Infinity"', b'"-Infinity"')


def decode_request(
    body: bytes | memoryview, *, max_elements: int, binary: BinaryData | None = None
) -> InferRequest:
    """Read an inference request from its JSON body.

    Args:
        body: the JSON object (with the binary extension, only the header part).
        max_elements: the most elements one input may have.
        binary: with Triton's binary extension (``binary.py``), the bytes after the JSON
            header: the inputs that carry ``parameters.binary_data_size`` take theirs from it.

    Raises:
        InvalidInputError: naming the field or tensor, what was wrong and what was expected.
    """
    doc = _loads(body)
    if not isinstance(doc, dict):
        raise InvalidInputError(
            f'the request body must be a JSON object with "inputs"; got {kind_of(doc)}'
        )
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError(f'"id" must be a string; got {kind_of(request_id)}')
    parameters = check_parameters("", doc.get("parameters"), binary_data_output=bool)
    items = doc.get("inputs")
    if not isinstance(items, list):
        got = "it is missing" if items is None else f"got {kind_of(items)}"
        raise InvalidInputError(f'"inputs" must be a list of input tensors; {got}')
    inputs: list[InferInput] = []
    for i, item in enumerate(items):
        tensor = _decode_input(i, item, binary, max_elements)
        if any(t.name == tensor.name for t in inputs):
            raise InvalidInputError(f'input "{tensor.name}" is given twice')
        inputs.append(tensor)
    return InferRequest(
        inputs=tuple(inputs),
        outputs=_decode_outputs(doc.get("outputs")),
        id=request_id,
        parameters=parameters,
    )


def encode_response(response: InferResponse, *, non_finite: NonFinite = NonFinite.TRITON) -> bytes:
    """The response as a JSON object, every output's elements in ``data``."""
    return encode_response_parts(response, binary=(), non_finite=non_finite)[0]


def encode_response_parts(
    response: InferResponse, *, binary: Container[str], non_finite: NonFinite = NonFinite.TRITON
) -> tuple[bytes, list[bytes]]:
    """The JSON response, with the outputs named in ``binary`` left as raw bytes.

    Returns:
        The JSON object, in which each output of ``binary`` has ``parameters.binary_data_size``
        instead of ``data``, and those outputs' raw bytes in the order of the outputs.
    """
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in response.outputs:
        try:
            datatype = datatype_of(output.array)
        except ValueError as exc:
            raise InferenceError(f'output "{output.name}": {exc}') from exc
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": datatype.value,
            "shape": list(output.array.shape),
        }
        parameters = dict(output.parameters)
        if output.name in binary:
            blobs.append(encode_raw(output.array))
            parameters["binary_data_size"] = len(blobs[-1])
        if parameters:
            entry["parameters"] = parameters
        if output.name not in binary:
            entry["data"] = orjson.Fragment(_data_json(output.array, datatype, non_finite))
        outputs.append(entry)
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        doc["model_version"] = response.model_version
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = dict(response.parameters)
    doc["outputs"] = outputs
    return orjson.dumps(doc), blobs


def _loads(body: bytes | memoryview) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        error = exc
    # NaN and infinities as bare tokens (Triton, tritonclient) are not JSON: quote them into
    # the strings the tensor codec reads, and parse again. Only a failed parse pays for this.
    tokens: list[bytes] = []
    quoted = _TOKENS.sub(lambda match: _quote(match, tokens), bytes(body))
    if tokens:
        try:
            return orjson.loads(quoted)
        except orjson.JSONDecodeError as exc:
            error = exc
    raise InvalidInputError(f"the request body is not valid JSON: {error}")


def _quote(match: re.Match[bytes], tokens: list[bytes]) -> bytes:
    token = match.group(1)
    if token is None:  # a string, left as it is
        return match.group(0)
    tokens.append(token)
    return b'"-Infinity"' if token.startswith(b"-") else _QUOTED[token]


def _decode_input(i: int, item: object, binary: BinaryData | None, max_elements: int) -> InferInput:
    if not isinstance(item, dict):
        raise InvalidInputError(
            f"inputs[{i}] must be an object with name, shape, datatype and data; "
            f"got {kind_of(item)}"
        )
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidInputError(f'inputs[{i}]: "name" must be a string; got {kind_of(name)}')
    where = f'input "{name}"'
    for key in ("datatype", "shape"):
        if key not in item:
            raise InvalidInputError(f'{where}: "{key}" is missing')
    datatype = parse_datatype(where, item["datatype"])
    dims, count = check_shape(where, item["shape"], max_elements=max_elements)
    parameters = dict(check_parameters(f"{where}: ", item.get("parameters"), binary_data_size=int))
    size = parameters.pop("binary_data_size", None)
    if size is not None:
        if "data" in item:
            raise InvalidInputError(
                f'{where}: give either "data" or parameters.binary_data_size (binary data '
                "after the JSON header), not both"
            )
        if binary is None:
            raise InvalidInputError(
                f"{where}: parameters.binary_data_size is {size} but the request has no binary "
                f"data: send the JSON header's length in the {HEADER} header and the tensors' "
                "bytes after it"
            )
        array = decode_raw(where, datatype, dims, count, binary.take(where, int(size)))
    elif "data" not in item:
        raise InvalidInputError(
            f'{where}: "data" is missing: give the elements in "data" (a flat or nested '
            "row-major list), or as binary data with parameters.binary_data_size"
        )
    else:
        array = _decode_data(where, name, datatype, dims, item["data"], max_elements)
    return InferInput(name=name, datatype=datatype, array=array, parameters=parameters)


def _decode_data(
    where: str,
    name: str,
    datatype: DataType,
    dims: tuple[int, ...],
    data: object,
    max_elements: int,
) -> npt.NDArray[Any]:
    if isinstance(data, list) and data and type(data[0]) is list and dims:
        data = _flatten(where, data, dims)
    if datatype in _FLOATS and isinstance(data, list) and None in data:
        # null is NaN in MLServer and KServe, whose JSON (orjson) writes NaN as null.
        data = ["NaN" if v is None else v for v in data]
    spec = TensorSpec(name=name, datatype=datatype, shape=dims)
    return decode_tensor(
        spec, shape=dims, datatype=None, data=data, b64=None, max_elements=max_elements
    )


def _flatten(where: str, data: list[Any], dims: tuple[int, ...]) -> list[Any]:
    """The elements of a list nested exactly as ``dims``, in row-major order."""
    level: list[Any] = [data]
    for depth, dim in enumerate(dims):
        for item in level:
            if type(item) is not list or len(item) != dim:
                got = f"{len(item)} elements" if type(item) is list else kind_of(item)
                raise InvalidInputError(
                    f"{where}: data is nested but not as shape {list(dims)}: a list at depth "
                    f"{depth + 1} must hold {dim} elements, one holds {got} (or give data "
                    "flat, in row-major order)"
                )
        level = list(chain.from_iterable(level))
    return level


def _decode_outputs(items: object) -> tuple[RequestedOutput, ...] | None:
    if items is None:
        return None
    if not isinstance(items, list):
        raise InvalidInputError(
            f'"outputs" must be a list of requested outputs; got {kind_of(items)}'
        )
    outputs: list[RequestedOutput] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(name, str):
            what = kind_of(item) if not isinstance(item, dict) else f'"name" {kind_of(name)}'
            raise InvalidInputError(f"outputs[{i}] must be an object with a name; got {what}")
        where = f'output "{name}": '
        parameters = check_parameters(where, item.get("parameters"), binary_data=bool)
        if any(o.name == name for o in outputs):
            raise InvalidInputError(f'output "{name}" is requested twice')
        outputs.append(RequestedOutput(name=name, parameters=parameters))
    return tuple(outputs) or None


def _data_json(array: npt.NDArray[Any], datatype: DataType, non_finite: NonFinite) -> bytes:
    """The elements as a flat JSON list, written by orjson straight from the array."""
    if datatype is DataType.BYTES:
        return orjson.dumps(encode_data(array))
    flat = array.reshape(-1)
    if not flat.flags.c_contiguous or not flat.dtype.isnative:
        flat = np.ascontiguousarray(flat, dtype=flat.dtype.newbyteorder("="))
    text = orjson.dumps(flat, option=orjson.OPT_SERIALIZE_NUMPY)
    if datatype in _FLOATS and non_finite is not NonFinite.NULL:
        bad = ~np.isfinite(flat)
        if bad.any():
            # orjson writes each non-finite value as null, and a numeric list holds no other
            # null: respell them in order.
            nan, inf, minus_inf = non_finite.value
            parts = text.split(b"null")
            spelled = [nan if v != v else (inf if v > 0 else minus_inf) for v in flat[bad].tolist()]
            text = b"".join(chain.from_iterable(zip(parts, [*spelled, b""], strict=True)))
    return text
