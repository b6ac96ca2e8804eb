"""Typed fields and canaries: a typed field runs on the versions whose signature it was built
from, compared as a caller sees it (inputs, outputs, types, shapes, labels; not the opset)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from gateway.signature import signature_from_proto
from tests.conftest import load_gateway, make_model, tensor_info, write_repository

F = TensorProto.FLOAT
TYPED = "{ predict { m(input: {x: [1, 1]}) { y modelVersion } } }"
INFER = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'


def _scaled(factor: float, *, opset: int = 17, width: int = 2) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [tensor_info("x", F, ["N", width])],
        [tensor_info("y", F, ["N", width])],
        initializers=[helper.make_tensor("k", F, [], [factor])],
        opset=opset,
    )


def test_signatures_compare_what_a_caller_sees() -> None:
    old, new = signature_from_proto(_scaled(1, opset=13)), signature_from_proto(_scaled(2))
    assert (old.opset, new.opset) == (13, 17)
    assert old == new
    assert old != signature_from_proto(_scaled(1, width=3))


def test_a_canary_between_versions_that_differ_only_in_opset_fails_no_typed_request(
    tmp_path: Path,
) -> None:
    gateway = load_gateway(
        write_repository(tmp_path, {"m/1": _scaled(1, opset=13), "m/2": _scaled(2)})
    )
    try:
        gateway.runtime.entries["m"].split = ((1, 1.0), (2, 1.0))
        answered = set()
        for _ in range(60):
            body = gateway.execute(TYPED)
            assert "errors" not in body, body
            answer = body["data"]["predict"]["m"]
            version = answer["modelVersion"]
            assert answer["y"] == [float(version)] * 2  # that version's model: x * version
            answered.add(version)
        assert answered == {1, 2}
    finally:
        gateway.runtime.close()


def test_a_typed_field_goes_only_to_the_versions_that_fit_it(tmp_path: Path) -> None:
    # Version 1 takes three columns, version 2 (the default, which the field follows) two.
    gateway = load_gateway(
        write_repository(tmp_path, {"m/1": _scaled(1, width=3), "m/2": _scaled(2)})
    )
    try:
        gateway.runtime.entries["m"].split = ((1, 1.0), (2, 1.0))
        for _ in range(30):
            body = gateway.execute(TYPED)
            assert "errors" not in body, body
            assert body["data"]["predict"]["m"]["modelVersion"] == 2
        # infer names its tensors itself: the split applies to it.
        infer = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 3], data: [1, 1, 1]}]) '
        infer += "{ version } }"
        answered = {"errors" not in gateway.execute(infer) for _ in range(30)}
        assert answered == {True, False}  # version 1 answers, version 2 refuses three columns
        # A request that names the version that does not fit is told so.
        named = gateway.execute("{ predict { m(input: {x: [1, 1]}, version: 1) { y } } }")
        (error,) = named["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert (
            "has another signature than the one its typed field was built from"
            in (error["message"])
        )
    finally:
        gateway.runtime.close()
