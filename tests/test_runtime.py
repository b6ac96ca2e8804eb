"""The runtime: session options per model, warm-up, version resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from gateway.errors import ModelNotFoundError, ModelNotReadyError
from gateway.versions import ModelState
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


def test_a_model_that_fails_warm_up_is_failed(tmp_path: Path) -> None:
    # Reshape of one row into [2, 2] fails on the synthetic one-row input.
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
        assert version.state is ModelState.FAILED
        assert version.reason is not None and "ONNX Runtime failed" in version.reason
        assert unwarmed.runtime.entries["r"].versions[1].state is ModelState.READY
    finally:
        warmed.runtime.close()
        unwarmed.runtime.close()
