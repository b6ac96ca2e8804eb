"""What the baselines share: the models under ONNX Runtime, and the uvicorn entry point.

* ``IrisModel``: the iris classifier, labels and probabilities per row (``/predict``, GraphQL).
* ``TensorModel``: any model with one numeric input, rows in and output tensors out, as plain
  nested lists (bare's ``/run/{model}``, e.g. the ``dense`` scenario's MLP).

Both make their session with the gateway's default options and run ``session.run`` on a worker
thread pool with as many workers as cores, one call per request: no batching across requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from starlette.types import ASGIApp

__all__ = [
    "IrisModel",
    "Prediction",
    "TensorModel",
    "find_iris",
    "highest_version",
    "load_iris",
    "new_session",
    "serve",
    "usable_cores",
]

MODEL_NAME = "iris"


@dataclass(frozen=True)
class Prediction:
    """One row's answer: the label and each class's probability, in class order."""

    label: str
    probabilities: list[tuple[str, float]]


class IrisModel:
    """An ONNX Runtime session over the iris model, run on a worker thread pool."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        self._session = new_session(path)
        self._input = self._session.get_inputs()[0].name
        self._labels = list(labels)
        self._executor = ThreadPoolExecutor(max_workers=usable_cores())
        self.path = path

    def predict_sync(self, rows: Sequence[Sequence[float]]) -> list[Prediction]:
        """Run the model on ``rows`` of four features."""
        labels, probabilities = self._session.run(None, {self._input: np.asarray(rows, "f4")})
        # skl2onnx's ZipMap output: one {class index: probability} dict per row.
        out: list[Prediction] = []
        for index, row in zip(labels, probabilities, strict=True):
            probs = [(name, float(row[i])) for i, name in enumerate(self._labels)]
            out.append(Prediction(self._labels[int(index)], probs))
        return out

    async def predict(self, rows: Sequence[Sequence[float]]) -> list[Prediction]:
        """``predict_sync`` on the worker pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.predict_sync, rows)

    def close(self) -> None:
        """Stop the worker pool."""
        self._executor.shutdown(wait=False, cancel_futures=True)


_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class TensorModel:
    """An ONNX Runtime session over a model with one numeric input, run on a worker pool."""

    def __init__(self, path: Path, executor: ThreadPoolExecutor) -> None:
        self._session = new_session(path)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].type not in _DTYPES:
            raise ValueError(f"{path}: needs exactly one numeric input tensor")
        self._input = inputs[0].name
        self._dtype = _DTYPES[inputs[0].type]
        # Fixed dimensions after the batch one, None where dynamic: checked before the run.
        self._row_shape = [d if isinstance(d, int) else None for d in inputs[0].shape[1:]]
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._executor = executor
        self.path = path

    def check(self, rows: Any) -> np.ndarray[Any, Any]:
        """``rows`` as the input array; ValueError when they do not fit the input."""
        array = np.asarray(rows, dtype=self._dtype)
        fits = (
            array.ndim == len(self._row_shape) + 1
            and array.shape[0] >= 1
            and all(
                want is None or got == want
                for got, want in zip(array.shape[1:], self._row_shape, strict=True)
            )
        )
        if not fits:
            raise ValueError(f"rows must have the shape [N, {self._row_shape}], got {array.shape}")
        return array

    def run_sync(self, array: np.ndarray[Any, Any]) -> dict[str, Any]:
        """One ``session.run`` on ``array``; every output as nested lists."""
        values = self._session.run(None, {self._input: array})
        return {name: np.asarray(v).tolist() for name, v in zip(self._outputs, values, strict=True)}

    async def run(self, array: np.ndarray[Any, Any]) -> dict[str, Any]:
        """``run_sync`` on the worker pool, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.run_sync, array)


def usable_cores() -> int:
    """The gateway's default GATEWAY_INFERENCE_THREADS: the cores this process may run on
    (``taskset``, cgroups), not the machine's: 1 when the bench pins the server to a core."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def new_session(path: Path) -> ort.InferenceSession:
    """A session over ``path`` with the gateway's default options (GATEWAY_SESSION_*)."""
    options = ort.SessionOptions()
    # One thread inside and across operators.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def highest_version(root: Path) -> Path:
    """``root/<highest version>/model.onnx``: the version the gateway serves by default."""
    versions = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no versions under {root}")
    return root / str(versions[-1]) / "model.onnx"


def find_iris(models: Path) -> tuple[Path, list[str]]:
    """The highest version of ``models/iris`` (the gateway's default) and its labels."""
    root = models / MODEL_NAME
    config: dict[str, Any] = tomllib.loads((root / "model.toml").read_text(encoding="utf-8"))
    return highest_version(root), list(config["labels"])


def load_iris(models: Path) -> IrisModel:
    """The highest version of ``models/iris`` with its labels, ready to predict."""
    return IrisModel(*find_iris(models))


def serve(create_app: Callable[[Path], ASGIApp], argv: Sequence[str] | None, *, prog: str) -> None:
    """Parse ``--models --host --port``, then run ``create_app(models)`` on uvicorn.

    uvicorn keeps its defaults (one worker, access log at info), as ``gateway serve`` does.
    """
    import uvicorn

    parser = argparse.ArgumentParser(prog=prog, description="A baseline server for bench/.")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.models), host=args.host, port=args.port)
