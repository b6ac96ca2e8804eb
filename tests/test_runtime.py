"""The runtime: session options per model, warm-up, version resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from gateway.errors import ModelNotFoundError, ModelNotReadyError
from gateway.versions import ModelState, Warmup
from tests.conftest import identity_model, load_gateway, make_model, tensor_info, write_repository


def test_session_options_come_from_settings_and_model_toml(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path,
        {"plain/1": identity_model(), "tuned/1": identity_model(), "gpu/1": identity_model()},
        {
            "tuned": "[session]\nintra_op_threads = 2\ngraph_optimization_level = 'basic'\n",
            "gpu": "[session]\nexecution_providers = ['NoSuchExecutionProvider']\n",
        },
    )
    gateway = load_gateway(root, config_file=None)
    try:
        entries = gateway.runtime.entries
        plain = entries["plain"].versions[1].session
        tuned = entries["tuned"].versions[1].session
        assert plain is not None and tuned is not None
        assert plain.get_session_options().intra_op_num_threads == 1
        assert tuned.get_session_options().intra_op_num_threads == 2
        assert str(tuned.get_session_options().graph_optimization_level).endswith("BASIC")
        gpu = entries["gpu"].versions[1]
        assert gpu.state is ModelState.FAILED
        assert gpu.reason is not None and "NoSuchExecutionProvider is not available" in gpu.reason
    finally:
        gateway.runtime.close()


def test_default_version_is_the_highest_ready_one(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path, {"m/1": identity_model(), "m/2": identity_model(), "m/3": b"corrupt"}
    )
    gateway = load_gateway(root)
    try:
        runtime = gateway.runtime
        assert runtime.entries["m"].default_version == 2
        assert runtime.resolve("m").version == 2
        assert runtime.resolve("m", 1).version == 1
        with pytest.raises(ModelNotReadyError, match="version 3 is FAILED"):
            runtime.resolve("m", 3)
        with pytest.raises(ModelNotFoundError, match="no version 4; versions: 1, 2, 3"):
            runtime.resolve("m", 4)
        with pytest.raises(ModelNotFoundError, match="models served: m"):
            runtime.resolve("n")
    finally:
        gateway.runtime.close()


def test_a_model_that_rejects_the_warm_up_is_ready_unwarmed(tmp_path: Path) -> None:
    # Reshape of one row into [2, 2] fails on the synthetic one-row input; four values fit.
    # (Issue 12 A1: this used to be FAILED, and a valid model was never served.)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 2])
    model = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [tensor_info("x", TensorProto.FLOAT, ["N"])],
        [tensor_info("y", TensorProto.FLOAT, [2, 2])],
        initializers=[shape],
    )
    root = write_repository(tmp_path, {"r/1": model})
    warmed, unwarmed = load_gateway(root), load_gateway(root, warmup=False)
    try:
        version = warmed.runtime.entries["r"].versions[1]
        assert version.state is ModelState.READY and version.warmup is Warmup.SKIPPED
        assert version.warmup_skipped is not None
        assert "cannot be reshaped to the requested shape" in version.warmup_skipped
        answer = warmed.execute(
            '{ infer(model: "r", inputs: [{name: "x", shape: [4], data: [1, 2, 3, 4]}]) '
            "{ outputs { shape data } } }"
        )
        assert answer["data"]["infer"]["outputs"] == [{"shape": [2, 2], "data": [1, 2, 3, 4]}]
        plain = unwarmed.runtime.entries["r"].versions[1]
        assert plain.state is ModelState.READY and plain.warmup is Warmup.OFF
    finally:
        warmed.runtime.close()
        unwarmed.runtime.close()
