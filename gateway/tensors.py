"""The tensor codec of the generic inference API: JSON/base64 <-> numpy, with validation.

Decisions (see ../shared/API.md, "Tensors"):

- ``data`` must be a *flat* row-major list, as the contract says; nested lists are rejected with
  a message that says so, rather than accepted as a second spelling of the same tensor.
- Element types are strict: BOOL takes only JSON booleans; integer types take only integers
  (no booleans, no ``3.0``) within the dtype's range; float types take numbers and the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (what :func:`encode_data` emits), and a finite value
  that would overflow to infinity in FP16/FP32 is rejected; BYTES takes only strings.
- ``b64`` accepts the standard and the URL-safe alphabet, with or without ``=`` padding, and
  nothing else (no whitespace). BOOL bytes must be 0 or 1.
- Everything is validated before the array is built; the common case costs one type scan of the
  list plus ``np.asarray``, and a per-element loop runs only to word an error message.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt
from onnx import TensorProto

from gateway.errors import InvalidInputError

__all__ = [
    "DataType",
    "JSONScalar",
    "TensorSpec",
    "datatype_from_elem_type",
    "datatype_from_onnx",
    "datatype_of",
    "decode_tensor",
    "encode_b64",
    "encode_data",
    "numpy_dtype",
]

#: One element of a tensor's ``data`` list as :func:`encode_data` produces it.
JSONScalar: TypeAlias = bool | int | float | str


class DataType(enum.Enum):
    """Element type of a tensor, named as in the Open Inference Protocol."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"


# DataType, numpy dtype, the name inside ONNX Runtime's "tensor(...)", onnx.TensorProto elem_type.
_TABLE: tuple[tuple[DataType, type[Any], str, int], ...] = (
    (DataType.BOOL, np.bool_, "bool", TensorProto.BOOL),
    (DataType.UINT8, np.uint8, "uint8", TensorProto.UINT8),
    (DataType.UINT16, np.uint16, "uint16", TensorProto.UINT16),
    (DataType.UINT32, np.uint32, "uint32", TensorProto.UINT32),
    (DataType.UINT64, np.uint64, "uint64", TensorProto.UINT64),
    (DataType.INT8, np.int8, "int8", TensorProto.INT8),
    (DataType.INT16, np.int16, "int16", TensorProto.INT16),
    (DataType.INT32, np.int32, "int32", TensorProto.INT32),
    (DataType.INT64, np.int64, "int64", TensorProto.INT64),
    (DataType.FP16, np.float16, "float16", TensorProto.FLOAT16),
    (DataType.FP32, np.float32, "float", TensorProto.FLOAT),
    (DataType.FP64, np.float64, "double", TensorProto.DOUBLE),
    (DataType.BYTES, object, "string", TensorProto.STRING),
)
_NUMPY = {d: np.dtype(t) for d, t, _, _ in _TABLE}
_ONNX_NAMES = {f"tensor({name})": d for d, _, name, _ in _TABLE}
_ELEM_TYPES = {int(elem): d for d, _, _, elem in _TABLE}
# Keyed by (kind, itemsize) so that byte order and platform aliases (intc, longlong) don't matter.
_BY_KIND = {(dt.kind, dt.itemsize): d for d, dt in _NUMPY.items() if d is not DataType.BYTES}
_FLOATS = {DataType.FP16, DataType.FP32, DataType.FP64}
_SPECIALS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_SPECIALS_TEXT = '"NaN", "Infinity", "-Infinity"'
_KINDS = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def datatype_from_onnx(type_str: str) -> DataType | None:
    """Map an ONNX Runtime type string (``"tensor(float)"``) to a DataType; None if unsupported."""
    return _ONNX_NAMES.get(type_str)


def datatype_from_elem_type(elem_type: int) -> DataType | None:
    """Map an ``onnx.TensorProto`` element type to a DataType; None if unsupported."""
    return _ELEM_TYPES.get(elem_type)


def numpy_dtype(datatype: DataType) -> np.dtype[Any]:
    """The numpy dtype ONNX Runtime uses for ``datatype`` (object arrays of str for BYTES)."""
    return _NUMPY[datatype]


def datatype_of(array: npt.NDArray[Any]) -> DataType:
    """The DataType of an array; str, bytes and object arrays are BYTES.

    Raises:
        ValueError: for dtypes the API has no type for (complex, datetime, float128, ...).
    """
    kind = array.dtype.kind
    if kind in "USO":
        return DataType.BYTES
    found = _BY_KIND.get((kind, array.dtype.itemsize))
    if found is None:
        raise ValueError(f"unsupported tensor dtype {array.dtype}")
    return found


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output as declared by the model; -1 in ``shape`` is a dynamic dimension."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """Whether a concrete shape has this rank and matches every fixed dimension."""
        return len(shape) == len(self.shape) and all(
            d >= 0 and (want == -1 or d == want) for d, want in zip(shape, self.shape, strict=True)
        )


def decode_tensor(
    spec: TensorSpec,
    *,
    shape: Sequence[int],
    datatype: DataType | None,
    data: object,
    b64: str | None,
    max_elements: int,
) -> npt.NDArray[Any]:
    """Validate one client tensor against ``spec`` and build it as a C-contiguous array.

    Args:
        spec: the model's declaration of this input.
        shape: the client's shape; rank and fixed dimensions must match ``spec``.
        datatype: the client's datatype, or None for the spec's.
        data: a flat row-major list (None when absent); exactly one of ``data`` and ``b64``.
        b64: the raw little-endian bytes, base64 (None when absent; not for BYTES).
        max_elements: the largest element count accepted.

    Raises:
        InvalidInputError: naming the input, what was wrong and what was expected.
    """
    where = f'input "{spec.name}"'
    if datatype is not None and datatype is not spec.datatype:
        raise InvalidInputError(
            f"{where}: datatype {datatype.value} does not match the model's {spec.datatype.value}"
        )
    dims = tuple(shape)
    if not all(type(d) is int and d >= 0 for d in dims):
        raise InvalidInputError(
            f"{where}: shape {list(dims)} is invalid: every dimension must be an integer >= 0"
        )
    if not spec.accepts_shape(dims):
        raise InvalidInputError(
            f"{where}: shape {list(dims)} does not match the model's {list(spec.shape)} "
            "(-1 = any size)"
        )
    count = math.prod(dims)
    if count > max_elements:
        raise InvalidInputError(
            f"{where}: shape {list(dims)} has {count} elements, more than the limit of "
            f"{max_elements}"
        )
    if (data is None) == (b64 is None):
        which = "both were given" if data is not None else "neither was given"
        raise InvalidInputError(f"{where}: give exactly one of data or b64; {which}")
    if b64 is not None:
        flat = _decode_b64(where, spec.datatype, b64, count, dims)
    else:
        flat = _decode_data(where, spec.datatype, data, count)
    return flat.reshape(dims)


def encode_data(array: npt.NDArray[Any]) -> list[JSONScalar]:
    """The array as a flat row-major list of JSON values; non-finite floats become strings."""
    datatype = datatype_of(array)
    flat = array.ravel()
    values: list[Any] = flat.tolist()
    if datatype is DataType.BYTES:
        return [
            v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v) for v in values
        ]
    if datatype in _FLOATS:
        bad = ~np.isfinite(flat)
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                v = values[i]
                values[i] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return values


def encode_b64(array: npt.NDArray[Any]) -> str | None:
    """The array's raw little-endian bytes in C order, base64; None for BYTES."""
    if datatype_of(array) is DataType.BYTES:
        return None
    raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
    return base64.b64encode(raw).decode("ascii")


def _decode_b64(
    where: str, datatype: DataType, b64: str, count: int, dims: tuple[int, ...]
) -> npt.NDArray[Any]:
    if datatype is DataType.BYTES:
        raise InvalidInputError(
            f"{where}: b64 is not supported for BYTES; send data as a list of strings"
        )
    # Both alphabets are accepted (clients differ); padding is restored when left off.
    text = b64.replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"{where}: b64 is not valid base64 ({exc})") from exc
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"{where}: b64 decodes to {len(raw)} bytes but shape {list(dims)} of "
            f"{datatype.value} needs {count * dtype.itemsize} ({count} x {dtype.itemsize} bytes)"
        )
    if datatype is DataType.BOOL and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidInputError(f"{where}: b64 for BOOL must hold only bytes 0 and 1")
    # astype copies: the result is native-endian, writable and owns its memory.
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype)


def _decode_data(where: str, datatype: DataType, data: object, count: int) -> npt.NDArray[Any]:
    if not isinstance(data, list):
        raise InvalidInputError(
            f"{where}: data must be a flat row-major list of {count} elements, got {_kind(data)}"
        )
    if len(data) != count:
        if data and isinstance(data[0], list):  # a nested list: say so, not just "wrong length"
            raise InvalidInputError(
                f"{where}: data must be a flat row-major list of {count} elements; "
                "data[0] is a list"
            )
        raise InvalidInputError(
            f"{where}: data has {len(data)} elements but the shape needs {count}"
        )
    dtype = numpy_dtype(datatype)
    # One C-speed pass tells exactly which element types are present; bools must be told apart
    # from numbers here because numpy would silently turn them into 0/1.
    types = set(map(type, data))
    if datatype is DataType.BOOL:
        _check_types(where, datatype, data, types, {bool}, "true or false")
        return np.array(data, dtype=dtype)
    if datatype is DataType.BYTES:
        _check_types(where, datatype, data, types, {str}, "strings")
        return np.array(data, dtype=dtype)
    if datatype in _FLOATS:
        return _decode_floats(where, datatype, data, types, dtype)
    return _decode_ints(where, datatype, data, types, dtype)


def _decode_ints(
    where: str, datatype: DataType, data: list[Any], types: set[type], dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if float in types:
        # An integer too large for a double reads as a float (JSON parsers) or as NaN or
        # infinity (GraphQL literals): say it is out of range, not that it is not an integer.
        i, v = next((i, v) for i, v in enumerate(data) if type(v) is float)
        if not math.isfinite(v) or (v.is_integer() and not lo <= v <= hi):
            raise InvalidInputError(
                f"{where}: data[{i}] is out of range for {datatype.value} ({lo}..{hi})"
            )
    _check_types(where, datatype, data, types, {int}, "integers (without a decimal point)")
    if not data:
        return np.empty(0, dtype=dtype)
    # Negative values must be caught before a uint64 conversion (numpy < 2 wraps them around).
    wide = np.dtype(np.uint64) if datatype is DataType.UINT64 else np.dtype(np.int64)
    try:
        if wide.kind == "u" and min(data) < 0:
            raise OverflowError
        values = np.asarray(data, dtype=wide)
    except OverflowError:
        values = None
    if values is None or int(values.min()) < lo or int(values.max()) > hi:
        i, v = next((i, v) for i, v in enumerate(data) if not lo <= v <= hi)
        raise InvalidInputError(
            f"{where}: data[{i}] = {_show(v)} is out of range for {datatype.value} ({lo}..{hi})"
        )
    return values.astype(dtype, copy=False)


def _decode_floats(
    where: str, datatype: DataType, data: list[Any], types: set[type], dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    expected = f"numbers or one of {_SPECIALS_TEXT}"
    _check_types(where, datatype, data, types, {int, float, str}, expected)
    numbers = data
    if str in types:
        for i, v in enumerate(data):
            if type(v) is str and v not in _SPECIALS:
                raise InvalidInputError(
                    f"{where}: data[{i}] is {_show(v)}; {datatype.value} data must be {expected}"
                )
        numbers = [_SPECIALS[v] if type(v) is str else v for v in data]
    limit = float(np.finfo(dtype).max)
    with np.errstate(over="ignore"):  # overflow to infinity is detected below, not warned about
        try:
            wide = np.asarray(numbers, dtype=np.float64)
        except OverflowError:  # an int beyond even float64's range
            i = next(i for i, v in enumerate(data) if type(v) is int and abs(v) > limit)
            raise InvalidInputError(
                f"{where}: data[{i}] = {_show(data[i])} is out of range for {datatype.value} "
                f"(finite values within +-{limit:.8g})"
            ) from None
        values = wide.astype(dtype, copy=False)
    if float in types and not np.isfinite(wide).all():
        # A number cannot be NaN or infinite in JSON or GraphQL: such a float is a literal
        # beyond a double's range (GraphQL reads 1e999 as infinity, a 5,000-digit integer as
        # NaN). The strings are the way to send those values.
        odd = next(
            (i for i in np.flatnonzero(~np.isfinite(wide)).tolist() if type(data[i]) is float), None
        )
        if odd is not None:
            raise InvalidInputError(
                f"{where}: data[{odd}] is out of range for {datatype.value} (finite values "
                f"within +-{limit:.8g}, or one of {_SPECIALS_TEXT})"
            )
    bad = np.flatnonzero(np.isinf(values) & np.isfinite(wide)).tolist()
    if bad:
        raise InvalidInputError(
            f"{where}: data[{bad[0]}] = {_show(data[bad[0]])} is out of range for "
            f"{datatype.value} (finite values within +-{limit:.8g})"
        )
    return values


def _check_types(
    where: str,
    datatype: DataType,
    data: list[Any],
    types: set[type],
    allowed: set[type],
    expected: str,
) -> None:
    if types <= allowed:
        return
    i, v = next((i, v) for i, v in enumerate(data) if type(v) not in allowed)
    if isinstance(v, list | dict | tuple):
        raise InvalidInputError(
            f"{where}: data must be a flat row-major list of {len(data)} elements; "
            f"data[{i}] is {_kind(v)}"
        )
    raise InvalidInputError(
        f"{where}: data[{i}] is {_show(v)} ({_kind(v)}); {datatype.value} data must be {expected}"
    )


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _show(value: object) -> str:
    """A JSON-looking rendering of a client value, cut short for messages."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
