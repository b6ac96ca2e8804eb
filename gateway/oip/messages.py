"""The Open Inference Protocol's inference request and response, as plain typed objects.

Every codec of the package reads a request into these objects and writes a response from
them, whatever the wire (REST JSON, Triton's binary extension, gRPC), so the serving core sees
one shape: numpy arrays by input name, the outputs asked for, the parameters. Also here: the
checks every codec applies to a tensor's datatype and shape, worded the same way everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy.typing as npt

from gateway.errors import InvalidInputError
from gateway.tensors import DataType

__all__ = [
    "DATATYPES",
    "InferInput",
    "InferOutput",
    "InferRequest",
    "InferResponse",
    "ParameterValue",
    "Parameters",
    "RequestedOutput",
    "check_parameters",
    "check_shape",
    "kind_of",
    "parse_datatype",
]

#: A parameter's value: the protocol allows a string, a number or a boolean.
ParameterValue: TypeAlias = bool | int | float | str
#: Parameters of a request, a tensor or a response, by name.
Parameters: TypeAlias = Mapping[str, ParameterValue]

#: The datatypes the gateway serves, as the protocol spells them (BF16 is not one of them).
DATATYPES = tuple(d.value for d in DataType)
_DATATYPES_TEXT = ", ".join(DATATYPES)
_KINDS = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
_KINDS.update({list: "a list", dict: "an object", type(None): "null"})


@dataclass(frozen=True, slots=True)
class InferInput:
    """One input tensor of a request, decoded and checked against its own shape and datatype."""

    name: str
    datatype: DataType
    #: The tensor, shaped as the client said; BYTES are object arrays of ``str``.
    array: npt.NDArray[Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asks for, with its parameters (``binary_data``, ...)."""

    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """An inference request; ``outputs`` is None when the client wants every output."""

    inputs: tuple[InferInput, ...]
    outputs: tuple[RequestedOutput, ...] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)

    @property
    def feeds(self) -> dict[str, npt.NDArray[Any]]:
        """The input arrays by name, as a session takes them."""
        return {i.name: i.array for i in self.inputs}

    @property
    def output_names(self) -> list[str] | None:
        """The names of the outputs asked for, in order; None for all of them."""
        return None if self.outputs is None else [o.name for o in self.outputs]

    def binary_output(self, name: str) -> bool:
        """Whether output ``name`` goes back as binary data (Triton's binary extension).

        The output's own ``binary_data`` parameter decides; without one, the request's
        ``binary_data_output`` parameter; without either, no.
        """
        for output in self.outputs or ():
            if output.name == name and "binary_data" in output.parameters:
                return output.parameters["binary_data"] is True
        return self.parameters.get("binary_data_output") is True


@dataclass(frozen=True, slots=True)
class InferOutput:
    """One output tensor of a response; its datatype is the array's."""

    name: str
    array: npt.NDArray[Any]
    parameters: Parameters = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferResponse:
    """An inference response: the model and version that answered, the request's id, outputs."""

    model_name: str
    outputs: Sequence[InferOutput]
    #: The version that answered, as the protocol writes it (a string).
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


def parse_datatype(where: str, value: object) -> DataType:
    """The DataType a client names (``"FP32"``...), or InvalidInputError saying which exist."""
    if isinstance(value, str):
        try:
            return DataType(value)
        except ValueError:
            pass
        if value == "BF16":
            raise InvalidInputError(
                f"{where}: datatype BF16 is not supported; expected one of {_DATATYPES_TEXT}"
            )
    shown = f'"{value}"' if isinstance(value, str) else _show(value)
    raise InvalidInputError(
        f"{where}: datatype {shown} is unknown; expected one of {_DATATYPES_TEXT}"
    )


def check_shape(where: str, shape: object, *, max_elements: int) -> tuple[tuple[int, ...], int]:
    """The shape as a tuple and its element count, checked: integers >= 0, within the limit.

    Raises:
        InvalidInputError: naming the tensor, what was given and what is expected.
    """
    if not isinstance(shape, list | tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInputError(
            f"{where}: shape must be a list of integers >= 0; got {_show(shape)}"
        )
    dims = tuple(shape)
    count = math.prod(dims)
    if count > max_elements:
        raise InvalidInputError(
            f"{where}: shape {list(dims)} has {count} elements, more than the limit of "
            f"{max_elements}"
        )
    return dims, count


def _show(shape: object) -> str:
    try:
        text = json.dumps(list(shape) if isinstance(shape, tuple) else shape)
    except (TypeError, ValueError):
        text = repr(shape)
    return text if len(text) <= 60 else text[:57] + "..."


def check_parameters(prefix: str, value: object, **known: type) -> Parameters:
    """Check a JSON parameters object: scalar values, and the types of the ``known`` ones.

    Args:
        prefix: how messages begin, e.g. ``'input "x": '``.
        value: the object (None when absent).
        known: parameters whose type is fixed: ``bool`` (true or false) or ``int`` (>= 0).
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"{prefix}parameters must be an object of names to strings, numbers or booleans; "
            f"got {kind_of(value)}"
        )
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise InvalidInputError(
                f"{prefix}parameters.{key} must be a string, number or boolean; got {kind_of(item)}"
            )
        want = known.get(key)
        if want is bool and type(item) is not bool:
            raise InvalidInputError(f"{prefix}parameters.{key} must be true or false")
        if want is int and (type(item) is not int or item < 0):
            raise InvalidInputError(f"{prefix}parameters.{key} must be an integer >= 0")
    return value


def kind_of(value: object) -> str:
    """What a JSON value is, for messages: "a string", "a list", "null"..."""
    return _KINDS.get(type(value), type(value).__name__)
