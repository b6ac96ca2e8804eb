"""Every error code reachable without a server: its ``extensions.code`` and a message that
says what was wrong, for the generic and the typed API alike. In-process, no server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import (
    InProcessGateway,
    identity_model,
    load_gateway,
    make_model,
    tensor_info,
    write_repository,
)
from tests.test_api_generic import INFER, TWO_IN_TWO_OUT, run

F = TensorProto.FLOAT

# Reshapes x [N] to [1]: valid for the warm-up's one row, fails in ONNX Runtime for any other N.
FRAGILE = make_model(
    [helper.make_node("Reshape", ["x", "shape"], ["y"])],
    [tensor_info("x", F, ["N"])],
    [tensor_info("y", F, [1])],
    initializers=[helper.make_tensor("shape", TensorProto.INT64, [1], [1])],
)

# Declares a batch-sized output but sums the batch into one row: the typed API cannot split it.
COLLAPSE = make_model(
    [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
    [tensor_info("x", F, ["N"])],
    [tensor_info("y", F, ["M"])],
    initializers=[helper.make_tensor("axes", TensorProto.INT64, [1], [0])],
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    models: dict[str, onnx.ModelProto | bytes] = {
        "m/1": identity_model(F, ("N", 4)),
        "m/2": b"corrupt",
        "two/1": TWO_IN_TWO_OUT,
        "i8/1": identity_model(TensorProto.INT8, ("N",)),
        "u8/1": identity_model(TensorProto.UINT8, ("N",)),
        "f16/1": identity_model(TensorProto.FLOAT16, ("N",)),
        "nested/1": identity_model(F, ("N", 2, 2)),
        "fragile/1": FRAGILE,
        "collapse/1": COLLAPSE,
        "broken/1": b"",
    }
    root = write_repository(tmp_path_factory.mktemp("errors"), models)
    gateway = load_gateway(root, max_tensor_elements=10, max_batch_rows=3)
    yield gateway
    gateway.runtime.close()


def x(**tensor: Any) -> dict[str, Any]:
    """An input tensor for model m (FP32 [N, 4]); the keys given replace the defaults."""
    return {"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4], **tensor}


def infer_vars(model: str, inputs: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"model": model, "inputs": inputs, **more}


ROW4 = "{x: [1, 2, 3, 4]}"
HUGE = "1" + "0" * 5000  # beyond a double, and beyond Python's int parsing limit

# (code, query, variables, the exact message or, ending in "...", its beginning)
CASES: dict[str, tuple[str, str, dict[str, Any] | None, str]] = {
    "syntax": ("GRAPHQL_PARSE_FAILED", "{ infer(model: ", None, "Syntax Error: Unexpected <EOF>."),
    "unknown field": (
        "GRAPHQL_VALIDATION_FAILED",
        '{ infer(model: "m", inputs: []) { nope } }',
        None,
        "Cannot query field 'nope' on type 'InferResult'.",
    ),
    "missing argument": (
        "GRAPHQL_VALIDATION_FAILED",
        '{ infer(model: "m") { id } }',
        None,
        "Argument 'Query.infer(inputs:)' of type '[TensorInput!]!' is required, "
        "but it was not provided.",
    ),
    "bad enum literal": (
        "GRAPHQL_VALIDATION_FAILED",
        '{ infer(model: "m", inputs: [{name: "x", shape: [1], datatype: FP128}]) { id } }',
        None,
        "Value 'FP128' does not exist in 'DataType' enum. Did you mean...",
    ),
    "unknown model": (
        "MODEL_NOT_FOUND",
        INFER,
        infer_vars("nope", [x()]),
        "no model named 'nope'; models served: "
        "broken, collapse, f16, fragile, i8, m, nested, two, u8",
    ),
    "unknown version": (
        "MODEL_NOT_FOUND",
        INFER,
        infer_vars("m", [x()], version=3),
        "model 'm' has no version 3; versions: 1, 2",
    ),
    "typed unknown version": (
        "MODEL_NOT_FOUND",
        f"{{ predict {{ m(input: {ROW4}, version: 7) {{ y }} }} }}",
        None,
        "model 'm' has no version 7; versions: 1, 2",
    ),
    "failed version": (
        "MODEL_NOT_READY",
        INFER,
        infer_vars("m", [x()], version=2),
        "model 'm' version 2 is FAILED: not a readable ONNX model (DecodeError)",
    ),
    "no ready version": (
        "MODEL_NOT_READY",
        INFER,
        infer_vars("broken", []),
        "model 'broken' has no READY version (1: FAILED)",
    ),
    "typed failed version": (
        "MODEL_NOT_READY",
        f"{{ predict {{ m(input: {ROW4}, version: 2) {{ y }} }} }}",
        None,
        "model 'm' version 2 is FAILED: not a readable ONNX model (DecodeError)",
    ),
    "missing input": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("two", [{"name": "a", "shape": [1, 3], "data": [1, 2, 3]}]),
        "missing input 'b'; the model needs: a, b",
    ),
    "unknown input": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(), x(name="x:0")]),
        "unknown input 'x:0'; the model's inputs: x",
    ),
    "input twice": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(), x()]),
        "input 'x' is given twice",
    ),
    "wrong datatype": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(datatype="INT32")]),
        'input "x": datatype INT32 does not match the model\'s FP32',
    ),
    "wrong rank": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(shape=[4])]),
        'input "x": shape [4] does not match the model\'s [-1, 4] (-1 = any size)',
    ),
    "wrong fixed dim": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(shape=[2, 2])]),
        'input "x": shape [2, 2] does not match the model\'s [-1, 4] (-1 = any size)',
    ),
    "negative dim": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(shape=[-1, 4])]),
        'input "x": shape [-1, 4] is invalid: every dimension must be an integer >= 0',
    ),
    "wrong element count": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=[1, 2, 3])]),
        'input "x": data has 3 elements but the shape needs 4',
    ),
    "nested data": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=[[1, 2, 3, 4]])]),
        'input "x": data must be a flat row-major list of 4 elements; data[0] is a list',
    ),
    "wrong element type": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=[1, "2", 3, 4])]),
        'input "x": data[1] is "2"; FP32 data must be numbers or one of "NaN", "Infinity", '
        '"-Infinity"',
    ),
    "data and b64": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(b64="AACAPw==")]),
        'input "x": give exactly one of data or b64; both were given',
    ),
    "neither data nor b64": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=None)]),
        'input "x": give exactly one of data or b64; neither was given',
    ),
    "undecodable b64": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=None, b64="not base64!")]),
        'input "x": b64 is not valid base64 (...',
    ),
    "b64 of the wrong length": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(data=None, b64="AAAA")]),
        'input "x": b64 decodes to 3 bytes but shape [1, 4] of FP32 needs 16 (4 x 4 bytes)',
    ),
    "tensor over max_tensor_elements": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(shape=[3, 4], data=[0] * 12)]),
        'input "x": shape [3, 4] has 12 elements, more than the limit of 10',
    ),
    "unknown output": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x()], outputs=["y", "z"]),
        "unknown output 'z'; the model's outputs: y",
    ),
    "empty outputs": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x()], outputs=[]),
        "outputs is empty; the model's outputs: y",
    ),
    "typed batch over max_batch_rows": (
        "BAD_USER_INPUT",
        f"{{ predict {{ mBatch(inputs: [{ROW4}, {ROW4}, {ROW4}, {ROW4}]) {{ y }} }} }}",
        None,
        "4 rows in one field; at most 3 are accepted",
    ),
    "typed batch over max_tensor_elements": (
        "BAD_USER_INPUT",
        "{ predict { nestedBatch(inputs: [{x: [[1, 2], [3, 4]]}, {x: [[1, 2], [3, 4]]}, "
        "{x: [[1, 2], [3, 4]]}]) { y } } }",
        None,
        "input 'x' would have 12 elements; at most 10 are accepted",
    ),
    "typed INT8 too large": (
        "BAD_USER_INPUT",
        "{ predict { i8Batch(inputs: [{x: 1}, {x: 128}]) { y } } }",
        None,
        "x: value out of range for INT8 (-128 to 127)",
    ),
    "typed UINT8 negative": (
        "BAD_USER_INPUT",
        "{ predict { u8(input: {x: -1}) { y } } }",
        None,
        "x: value out of range for UINT8 (0 to 255)",
    ),
    "typed UINT8 too large": (
        "BAD_USER_INPUT",
        "{ predict { u8(input: {x: 256}) { y } } }",
        None,
        "x: value out of range for UINT8 (0 to 255)",
    ),
    "typed FP16 overflow": (
        "BAD_USER_INPUT",
        "{ predict { f16Batch(inputs: [{x: 1}, {x: 1e10}]) { y } } }",
        None,
        "x: value out of range for FP16 (-65504 to 65504)",
    ),
    "typed float literal beyond a double": (
        "BAD_USER_INPUT",
        "{ predict { f16(input: {x: 1e999}) { y } } }",
        None,
        "x: value out of range for FP16 (-65504 to 65504)",
    ),
    "typed 5,000-digit integer for a float": (
        "BAD_USER_INPUT",
        f"{{ predict {{ mBatch(inputs: [{{x: [1, 2, 3, {HUGE}]}}]) {{ y }} }} }}",
        None,
        "x: value out of range for FP32 (-3.4028235e+38 to 3.4028235e+38)",
    ),
    "infer literal beyond a double": (
        "BAD_USER_INPUT",
        '{ infer(model: "m", inputs: [{name: "x", shape: [1, 4], data: [1, 1e999, 2, 3]}]) '
        "{ id } }",
        None,
        'input "x": data[1] is out of range for FP32 (finite values within +-3.4028235e+38, '
        'or one of "NaN", "Infinity", "-Infinity")',
    ),
    "infer 5,000-digit integer literal": (
        "BAD_USER_INPUT",
        f'{{ infer(model: "m", inputs: [{{name: "x", shape: [1, 4], data: [{HUGE}, 1, 2, 3]}}]) '
        "{ id } }",
        None,
        'input "x": data[0] is out of range for FP32 (finite values within +-3.4028235e+38, '
        'or one of "NaN", "Infinity", "-Infinity")',
    ),
    "infer 5,000-digit integer literal for INT8": (
        "BAD_USER_INPUT",
        f'{{ infer(model: "i8", inputs: [{{name: "x", shape: [2], data: [1, -{HUGE}]}}]) '
        "{ id } }",
        None,
        'input "x": data[1] is out of range for INT8 (-128..127)',
    ),
    "infer 1,000-digit integer for INT8": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("i8", [{"name": "x", "shape": [1], "data": [10**1000]}]),
        'input "x": data[0] = 1000000000000000000000000000000000000... is out of range for '
        "INT8 (-128..127)",
    ),
    "infer integer read as a float for INT8": (  # JSON parsers read 10**30 as 1e30
        "BAD_USER_INPUT",
        INFER,
        infer_vars("i8", [{"name": "x", "shape": [1], "data": [1e30]}]),
        'input "x": data[0] is out of range for INT8 (-128..127)',
    ),
    "typed ragged nested list": (
        "BAD_USER_INPUT",
        "{ predict { nested(input: {x: [[1, 2], [3]]}) { y } } }",
        None,
        "x: every row must be nested lists of shape [2, 2] (-1 = any size, the same in every "
        "row of one request)",
    ),
    "typed nested list of the wrong shape": (
        "BAD_USER_INPUT",
        "{ predict { nested(input: {x: [[1, 2, 3], [4, 5, 6]]}) { y } } }",
        None,
        "x: got a value of shape [2, 3], expected [2, 2] (-1 = any size)",
    ),
    "variable of the wrong type": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x()], version="one"),
        "Variable '$version' has invalid value: Int cannot represent non-integer value: \"one\"",
    ),
    "variable with a bad enum value": (
        "BAD_USER_INPUT",
        INFER,
        infer_vars("m", [x(datatype="FP128")]),
        "Variable '$inputs' has invalid value at [0].datatype: Value \"FP128\" does not exist...",
    ),
    "typed variable missing a field": (
        "BAD_USER_INPUT",
        "query($row: TwoInput!) { predict { two(input: $row) { sum } } }",
        {"row": {"a": [1, 2, 3]}},
        "Variable '$row' has invalid value: Expected value of type 'TwoInput' to include "
        "required field 'b', found: {\"a\": [1, 2, 3]}.",
    ),
    "missing variable": (
        "BAD_USER_INPUT",
        INFER,
        {"model": "m"},
        "Variable '$inputs' has invalid value: Expected a value of non-null type "
        "'[TensorInput!]!' to be provided.",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_error_code_and_message(gw: InProcessGateway, case: str) -> None:
    code, query, variables, message = CASES[case]
    response = run(gw, query, variables)
    # A failed typed field is null (its siblings stay answered); infer and invalid documents
    # leave no data at all.
    data = response["data"]
    assert data is None or all(v is None for v in data["predict"].values())
    (error,) = response["errors"]
    assert error["extensions"] == {"code": code}
    if message.endswith("..."):
        assert error["message"].startswith(message[:-3])
    else:
        assert error["message"] == message


def test_cases_cover_every_code_reachable_in_process() -> None:
    assert {code for code, *_ in CASES.values()} == {
        "GRAPHQL_PARSE_FAILED",
        "GRAPHQL_VALIDATION_FAILED",
        "MODEL_NOT_FOUND",
        "MODEL_NOT_READY",
        "BAD_USER_INPUT",
    }  # INTERNAL_SERVER_ERROR: below; the rest need a server (auth, limits, rates)


def test_run_time_failure_is_masked_with_an_error_id_that_is_logged(
    gw: InProcessGateway, caplog: pytest.LogCaptureFixture
) -> None:
    fine = run(gw, INFER, infer_vars("fragile", [{"name": "x", "shape": [1], "data": [2]}]))
    assert fine["data"]["infer"]["outputs"][0]["data"] == [2.0]
    with caplog.at_level(logging.ERROR, logger="gateway.security"):
        for query, variables in [
            (INFER, infer_vars("fragile", [{"name": "x", "shape": [3], "data": [1, 2, 3]}])),
            ("{ predict { collapseBatch(inputs: [{x: 1}, {x: 2}]) { y } } }", None),
        ]:
            response = run(gw, query, variables)
            assert response["data"] in (None, {"predict": {"collapseBatch": None}})
            (error,) = response["errors"]
            found = re.fullmatch(r"Internal error \(error id ([0-9a-f]{16})\)", error["message"])
            assert found is not None, error["message"]
            assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "errorId": found[1]}
            assert any(found[1] in record.getMessage() for record in caplog.records)
    # The client saw none of it; the log has the cause, with the traceback.
    logged = "\n".join(r.getMessage() + repr(r.exc_info) for r in caplog.records)
    assert "running Reshape node" in logged
    assert "output 'y' has 1 rows for 2 input rows" in logged


def test_a_failed_typed_field_leaves_its_siblings_answered(gw: InProcessGateway) -> None:
    response = run(
        gw,
        "{ predict { ok: m(input: {x: [1, 2, 3, 4]}) { y } bad: m(input: {x: [1, 2]}) { y } } }",
        None,
    )
    assert response["data"]["predict"]["bad"] is None
    assert response["data"]["predict"]["ok"] is not None
    (error,) = response["errors"]
    assert error["path"] == ["predict", "bad"] and error["extensions"]["code"] == "BAD_USER_INPUT"
