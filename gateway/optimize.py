"""``gateway optimize``: a repository model's version becomes a faster or smaller next version,
with the accuracy cost measured against the source on a sample.

Steps, in this order, each optional: int8 quantisation with ``onnxruntime.quantization``
(``--int8 dynamic``: weights quantised, activations at run time; ``--int8 static``: activations
calibrated on the sample) or fp16 conversion (``--fp16``: weights and arithmetic in half
precision, inputs and outputs kept float32, the operators ONNX Runtime has no fp16 kernel for
left in float32), then ONNX Runtime's offline graph optimisation (``--graph``: constant folding,
node fusions; the portable "extended" level). On CPUs fp16 halves the file but is rarely
faster: the report says. The report gives, for the source and
the result measured in the same run: size, rows/s on the sample, and per output the max absolute
error and, for labels, the agreement. Above ``--tolerance`` nothing is written.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from gateway.convert import (
    ParityError,
    Sample,
    feeds_for,
    next_version,
    read_sample,
    write_atomically,
)
from gateway.convert_check import first_line
from gateway.errors import ConfigError
from gateway.progress import Progress

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
    fp16: bool = False,
    tolerance: float = 0.05,
    progress: Progress | None = None,
) -> Optimization:
    """Optimise ``name`` (``version``, default the highest) into its next version.

    Raises:
        ConfigError: no such model or version, or no step asked for.
        ParityError: the result differs from the source beyond ``tolerance``.
    """
    if not graph and int8 is None and not fp16:
        raise ConfigError("ask for --graph and/or one of --int8 dynamic|static, --fp16")
    if int8 not in (None, "dynamic", "static"):
        raise ConfigError(f"--int8: expected dynamic or static, got {int8!r}")
    if int8 is not None and fp16:
        raise ConfigError("--int8 and --fp16: choose one precision")
    progress = progress or Progress()
    model_dir = repository / name
    source_version = _source_version(repository, name, version)
    source = model_dir / str(source_version) / "model.onnx"
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    with tempfile.TemporaryDirectory() as scratch:
        # Precision first: the graph optimiser's fused operators (com.microsoft domain)
        # defeat the quantiser's shape inference.
        current, steps = source, []
        if int8 is not None:
            with progress.step(f"int8 {int8} quantisation"):
                current = _quantize(current, Path(scratch) / "int8.onnx", int8, sample)
                _changed(source, current, f"--int8 {int8}", _INT8, "can be quantised")
            steps.append(f"int8 {int8} quantisation")
        if fp16:
            with progress.step("fp16 conversion"):
                current = _half(current, Path(scratch) / "fp16.onnx")
                _changed(source, current, "--fp16", _FP16, "has an fp16 kernel")
            steps.append("fp16 conversion")
        if graph:
            with progress.step("graph optimisation"):
                current = _graph(current, Path(scratch) / "graph.onnx")
            steps.append("graph optimisation (extended)")
        before, after = _session(source), _session(current)
        feeds = feeds_for(before, sample)
        with progress.step(f"checking parity on {sample.rows} rows"):
            parity = _parity(_run(before, feeds), _run(after, feeds), before, tolerance)
        with progress.step("measuring rows/s, before and after"):
            speed = (_rows_per_second(before, feeds), _rows_per_second(after, feeds))
        target_version = next_version(model_dir)
        target = model_dir / str(target_version) / "model.onnx"
        write_atomically(target, current.read_bytes(), scratch=model_dir)
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


#: Initializer types that show a step did something: int8 weights, fp16 weights.
_INT8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
_FP16 = (onnx.TensorProto.FLOAT16,)


def _source_version(repository: Path, name: str, version: int | None) -> int:
    """The version to optimise: ``version``, or the highest.

    Raises:
        ConfigError: no such model, or no such version of it.
    """
    model_dir = repository / name
    versions = sorted(
        int(p.parent.name) for p in model_dir.glob("*/model.onnx") if p.parent.name.isdigit()
    )
    if not versions:
        if (repository / f"{name}.onnx").is_file():
            raise ConfigError(
                f"model {name!r} is the single file {repository / name}.onnx: optimize works on "
                f"versions, move it to {model_dir}/1/model.onnx first"
            )
        what = "has no versions" if model_dir.is_dir() else "does not exist"
        raise ConfigError(f"model {name!r} {what} in {repository}")
    if version is None:
        return versions[-1]
    if version not in versions:
        listed = ", ".join(str(v) for v in versions)
        raise ConfigError(f"model {name!r} has no version {version} (its versions: {listed})")
    return version


def _changed(source: Path, result: Path, step: str, kinds: tuple[int, ...], able: str) -> None:
    """Refuse a precision step that left every weight as it was (the model's operators have no
    such kernel): the result would be the source, bigger.

    Raises:
        ConfigError: naming the model's operators.
    """

    def count(model: onnx.ModelProto) -> int:
        return sum(t.data_type in kinds for t in model.graph.initializer)

    original = onnx.load(str(source))
    if count(onnx.load(str(result))) > count(original):
        return
    operators = ", ".join(sorted({n.op_type for n in original.graph.node}))
    raise ConfigError(
        f"{step}: none of this model's weights changed (none of its operators, {operators}, "
        f"{able}); nothing written"
    )


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[Any]:
    try:
        return list(session.run(None, feeds))
    except Exception as exc:  # ONNX Runtime's refusal of the sample (a type, a value)
        raise ConfigError(f"ONNX Runtime cannot run the sample: {first_line(exc)}") from exc


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


def _half(source: Path, target: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: clients keep sending and receiving float32; the default block list keeps
    # the ai.onnx.ml operators (trees, linear models, ZipMap...) in float32.
    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # The converter stores fp16 values in int32_data, a varint each (about 3 bytes); raw_data
    # holds them in their 2 bytes.
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.data_type == onnx.TensorProto.FLOAT16 and not tensor.raw_data:
            packed = onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(tensor), tensor.name)
            model.graph.initializer[index].CopyFrom(packed)
    onnx.save(model, str(target))
    return target


def _preprocessed(source: Path, target: Path) -> Path:
    """The model prepared for quantisation as ONNX Runtime recommends (shape inference and
    optimisation); the model itself where that fails (symbolic shape inference does not know
    the ai.onnx.ml operators of converted scikit-learn models)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target))
    except Exception:  # "incomplete symbolic shape inference": quantise the model as it is
        return source
    return target


def _quantize(source: Path, target: Path, mode: str, sample: Sample) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    source = _preprocessed(source, target.with_name("preprocessed.onnx"))
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
