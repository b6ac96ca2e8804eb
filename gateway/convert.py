"""``gateway convert``: a trained scikit-learn model becomes the next version of a repository
model, checked for parity with the original.

Steps: read the sample (CSV or ``.npy``); load the model (joblib/pickle: this runs code from the
file, so only the ``--sklearn`` flag does it, never the server); convert it with skl2onnx; run
both on the sample and compare (max absolute and relative error per output, label agreement);
write ``<repo>/<name>/<version>/model.onnx`` and ``<repo>/<name>/model.toml`` with the feature
names, class labels, the conversion's provenance and parity figures, and summary statistics of
the sample as a baseline for drift monitoring. A model fitted on a table with named columns of
mixed types (a ColumnTransformer with numeric and categorical columns) gets one input per column,
so its typed GraphQL input has one field per column with its own type.

Needs the ``convert`` extra (scikit-learn, skl2onnx, pandas).
"""

from __future__ import annotations

import csv
import json
import tomllib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from gateway.errors import ConfigError, GatewayError

__all__ = [
    "Conversion",
    "ParityError",
    "Sample",
    "Source",
    "convert_sklearn_file",
    "feeds_for",
    "read_sample",
    "write_version",
]

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: numpy types of the ONNX input types a sample can feed.
_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
}


class ParityError(GatewayError):
    """The converted model does not answer like the original."""

    code = "PARITY_FAILED"


@dataclass
class Conversion:
    """What ``convert`` did: where it wrote, and the parity figures."""

    model: str
    version: int
    path: Path
    inputs: list[str]
    parity: dict[str, Any]
    rows: int
    labels: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "path": str(self.path),
            "inputs": self.inputs,
            "rows": self.rows,
            "labels": self.labels,
            "parity": self.parity,
        }


@dataclass
class Sample:
    """Columns of sample data, by name, each a 1-D array (float64 or str objects)."""

    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def matrix(self) -> np.ndarray:
        """All columns as one float matrix (for models fitted on plain arrays)."""
        return np.column_stack([c.astype(np.float64) for c in self.columns.values()])

    def frame(self) -> Any:
        """The columns as a pandas DataFrame (for models fitted on one)."""
        import pandas as pd

        return pd.DataFrame(self.columns)


def read_sample(path: Path) -> Sample:
    """A CSV file with a header row (numeric columns as floats, others as strings) or a 2-D
    ``.npy`` array (columns f0, f1...)."""
    if path.suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.ndim != 2:
            raise ConfigError(f"{path}: expected a 2-D array, got shape {list(array.shape)}")
        return Sample({f"f{i}": array[:, i].astype(np.float64) for i in range(array.shape[1])})
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sample: {exc.strerror}") from exc
    if len(rows) < 2:
        raise ConfigError(f"{path}: expected a header row and at least one row of data")
    header, data = rows[0], rows[1:]
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        values = [row[index] for row in data]
        try:
            columns[name] = np.asarray([float(v) for v in values], dtype=np.float64)
        except ValueError:
            columns[name] = np.asarray(values, dtype=object)
    return Sample(columns)


@dataclass
class Source:
    """A converted model and what to check it against: the original's answers on the sample."""

    onnx_model: onnx.ModelProto
    inputs: list[str]
    #: The original's outputs on the sample: "label" (and "probabilities" for classifiers).
    original: dict[str, np.ndarray]
    #: Class names by class index (empty: a regressor, or classes named by their index).
    labels: list[str]
    #: framework, framework_version, converter, converter_version, estimator.
    provenance: dict[str, str]
    #: Whether the model takes one input per column (else one [N, F] input, features named).
    per_column: bool = False


def convert_sklearn_file(
    model_path: Path,
    sample_path: Path,
    repository: Path,
    name: str,
    *,
    tolerance: float = 1e-4,
    description: str | None = None,
) -> Conversion:
    """Convert a pickled scikit-learn model (see the module docstring).

    Raises:
        ParityError: the ONNX model's answers differ from the original's beyond ``tolerance``.
    """
    import joblib

    estimator = joblib.load(model_path)  # runs code from the file: the caller asked for it
    sample = read_sample(sample_path)
    named = hasattr(estimator, "feature_names_in_")
    onnx_model, inputs = _convert(estimator, sample, named=named)
    source = Source(
        onnx_model,
        inputs,
        _original_outputs(estimator, sample, named=named),
        [str(c) for c in getattr(estimator, "classes_", [])],
        {
            "framework": "scikit-learn",
            "framework_version": _version("scikit-learn"),
            "converter": "skl2onnx",
            "converter_version": _version("skl2onnx"),
            "estimator": type(estimator).__name__,
        },
        per_column=named,
    )
    return write_version(source, sample, repository, name, tolerance, description)


def write_version(
    source: Source,
    sample: Sample,
    repository: Path,
    name: str,
    tolerance: float,
    description: str | None,
) -> Conversion:
    """Check ``source`` against the original on ``sample``; write it as the next version.

    Raises:
        ParityError: beyond ``tolerance``; nothing is written.
    """
    session = ort.InferenceSession(
        source.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    outputs = session.run(None, feeds_for(session, sample))
    converted = dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))
    parity = _parity(source.original, converted, tolerance)
    version = _next_version(repository / name)
    target = repository / name / str(version) / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(source.onnx_model, target)
    first = {k: _plain(v[0]) for k, v in sample.columns.items()}
    # The first row: the explorer's example, and a sample checked (and run as the warm-up:
    # synthetic zeros and empty strings trip categorical encoders) before a version serves.
    check: dict[str, Any] = {"input": first}
    if "probabilities" in source.original:
        label = str(source.original["label"][0])
        if source.labels and label.isdigit() and str(source.labels[0]) != label:
            label = source.labels[int(label)]  # classes named in model.toml by index
        check["expect"] = {"label": label}
    estimator = source.provenance["estimator"]
    _write_config(
        repository / name / "model.toml",
        features=list(sample.columns) if not source.per_column else [],
        labels=source.labels,
        example=first,
        sample=check,
        description=description or f"{estimator} converted with {source.provenance['converter']}",
        conversion={**source.provenance, "version": version, "parity": parity},
        baseline=_statistics(sample, source.original),
    )
    return Conversion(name, version, target, source.inputs, parity, sample.rows, source.labels)


def _convert(estimator: Any, sample: Sample, *, named: bool) -> tuple[onnx.ModelProto, list[str]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if named:
        # One input per column: mixed types cannot share a tensor, and each becomes a typed
        # GraphQL field of its own.
        types = [
            (
                column,
                StringTensorType([None, 1])
                if sample.columns[column].dtype == object
                else FloatTensorType([None, 1]),
            )
            for column in estimator.feature_names_in_
        ]
    else:
        types = [("input", FloatTensorType([None, len(sample.columns)]))]
    options: dict[Any, Any] = {}
    if hasattr(estimator, "predict_proba"):
        # Dense probabilities: the default ZipMap (a list of maps) is served too, but a tensor
        # is what clients and the parity check want.
        options = {id(estimator): {"zipmap": False}}
    try:
        model = convert_sklearn(
            estimator,
            name=type(estimator).__name__,
            initial_types=types,
            target_opset=TARGET_OPSET,
            options=options,
        )
    except Exception as exc:  # skl2onnx's own errors: an unsupported estimator or option
        raise ConfigError(f"skl2onnx could not convert {type(estimator).__name__}: {exc}") from exc
    return model, [t[0] for t in types]


def feeds_for(session: ort.InferenceSession, sample: Sample) -> dict[str, np.ndarray]:
    """The sample as the model's inputs: a column per input of that name, or the whole table
    as its single input."""
    inputs = session.get_inputs()
    if len(inputs) == 1 and inputs[0].name not in sample.columns:
        dtype = _TYPES.get(inputs[0].type, np.float32)
        return {inputs[0].name: sample.matrix().astype(dtype)}
    feeds = {}
    for spec in inputs:
        if spec.name not in sample.columns:
            raise ConfigError(f"the sample has no column {spec.name!r} for the model's input")
        dtype = _TYPES.get(spec.type, np.float32)
        column = sample.columns[spec.name]
        values = column.astype(str) if dtype is object else column.astype(dtype)
        feeds[spec.name] = values.reshape(-1, 1).astype(dtype)
    return feeds


def _original_outputs(estimator: Any, sample: Sample, *, named: bool) -> dict[str, np.ndarray]:
    data = sample.frame() if named else sample.matrix()
    outputs = {"label": np.asarray(estimator.predict(data))}
    if hasattr(estimator, "predict_proba"):
        outputs["probabilities"] = np.asarray(estimator.predict_proba(data))
    return outputs


def _parity(
    original: dict[str, np.ndarray], converted: dict[str, np.ndarray], tolerance: float
) -> dict[str, Any]:
    labels = converted["label"] if "label" in converted else converted["variable"]
    report: dict[str, Any] = {"tolerance": tolerance}
    problems = []
    if "probabilities" in original:
        want, got = original["probabilities"], converted["probabilities"]
        report["probabilities_max_abs_error"] = float(np.max(np.abs(want - got)))
        agree = original["label"].astype(str) == labels.astype(str)
        report["label_agreement"] = float(np.mean(agree))
        if report["probabilities_max_abs_error"] > tolerance:
            problems.append(
                f"probabilities differ by up to {report['probabilities_max_abs_error']:.3g} "
                f"(tolerance {tolerance:g}); tree models compare float32 inputs with float64 "
                "thresholds: values on a threshold may fall on the other side"
            )
    else:
        want = original["label"].astype(np.float64).reshape(-1)
        got = np.asarray(labels, dtype=np.float64).reshape(-1)
        error = np.abs(want - got)
        report["max_abs_error"] = float(error.max())
        report["max_rel_error"] = float((error / np.maximum(np.abs(want), 1e-12)).max())
        if report["max_abs_error"] > tolerance * max(1.0, float(np.abs(want).max())):
            problems.append(
                f"predictions differ by up to {report['max_abs_error']:.3g} "
                f"(tolerance {tolerance:g}, relative to the largest prediction)"
            )
    if problems:
        raise ParityError(
            "the converted model does not answer like the original: " + "; ".join(problems)
        )
    return report


def _statistics(sample: Sample, original: dict[str, np.ndarray]) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for name, column in sample.columns.items():
        if column.dtype == object:
            values, counts = np.unique(column.astype(str), return_counts=True)
            shares = {
                str(v): round(float(c) / len(column), 6)
                for v, c in zip(values, counts, strict=True)
            }
            features[name] = {"count": len(column), "categories": shares}
            continue
        counts, edges = np.histogram(column, bins=10)
        features[name] = {
            "count": len(column),
            "mean": float(column.mean()),
            "std": float(column.std()),
            "quantiles": [float(q) for q in np.quantile(column, _QUANTILES)],
            "histogram_edges": [float(e) for e in edges],
            "histogram_counts": [int(c) for c in counts],
        }
    baseline: dict[str, Any] = {"rows": sample.rows, "features": features}
    if "probabilities" in original:
        labels, counts = np.unique(original["label"].astype(str), return_counts=True)
        baseline["classes"] = {
            str(v): round(float(c) / sample.rows, 6) for v, c in zip(labels, counts, strict=True)
        }
    return baseline


def _next_version(model_dir: Path) -> int:
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def _write_config(
    path: Path,
    *,
    features: list[str],
    labels: list[str],
    description: str,
    example: dict[str, Any],
    sample: dict[str, Any],
    conversion: dict[str, Any],
    baseline: dict[str, Any],
) -> None:
    """model.toml: the serving keys at the top; provenance and the baseline as tables (JSON
    values are valid TOML inline values)."""
    lines = [f"description = {json.dumps(description)}"]
    if features:
        lines.append(f"features = {json.dumps(features)}")
    if labels:
        lines.append(f"labels = {json.dumps(labels)}")
    lines += ["", "[example]"]
    lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in example.items()]
    lines += ["", "[[samples]]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in sample.items()]
    lines += ["", "[conversion]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in conversion.items()]
    lines += ["", "[baseline]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in baseline.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what is written must read back
    path.write_text(text, encoding="utf-8")


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
            + " }"
        )
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _version(package: str) -> str:
    try:
        return installed_version(package)
    except PackageNotFoundError:
        return "unknown"
