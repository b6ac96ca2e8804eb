"""Tensors as raw bytes, the way the protocol carries them outside JSON.

Triton's binary tensor extension (REST) and gRPC's ``raw_input_contents`` /
``raw_output_contents`` use the same layout: the elements in row-major order, little-endian,
without padding; BOOL one byte (0 or 1); BYTES each element as a 4-byte little-endian length
followed by its bytes (``tritonclient.utils.serialize_byte_tensor``).

BYTES inputs become object arrays of ``str``, as ONNX Runtime's string tensors and the rest of
the gateway hold them, so an element that is not UTF-8 text is refused. BYTES outputs may hold
``str`` (written as UTF-8) or ``bytes`` (written as they are).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import InvalidInputError
from gateway.tensors import DataType, datatype_of, numpy_dtype

__all__ = ["decode_raw", "encode_raw", "strings_array"]

_LENGTH = struct.Struct("<I")


def decode_raw(
    where: str, datatype: DataType, dims: tuple[int, ...], count: int, raw: bytes | memoryview
) -> npt.NDArray[Any]:
    """Build a tensor of ``dims`` (``count`` elements) from its raw bytes.

    Args:
        where: how messages name the tensor, e.g. ``input "x"``.
        datatype: the tensor's datatype.
        dims: its shape, already checked (see ``messages.check_shape``).
        count: the product of ``dims``.
        raw: the bytes; their length must be what the shape and datatype need.

    Raises:
        InvalidInputError: a size that does not fit the shape, a BOOL byte other than 0 or 1,
            a malformed or non-UTF-8 BYTES element.
    """
    if datatype is DataType.BYTES:
        return strings_array(where, _split_bytes(where, memoryview(raw), count, dims), dims)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise InvalidInputError(
            f"{where}: {len(raw)} bytes of data, but shape {list(dims)} of {datatype.value} "
            f"needs {count * dtype.itemsize} ({count} x {dtype.itemsize} bytes)"
        )
    if datatype is DataType.BOOL and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise InvalidInputError(f"{where}: BOOL data must hold only bytes 0 and 1")
    # astype copies: the array is native-endian, writable, and does not pin the request body.
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)


def encode_raw(array: npt.NDArray[Any]) -> bytes:
    """The tensor's raw bytes: row-major, little-endian; BYTES length-prefixed."""
    if datatype_of(array) is DataType.BYTES:
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            item = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(item)))
            parts.append(item)
        return b"".join(parts)
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def strings_array(where: str, items: list[bytes], dims: tuple[int, ...]) -> npt.NDArray[Any]:
    """A BYTES tensor of ``dims`` from its elements' bytes, each decoded as UTF-8 text."""
    values = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        try:
            values[i] = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{where}: BYTES element {i} is not UTF-8 text ({exc.reason} at byte "
                f"{exc.start}); the gateway's string tensors hold text"
            ) from None
    return values.reshape(dims)


def _split_bytes(where: str, raw: memoryview, count: int, dims: tuple[int, ...]) -> list[bytes]:
    items: list[bytes] = []
    offset, size = 0, len(raw)
    while offset < size:
        if len(items) == count:
            raise InvalidInputError(
                f"{where}: BYTES data holds more than the {count} elements shape {list(dims)} "
                f"needs ({size - offset} bytes are left over)"
            )
        if offset + 4 > size:
            raise InvalidInputError(
                f"{where}: BYTES data ends inside the 4-byte length of element {len(items)}"
            )
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > size:
            raise InvalidInputError(
                f"{where}: BYTES element {len(items)} claims {length} bytes but only "
                f"{size - offset} remain"
            )
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise InvalidInputError(
            f"{where}: BYTES data holds {len(items)} elements but shape {list(dims)} needs "
            f"{count} (each a 4-byte little-endian length, then its bytes)"
        )
    return items
