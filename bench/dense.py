"""The ``dense`` scenario's model: a float32 MLP built with ``onnx.helper`` from seeded weights.

512 -> 1536 -> 1536 -> 1536 -> 10, ReLU between layers (not after the last), input ``x``
``[N, 512]`` and output ``y`` ``[N, 10]`` with a dynamic first dimension. Weights come from
``numpy.random.default_rng(seed)``, normal and scaled by ``1 / sqrt(fan_in)`` (biases are
small), so activations stay of order one through the layers. Nothing is downloaded: the model
is written into a temporary model repository at the start of the scenario
(``write_dense_repository``), as ``<root>/dense/1/model.onnx`` without a ``model.toml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "DENSE_INPUT",
    "DENSE_LAYERS",
    "DENSE_MODEL",
    "DENSE_OUTPUT",
    "DENSE_SEED",
    "build_dense_model",
    "dense_row",
    "write_dense_repository",
]

DENSE_MODEL = "dense"
DENSE_INPUT = "x"
DENSE_OUTPUT = "y"
DENSE_LAYERS = (512, 1536, 1536, 1536, 10)
DENSE_SEED = 20240611
_OPSET = 17
_IR_VERSION = 8  # what every onnxruntime >= 1.15 reads


def build_dense_model(
    layers: Sequence[int] = DENSE_LAYERS, *, seed: int = DENSE_SEED
) -> onnx.ModelProto:
    """The MLP with ``layers`` widths (input first): Gemm per layer, ReLU between layers."""
    if len(layers) < 2:
        raise ValueError("an MLP needs at least an input and an output width")
    rng = np.random.default_rng(seed)
    initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    current = DENSE_INPUT
    last = len(layers) - 2
    for i, (fan_in, fan_out) in enumerate(zip(layers, layers[1:], strict=False)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        bias = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        initializers += [
            numpy_helper.from_array(weight, f"w{i}"),
            numpy_helper.from_array(bias, f"b{i}"),
        ]
        gemm_out = DENSE_OUTPUT if i == last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [gemm_out]))
        if i == last:
            break
        nodes.append(helper.make_node("Relu", [gemm_out], [f"r{i}"]))
        current = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "dense_mlp",
        [helper.make_tensor_value_info(DENSE_INPUT, TensorProto.FLOAT, ["N", layers[0]])],
        [helper.make_tensor_value_info(DENSE_OUTPUT, TensorProto.FLOAT, ["N", layers[-1]])],
        initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        producer_name="gateway-bench",
    )
    model.ir_version = _IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_dense_repository(
    root: Path, layers: Sequence[int] = DENSE_LAYERS, *, seed: int = DENSE_SEED
) -> Path:
    """Write the model as ``root/dense/1/model.onnx`` (creating ``root``); return the file."""
    path = root / DENSE_MODEL / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(build_dense_model(layers, seed=seed), path)
    return path


def dense_row(*, seed: int = DENSE_SEED, width: int = DENSE_LAYERS[0]) -> list[float]:
    """The one input row the scenario sends: seeded, rounded to 4 decimals (short JSON)."""
    rng = np.random.default_rng(seed + 1)
    return [round(float(v), 4) for v in rng.standard_normal(width)]
