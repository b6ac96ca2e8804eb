"""XGBoost and LightGBM models for ``gateway convert``, from their native model files (no pickle:
XGBoost's ``save_model`` JSON/UBJSON, LightGBM's text format), converted with onnxmltools.

Classification or regression comes from the model's objective; classes are named by index
unless ``--labels`` names them. The model takes the sample's columns as one float input
``[N, F]``: a model fitted on a DataFrame names its features, and they are taken from the
sample by name, in the model's order; one fitted on an array (XGBoost ``f0``..., LightGBM
``Column_0``...) takes the sample's columns in order. Missing values (NaN) go to the trees'
default branches, as in the original.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gateway.convert import Conversion, Sample, Source, read_sample, write_version
from gateway.convert_check import first_line
from gateway.convert_write import check_name, require_file
from gateway.errors import ConfigError
from gateway.progress import Progress

__all__ = ["convert_boosting_file"]

# onnxmltools converts up to opset 15 (and ai.onnx.ml 2 or 3).
_OPSET = 15
_FLAGS = {"xgboost": "--xgboost", "lightgbm": "--lightgbm"}
# The names a framework gives features fitted without names: the sample's columns by position.
_UNNAMED = re.compile(r"f\d+|Column_\d+")


def convert_boosting_file(
    framework: str,
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
    """Convert an ``xgboost`` or ``lightgbm`` model file into the next version of ``name``.

    Raises:
        ConfigError: a missing file or one of another format, an invalid name, a sample that
            does not fit the model.
        ParityError: the ONNX model's answers differ from the original's beyond ``tolerance``.
    """
    if framework not in _FLAGS:
        raise ConfigError(f"unknown framework {framework!r}: expected xgboost or lightgbm")
    check_name(name)
    require_file(model_path, _FLAGS[framework])
    progress = progress or Progress()
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    with (
        progress.step(f"converting {model_path.name} with onnxmltools"),
        warnings.catch_warnings(),  # the converters' deprecation chatter
    ):
        warnings.simplefilter("ignore")
        if framework == "xgboost":
            source = _xgboost(model_path, sample)
        else:
            source = _lightgbm(model_path, sample)
    return write_version(
        source, sample, repository, name, tolerance, description, labels=labels, progress=progress
    )


def _columns(names: list[str] | None, sample: Sample, count: int) -> list[str]:
    """The sample's columns for a model of ``count`` features called ``names``.

    Raises:
        ConfigError: the sample lacks a named feature, or has another number of columns.
    """
    if names and not all(_UNNAMED.fullmatch(n) for n in names):
        # LightGBM writes "mean radius" as "mean_radius": a column matches either spelling.
        spelled = {c.replace(" ", "_"): c for c in sample.columns}
        found = [n if n in sample.columns else spelled.get(n, n) for n in names]
        return list(sample.select(found, what="the model was fitted on").columns)
    if len(sample.columns) != count:
        raise ConfigError(
            f"the sample has {len(sample.columns)} columns; the model was fitted on {count}"
        )
    return list(sample.columns)


def _float_input(count: int) -> list[tuple[str, Any]]:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return [("input", FloatTensorType([None, count]))]


def _xgboost(path: Path, sample: Sample) -> Source:
    import xgboost
    from onnxmltools import convert_xgboost

    try:
        booster = xgboost.Booster(model_file=str(path))
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    except xgboost.core.XGBoostError as exc:
        raise ConfigError(_not_a_model(path, "XGBoost", exc)) from exc
    classifier = objective.startswith(("binary:", "multi:"))
    model = xgboost.XGBClassifier() if classifier else xgboost.XGBRegressor()
    model.load_model(str(path))
    columns = _columns(list(booster.feature_names or []), sample, booster.num_features())
    # onnxmltools reads split features as f0, f1...: names from a DataFrame ("mean radius")
    # stop it; the columns are in the model's order now.
    model.get_booster().feature_names = None
    matrix = sample.select(columns, what="the model was fitted on").matrix().astype(np.float32)
    try:
        original = {"label": np.asarray(model.predict(matrix))}
        if classifier:
            original["probabilities"] = np.asarray(model.predict_proba(matrix))
    except (ValueError, xgboost.core.XGBoostError) as exc:
        raise ConfigError(f"the original model fails on the sample: {first_line(exc)}") from exc
    onnx_model = _onnxmltools(
        convert_xgboost, model, initial_types=_float_input(len(columns)), target_opset=_OPSET
    )
    provenance = _provenance(xgboost, type(model).__name__ + f" ({objective})")
    return Source(onnx_model, ["input"], original, [], provenance, columns=columns)


def _lightgbm(path: Path, sample: Sample) -> Source:
    import lightgbm
    from onnxmltools import convert_lightgbm

    try:
        booster = lightgbm.Booster(model_file=str(path))
    except lightgbm.basic.LightGBMError as exc:
        raise ConfigError(_not_a_model(path, "LightGBM", exc)) from exc
    objective = str(booster.dump_model()["objective"]).split()[0]
    columns = _columns(booster.feature_name(), sample, booster.num_feature())
    matrix = sample.select(columns, what="the model was fitted on").matrix().astype(np.float32)
    try:
        raw = np.asarray(booster.predict(matrix))
    except (ValueError, lightgbm.basic.LightGBMError) as exc:
        raise ConfigError(f"the original model fails on the sample: {first_line(exc)}") from exc
    onnx_model = _onnxmltools(
        convert_lightgbm,
        booster,
        initial_types=_float_input(len(columns)),
        target_opset=_OPSET,
        zipmap=False,
    )
    if objective in ("binary", "multiclass", "multiclassova"):
        probabilities = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
        original = {"label": probabilities.argmax(axis=1), "probabilities": probabilities}
    else:
        original = {"label": raw}
    provenance = _provenance(lightgbm, f"Booster ({objective})")
    return Source(onnx_model, ["input"], original, [], provenance, columns=columns)


def _onnxmltools(convert: Any, model: Any, **options: Any) -> Any:
    try:
        return convert(model, **options)
    except Exception as exc:  # the converter's own refusals: an objective it does not know
        raise ConfigError(f"onnxmltools could not convert the model: {first_line(exc)}") from exc


def _not_a_model(path: Path, framework: str, exc: BaseException) -> str:
    """Why ``path`` is not a model file of ``framework``, with the right flag when it looks like
    the other framework's."""
    head = path.read_bytes()[:4096]
    if framework == "XGBoost" and head.startswith(b"tree"):
        hint = ": it looks like a LightGBM model file (use --lightgbm)"
    elif framework == "LightGBM" and head.lstrip()[:1] in (b"{", b"["):
        hint = ": it looks like an XGBoost model file (use --xgboost)"
    else:
        hint = f" ({framework} says: {first_line(exc)})"
    article = "an" if framework[0] in "AEIOUX" else "a"
    return f"{path} is not {article} {framework} model file{hint}"


def _provenance(module: Any, estimator: str) -> dict[str, str]:
    import onnxmltools

    return {
        "framework": module.__name__,
        "framework_version": str(module.__version__),
        "converter": "onnxmltools",
        "converter_version": str(onnxmltools.__version__),
        "estimator": estimator,
    }
