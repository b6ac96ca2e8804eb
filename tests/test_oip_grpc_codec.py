"""gRPC of the Open Inference Protocol (gateway.oip.grpc_codec), checked against tritonclient.grpc.

Triton's client uses its own proto (a superset of KServe's, same field numbers): a request it
builds must decode, once serialized, to its arrays, and a response the codec writes must read
back through its ``InferResult``. One test runs both over a real gRPC channel on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from gateway.errors import InferenceError, InvalidInputError
from gateway.oip import grpc_predict_v2_pb2 as pb
from gateway.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from gateway.oip.grpc_codec import decode_infer_request, encode_infer_response
from gateway.oip.messages import InferOutput, InferRequest, InferResponse
from gateway.oip.protogen import GENERATED, PROTO, generate
from gateway.tensors import DataType
from tests.test_oip_codec import LIMIT, SAMPLES, assert_same, response, sample

CONTENTS = {
    DataType.BOOL: "bool_contents",
    DataType.UINT8: "uint_contents",
    DataType.UINT16: "uint_contents",
    DataType.UINT32: "uint_contents",
    DataType.UINT64: "uint64_contents",
    DataType.INT8: "int_contents",
    DataType.INT16: "int_contents",
    DataType.INT32: "int_contents",
    DataType.INT64: "int64_contents",
    DataType.FP32: "fp32_contents",
    DataType.FP64: "fp64_contents",
    DataType.BYTES: "bytes_contents",
}


def triton_request(arrays: dict[str, npt.NDArray[Any]], **parameters: Any) -> Any:
    """tritonclient.grpc's own ModelInferRequest for these inputs (raw contents)."""
    inputs = []
    for name, array in arrays.items():
        tensor = triton_grpc.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        inputs.append(tensor.set_data_from_numpy(array))
    outputs = [triton_grpc.InferRequestedOutput("y")]
    return _get_inference_request(
        "m", inputs, "2", "r", outputs, 0, False, False, 3, 500, parameters
    )


def ours(message: Any) -> pb.ModelInferRequest:
    """A message of Triton's proto as the gateway's proto reads it off the wire."""
    return pb.ModelInferRequest.FromString(message.SerializeToString())


def decode(message: pb.ModelInferRequest) -> InferRequest:
    return decode_infer_request(message, max_elements=LIMIT)


def test_a_tritonclient_request_decodes_to_its_arrays_for_every_datatype() -> None:
    arrays = {d.value: sample(d) for d in DataType}
    arrays["empty"] = np.zeros((0, 3), dtype=object)
    message = ours(triton_request(arrays, mode="fast", count=2, on=True))
    request = decode(message)
    assert (message.model_name, message.model_version) == ("m", "2")
    assert request.id == "r"
    assert request.output_names == ["y"]
    for tensor in request.inputs:
        assert_same(tensor.array, arrays[tensor.name])
    # priority travels in Triton's uint64_param, unknown to KServe's proto.
    assert request.parameters == {"mode": "fast", "count": 2, "on": True, "priority": 3,
                                  "timeout": 500}  # fmt: skip


def test_triton_double_and_uint64_parameters_are_read() -> None:
    message = triton_pb.ModelInferRequest()
    message.parameters["ratio"].double_param = 0.25
    message.parameters["big"].uint64_param = 2**64 - 1
    assert decode(ours(message)).parameters == {"ratio": 0.25, "big": 2**64 - 1}


@pytest.mark.parametrize("datatype", list(CONTENTS))
def test_typed_contents_decode_for_every_datatype_that_has_them(datatype: DataType) -> None:
    message = pb.ModelInferRequest()
    tensor = message.inputs.add(name="x", datatype=datatype.value, shape=[2, 3])
    values = SAMPLES[datatype]
    if datatype is DataType.BYTES:
        values = [v.encode() for v in values]
    getattr(tensor.contents, CONTENTS[datatype]).extend(values)
    assert_same(decode(message).feeds["x"], sample(datatype))


def test_an_empty_fp16_tensor_needs_no_contents() -> None:
    got = decode(_request("FP16", shape=(0, 2))).feeds["x"]
    assert got.shape == (0, 2) and got.dtype == np.float16


def test_a_response_reads_back_through_tritonclient_for_every_datatype() -> None:
    arrays = {d.value: sample(d) for d in DataType}
    arrays["nonfinite"] = np.array([np.nan, np.inf, -np.inf], dtype=np.float32)
    arrays["transposed"] = sample(DataType.INT16).T
    answer = response(arrays, model_version="4", id="r", parameters={"a": 1, "b": "x", "c": True})
    wire = encode_infer_response(answer).SerializeToString()
    result = triton_grpc.InferResult(triton_pb.ModelInferResponse.FromString(wire))
    got = result.get_response()
    assert (got.model_name, got.model_version, got.id) == ("m", "4", "r")
    assert got.parameters["a"].int64_param == 1 and got.parameters["b"].string_param == "x"
    assert got.parameters["c"].bool_param is True
    assert len(got.raw_output_contents) == len(arrays)
    for name, array in arrays.items():
        assert_same(result.as_numpy(name), np.ascontiguousarray(array))


@pytest.mark.parametrize("value", [0.5, 2**63, None])
def test_a_response_parameter_grpc_cannot_carry_is_an_internal_error(value: Any) -> None:
    answer = InferResponse("m", [InferOutput("y", np.zeros(1), {"p": value})])
    with pytest.raises(InferenceError, match="parameter 'p' = .* does not fit InferParameter"):
        encode_infer_response(answer)
    with pytest.raises(InferenceError, match='output "z": unsupported tensor dtype'):
        encode_infer_response(response({"z": np.zeros(1, dtype=np.complex128)}))


def _request(datatype: str = "INT32", shape: tuple[int, ...] = (2,), **contents: Any) -> Any:
    message = pb.ModelInferRequest()
    tensor = message.inputs.add(name="x", datatype=datatype, shape=list(shape))
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return message


def _with_raw(message: Any, *raw: bytes) -> Any:
    message.raw_input_contents.extend(raw)
    return message


def _empty_parameter() -> Any:
    message = pb.ModelInferRequest()
    message.parameters["p"].Clear()
    return message


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (_request("FP16", fp32_contents=[1, 2]), "FP16 data goes in raw_input_contents; got c"),
        (_request("FP16"), 'input "x": FP16 has no contents field; send it in raw_input_con'),
        (_request(int64_contents=[1, 2]), "INT32 data goes in contents.int_contents; got cont"),
        (_request(int_contents=[1]), "contents.int_contents has 1 elements but shape [2] needs 2"),
        (_request("INT8", int_contents=[1, 300]), "int_contents[1] = 300 is out of range for INT8"),
        (_request("UINT16", uint_contents=[70000, 1]), "out of range for UINT16 (0..65535)"),
        (_request("BYTES", bytes_contents=[b"a", b"\xff"]), "BYTES element 1 is not UTF-8 text"),
        (_request("FLOAT"), 'datatype "FLOAT" is unknown; expected one of BOOL, UINT8'),
        (_request("BF16"), "datatype BF16 is not supported"),
        (_request(shape=(2**21,)), "has 2097152 elements, more than the limit of 1048576"),
        (_with_raw(_request(), b"\x00" * 8, b""), "raw_input_contents has 2 entries but the req"),
        (_with_raw(_request(int_contents=[1, 2]), b"\x00" * 8), "has contents while the reque"),
        (_with_raw(_request(), b"\x00" * 7), "7 bytes of data, but shape [2] of INT32 needs 8"),
        (_with_raw(_request("BOOL"), b"\x00\x05"), "BOOL data must hold only bytes 0 and 1"),
        (_empty_parameter(), "parameters['p'] holds no value; expected bool_param, int64_param"),
    ],
)
def test_a_bad_request_says_what_was_wrong(message: Any, text: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode(message)
    assert text in info.value.message


def test_names_given_twice_are_refused() -> None:
    twice = _request(int_contents=[1, 2])
    twice.inputs.append(twice.inputs[0])
    with pytest.raises(InvalidInputError, match='input "x" is given twice'):
        decode(twice)
    outputs = pb.ModelInferRequest()
    outputs.outputs.add(name="y")
    outputs.outputs.add(name="y")
    with pytest.raises(InvalidInputError, match='output "y" is requested twice'):
        decode(outputs)


def test_the_committed_modules_are_what_the_generator_writes() -> None:
    # If this fails: python -m gateway.oip.protogen, and review the diff.
    assert sorted(generate()) == sorted(GENERATED)
    for name, text in generate().items():
        assert PROTO.with_name(name).read_text("utf-8") == text, name


def test_both_protos_live_in_one_process_and_agree_on_the_wire() -> None:
    assert (
        pb.ModelInferRequest.DESCRIPTOR.full_name
        == triton_pb.ModelInferRequest.DESCRIPTOR.full_name
    )
    assert pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name == (
        "inference.GRPCInferenceService"
    )


class EchoServicer(pb_grpc.GRPCInferenceServiceServicer):
    """A test servicer: answers each input back as an output named "echo_<input>"."""

    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == "echo")

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="echo", version="0")

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return pb.ModelMetadataResponse(name=request.name, platform="onnx_onnxv1")

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            infer = decode_infer_request(request, max_elements=LIMIT)
        except InvalidInputError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        outputs = [InferOutput(f"echo_{i.name}", i.array) for i in infer.inputs]
        answer = InferResponse(request.model_name, outputs, model_version="1", id=infer.id)
        return encode_infer_response(answer)


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(EchoServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.mark.e2e
def test_tritonclient_grpc_talks_to_a_servicer_built_on_the_generated_modules(
    echo_server: str,
) -> None:
    arrays = {d.value: sample(d) for d in DataType}
    with triton_grpc.InferenceServerClient(echo_server) as client:
        assert client.is_server_live() and client.is_model_ready("echo")
        inputs = []
        for name, array in arrays.items():
            tensor = triton_grpc.InferInput(name, list(array.shape), name)
            inputs.append(tensor.set_data_from_numpy(array))
        result = client.infer("echo", inputs, request_id="e1")
        assert result.get_response().id == "e1"
        for name, array in arrays.items():
            assert_same(result.as_numpy(f"echo_{name}"), array)
        bad = triton_grpc.InferInput("x", [2], "INT8")
        bad.set_data_from_numpy(np.zeros(2, dtype=np.int8))
        bad._raw_content = b"\x00"  # what a broken client might send
        with pytest.raises(InferenceServerException, match="1 bytes of data, but shape"):
            client.infer("echo", [bad])
