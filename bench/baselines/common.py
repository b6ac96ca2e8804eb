"""What both baselines share: the iris model under ONNX Runtime, and the uvicorn entry point."""

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

__all__ = ["IrisModel", "Prediction", "load_iris", "serve"]

MODEL_NAME = "iris"


@dataclass(frozen=True)
class Prediction:
    """One row's answer: the label and each class's probability, in class order."""

    label: str
    probabilities: list[tuple[str, float]]


class IrisModel:
    """An ONNX Runtime session over the iris model, run on a worker thread pool."""

    def __init__(self, path: Path, labels: Sequence[str]) -> None:
        options = ort.SessionOptions()
        # The gateway's defaults (GATEWAY_SESSION_*): one thread inside and across operators.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._labels = list(labels)
        # As many workers as the gateway's default GATEWAY_INFERENCE_THREADS ("cores").
        self._executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
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


def load_iris(models: Path) -> IrisModel:
    """The highest version of ``models/iris`` (the gateway's default) with its labels."""
    root = models / MODEL_NAME
    versions = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no versions under {root}")
    config: dict[str, Any] = tomllib.loads((root / "model.toml").read_text(encoding="utf-8"))
    return IrisModel(root / str(versions[-1]) / "model.onnx", config["labels"])


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
