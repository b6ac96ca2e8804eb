from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto

from gateway.errors import InvalidInputError
from gateway.tensors import (
    DataType,
    TensorSpec,
    datatype_from_elem_type,
    datatype_from_onnx,
    datatype_of,
    decode_tensor,
    encode_b64,
    encode_data,
    numpy_dtype,
)

NUMERIC = [d for d in DataType if d is not DataType.BYTES]
FLOATS = [DataType.FP16, DataType.FP32, DataType.FP64]

SAMPLES: dict[DataType, list[Any]] = {
    DataType.BOOL: [True, False, False, True],
    DataType.UINT8: [0, 1, 200, 255],
    DataType.UINT16: [0, 1, 300, 65535],
    DataType.UINT32: [0, 1, 70000, 2**32 - 1],
    DataType.UINT64: [0, 1, 2**53 + 1, 2**64 - 1],
    DataType.INT8: [-128, -1, 0, 127],
    DataType.INT16: [-(2**15), -1, 0, 2**15 - 1],
    DataType.INT32: [-(2**31), -1, 0, 2**31 - 1],
    DataType.INT64: [-(2**63), -1, 2**53 + 1, 2**63 - 1],
    DataType.FP16: [0.5, -2.0, 65504.0, 2.0**-24],  # exactly representable, incl. a subnormal
    DataType.FP32: [0.25, -0.0, 3.4028234663852886e38, 2.0**-149],
    DataType.FP64: [0.1, -1e308, 5e-324, 123456789.123456789],
    DataType.BYTES: ["héllo", "日本語", "", "🙂 emoji"],
}


def decode(
    datatype: DataType,
    shape: list[int],
    *,
    data: object = None,
    b64: str | None = None,
    spec_shape: tuple[int, ...] | None = None,
    sent: DataType | None = None,
    max_elements: int = 1000,
) -> npt.NDArray[Any]:
    spec = TensorSpec("x", datatype, tuple(shape) if spec_shape is None else spec_shape)
    return decode_tensor(
        spec, shape=shape, datatype=sent, data=data, b64=b64, max_elements=max_elements
    )


def assert_same(got: npt.NDArray[Any], want: npt.NDArray[Any], *, bitwise: bool) -> None:
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    assert got.flags.c_contiguous and got.flags.writeable
    if bitwise:
        assert got.tobytes() == want.tobytes()
    elif want.dtype.kind == "f":
        assert np.array_equal(got, want, equal_nan=True)
        real = ~np.isnan(want)
        assert np.array_equal(np.signbit(got[real]), np.signbit(want[real]))  # keeps -0.0
    else:
        assert got.tolist() == want.tolist()


def errors(datatype: DataType, shape: list[int], **kwargs: Any) -> str:
    with pytest.raises(InvalidInputError) as info:
        decode(datatype, shape, **kwargs)
    assert info.value.code == "BAD_USER_INPUT"
    assert info.value.message.startswith('input "x": ')
    return info.value.message


# --- type mapping -------------------------------------------------------------------------------


def test_datatype_from_onnx_covers_every_datatype() -> None:
    names = "bool uint8 uint16 uint32 uint64 int8 int16 int32 int64 float16 float double string"
    found = {datatype_from_onnx(f"tensor({name})") for name in names.split()}
    assert found == set(DataType)
    assert datatype_from_onnx("tensor(float)") is DataType.FP32
    assert datatype_from_onnx("tensor(string)") is DataType.BYTES


@pytest.mark.parametrize(
    "type_str",
    ["tensor(bfloat16)", "tensor(complex64)", "seq(tensor(float))", "map(int64,tensor(float))", ""],
)
def test_datatype_from_onnx_unsupported(type_str: str) -> None:
    assert datatype_from_onnx(type_str) is None


def test_datatype_from_elem_type() -> None:
    found = {datatype_from_elem_type(e) for e in TensorProto.DataType.values()}
    assert found - {None} == set(DataType)
    assert datatype_from_elem_type(TensorProto.FLOAT) is DataType.FP32
    assert datatype_from_elem_type(TensorProto.BFLOAT16) is None


@pytest.mark.parametrize("datatype", list(DataType))
def test_numpy_dtype_and_datatype_of_are_inverse(datatype: DataType) -> None:
    assert datatype.value == datatype.name
    assert datatype_of(np.empty(2, dtype=numpy_dtype(datatype))) is datatype


def test_datatype_of_other_dtypes() -> None:
    assert numpy_dtype(DataType.BYTES) == np.dtype(object)
    assert datatype_of(np.array(["a"])) is DataType.BYTES
    assert datatype_of(np.array([b"a"])) is DataType.BYTES
    assert datatype_of(np.zeros(2, dtype=">f4")) is DataType.FP32
    assert datatype_of(np.zeros(2, dtype=np.intc)) is DataType.INT32
    with pytest.raises(ValueError, match="complex"):
        datatype_of(np.zeros(2, dtype=np.complex64))


def test_accepts_shape() -> None:
    spec = TensorSpec("x", DataType.FP32, (-1, 4))
    assert spec.accepts_shape([0, 4]) and spec.accepts_shape((7, 4))
    assert not spec.accepts_shape([2, 3])
    assert not spec.accepts_shape([4])
    assert not spec.accepts_shape([-1, 4])


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DataType))
def test_round_trip_via_data(datatype: DataType) -> None:
    array = np.array(SAMPLES[datatype], dtype=numpy_dtype(datatype)).reshape(2, 2)
    sent = json.loads(json.dumps(encode_data(array), allow_nan=False))
    assert sent == SAMPLES[datatype]
    got = decode(datatype, [2, 2], data=sent, spec_shape=(-1, 2))
    assert_same(got, array, bitwise=datatype is not DataType.BYTES)


@pytest.mark.parametrize("datatype", NUMERIC)
def test_round_trip_via_b64(datatype: DataType) -> None:
    array = np.array(SAMPLES[datatype], dtype=numpy_dtype(datatype)).reshape(2, 2)
    b64 = encode_b64(array)
    assert b64 is not None
    assert_same(decode(datatype, [2, 2], b64=b64), array, bitwise=True)


def test_encode_data_gives_plain_python_values() -> None:
    assert [type(v) for v in encode_data(np.array([1.5], dtype=np.float16))] == [float]
    assert [type(v) for v in encode_data(np.array([2**64 - 1], dtype=np.uint64))] == [int]
    assert [type(v) for v in encode_data(np.array([True]))] == [bool]
    assert encode_data(np.array(3.5)) == [3.5]  # rank 0
    assert encode_data(np.arange(6, dtype=np.int8).reshape(2, 3).T) == [0, 3, 1, 4, 2, 5]


def test_encode_data_bytes_elements_become_text() -> None:
    array = np.array([b"caf\xc3\xa9", b"\xff", "plain"], dtype=object)
    assert encode_data(array) == ["café", "\ufffd", "plain"]
    assert encode_data(np.array([b"ab"])) == ["ab"]
    assert encode_b64(array) is None


@pytest.mark.parametrize("datatype", FLOATS)
def test_non_finite_floats(datatype: DataType) -> None:
    array = np.array([math.nan, math.inf, -math.inf, 1.0], dtype=numpy_dtype(datatype))
    assert encode_data(array) == ["NaN", "Infinity", "-Infinity", 1.0]
    got = decode(datatype, [4], data=["NaN", "Infinity", "-Infinity", 1])
    assert_same(got, array, bitwise=False)
    # A non-finite *number* is no JSON or GraphQL value: it can only be a literal beyond a
    # double's range (GraphQL reads 1e999 as infinity, a 5,000-digit integer as NaN). Refused,
    # naming the range and the strings that do mean these values.
    for odd in (math.nan, math.inf, -math.inf):
        message = errors(datatype, [4], data=["NaN", "Infinity", 1.0, odd])
        assert f"data[3] is out of range for {datatype.value} (finite values within +-" in message
        assert message.endswith('or one of "NaN", "Infinity", "-Infinity")')


def test_b64_is_little_endian_and_result_native() -> None:
    big = np.array([1, 2], dtype=">i4")
    assert encode_b64(big) == base64.b64encode(b"\x01\0\0\0\x02\0\0\0").decode()
    got = decode(DataType.INT32, [2], b64=encode_b64(big))
    assert got.dtype == np.dtype(np.int32) and got.dtype.isnative
    got[0] = 5  # writable, not a view of the request's bytes


def test_b64_urlsafe_and_unpadded_are_accepted() -> None:
    assert base64.b64encode(bytes([0xFB, 0xFF, 0xBF, 0xFB])) == b"+/+/+w=="
    for b64 in ["+/+/+w==", "-_-_-w==", "-_-_-w", "+/+/+w"]:
        assert decode(DataType.UINT8, [4], b64=b64).tolist() == [0xFB, 0xFF, 0xBF, 0xFB]


def test_empty_and_scalar_tensors() -> None:
    assert decode(DataType.FP32, [0, 4], data=[], spec_shape=(-1, 4)).shape == (0, 4)
    assert decode(DataType.INT64, [0], data=[]).shape == (0,)
    assert decode(DataType.BOOL, [0, 3], b64="").shape == (0, 3)
    assert decode(DataType.BYTES, [0], data=[]).dtype == np.dtype(object)
    assert decode(DataType.FP64, [], data=[1.5]).tolist() == 1.5


# --- errors --------------------------------------------------------------------------------------


def test_datatype_mismatch() -> None:
    message = errors(DataType.FP32, [1], data=[1.0], sent=DataType.FP64)
    assert "datatype FP64 does not match the model's FP32" in message


def test_shape_errors() -> None:
    assert errors(DataType.FP32, [2, 3], data=[0] * 6, spec_shape=(-1, 4)) == (
        'input "x": shape [2, 3] does not match the model\'s [-1, 4] (-1 = any size)'
    )
    assert "shape [4] does not match the model's [-1, 4]" in errors(
        DataType.FP32, [4], data=[0] * 4, spec_shape=(-1, 4)
    )
    message = errors(DataType.FP32, [-2, 4], data=[], spec_shape=(-1, 4))
    assert "shape [-2, 4] is invalid" in message and "integer >= 0" in message
    assert "is invalid" in errors(DataType.FP32, [True, 4], data=[], spec_shape=(-1, 4))


def test_too_many_elements_is_checked_before_the_data() -> None:
    message = errors(DataType.FP32, [10, 4], data="junk", spec_shape=(-1, 4), max_elements=8)
    assert "40 elements" in message and "limit of 8" in message


def test_exactly_one_of_data_and_b64() -> None:
    assert "exactly one of data or b64; both" in errors(
        DataType.FP32, [1], data=[1.0], b64="AAAAAA=="
    )
    assert "exactly one of data or b64; neither" in errors(DataType.FP32, [1])


def test_data_must_be_a_flat_list_of_the_right_length() -> None:
    message = errors(DataType.FP32, [2, 2], data="1,2,3,4")
    assert "flat row-major list of 4 elements" in message and "a string" in message
    message = errors(DataType.FP32, [2, 2], data=[[1, 2], [3, 4]])
    assert "flat row-major list of 4 elements; data[0] is a list" in message
    message = errors(DataType.FP32, [2, 2], data=[[1, 2], [3, 4], 5, 6])
    assert "flat row-major list of 4 elements; data[0] is a list" in message
    message = errors(DataType.INT32, [3], data=[1, 2])
    assert "data has 2 elements but the shape needs 3" in message


@pytest.mark.parametrize(
    ("datatype", "data", "phrases"),
    [
        (
            DataType.BOOL,
            [True, 1],
            ["data[1] is 1 (an integer)", "BOOL data must be true or false"],
        ),
        (DataType.BOOL, [False, None], ["data[1] is null", "true or false"]),
        (DataType.INT32, [1, True], ["data[1] is true (a boolean)", "INT32 data must be integers"]),
        (DataType.INT32, [1, 3.0], ["data[1] is 3.0 (a float)", "without a decimal point"]),
        (DataType.INT64, ["7", 1], ['data[0] is "7" (a string)', "INT64 data must be integers"]),
        (DataType.UINT8, [255, 256], ["data[1] = 256 is out of range for UINT8 (0..255)"]),
        (DataType.UINT8, [-1, 0], ["data[0] = -1 is out of range for UINT8 (0..255)"]),
        (DataType.INT8, [0, -129], ["data[1] = -129 is out of range for INT8 (-128..127)"]),
        (DataType.INT64, [0, 2**63], [f"data[1] = {2**63} is out of range for INT64"]),
        (DataType.UINT64, [1, -1], ["data[1] = -1 is out of range for UINT64"]),
        (DataType.UINT64, [2**64, 1], [f"= {2**64} is out of range for UINT64 (0..{2**64 - 1})"]),
        (DataType.FP32, [1.0, False], ["data[1] is false (a boolean)", '"NaN", "Infinity"']),
        (DataType.FP32, [1.0, "nan"], ['data[1] is "nan"', "FP32 data must be numbers"]),
        (DataType.FP64, ["1.5", 1.0], ['data[0] is "1.5"', '"-Infinity"']),
        (DataType.FP16, [1.0, 70000], ["data[1] = 70000 is out of range for FP16", "65504"]),
        (DataType.FP32, [1e39, 0.0], ["data[0] = 1e+39 is out of range for FP32", "3.4028235e+38"]),
        (DataType.FP32, [1.0, 10**400], ["data[1] = ", "is out of range for FP32"]),
        (DataType.FP64, [10**400, 1.0], ["data[0] = ", "is out of range for FP64"]),
        (DataType.INT8, [1, 10**400], ["data[1] = 1000000000000000000000000000000000000... is"]),
        (DataType.INT64, [1, 1e30], ["data[1] is out of range for INT64 (-9223372036854775808"]),
        (DataType.UINT8, [math.inf, 1], ["data[0] is out of range for UINT8 (0..255)"]),
        (DataType.INT32, [1, math.nan], ["data[1] is out of range for INT32"]),
        (DataType.BYTES, ["a", 5], ["data[1] is 5 (an integer)", "BYTES data must be strings"]),
        (DataType.BYTES, [b"x", "a"], ["data[0] is b'x' (bytes)", "BYTES data must be strings"]),
        (
            DataType.BYTES,
            ["a", {"k": 1}],
            ["flat row-major list of 2 elements; data[1] is an object"],
        ),
    ],
)
def test_bad_elements(datatype: DataType, data: list[Any], phrases: list[str]) -> None:
    message = errors(datatype, [2], data=data)
    for phrase in phrases:
        assert phrase in message


def test_b64_errors() -> None:
    assert errors(DataType.BYTES, [1], b64="YQ==") == (
        'input "x": b64 is not supported for BYTES; send data as a list of strings'
    )
    assert "b64 is not valid base64" in errors(DataType.UINT8, [3], b64="!!!!")
    assert "b64 is not valid base64" in errors(DataType.UINT8, [3], b64="AAAAA")
    assert "b64 is not valid base64" in errors(DataType.UINT8, [3], b64="AA AA")
    assert "b64 is not valid base64" in errors(DataType.UINT8, [3], b64="AAÄA")
    message = errors(DataType.FP32, [3], b64=base64.b64encode(bytes(8)).decode())
    assert "b64 decodes to 8 bytes" in message and "FP32 needs 12" in message
    assert "only bytes 0 and 1" in errors(
        DataType.BOOL, [2], b64=base64.b64encode(b"\0\2").decode()
    )


# --- properties ----------------------------------------------------------------------------------

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)


@pytest.mark.parametrize("datatype", NUMERIC)
@settings(max_examples=30, deadline=None, database=None)
@given(draw=st.data())
def test_round_trip_property(datatype: DataType, draw: st.DataObject) -> None:
    array = draw.draw(hnp.arrays(numpy_dtype(datatype), SHAPES))
    shape = list(array.shape)
    b64 = encode_b64(array)
    assert b64 is not None
    assert_same(decode(datatype, shape, b64=b64), array, bitwise=True)
    sent = json.loads(json.dumps(encode_data(array), allow_nan=False))
    assert_same(decode(datatype, shape, data=sent), array, bitwise=False)


@settings(max_examples=30, deadline=None, database=None)
@given(texts=st.lists(st.text(), max_size=6))
def test_round_trip_property_bytes(texts: list[str]) -> None:
    array = np.array(texts, dtype=object).reshape(len(texts))
    got = decode(DataType.BYTES, [len(texts)], data=encode_data(array))
    assert got.dtype == np.dtype(object) and got.tolist() == texts
