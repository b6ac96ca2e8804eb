"""``gateway optimize``: a repository model's version becomes a faster or smaller next version,
with the accuracy cost measured against the source on a sample.

Steps, in this order, each optional: int8 quantisation with ``onnxruntime.quantization``
(``--int8 dynamic``: weights quantised, activations at run time; ``--int8 static``: activations
calibrated on the sample), then ONNX Runtime's offline graph optimisation (``--graph``: constant
folding, node fusions; the portable "extended" level). The report gives, for the source and
the result measured in the same run: size, rows/s on the sample, and per output the max absolute
error and, for labels, the agreement. Above ``--tolerance`` nothing is written.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway.convert import ParityError, Sample, feeds_for, read_sample
from gateway.errors import ConfigError

__all__ = ["Optimization", "optimize_version"]


@dataclass
class Optimization:
    """What ``optimize`` wrote and measured."""

    model: str
    source_version: int
    version: int
    path: Path
    steps: list[str]
    size_bytes: tuple[int, int]  # source, result
    rows_per_second: tuple[float, float]
    parity: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source_version": self.source_version,
            "version": self.version,
            "path": str(self.path),
            "steps": self.steps,
            "size_bytes": {"source": self.size_bytes[0], "result": self.size_bytes[1]},
            "rows_per_second": {
                "source": round(self.rows_per_second[0], 1),
                "result": round(self.rows_per_second[1], 1),
            },
            "parity": self.parity,
        }


def optimize_version(
    repository: Path,
    name: str,
    sample_path: Path,
    *,
    version: int | None = None,
    graph: bool = False,
    int8: str | None = None,
    tolerance: float = 0.05,
) -> Optimization:
    """Optimise ``name`` (``version``, default the highest) into its next version.

    Raises:
        ConfigError: no such model or version, or no step asked for.
        ParityError: the result differs from the source beyond ``tolerance``.
    """
    if not graph and int8 is None:
        raise ConfigError("optimize: ask for --graph and/or --int8 dynamic|static")
    if int8 not in (None, "dynamic", "static"):
        raise ConfigError(f"--int8: expected dynamic or static, got {int8!r}")
    versions = _versions(repository / name)
    source_version = version if version is not None else max(versions, default=0)
    source = repository / name / str(source_version) / "model.onnx"
    if not source.is_file():
        raise ConfigError(f"no version {source_version} of model {name!r} in {repository}")
    sample = read_sample(sample_path)
    with tempfile.TemporaryDirectory() as scratch:
        # Quantisation first: the graph optimiser's fused operators (com.microsoft domain)
        # defeat the quantiser's shape inference.
        current, steps = source, []
        if int8 is not None:
            current = _quantize(current, Path(scratch) / "int8.onnx", int8, sample)
            steps.append(f"int8 {int8} quantisation")
        if graph:
            current = _graph(current, Path(scratch) / "graph.onnx")
            steps.append("graph optimisation (extended)")
        before, after = _session(source), _session(current)
        feeds = feeds_for(before, sample)
        parity = _parity(before.run(None, feeds), after.run(None, feeds), before, tolerance)
        speed = (_rows_per_second(before, feeds), _rows_per_second(after, feeds))
        target_version = max(versions) + 1
        target = repository / name / str(target_version) / "model.onnx"
        target.parent.mkdir(parents=True)
        shutil.copyfile(current, target)
    return Optimization(
        name,
        source_version,
        target_version,
        target,
        steps,
        (source.stat().st_size, target.stat().st_size),
        speed,
        parity,
    )


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit())


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _graph(source: Path, target: Path) -> Path:
    options = ort.SessionOptions()
    # "Extended" fusions run on any CPU; "all" would bake this machine's layouts into the file.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return target


def _quantize(source: Path, target: Path, mode: str, sample: Sample) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic":
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
        return target
    feeds = feeds_for(_session(source), sample)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._rows: Iterator[dict[str, np.ndarray]] = iter(
                {k: v[i : i + 1] for k, v in feeds.items()}
                for i in range(len(next(iter(feeds.values()))))
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._rows, None)

    quantize_static(str(source), str(target), Reader())
    return target


def _parity(
    before: list[Any], after: list[Any], session: ort.InferenceSession, tolerance: float
) -> dict[str, Any]:
    report: dict[str, Any] = {"tolerance": tolerance}
    problems = []
    for spec, a, b in zip(session.get_outputs(), before, after, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc":
            error = float(np.max(np.abs(a - b))) if a.size else 0.0
            report[f"{spec.name}_max_abs_error"] = error
            if error > tolerance:
                problems.append(f"{spec.name} differs by up to {error:.3g}")
        else:
            agreement = float(np.mean(a == b)) if a.size else 1.0
            report[f"{spec.name}_agreement"] = agreement
            if agreement < 1 - tolerance:
                problems.append(f"{spec.name} agrees on {agreement:.1%} of the sample")
    if problems:
        raise ParityError(
            "the optimised model does not answer like its source: "
            + "; ".join(problems)
            + f" (tolerance {tolerance:g}); nothing written"
        )
    return report


def _rows_per_second(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> float:
    rows = len(next(iter(feeds.values())))
    session.run(None, feeds)  # warm
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.5 or runs < 5:
        session.run(None, feeds)
        runs += 1
    return rows * runs / (time.perf_counter() - started)
