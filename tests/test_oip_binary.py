"""Triton's binary tensor extension (gateway.oip.binary), checked against tritonclient.http."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from gateway.errors import InvalidInputError
from gateway.oip.binary import (
    HEADER,
    decode_binary_request,
    decode_raw_request,
    encode_binary_response,
    parse_header_length,
)
from gateway.oip.codec import NonFinite
from gateway.oip.messages import InferRequest, RequestedOutput
from gateway.oip.raw import encode_raw
from gateway.tensors import DataType, TensorSpec
from tests.test_oip_codec import LIMIT, assert_same, response, sample, triton_body


def decode(body: bytes, header_length: int) -> InferRequest:
    return decode_binary_request(body, header_length, max_elements=LIMIT)


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, int]:
    text = json.dumps(header).encode()
    return text + b"".join(blobs), len(text)


def test_a_tritonclient_binary_body_decodes_to_its_arrays_for_every_datatype() -> None:
    arrays = {d.value: sample(d) for d in DataType}
    arrays["empty"] = np.zeros((0, 2), dtype=np.int16)
    arrays["no_strings"] = np.zeros((2, 0), dtype=object)
    body, header_length = triton_body(arrays, binary=True, request_id="b")
    assert header_length is not None
    request = decode(body, header_length)
    assert request.id == "b"
    for tensor in request.inputs:
        assert_same(tensor.array, arrays[tensor.name])
        assert "binary_data_size" not in tensor.parameters  # transport, not for the model


def test_binary_and_json_inputs_mix_in_one_request() -> None:
    binary_one, json_one = sample(DataType.FP32), sample(DataType.BYTES)
    with_binary, length = triton_body({"a": binary_one}, binary=True)
    with_json, _ = triton_body({"b": json_one}, binary=False)
    header = json.loads(with_binary[:length])
    header["inputs"] += json.loads(with_json)["inputs"]
    body, length = binary_body(header, with_binary[length:])
    request = decode(body, length)
    assert_same(request.feeds["a"], binary_one)
    assert_same(request.feeds["b"], json_one)


def test_the_extension_documents_example_request_decodes() -> None:
    # docs/protocol/extension_binary_data.md: UINT32 [2, 2] in 16 bytes, BOOL [3] in 3 bytes.
    header = {
        "model_name": "mymodel",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32",
             "parameters": {"binary_data_size": 16}},
            {"name": "input1", "shape": [3], "datatype": "BOOL",
             "parameters": {"binary_data_size": 3}},
        ],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}}],
    }  # fmt: skip
    body, length = binary_body(header, struct.pack("<4I", 1, 2, 3, 4), b"\x01\x00\x01")
    request = decode(body, length)
    assert request.feeds["input0"].tolist() == [[1, 2], [3, 4]]
    assert request.feeds["input1"].tolist() == [True, False, True]
    assert request.outputs == (RequestedOutput("output0", {"binary_data": True}),)


@pytest.mark.parametrize("mode", list(NonFinite))
def test_binary_outputs_read_back_through_tritonclient_for_every_datatype(
    mode: NonFinite,
) -> None:
    arrays = {d.value: sample(d) for d in DataType}
    arrays["nonfinite"] = np.array([np.nan, -np.inf, np.inf], dtype=np.float64)
    arrays["empty"] = np.zeros((0,), dtype=np.float32)
    request = InferRequest((), parameters={"binary_data_output": True})
    body, length = encode_binary_response(response(arrays, id="q"), request, non_finite=mode)
    assert length is not None and body[:length].endswith(b"]}")
    result = triton_http.InferResult.from_response_body(body, header_length=length)
    for name, array in arrays.items():
        assert result.get_output(name)["parameters"]["binary_data_size"] == len(encode_raw(array))
        if array.size:
            assert_same(result.as_numpy(name), array)
        else:  # tritonclient reads 0 bytes as np.empty(0), float64 whatever the datatype
            assert result.as_numpy(name).shape == array.shape


def test_only_the_outputs_asked_for_as_binary_are_binary() -> None:
    arrays = {"a": sample(DataType.INT32), "b": sample(DataType.FP16), "c": sample(DataType.BOOL)}
    outputs = (RequestedOutput("a", {"binary_data": True}), RequestedOutput("b"))
    body, length = encode_binary_response(response(arrays), InferRequest((), outputs))
    assert length is not None
    header = json.loads(body[:length])
    assert [("data" in o, "parameters" in o) for o in header["outputs"]] == [
        (False, True),
        (True, False),
        (True, False),
    ]
    assert body[length:] == encode_raw(arrays["a"])
    result = triton_http.InferResult.from_response_body(body, header_length=length)
    for name, array in arrays.items():
        assert_same(result.as_numpy(name), array)


def test_no_binary_output_gives_a_plain_json_body() -> None:
    body, length = encode_binary_response(response({"a": sample(DataType.UINT8)}), InferRequest(()))
    assert length is None
    assert json.loads(body)["outputs"][0]["data"] == [0, 1, 200, 255, 7, 8]


def test_bytes_are_laid_out_as_tritonclient_serializes_them() -> None:
    strings = np.array(["a", "", "日本"], dtype=object)
    assert encode_raw(strings) == serialize_byte_tensor(strings).item()
    raw = b"\x01\x00\x00\x00a\x00\x00\x00\x00\x06\x00\x00\x00" + "日本".encode()
    assert deserialize_bytes_tensor(encode_raw(strings)).tolist() == [b"a", b"", "日本".encode()]
    assert encode_raw(strings) == raw
    assert encode_raw(np.array([b"\xff"], dtype=object)) == b"\x01\x00\x00\x00\xff"


def test_header_length_is_an_integer_within_the_body() -> None:
    assert parse_header_length("12", 20) == 12
    assert parse_header_length(" 0 ", 20) == 0
    for bad in ("-1", "21", "1e3", "", "١٢", "²", "9" * 5000):
        with pytest.raises(InvalidInputError, match=f"{HEADER} must be an integer from 0 to"):
            parse_header_length(bad, 20)


def _one(datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    tensor = {"name": "x", "datatype": datatype, "shape": shape}
    return {"inputs": [tensor | {"parameters": {"binary_data_size": size}}]}


@pytest.mark.parametrize(
    ("header", "blob", "message"),
    [
        (_one("FP32", [2], 8), b"\x00" * 4, "binary_data_size is 8 but only 4 bytes of binary"),
        (_one("FP32", [2], 4), b"\x00" * 4, "4 bytes of data, but shape [2] of FP32 needs 8"),
        (_one("FP32", [1], 4), b"\x00" * 6, "the body has 2 bytes after the binary data"),
        (_one("BOOL", [2], 2), b"\x01\x02", 'input "x": BOOL data must hold only bytes 0 and 1'),
        (_one("BYTES", [1], 2), b"\x01\x00", "BYTES data ends inside the 4-byte length of el"),
        (_one("BYTES", [1], 5), b"\x09\x00\x00\x00a", "element 0 claims 9 bytes but only 1"),
        (_one("BYTES", [2], 5), b"\x01\x00\x00\x00a", "holds 1 elements but shape [2] needs 2"),
        (_one("BYTES", [1], 10), b"\x01\x00\x00\x00a" * 2, "more than the 1 elements shape [1]"),
        (_one("BYTES", [0], 5), b"\x01\x00\x00\x00a", "more than the 0 elements shape [0]"),
        (_one("BYTES", [1], 6), b"\x02\x00\x00\x00\xc3\x28", "BYTES element 0 is not UTF-8"),
    ],
)
def test_bad_binary_data_says_what_was_wrong(
    header: dict[str, Any], blob: bytes, message: str
) -> None:
    body, length = binary_body(header, blob)
    with pytest.raises(InvalidInputError) as info:
        decode(body, length)
    assert message in info.value.message


def test_a_raw_request_deduces_the_variable_dimension_from_its_size() -> None:
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    spec = TensorSpec("x", DataType.FP32, (-1, 4))
    request = decode_raw_request(rows.tobytes(), [spec], max_elements=LIMIT)
    assert_same(request.feeds["x"], rows)
    assert request.parameters == {"binary_data_output": True}
    assert request.binary_output("anything")
    fixed = TensorSpec("x", DataType.INT16, (3,))
    got = decode_raw_request(b"\x01\x00\x02\x00\x03\x00", [fixed], max_elements=LIMIT)
    assert got.feeds["x"].tolist() == [1, 2, 3]


def test_a_raw_bytes_request_is_one_element_without_a_length_prefix() -> None:
    spec = TensorSpec("s", DataType.BYTES, (-1, 1))
    request = decode_raw_request(b"427", [spec], max_elements=LIMIT)
    assert request.feeds["s"].tolist() == [["427"]]


@pytest.mark.parametrize(
    ("inputs", "body", "message"),
    [
        ([], b"", "needs a model with exactly one input; this one has 0"),
        ([TensorSpec("a", DataType.FP32, (1,))] * 2, b"", "this one has 2"),
        ([TensorSpec("x", DataType.FP32, (-1, -1))], b"", "more than one variable dimension"),
        ([TensorSpec("x", DataType.FP32, (-1, 4))], b"\x00" * 12, "of 12 bytes fits no tensor"),
        ([TensorSpec("x", DataType.FP32, (2,))], b"\x00" * 4, "of 4 bytes fits no tensor"),
        ([TensorSpec("x", DataType.FP32, (-1, 0))], b"\x00" * 4, "fits no tensor"),
        ([TensorSpec("s", DataType.BYTES, (2,))], b"ab", "carries one BYTES element"),
        ([TensorSpec("x", DataType.UINT8, (-1,))], b"\x00" * 9, "more than the limit of 8"),
    ],
)
def test_a_raw_request_the_model_does_not_allow_is_refused(
    inputs: list[TensorSpec], body: bytes, message: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_raw_request(body, inputs, max_elements=8)
    assert message in info.value.message
