"""The warm-up: a model whose inputs are parameters (a target shape, split sizes, indices...)
rejects the synthetic row; it is served all the same, and says why it was not warmed up."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from gateway.versions import ModelState, Warmup
from tests.conftest import (
    identity_model,
    load_gateway,
    make_model,
    start_server,
    stop_server,
    tensor_info,
    write_repository,
)

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _parameter_models() -> dict[str, onnx.ModelProto]:
    """Models that fail on zeros (and dynamic dimensions of 1) but answer valid inputs."""
    return {
        "expand": make_model(
            [helper.make_node("Expand", ["x", "shape"], ["y"])],
            [tensor_info("x", F, [1, 3]), tensor_info("shape", I64, [2])],
            [tensor_info("y", F, ["A", "B"])],
        ),
        "split": make_model(
            [
                helper.make_node("SplitToSequence", ["x", "split"], ["parts"], axis=0),
                helper.make_node("SequenceAt", ["parts", "second"], ["y"]),
            ],
            [tensor_info("x", F, ["N"]), tensor_info("split", I64, [2])],
            [tensor_info("y", F, ["M"])],
            initializers=[helper.make_tensor("second", I64, [], [1])],
        ),
        "reshape": make_model(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            [tensor_info("x", F, ["N", 4]), tensor_info("shape", I64, [1])],
            [tensor_info("y", F, ["M"])],
        ),
        "tile": make_model(
            [helper.make_node("Tile", ["x", "repeats"], ["y"])],
            [tensor_info("x", F, [2, 2]), tensor_info("repeats", I64, ["R"])],
            [tensor_info("y", F, ["A", "B"])],
        ),
        "slice": make_model(
            [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])],
            [tensor_info("x", F, ["N", 4])]
            + [tensor_info(name, I64, [1]) for name in ("starts", "ends", "axes", "steps")],
            [tensor_info("y", F, ["N", "M"])],
        ),
        "topk": make_model(
            [helper.make_node("TopK", ["x", "k"], ["values", "indices"])],
            [tensor_info("x", F, ["N", "C"])],
            [tensor_info("values", F, ["N", 2]), tensor_info("indices", I64, ["N", 2])],
            initializers=[helper.make_tensor("k", I64, [1], [2])],
        ),
        "gather": make_model(
            [helper.make_node("Gather", ["x", "rows"], ["y"], axis=0)],
            [tensor_info("x", F, ["N", 3])],
            [tensor_info("y", F, [1, 3])],
            initializers=[helper.make_tensor("rows", I64, [1], [2])],
        ),
    }


def _tensor(name: str, shape: list[int], data: list[Any]) -> str:
    return f'{{name: "{name}", shape: {shape}, data: {data}}}'


#: For each model: valid inputs, and the outputs they give (name -> (shape, data)).
CASES: dict[str, tuple[list[str], dict[str, tuple[list[int], list[float]]]]] = {
    "expand": (
        [_tensor("x", [1, 3], [1, 2, 3]), _tensor("shape", [2], [2, 3])],
        {"y": ([2, 3], [1, 2, 3, 1, 2, 3])},
    ),
    "split": (
        [_tensor("x", [3], [1, 2, 3]), _tensor("split", [2], [1, 2])],
        {"y": ([2], [2, 3])},
    ),
    "reshape": (
        [_tensor("x", [1, 4], [1, 2, 3, 4]), _tensor("shape", [1], [-1])],
        {"y": ([4], [1, 2, 3, 4])},
    ),
    "tile": (
        [_tensor("x", [2, 2], [1, 2, 3, 4]), _tensor("repeats", [2], [1, 2])],
        {"y": ([2, 4], [1, 2, 1, 2, 3, 4, 3, 4])},
    ),
    "slice": (
        [
            _tensor("x", [1, 4], [1, 2, 3, 4]),
            _tensor("starts", [1], [1]),
            _tensor("ends", [1], [3]),
            _tensor("axes", [1], [1]),
            _tensor("steps", [1], [1]),
        ],
        {"y": ([1, 2], [2, 3])},
    ),
    "topk": (
        [_tensor("x", [1, 3], [1, 3, 2])],
        {"values": ([1, 2], [3, 2]), "indices": ([1, 2], [1, 2])},
    ),
    "gather": (
        [_tensor("x", [3, 3], [1, 2, 3, 4, 5, 6, 7, 8, 9])],
        {"y": ([1, 3], [7, 8, 9])},
    ),
}

METADATA = """query($name: String!) { model(name: $name) { defaultVersion
  versions { state stateReason warmup warmupSkipped } } }"""


def test_models_whose_inputs_are_parameters_are_served_unwarmed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    models = _parameter_models()
    root = write_repository(tmp_path, {f"{name}/1": model for name, model in models.items()})
    with caplog.at_level(logging.INFO, logger="gateway"):
        gateway = load_gateway(root)
    try:
        for name, (inputs, expected) in CASES.items():
            meta = gateway.execute(METADATA, {"name": name})["data"]["model"]
            (version,) = meta["versions"]
            assert version["state"] == "READY", (name, version)
            assert meta["defaultVersion"] == 1
            assert version["warmup"] == "SKIPPED"
            skipped = version["warmupSkipped"]
            assert skipped.startswith("the model rejected the synthetic input (zeros"), skipped
            assert "onnxruntime_src" not in skipped and str(tmp_path) not in skipped
            query = f'{{ infer(model: "{name}", inputs: [{", ".join(inputs)}]) '
            query += "{ outputs { name shape data } } }"
            body = gateway.execute(query)
            assert "errors" not in body, (name, body)
            outputs = {o["name"]: (o["shape"], o["data"]) for o in body["data"]["infer"]["outputs"]}
            assert outputs == expected, name
    finally:
        gateway.runtime.close()
    # The log says it once per model, in its READY line; ONNX Runtime says nothing.
    lines = [r.getMessage() for r in caplog.records if "warm-up skipped" in r.getMessage()]
    assert sorted(line.split()[1] for line in lines) == sorted(models)
    assert all(" READY in " in line for line in lines)
    assert "onnxruntime" not in capfd.readouterr().err


def test_the_reshape_error_names_the_shapes(tmp_path: Path) -> None:
    root = write_repository(tmp_path, {"reshape/1": _parameter_models()["reshape"]})
    gateway = load_gateway(root)
    try:
        mv = gateway.runtime.entries["reshape"].versions[1]
        assert mv.warmup is Warmup.SKIPPED and mv.warmup_skipped is not None
        assert mv.warmup_skipped.endswith(
            "The input tensor cannot be reshaped to the requested shape. Input shape:{1,4}, "
            "requested shape:{1}"
        ), mv.warmup_skipped
    finally:
        gateway.runtime.close()


def test_samples_still_gate_the_load(tmp_path: Path) -> None:
    expand = _parameter_models()["expand"]
    good = "[[samples]]\ninput = { x = [1.0, 2.0, 3.0], shape = [1, 3] }\n"
    good += "expect = { y = [1.0, 2.0, 3.0] }\n"
    bad = good.replace("expect = { y = [1.0, 2.0, 3.0] }", "expect = { y = [3.0, 2.0, 1.0] }")
    root = write_repository(
        tmp_path,
        {"good/1": expand, "bad/1": expand, "plain/1": identity_model()},
        {"good": good, "bad": bad},
    )
    gateway, unwarmed = load_gateway(root), load_gateway(root, warmup=False)
    try:
        entries = gateway.runtime.entries
        assert entries["good"].versions[1].state is ModelState.READY
        assert entries["good"].versions[1].warmup is Warmup.SAMPLES
        failed = entries["bad"].versions[1]
        assert failed.state is ModelState.FAILED
        assert failed.reason == (
            "sample 1: expected y = [3.0, 2.0, 1.0], the model answered [1.0, 2.0, 3.0]; not loaded"
        )
        assert entries["plain"].versions[1].warmup is Warmup.SYNTHETIC
        assert entries["plain"].versions[1].warmup_skipped is None
        off = unwarmed.runtime.entries["plain"].versions[1]
        assert off.state is ModelState.READY and off.warmup is Warmup.OFF
    finally:
        gateway.runtime.close()
        unwarmed.runtime.close()


@pytest.mark.e2e
def test_a_server_of_such_models_is_ready_and_says_so_once(tmp_path: Path) -> None:
    models = _parameter_models()
    root = write_repository(tmp_path / "repo", {f"{n}/1": m for n, m in models.items()})
    log = tmp_path / "server.log"
    server = start_server(root, log)  # waits for /readyz 200: every model has a READY version
    try:
        (inputs, expected) = CASES["split"]
        query = (
            f'{{ infer(model: "split", inputs: [{", ".join(inputs)}]) {{ outputs {{ data }} }} }}'
        )
        body = server.graphql(query).json()
        assert body["data"]["infer"]["outputs"] == [{"data": expected["y"][1]}]
    finally:
        stop_server(server)
    text = log.read_text()
    assert sum("warm-up skipped" in line for line in text.splitlines()) == len(models)
    assert "onnxruntime" not in text and "FAILED" not in text
