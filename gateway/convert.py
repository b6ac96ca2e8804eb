"""``gateway convert``: a trained model becomes the next version of a repository model, checked
for parity with the original. This module holds what every source shares, and scikit-learn;
``boosting`` (XGBoost, LightGBM) and ``pytorch`` build on it.

Steps: read the sample (CSV, Parquet, ``.npy`` or ``.npz``); load the model (joblib/pickle runs
code from the file, so only the ``--sklearn`` flag does it, never the server); convert it with the
converter made for it; run both on the sample and compare (max absolute and relative error per
output, label agreement); write ``<repo>/<name>/<version>/model.onnx`` and
``<repo>/<name>/model.toml`` with the feature names, class labels, the conversion's provenance and
parity figures, and summary statistics of the sample as a baseline for drift monitoring; then
load the written version the way the server does (samples checked), undoing the write if it
fails. A model fitted on a table with named columns of mixed types (a ColumnTransformer with
numeric and categorical columns) gets one input per column, so its typed GraphQL input has one
field per column with its own type.

Needs the ``convert`` extra (scikit-learn, skl2onnx, pandas, pyarrow).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import tomllib
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from gateway.errors import ConfigError, GatewayError
from gateway.progress import Progress
from gateway.tensors import datatype_from_onnx, numpy_dtype

__all__ = [
    "Conversion",
    "ParityError",
    "Sample",
    "Source",
    "convert_sklearn_file",
    "feeds_for",
    "next_version",
    "read_sample",
    "sklearn_source",
    "write_atomically",
    "write_version",
]

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Beyond this many distinct values (or more distinct values than half the rows), a text column
#: is free text, summarised by length rather than by category.
_MAX_CATEGORIES = 100
_SAMPLE_FORMATS = ".csv (with a header row), .parquet, .npy or .npz"
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: model.toml keys that describe a conversion: rewritten by each one. Other keys (``[access]``,
#: ``[versions]``, ``[batching]``...) are kept, and so are a description, an example and samples
#: someone wrote.
_CONVERSION_KEYS = ("features", "labels", "conversion", "baseline")


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
    """Sample data by name: the 1-D columns of a table (float64, or str objects), or tensors
    whose first dimension is the row (an image batch ``[N, 1, 8, 8]``)."""

    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def tabular(self) -> bool:
        return all(c.ndim == 1 for c in self.columns.values())

    def matrix(self) -> np.ndarray:
        """All columns as one float matrix (for models fitted on plain arrays)."""
        if not self.tabular:
            shapes = {k: list(v.shape) for k, v in self.columns.items()}
            raise ConfigError(f"expected a table of columns, the sample holds tensors {shapes}")
        return np.column_stack([c.astype(np.float64) for c in self.columns.values()])

    def frame(self) -> Any:
        """The columns as a pandas DataFrame (for models fitted on one)."""
        import pandas as pd

        return pd.DataFrame(self.columns)


def read_sample(path: Path) -> Sample:
    """Read sample data: a CSV file with a header row or a Parquet file (numeric columns as
    floats, others as strings), a ``.npy`` array (2-D: columns f0, f1...; more dimensions: one
    tensor named ``input``), or a ``.npz`` archive (one tensor or column per name)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _npy(path, np.load(path, allow_pickle=False))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _checked(path, {k: archive[k] for k in archive.files})
        if suffix in (".parquet", ".pq"):
            return _parquet(path)
        if suffix in (".csv", ".txt"):
            return _csv(path)
    except (OSError, ValueError) as exc:  # unreadable, or not the format its name says
        raise ConfigError(f"{path}: cannot read the sample: {exc}") from exc
    raise ConfigError(f"{path}: unknown sample format; expected {_SAMPLE_FORMATS}")


def _npy(path: Path, array: np.ndarray) -> Sample:
    if array.ndim == 2:
        return Sample({f"f{i}": array[:, i].astype(np.float64) for i in range(array.shape[1])})
    if array.ndim > 2:
        return Sample({"input": array})
    raise ConfigError(f"{path}: expected rows of features (2-D) or of tensors (3-D or more)")


def _checked(path: Path, columns: dict[str, np.ndarray]) -> Sample:
    lengths = {k: (len(v) if v.ndim else 0) for k, v in columns.items()}
    if not columns or min(lengths.values()) == 0 or len(set(lengths.values())) != 1:
        raise ConfigError(f"{path}: expected arrays with the same number of rows, got {lengths}")
    return Sample(columns)


def _parquet(path: Path) -> Sample:
    import pandas as pd

    frame = pd.read_parquet(path)
    columns: dict[str, np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            columns[str(name)] = series.to_numpy(dtype=np.float64)
        else:
            columns[str(name)] = series.astype(str).to_numpy(dtype=object)
    return _checked(path, columns)


def _csv(path: Path) -> Sample:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
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
    #: The original's outputs on the sample, by the ONNX output's name; a classifier's are
    #: "label" and "probabilities" (and a regressor's prediction is "label" too).
    original: dict[str, np.ndarray]
    #: Class names by class index (empty: a regressor, or classes named by their index).
    labels: list[str]
    #: framework, framework_version, converter, converter_version, estimator.
    provenance: dict[str, str]
    #: Whether the model takes one input per column (else one [N, F] input, features named).
    per_column: bool = False


def sklearn_source(
    estimator: Any,
    sample: Sample,
    *,
    data: Any = None,
    name: str | None = None,
    initial_types: list[tuple[str, Any]] | None = None,
    options: dict[Any, Any] | None = None,
    zipmap: bool = False,
    progress: Progress | None = None,
) -> Source:
    """Convert a fitted scikit-learn estimator with skl2onnx and run it on the sample.

    Args:
        data: what the estimator predicts on (default: the sample as a DataFrame when the
            estimator was fitted on named columns, else as a float matrix).
        initial_types: skl2onnx input types (default: one per named column, else one [N, F]
            float input called ``input``).
        zipmap: keep skl2onnx's default probability output, a list of {class: probability}
            maps (the gateway serves it too); a dense tensor otherwise.
    """
    progress = progress or Progress()
    named = hasattr(estimator, "feature_names_in_")
    with progress.step(f"converting {type(estimator).__name__} with skl2onnx"):
        onnx_model, inputs = _convert(
            estimator,
            sample,
            named=named,
            name=name or type(estimator).__name__,
            types=initial_types,
            options=options or {},
            zipmap=zipmap,
        )
    with progress.step(f"running the original on {sample.rows} rows"):
        if data is None:
            data = sample.frame() if named else sample.matrix()
        try:
            original = {"label": np.asarray(estimator.predict(data))}
            if hasattr(estimator, "predict_proba"):
                original["probabilities"] = np.asarray(estimator.predict_proba(data))
        except Exception as exc:  # the estimator's own refusal: a category it never saw...
            raise ConfigError(
                f"the original model fails on the sample, so nothing can be compared: {exc}"
            ) from exc
    return Source(
        onnx_model,
        inputs,
        original,
        [str(c) for c in getattr(estimator, "classes_", [])],
        {
            "framework": "scikit-learn",
            "framework_version": _version("scikit-learn"),
            "converter": "skl2onnx",
            "converter_version": _version("skl2onnx"),
            "estimator": type(estimator).__name__,
        },
        per_column=named and initial_types is None,
    )


def convert_sklearn_file(
    model_path: Path,
    sample_path: Path,
    repository: Path,
    name: str,
    *,
    labels: list[str] | None = None,
    tolerance: float = 1e-4,
    description: str | None = None,
    progress: Progress | None = None,
) -> Conversion:
    """Convert a pickled scikit-learn model (see the module docstring).

    Raises:
        ParityError: the ONNX model's answers differ from the original's beyond ``tolerance``.
    """
    import joblib

    progress = progress or Progress()
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    with progress.step(f"loading {model_path.name} (a pickle: runs its code)"):
        estimator = joblib.load(model_path)  # runs code from the file: the caller asked for it
    source = sklearn_source(estimator, sample, progress=progress)
    return write_version(
        source, sample, repository, name, tolerance, description, labels=labels, progress=progress
    )


def write_version(
    source: Source,
    sample: Sample,
    repository: Path,
    name: str,
    tolerance: float,
    description: str | None,
    *,
    version: int | None = None,
    labels: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Conversion:
    """Check ``source`` against the original on ``sample``; write it as ``version`` (default:
    the next one) with its model.toml; load it as the server would.

    Args:
        labels: class names by class index, for a classifier whose classes are numbers.

    Raises:
        ParityError: beyond ``tolerance``; nothing is written.
        ConfigError: ``labels`` do not fit; the written version does not load (its files are
            removed again).
    """
    progress = progress or Progress()
    if labels:
        classes = source.original.get("probabilities")
        count = 0 if classes is None else classes.shape[1]
        if count != len(labels):
            raise ConfigError(f"--labels: {len(labels)} names for a model with {count} classes")
        source.labels = labels
    with progress.step(f"checking parity on {sample.rows} rows"):
        session = ort.InferenceSession(
            source.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        outputs = session.run(None, feeds_for(session, sample))
        converted = dict(zip([o.name for o in session.get_outputs()], outputs, strict=True))
        parity = _parity(source.original, converted, tolerance)
    model_dir = repository / name
    version = version if version is not None else next_version(model_dir)
    target = model_dir / str(version) / "model.onnx"
    if target.exists():
        raise ConfigError(f"{target} exists: versions are never overwritten")
    config_path = model_dir / "model.toml"
    previous = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    existing = tomllib.loads(previous) if previous is not None else {}
    provenance = {**source.provenance, "version": version, "parity": parity}
    model = _finish(
        source.onnx_model,
        description or existing.get("description") or _describe(source),
        {**{k: str(v) for k, v in source.provenance.items()}, **(metadata or {})},
    )
    payload = model.SerializeToString()
    text = _config_text(
        existing,
        description=description,
        generated=_describe(source),
        features=list(sample.columns) if sample.tabular and not source.per_column else [],
        labels=source.labels,
        check=_first_check(source, sample),
        conversion=provenance,
        baseline=_statistics(sample, source.original, source.labels),
        digest=(version, hashlib.sha256(payload).hexdigest()),
    )
    with progress.step(f"writing {target}"):
        model_dir.mkdir(parents=True, exist_ok=True)
        # model.toml first, then the model by rename: a server polling the repository sees the
        # version only when it is complete, with the configuration written for it. The model
        # is written in the model's directory, where a file is not a version (a version
        # directory without its model.onnx would be reported as skipped).
        write_atomically(config_path, text.encode())
        write_atomically(target, payload, scratch=model_dir)
    with progress.step(f"loading {name} version {version} as the server would"):
        problem = _load_problem(repository, name, version)
        if problem is not None:
            shutil.rmtree(target.parent)
            if previous is None:
                config_path.unlink()
            else:
                write_atomically(config_path, previous.encode())
            if existing.get("samples"):
                problem += (
                    f" (the [[samples]] of {config_path} were kept: if the new model is right, "
                    "correct or remove them)"
                )
            raise ConfigError(f"the converted model does not load, nothing written: {problem}")
    return Conversion(name, version, target, source.inputs, parity, sample.rows, source.labels)


def _describe(source: Source) -> str:
    return f"{source.provenance['estimator']} converted with {source.provenance['converter']}"


def _first_check(source: Source, sample: Sample) -> dict[str, Any]:
    """The first row: the explorer's example, and a sample checked (and run as the warm-up:
    synthetic zeros and empty strings trip categorical encoders) before a version serves."""
    check: dict[str, Any] = {"input": {k: _plain(v[0]) for k, v in sample.columns.items()}}
    if "probabilities" in source.original:
        check["expect"] = {"label": _class_name(source.original["label"][0], source.labels)}
    return check


def _class_name(label: Any, names: list[str]) -> str:
    """A predicted label as the gateway answers it: a class index named in model.toml's
    ``labels`` becomes that name; a label that is a class itself (3, of classes 3, 4, 5) stays."""
    text = str(label)
    if text in names or not text.isdigit() or int(text) >= len(names):
        return text
    return names[int(text)]


def _finish(model: onnx.ModelProto, description: str, props: dict[str, str]) -> onnx.ModelProto:
    """The model as written: one opset entry per domain, sorted (converters may gather them in
    a set, whose order changes between runs), the description, and the conversion's provenance
    as metadata, so that the file says where it came from on its own."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opsets: dict[str, int] = {}
    for opset in model.opset_import:
        opsets[opset.domain] = max(opset.version, opsets.get(opset.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    model.doc_string = description
    merged = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**merged, **props})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConfigError(f"the converter wrote an invalid ONNX model: {exc}") from exc
    return model


def write_atomically(path: Path, content: bytes, *, scratch: Path | None = None) -> None:
    """Write ``path`` whole or not at all: a temporary file (beside it, or in ``scratch`` on
    the same file system), then a rename."""
    temporary = (scratch or path.parent) / f".{path.parent.name}-{path.name}.tmp"
    temporary.write_bytes(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, path)


def _load_problem(repository: Path, name: str, version: int) -> str | None:
    """Why the version does not load as the server would load it (samples included), or None."""
    from gateway.config import Settings
    from gateway.repository import ModelSpec, RepositoryScan, VersionPolicy, scan_repository
    from gateway.runtime import ModelRuntime
    from gateway.versions import ModelState

    spec = next(s for s in scan_repository(repository).models if s.name == name)
    if spec.problem is not None:
        return spec.problem
    # Only this version, and served whatever [versions] says: it is the one being checked.
    config = replace(spec.config, versions=VersionPolicy())
    only = ModelSpec(name, {version: spec.versions[version]}, config)
    settings = Settings.load(environ={"GATEWAY_MODELS": str(repository)}, flags={"warmup": True})
    runtime = ModelRuntime(settings, RepositoryScan((only,)))
    # The runtime logs the failure; here it is the returned reason, said once.
    quiet = logging.getLogger("gateway")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        runtime.load_all()
        loaded = runtime.entries[name].versions[version]
        return loaded.reason if loaded.state is ModelState.FAILED else None
    finally:
        runtime.close()
        quiet.setLevel(level)


def _convert(
    estimator: Any,
    sample: Sample,
    *,
    named: bool,
    name: str,
    types: list[tuple[str, Any]] | None,
    options: dict[Any, Any],
    zipmap: bool,
) -> tuple[onnx.ModelProto, list[str]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if types is None and named:
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
    elif types is None:
        types = [("input", FloatTensorType([None, len(sample.columns)]))]
    if hasattr(estimator, "predict_proba") and not zipmap:
        # Dense probabilities: the default ZipMap (a list of maps) is served too, but a tensor
        # is what clients and the parity check want.
        options = {**options, id(estimator): {"zipmap": False}}
    try:
        model = convert_sklearn(
            estimator, name=name, initial_types=types, target_opset=TARGET_OPSET, options=options
        )
    except Exception as exc:  # skl2onnx's own errors: an unsupported estimator or option
        raise ConfigError(f"skl2onnx could not convert {type(estimator).__name__}: {exc}") from exc
    return model, [t[0] for t in types]


def feeds_for(session: ort.InferenceSession, sample: Sample) -> dict[str, np.ndarray]:
    """The sample as the model's inputs: a column or tensor per input of that name, or the whole
    sample (a table, or its one tensor) as the model's single input."""
    inputs = session.get_inputs()
    if len(inputs) == 1 and inputs[0].name not in sample.columns:
        dtype = _dtype(inputs[0].type)
        if len(sample.columns) == 1 and not sample.tabular:
            return {inputs[0].name: next(iter(sample.columns.values())).astype(dtype)}
        return {inputs[0].name: sample.matrix().astype(dtype)}
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.name not in sample.columns:
            raise ConfigError(
                f"the sample has no column {spec.name!r} for the model's input; it has "
                + ", ".join(sample.columns)
            )
        dtype = _dtype(spec.type)
        column = sample.columns[spec.name]
        values = column.astype(str) if dtype.kind == "O" else column
        if column.ndim == 1 and len(spec.shape) == 2:
            values = values.reshape(-1, 1)  # a table column as an [N, 1] input
        feeds[spec.name] = values.astype(dtype)
    return feeds


def _dtype(onnx_type: str) -> np.dtype[Any]:
    """The numpy type of an ONNX Runtime input type ("tensor(float)"); float32 for types the
    gateway does not serve (the session then says what it wanted)."""
    datatype = datatype_from_onnx(onnx_type)
    return numpy_dtype(datatype) if datatype is not None else np.dtype(np.float32)


def _dense(values: Any) -> np.ndarray:
    """An output as an array: converters' lists of {class: probability} maps become [N, C]."""
    if isinstance(values, list) and values and isinstance(values[0], dict):
        return np.asarray([[row[k] for k in sorted(row)] for row in values])
    return np.asarray(values)


def _parity(
    original: dict[str, np.ndarray], converted: dict[str, Any], tolerance: float
) -> dict[str, Any]:
    """Compare each output of the original with the converted model's of the same name:
    labels by agreement, probabilities by absolute error, other numbers by absolute and
    relative error (the tolerance scaled by the largest value when that is above 1)."""
    report: dict[str, Any] = {"tolerance": tolerance}
    problems = []
    # Converters name the outputs their way (skl2onnx: "variable" for a regressor,
    # "output_label" and "output_probability" beside a ZipMap): by position, the label (or
    # prediction) comes first and the probabilities second.
    by_position = dict(zip(("label", "probabilities"), converted.values(), strict=False))
    for key, want in original.items():
        got = _dense(converted.get(key, by_position.get(key)))
        if got.ndim == 0:
            raise ConfigError(f"the converted model has no output {key!r} to compare")
        if key == "label" and ("probabilities" in original or want.dtype.kind not in "fc"):
            agree = want.astype(str).reshape(-1) == got.astype(str).reshape(-1)
            report["label_agreement"] = float(np.mean(agree))
            continue
        error = np.abs(want.astype(np.float64) - got.astype(np.float64).reshape(want.shape))
        prefix = "" if key == "label" else f"{key}_"
        report[f"{prefix}max_abs_error"] = _figure(error.max()) if error.size else 0.0
        if key == "probabilities":
            if error.size and error.max() > tolerance:
                problems.append(
                    f"probabilities differ by up to {error.max():.3g} (tolerance {tolerance:g});"
                    " tree models compare float32 inputs with float64 thresholds: values on a "
                    "threshold may fall on the other side"
                )
            continue
        scale = np.maximum(np.abs(want.astype(np.float64)), 1e-12)
        report[f"{prefix}max_rel_error"] = _figure((error / scale).max()) if error.size else 0.0
        largest = float(np.abs(want).max()) if want.size else 0.0
        if error.size and error.max() > tolerance * max(1.0, largest):
            what = "predictions" if key == "label" else f"output {key!r}"
            problems.append(
                f"{what} differ by up to {error.max():.3g} "
                f"(tolerance {tolerance:g}, relative to the largest value)"
            )
    if problems:
        raise ParityError(
            "the converted model does not answer like the original: " + "; ".join(problems)
        )
    return report


def _figure(value: float) -> float:
    """An error figure to three significant digits: ONNX Runtime's kernels differ by CPU in the
    last bits, and model.toml should not."""
    return float(f"{float(value):.3g}")


def _statistics(
    sample: Sample, original: dict[str, np.ndarray], labels: list[str]
) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for name, column in sample.columns.items():
        if column.dtype == object:
            features[name] = _text_statistics(column.astype(str))
            continue
        # A tensor (an image...) is summarised over all its values: per-element statistics of
        # thousands of elements would drown the table.
        values = column.astype(np.float64).reshape(-1)
        features[name] = {"count": len(column), **_number_statistics(values)}
        if column.ndim > 1:
            features[name]["shape"] = list(column.shape[1:])
    baseline: dict[str, Any] = {"rows": sample.rows, "features": features}
    if "probabilities" in original:
        predicted = [_class_name(label, labels) for label in original["label"]]
        names, counts = np.unique(predicted, return_counts=True)
        baseline["classes"] = {
            str(v): round(float(c) / sample.rows, 6) for v, c in zip(names, counts, strict=True)
        }
    return baseline


def _number_statistics(values: np.ndarray) -> dict[str, Any]:
    counts, edges = np.histogram(values, bins=10)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "quantiles": [float(q) for q in np.quantile(values, _QUANTILES)],
        "histogram_edges": [float(e) for e in edges],
        "histogram_counts": [int(c) for c in counts],
    }


def _text_statistics(column: np.ndarray) -> dict[str, Any]:
    """Categories by share; free text (mostly distinct values) by the length of its values,
    since a share per sentence says nothing about the next sample."""
    values, counts = np.unique(column, return_counts=True)
    if len(values) <= _MAX_CATEGORIES and len(values) <= len(column) / 2:
        shares = {
            str(v): round(float(c) / len(column), 6) for v, c in zip(values, counts, strict=True)
        }
        return {"count": len(column), "categories": shares}
    lengths = np.asarray([len(v) for v in column], dtype=np.float64)
    return {"count": len(column), "distinct": len(values), "length": _number_statistics(lengths)}


def next_version(model_dir: Path) -> int:
    """The version after every version directory of ``model_dir`` (with a model or not)."""
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def _config_text(
    existing: dict[str, Any],
    *,
    description: str | None,
    generated: str,
    features: list[str],
    labels: list[str],
    check: dict[str, Any],
    conversion: dict[str, Any],
    baseline: dict[str, Any],
    digest: tuple[int, str],
) -> str:
    """model.toml: what the conversion knows, merged into what the file already says. The
    serving keys come first; provenance and the baseline last (JSON values are valid TOML inline
    values). Comments in an existing file are not kept."""
    config = {k: v for k, v in existing.items() if k not in _CONVERSION_KEYS}
    config["description"] = description or existing.get("description") or generated
    if features:
        config["features"] = features
    if labels:
        config["labels"] = labels
    config.setdefault("example", check["input"])
    config.setdefault("samples", [check])
    if "sha256" in config:  # digests are kept: the new version gets its own
        config["sha256"] = {**config["sha256"], str(digest[0]): digest[1]}
    config["conversion"] = conversion
    config["baseline"] = baseline
    top = [k for k, v in config.items() if not isinstance(v, dict) and k != "samples"]
    lines = [f"{_key(k)} = {_toml_value(config[k])}" for k in top]
    for key, value in config.items():
        if key == "samples":
            lines += [
                "",
                "# Checked before a version takes traffic: a retrained model that gets these",
                "# wrong stays unloaded (and the previous version keeps serving).",
            ]
            for table in value:
                lines += [
                    "[[samples]]",
                    *(f"{_key(k)} = {_toml_value(v)}" for k, v in table.items()),
                ]
        elif isinstance(value, dict):
            lines += ["", f"[{_key(key)}]"]
            lines += [f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()]
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # what is written must read back
    return text


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _plain(value: Any) -> Any:
    """A sample value as model.toml spells it: a number that is exactly a float32 (what the
    model reads) in its shortest float32 spelling (5.1, not 5.099999904632568)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isfinite(value) and float(np.float32(value)) == value:
        return float(str(np.float32(value)))
    return value


def _version(package: str) -> str:
    try:
        return installed_version(package)
    except PackageNotFoundError:
        return "unknown"
