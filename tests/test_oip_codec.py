"""REST JSON of the Open Inference Protocol (gateway.oip.codec), checked against tritonclient.

A body that ``tritonclient.http`` builds must decode to the arrays it was built from, and a
response the codec writes must read back through tritonclient's ``InferResult`` as the same
arrays, for every datatype.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pytest
import tritonclient.http as triton_http
from tritonclient.http._utils import _get_inference_request

import gateway.oip
from gateway.errors import InferenceError, InvalidInputError
from gateway.oip.codec import NonFinite, decode_request, encode_response
from gateway.oip.messages import InferOutput, InferRequest, InferResponse, RequestedOutput
from gateway.tensors import DataType, numpy_dtype

LIMIT = 1 << 20
FLOATS = [DataType.FP16, DataType.FP32, DataType.FP64]

#: A [2, 3] tensor of every datatype, with each type's extremes.
SAMPLES: dict[DataType, list[Any]] = {
    DataType.BOOL: [True, False, False, True, True, False],
    DataType.UINT8: [0, 1, 200, 255, 7, 8],
    DataType.UINT16: [0, 1, 300, 65535, 7, 8],
    DataType.UINT32: [0, 1, 70000, 2**32 - 1, 7, 8],
    DataType.UINT64: [0, 1, 2**53 + 1, 2**64 - 1, 7, 8],
    DataType.INT8: [-128, -1, 0, 127, 7, 8],
    DataType.INT16: [-(2**15), -1, 0, 2**15 - 1, 7, 8],
    DataType.INT32: [-(2**31), -1, 0, 2**31 - 1, 7, 8],
    DataType.INT64: [-(2**63), -1, 2**53 + 1, 2**63 - 1, 7, 8],
    DataType.FP16: [0.5, -2.0, 65504.0, 2.0**-24, 0.1, -0.0],
    DataType.FP32: [0.25, -0.0, 3.4028234663852886e38, 2.0**-149, 0.1, 1e-10],
    DataType.FP64: [0.1, -1e308, 5e-324, 123456789.123456789, 1 / 3, 2.0**60],
    DataType.BYTES: ["héllo", "日本語", "", "🙂 emoji", "NaN", 'a "quoted" \\ string'],
}


def sample(datatype: DataType) -> npt.NDArray[Any]:
    """The [2, 3] sample of a datatype as the gateway holds it (BYTES: objects of str)."""
    return np.array(SAMPLES[datatype], dtype=numpy_dtype(datatype)).reshape(2, 3)


def assert_same(got: npt.NDArray[Any], want: npt.NDArray[Any]) -> None:
    """Same shape, dtype and elements; BYTES compared as text, NaN equal to NaN."""
    assert got.shape == want.shape
    if want.dtype == object:
        as_text = [v.decode() if isinstance(v, bytes) else v for v in got.ravel().tolist()]
        assert as_text == want.ravel().tolist()
        return
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert np.signbit(got).tolist() == np.signbit(want).tolist()  # -0.0 stays -0.0


def triton_body(arrays: dict[str, npt.NDArray[Any]], *, binary: bool, **kwargs: Any) -> Any:
    """tritonclient.http's own request body (and header length) for these inputs."""
    inputs = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else DataType(_triton_type(array)).value
        tensor = triton_http.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    outputs = kwargs.pop("outputs", None)
    return _get_inference_request(
        inputs, kwargs.pop("request_id", ""), outputs, 0, False, False, 0, None, kwargs or None
    )


def _triton_type(array: npt.NDArray[Any]) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def decode(body: bytes | str) -> InferRequest:
    return decode_request(body.encode() if isinstance(body, str) else body, max_elements=LIMIT)


def response(arrays: dict[str, npt.NDArray[Any]], **kwargs: Any) -> InferResponse:
    outputs = [InferOutput(name, array) for name, array in arrays.items()]
    return InferResponse(model_name="m", outputs=outputs, **kwargs)


def test_a_tritonclient_json_body_decodes_to_its_arrays_for_every_datatype() -> None:
    arrays = {d.value: sample(d) for d in DataType}
    body, header_length = triton_body(arrays, binary=False, request_id="r1")
    assert header_length is None
    request = decode(body)
    assert request.id == "r1"
    assert [i.name for i in request.inputs] == list(arrays)
    for tensor in request.inputs:
        assert tensor.datatype.value == tensor.name
        assert_same(tensor.array, arrays[tensor.name])
    # tritonclient asks for binary outputs when it names none.
    assert request.outputs is None
    assert request.parameters == {"binary_data_output": True}


@pytest.mark.parametrize("mode", [NonFinite.TRITON, NonFinite.STRING])
def test_a_json_response_reads_back_through_tritonclient_for_every_datatype(
    mode: NonFinite,
) -> None:
    arrays = {d.value: sample(d) for d in DataType}
    arrays["nonfinite"] = np.array([np.nan, np.inf, -np.inf, 1.5], dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float64)
    body = encode_response(response(arrays, model_version="2", id="r1"), non_finite=mode)
    result = triton_http.InferResult.from_response_body(body)
    assert result.get_response()["model_version"] == "2"
    assert result.get_response()["id"] == "r1"
    for name, array in arrays.items():
        assert_same(result.as_numpy(name), array)


def test_non_finite_outputs_are_spelled_as_triton_mlserver_or_graphql_do() -> None:
    arrays = {"y": np.array([np.nan, np.inf, -np.inf, 2.5], dtype=np.float16)}
    spelled = {
        NonFinite.TRITON: b"[NaN,Infinity,-Infinity,2.5]",
        NonFinite.NULL: b"[null,null,null,2.5]",
        NonFinite.STRING: b'["NaN","Infinity","-Infinity",2.5]',
    }
    for mode, data in spelled.items():
        assert encode_response(response(arrays), non_finite=mode).endswith(
            b'"data":' + data + b"}]}"
        )
    assert encode_response(response(arrays)).endswith(b"[NaN,Infinity,-Infinity,2.5]}]}")


@pytest.mark.parametrize("datatype", FLOATS)
def test_non_finite_inputs_are_read_in_every_spelling_clients_send(datatype: DataType) -> None:
    # Bare tokens (Triton, tritonclient; rapidjson also reads Inf), null (MLServer, KServe),
    # and the GraphQL API's strings.
    data = '[NaN, Infinity, -Infinity, Inf, -Inf, null, "NaN", "Infinity", "-Infinity", 1]'
    body = '{"id": "NaN", "inputs": [{"name": "x", "shape": [10], "datatype": '
    body += f'"{datatype.value}", "data": {data}}}, {{"name": "s", "shape": [1], '
    body += '"datatype": "BYTES", "data": ["Infinity NaN"]}]}'
    request = decode(body)
    got = request.inputs[0].array.tolist()
    assert np.isnan(got[0]) and np.isnan(got[5]) and np.isnan(got[6])
    assert got[1:5] == [np.inf, -np.inf, np.inf, -np.inf]
    assert got[7:] == [np.inf, -np.inf, 1.0]
    # Tokens inside strings are left alone.
    assert request.id == "NaN"
    assert request.inputs[1].array.tolist() == ["Infinity NaN"]


def test_data_may_be_nested_as_the_shape_or_flat() -> None:
    flat = decode(
        '{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32", '
        '"data": [1, 2, 3, 4, 5, 6]}]}'
    )
    nested = decode(
        '{"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32", '
        '"data": [[1, 2, 3], [4, 5, 6]]}]}'
    )
    assert_same(nested.inputs[0].array, flat.inputs[0].array)
    assert flat.inputs[0].array.tolist() == [[1, 2, 3], [4, 5, 6]]
    deep = decode(
        '{"inputs": [{"name": "x", "shape": [2, 1, 2], "datatype": "FP32", '
        '"data": [[[1, null]], [[3, 4]]]}]}'
    )
    assert deep.inputs[0].array.shape == (2, 1, 2)
    assert np.isnan(deep.inputs[0].array[0, 0, 1])


def test_a_request_keeps_its_parameters_and_requested_outputs() -> None:
    request = decode(
        '{"id": "42", "model_name": "ignored", "parameters": {"binary_data_output": false, '
        '"content_type": "np", "priority": 2, "ratio": 0.5}, "inputs": [{"name": "x", '
        '"shape": [1], "datatype": "FP32", "data": [1], "parameters": {"content_type": "np"}}], '
        '"outputs": [{"name": "a", "parameters": {"binary_data": true, "classification": 2}}, '
        '{"name": "b"}]}'
    )
    assert request.id == "42"
    assert request.parameters == {
        "binary_data_output": False,
        "content_type": "np",
        "priority": 2,
        "ratio": 0.5,
    }
    assert request.inputs[0].parameters == {"content_type": "np"}
    assert request.outputs == (
        RequestedOutput("a", {"binary_data": True, "classification": 2}),
        RequestedOutput("b", {}),
    )
    assert request.output_names == ["a", "b"]
    assert request.binary_output("a") and not request.binary_output("b")
    assert request.feeds["x"].tolist() == [1.0]
    # "outputs": [] asks for every output, as in Triton.
    assert decode('{"inputs": [], "outputs": []}').outputs is None


def test_binary_output_follows_the_output_then_the_request() -> None:
    outputs = (RequestedOutput("a", {"binary_data": False}), RequestedOutput("b", {}))
    everything = InferRequest((), outputs, parameters={"binary_data_output": True})
    assert not everything.binary_output("a")
    assert everything.binary_output("b") and everything.binary_output("unlisted")
    assert not InferRequest((), outputs).binary_output("b")


def test_a_response_is_laid_out_as_the_protocol_says() -> None:
    answer = InferResponse(
        model_name="iris",
        model_version="3",
        id="7",
        parameters={"sequence_id": 4},
        outputs=[InferOutput("label", np.array([1, 2], dtype=np.int64), {"note": "x"})],
    )
    assert orjson.loads(encode_response(answer)) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "7",
        "parameters": {"sequence_id": 4},
        "outputs": [
            {
                "name": "label",
                "datatype": "INT64",
                "shape": [2],
                "parameters": {"note": "x"},
                "data": [1, 2],
            }
        ],
    }
    bare = orjson.loads(encode_response(response({"y": np.array(0.5, dtype=np.float32)})))
    assert bare == {
        "model_name": "m",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [], "data": [0.5]}],
    }


def test_outputs_in_any_memory_layout_are_written_row_major() -> None:
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    arrays = {
        "transposed": base.T,
        "strided": base[:, ::2],
        "big_endian": base.astype(">f4"),
    }
    result = triton_http.InferResult.from_response_body(encode_response(response(arrays)))
    assert_same(result.as_numpy("transposed"), np.ascontiguousarray(base.T))
    assert_same(result.as_numpy("strided"), np.ascontiguousarray(base[:, ::2]))
    np.testing.assert_array_equal(result.as_numpy("big_endian"), base)


def test_an_output_the_protocol_has_no_datatype_for_is_an_internal_error() -> None:
    with pytest.raises(InferenceError, match='output "z": unsupported tensor dtype complex64'):
        encode_response(response({"z": np.zeros(2, dtype=np.complex64)}))


def _input(datatype: object = "FP32", shape: object = None, **fields: Any) -> str:
    tensor: dict[str, Any] = {"name": "x", "datatype": datatype, "shape": shape or [2]}
    tensor.update(fields)
    return json.dumps({"inputs": [tensor]})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"inputs": [', "the request body is not valid JSON: unexpected end of data"),
        ('{"inputs": [NaN', "the request body is not valid JSON"),
        ("[1, 2]", 'the request body must be a JSON object with "inputs"; got a list'),
        ("{}", '"inputs" must be a list of input tensors; it is missing'),
        ('{"inputs": {}}', '"inputs" must be a list of input tensors; got an object'),
        ('{"inputs": [3]}', "inputs[0] must be an object with name, shape, datatype and data"),
        ('{"inputs": [{"shape": [1]}]}', 'inputs[0]: "name" must be a string; got null'),
        ('{"inputs": [{"name": "x", "shape": [1]}]}', 'input "x": "datatype" is missing'),
        ('{"inputs": [{"name": "x", "datatype": "FP32"}]}', 'input "x": "shape" is missing'),
        (_input("FLOAT32", data=[1, 2]), 'datatype "FLOAT32" is unknown; expected one of BOOL'),
        (_input("BF16", data=[1, 2]), "datatype BF16 is not supported; expected one of BOOL"),
        (_input(7, data=[1, 2]), "datatype 7 is unknown"),
        (_input(shape=[2, -1], data=[]), "shape must be a list of integers >= 0; got [2, -1]"),
        (_input(shape=[2.0], data=[1, 2]), "shape must be a list of integers >= 0; got [2.0]"),
        (_input(shape="2", data=[1, 2]), 'shape must be a list of integers >= 0; got "2"'),
        (_input(shape=[2**20, 2], data=[]), "has 2097152 elements, more than the limit of"),
        (_input(), '"data" is missing: give the elements in "data"'),
        (_input(data=[1, 2, 3]), 'input "x": data has 3 elements but the shape needs 2'),
        (_input(shape=[2, 2], data=[[1, 2], [3]]), "a list at depth 2 must hold 2 elements"),
        (_input(shape=[2, 2], data=[[1, 2], 3]), "one holds a number"),
        (_input(shape=[2], data=[[1], [2]]), "data[0] is a list"),
        (_input("INT32", data=[1, True]), "data[1] is true (a boolean); INT32 data must be"),
        (_input("INT8", data=[1, 128]), "data[1] = 128 is out of range for INT8 (-128..127)"),
        (_input("UINT64", data=[2**64, 1]), "data[0] is out of range for UINT64"),
        (_input("INT32", data=[1, None]), "data[1] is null (null); INT32 data must be integers"),
        (_input("FP32", data=[1, "x"]), 'data[1] is "x"; FP32 data must be numbers or one of'),
        (_input("FP16", data=[1, 70000]), "data[1] = 70000 is out of range for FP16"),
        (_input("BOOL", data=[1, 0]), "data[0] is 1 (an integer); BOOL data must be true or"),
        (_input("BYTES", data=["a", 1]), "data[1] is 1 (an integer); BYTES data must be strings"),
        (
            '{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [NaN]}]}',
            'data[0] is "NaN" (a string); INT32 data must be integers',
        ),
        (
            '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1e999]}]}',
            "not valid JSON: number is infinity when parsed as double",
        ),
        (
            _input(data=[1, 2], parameters={"binary_data_size": 8}),
            'give either "data" or parameters.binary_data_size',
        ),
        (
            _input(parameters={"binary_data_size": 8}),
            "binary_data_size is 8 but the request has no binary data: send the JSON header",
        ),
        (
            _input(data=[1, 2], parameters={"binary_data_size": -1}),
            "parameters.binary_data_size must be an integer >= 0",
        ),
        (_input(data=[1, 2], parameters=[1]), 'input "x": parameters must be an object'),
        (_input(data=[1, 2], parameters={"a": [1]}), "parameters.a must be a string, number or"),
        (
            '{"parameters": {"binary_data_output": 1}, "inputs": []}',
            "parameters.binary_data_output must be true or false",
        ),
        ('{"id": 3, "inputs": []}', '"id" must be a string; got a number'),
        ('{"inputs": [], "outputs": {}}', '"outputs" must be a list of requested outputs'),
        ('{"inputs": [], "outputs": [{}]}', 'outputs[0] must be an object with a name; got "name"'),
        ('{"inputs": [], "outputs": ["y"]}', "outputs[0] must be an object with a name; got a s"),
        (
            '{"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}',
            'output "y": parameters.binary_data must be true or false',
        ),
        (
            '{"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]}',
            'output "y" is requested twice',
        ),
    ],
)
def test_a_bad_request_says_what_was_wrong_and_what_was_expected(body: str, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode(body)
    assert message in info.value.message
    assert info.value.code == "BAD_USER_INPUT"


def test_an_input_given_twice_is_refused() -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}
    with pytest.raises(InvalidInputError, match='input "x" is given twice'):
        decode(orjson.dumps({"inputs": [tensor, tensor]}))


def test_the_element_limit_applies_to_each_input() -> None:
    body = _input(shape=[3], data=[1, 2, 3])
    assert decode_request(body.encode(), max_elements=3).inputs[0].array.size == 3
    with pytest.raises(InvalidInputError, match="has 3 elements, more than the limit of 2"):
        decode_request(body.encode(), max_elements=2)


def test_the_package_imports_no_server_graphql_or_runtime() -> None:
    # Protocol translation only: what gateway/oip's own modules import (the generated modules
    # and grpc_codec may use protobuf and grpc; nothing else may).
    allowed = {"numpy", "orjson", "gateway.errors", "gateway.tensors", "gateway.oip"}
    allowed |= {"__future__", "collections", "dataclasses", "enum", "itertools", "json", "math"}
    allowed |= {"re", "shutil", "struct", "sys", "tempfile", "pathlib", "typing", "grpc_tools"}
    grpc_only = {"google.protobuf", "grpc"}
    package = Path(gateway.oip.__file__).parent
    for path in sorted(package.glob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        tree = ast.parse(path.read_text("utf-8"))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        ok = allowed | (grpc_only if path.name == "grpc_codec.py" else set())
        strays = {n for n in names if not any(n == a or n.startswith(a + ".") for a in ok)}
        assert strays == set(), f"{path.name} imports {strays}"
