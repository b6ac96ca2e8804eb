"""The Open Inference Protocol (KServe's predict protocol v2): its messages, without a server.

Pure translation between the protocol's wire formats and one typed request and response
(``messages.py``); no routes, no servicer, no model. Nothing here imports Starlette, Strawberry,
ONNX Runtime or the GraphQL API; only ``grpc_codec`` and the generated modules import
protobuf/grpc (the ``grpc`` extra).

    messages.py     InferRequest (inputs as numpy arrays, requested outputs, id, parameters),
                    InferResponse, InferOutput; datatype and shape checks
    codec.py        REST JSON: decode_request(body) -> InferRequest;
                    encode_response(InferResponse) -> bytes
    binary.py       Triton's binary tensor extension: decode_binary_request(body, header
                    length), decode_raw_request, encode_binary_response -> (body, header length)
    raw.py          the raw tensor layout both of the above and gRPC share
    grpc_codec.py   decode_infer_request(ModelInferRequest), encode_infer_response(...)
    grpc_predict_v2_pb2*.py   generated from grpc_predict_v2.proto (protogen.py; licence:
                    grpc_predict_v2.LICENSE)

Every decoder raises ``InvalidInputError`` (BAD_USER_INPUT) with a message that names the field
or tensor, what was wrong and what was expected; an encoder raises ``InferenceError`` only for
an output the protocol cannot carry.

How a REST view uses them (``POST /v2/models/{name}[/versions/{v}]/infer``)::

    header = request.headers.get(binary.HEADER)
    if header is None:
        infer = codec.decode_request(body, max_elements=settings.max_tensor_elements)
    elif (length := binary.parse_header_length(header, len(body))) == 0:
        infer = binary.decode_raw_request(body, model_input_specs, max_elements=...)
    else:
        infer = binary.decode_binary_request(body, length, max_elements=...)
    outputs = <core>.infer(model, version, infer.feeds, infer.output_names)
    answer = InferResponse(model_name=name, model_version=str(version), id=infer.id,
                           outputs=[InferOutput(n, a) for n, a in outputs.items()])
    body, length = binary.encode_binary_response(answer, infer)
    headers = {} if length is None else {binary.HEADER: str(length)}
    media = "application/json" if length is None else "application/octet-stream"

and errors as ``{"error": message}`` with the HTTP status of the error's code (and the code
beside it). A gRPC servicer (``grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer``)::

    async def ModelInfer(self, request, context):
        infer = grpc_codec.decode_infer_request(request, max_elements=...)
        outputs = <core>.infer(request.model_name, request.model_version or None, ...)
        return grpc_codec.encode_infer_response(InferResponse(...))

mapping ``InvalidInputError`` to ``INVALID_ARGUMENT`` and the others by their code.
"""

from __future__ import annotations
