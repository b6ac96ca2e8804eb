"""gRPC of the Open Inference Protocol: a ``ModelInferRequest`` in, a ``ModelInferResponse`` out.

A request's tensors come either all in ``raw_input_contents`` (one entry per input, in order;
layout: ``raw.py``; what ``tritonclient.grpc`` sends) or each in its ``contents`` field of the
datatype's type (``int_contents`` for INT8..INT32, ``uint_contents`` for UINT8..UINT32, ...;
FP16 has none and must be raw). A response carries every output in ``raw_output_contents``,
as Triton does and as ``tritonclient.grpc``'s ``InferResult.as_numpy`` reads them.

Parameters: KServe's ``InferParameter`` holds a bool, an int64 or a string. Triton's proto adds
``double_param`` (4) and ``uint64_param`` (5), which ``tritonclient.grpc`` uses (``priority``);
they reach this proto as unknown fields and are read from there. A response parameter must be
a bool, an integer within int64 or a string.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import unknown_fields

from gateway.errors import InferenceError, InvalidInputError
from gateway.oip import grpc_predict_v2_pb2 as pb
from gateway.oip.messages import (
    InferInput,
    InferRequest,
    InferResponse,
    Parameters,
    ParameterValue,
    RequestedOutput,
    check_shape,
    parse_datatype,
)
from gateway.oip.raw import decode_raw, encode_raw, strings_array
from gateway.tensors import DataType, datatype_of, numpy_dtype

__all__ = ["decode_infer_request", "encode_infer_response"]

# The contents field of each datatype, and the element type protobuf gives that field.
_CONTENTS: dict[DataType, str] = {
    DataType.BOOL: "bool_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}
_FIELD_TYPES: dict[str, type[Any]] = {
    "bool_contents": np.bool_,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}
_FIELDS = (*_FIELD_TYPES, "bytes_contents")
_INT64 = (-(2**63), 2**63 - 1)
# Triton's InferParameter fields beyond KServe's: double_param (fixed64), uint64_param (varint).
_DOUBLE_PARAM, _UINT64_PARAM = 4, 5
_WIRE_VARINT, _WIRE_FIXED64 = 0, 1


def decode_infer_request(message: pb.ModelInferRequest, *, max_elements: int) -> InferRequest:
    """Read a ``ModelInferRequest`` (its model name and version are the caller's to route).

    Args:
        message: the request.
        max_elements: the most elements one input may have.

    Raises:
        InvalidInputError: naming the tensor or parameter, what was wrong and what was expected.
    """
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(message.inputs)} inputs: give one per input, in the order of the inputs"
        )
    inputs: list[InferInput] = []
    for i, tensor in enumerate(message.inputs):
        where = f'input "{tensor.name}"'
        datatype = parse_datatype(where, tensor.datatype)
        dims, count = check_shape(where, list(tensor.shape), max_elements=max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"{where}: has contents while the request uses raw_input_contents; "
                    "give every input's data one way"
                )
            array = decode_raw(where, datatype, dims, count, raw[i])
        else:
            array = _decode_contents(where, datatype, dims, count, tensor.contents)
        if any(t.name == tensor.name for t in inputs):
            raise InvalidInputError(f"{where} is given twice")
        parameters = _read_parameters(f"{where}: ", tensor.parameters)
        inputs.append(InferInput(tensor.name, datatype, array, parameters))
    outputs: list[RequestedOutput] = []
    for output in message.outputs:
        if any(o.name == output.name for o in outputs):
            raise InvalidInputError(f'output "{output.name}" is requested twice')
        parameters = _read_parameters(f'output "{output.name}": ', output.parameters)
        outputs.append(RequestedOutput(output.name, parameters))
    return InferRequest(
        inputs=tuple(inputs),
        outputs=tuple(outputs) or None,
        id=message.id or None,
        parameters=_read_parameters("", message.parameters),
    )


def encode_infer_response(response: InferResponse) -> pb.ModelInferResponse:
    """Write a ``ModelInferResponse``, every output's data in ``raw_output_contents``.

    Raises:
        InferenceError: an output or parameter the protocol cannot carry (the core's fault).
    """
    message = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    _write_parameters("response", message.parameters, response.parameters)
    for output in response.outputs:
        try:
            datatype = datatype_of(output.array)
        except ValueError as exc:
            raise InferenceError(f'output "{output.name}": {exc}') from exc
        tensor = message.outputs.add(
            name=output.name, datatype=datatype.value, shape=list(output.array.shape)
        )
        _write_parameters(f'output "{output.name}"', tensor.parameters, output.parameters)
        message.raw_output_contents.append(encode_raw(output.array))
    return message


def _decode_contents(
    where: str,
    datatype: DataType,
    dims: tuple[int, ...],
    count: int,
    contents: pb.InferTensorContents,
) -> npt.NDArray[Any]:
    field = _CONTENTS.get(datatype)
    for other in _FIELDS:
        if other != field and len(getattr(contents, other)):
            expected = f"contents.{field}" if field else "raw_input_contents"
            raise InvalidInputError(
                f"{where}: {datatype.value} data goes in {expected}; got contents.{other}"
            )
    if field is None:  # FP16: the protocol gives it no typed field
        if count:
            raise InvalidInputError(
                f"{where}: {datatype.value} has no contents field; send it in raw_input_contents"
            )
        return np.empty(dims, dtype=numpy_dtype(datatype))
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"{where}: contents.{field} has {len(values)} elements but shape {list(dims)} "
            f"needs {count}"
        )
    if datatype is DataType.BYTES:
        return strings_array(where, list(values), dims)
    wide = np.array(values, dtype=_FIELD_TYPES[field])
    dtype = numpy_dtype(datatype)
    if wide.dtype != dtype:  # INT8, INT16, UINT8, UINT16 travel in 32-bit fields
        info = np.iinfo(dtype)
        bad = np.flatnonzero((wide < info.min) | (wide > info.max))
        if bad.size:
            i = int(bad[0])
            raise InvalidInputError(
                f"{where}: contents.{field}[{i}] = {int(wide[i])} is out of range for "
                f"{datatype.value} ({info.min}..{info.max})"
            )
    return wide.astype(dtype, copy=False).reshape(dims)


def _read_parameters(prefix: str, parameters: Mapping[str, pb.InferParameter]) -> Parameters:
    values: dict[str, ParameterValue] = {}
    for key, parameter in parameters.items():
        which = parameter.WhichOneof("parameter_choice")
        if which is not None:
            values[key] = getattr(parameter, which)
            continue
        unknown = unknown_fields.UnknownFieldSet(parameter)
        for field in (unknown[n] for n in range(len(unknown))):
            if field.field_number == _DOUBLE_PARAM and field.wire_type == _WIRE_FIXED64:
                values[key] = struct.unpack("<d", struct.pack("<Q", field.data))[0]
            elif field.field_number == _UINT64_PARAM and field.wire_type == _WIRE_VARINT:
                values[key] = int(field.data)
        if key not in values:
            raise InvalidInputError(
                f"{prefix}parameters[{key!r}] holds no value; expected bool_param, int64_param "
                "or string_param"
            )
    return values


def _write_parameters(
    where: str, target: MutableMapping[str, pb.InferParameter], parameters: Parameters
) -> None:
    for key, value in parameters.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
            target[key].int64_param = value
        elif isinstance(value, str):
            target[key].string_param = value
        else:
            raise InferenceError(
                f"{where}: parameter {key!r} = {value!r} does not fit InferParameter (a bool, an "
                "int64 or a string)"
            )
