"""Typed values to and from arrays: a field's GraphQL values of many rows become one array
(a null float is NaN, a missing value; ranges and nested shapes are checked), and an output's
rows become JSON values again (NaN and infinity as null, which GraphQL's Float cannot carry).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gateway.errors import InvalidInputError
from gateway.tensors import DataType, numpy_dtype

__all__ = ["FLOAT_TYPES", "LARGEST", "column_array", "float_values", "holds", "python_values"]

#: The float element types.
FLOAT_TYPES = {DataType.FP16, DataType.FP32, DataType.FP64}
#: The largest finite value of each float type: beyond it a value would become infinite.
LARGEST = {t: float(np.finfo(numpy_dtype(t)).max) for t in FLOAT_TYPES}
_INT_RANGES = {
    dt: (int(np.iinfo(numpy_dtype(dt)).min), int(np.iinfo(numpy_dtype(dt)).max))
    for dt in (
        DataType.INT8,
        DataType.INT16,
        DataType.UINT8,
        DataType.UINT16,
        DataType.UINT32,
        DataType.UINT64,
        DataType.INT32,
        DataType.INT64,
    )
}


def column_array(
    name: str, datatype: DataType, row_shape: tuple[int, ...], values: list[Any], rows: int
) -> np.ndarray:
    """One field's values of ``rows`` rows as an array of ``datatype``, shape ``[rows,
    *row_shape]``; a null float is NaN (a missing value).

    Raises:
        InvalidInputError: a value out of the type's range, or not of the row shape.
    """
    dtype = numpy_dtype(datatype)
    try:
        if datatype is DataType.BYTES:
            array = _strings(values)
        else:
            if datatype in _INT_RANGES:
                # Checked before the conversion: numpy raises OverflowError on out-of-range ints.
                _check_range(name, datatype, np.asarray(values))
            with np.errstate(over="ignore"):  # overflow to infinity is reported below
                array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(
            f"{name}: every row must be nested lists of shape {list(row_shape)} "
            "(-1 = any size, the same in every row of one request)"
        ) from exc
    expected = (rows, *row_shape)
    if array.ndim != len(expected) or any(
        e not in (-1, a) for e, a in zip(expected, array.shape, strict=True)
    ):
        raise InvalidInputError(
            f"{name}: got a value of shape {list(array.shape[1:])}, expected "
            f"{list(row_shape)} (-1 = any size)"
        )
    # NaN is a missing value (a null, which numpy reads as NaN); infinity can only be a number
    # beyond the type's range (GraphQL reads 1e999 as infinity; JSON cannot carry one).
    if datatype in FLOAT_TYPES and array.size and np.isinf(array).any():
        largest = LARGEST[datatype]
        raise InvalidInputError(
            f"{name}: value out of range for {datatype.value} (-{largest:.8g} to {largest:.8g})"
        )
    return array


def _check_range(name: str, datatype: DataType, raw: np.ndarray) -> None:
    low, high = _INT_RANGES[datatype]
    if raw.size and (raw.min() < low or raw.max() > high):
        raise InvalidInputError(
            f"{name}: value out of range for {datatype.value} ({low} to {high})"
        )


def float_values(values: list[Any]) -> list[float] | None:
    """``values`` as floats, a null as NaN; None when one is not a number."""
    try:
        return [float(v) for v in values]
    except TypeError:
        pass  # a null (a missing value), or not a number at all
    except ValueError:
        return None
    try:
        return [math.nan if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        return None


def holds(value: Any, wanted: object) -> bool:
    """Whether a row's value (a scalar or nested lists) is or contains ``wanted``."""
    if isinstance(value, list):
        return any(holds(v, wanted) for v in value)
    return bool(value == wanted)


def _strings(values: list[Any]) -> np.ndarray:
    # dtype=object keeps the Python strings; numpy leaves a ragged nesting as an array of lists.
    array = np.array(values, dtype=object)
    if any(isinstance(v, list) for v in array.flat):
        raise ValueError("ragged nested strings")
    return array


def python_values(array: np.ndarray, datatype: DataType) -> list[Any]:
    """The rows of an output array as JSON values; NaN and infinity as null."""
    if datatype in FLOAT_TYPES:
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            # GraphQL Float cannot carry NaN or infinity: those become null.
            obj = values.astype(object)
            obj[~np.isfinite(values)] = None
            return list(obj.tolist())
        return list(values.tolist())
    return list(array.tolist())
