"""XGBoost and LightGBM models for ``gateway convert``, from their native model files (no pickle:
XGBoost's ``save_model`` JSON/UBJSON, LightGBM's text format), converted with onnxmltools.

Classification or regression comes from the model's objective; classes are named by index
unless ``--labels`` names them. The model takes the sample's columns as one float input
``[N, F]``, in order.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gateway.convert import Conversion, Sample, Source, read_sample, write_version
from gateway.errors import ConfigError
from gateway.progress import Progress

__all__ = ["convert_boosting_file"]

# onnxmltools converts up to opset 15 (and ai.onnx.ml 2 or 3).
_OPSET = 15


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
        ParityError: the ONNX model's answers differ from the original's beyond ``tolerance``.
    """
    progress = progress or Progress()
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    matrix = sample.matrix().astype(np.float32)
    with (
        progress.step(f"converting {model_path.name} with onnxmltools"),
        warnings.catch_warnings(),  # the converters' deprecation chatter
    ):
        warnings.simplefilter("ignore")
        if framework == "xgboost":
            source = _xgboost(model_path, sample, matrix)
        elif framework == "lightgbm":
            source = _lightgbm(model_path, sample, matrix)
        else:
            raise ConfigError(f"unknown framework {framework!r}: expected xgboost or lightgbm")
    return write_version(
        source, sample, repository, name, tolerance, description, labels=labels, progress=progress
    )


def _float_input(sample: Sample) -> list[tuple[str, Any]]:
    from onnxmltools.convert.common.data_types import FloatTensorType

    return [("input", FloatTensorType([None, len(sample.columns)]))]


def _xgboost(path: Path, sample: Sample, matrix: np.ndarray) -> Source:
    import xgboost
    from onnxmltools import convert_xgboost

    booster = xgboost.Booster(model_file=str(path))
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    classifier = objective.startswith(("binary:", "multi:"))
    model = xgboost.XGBClassifier() if classifier else xgboost.XGBRegressor()
    model.load_model(str(path))
    onnx_model = convert_xgboost(model, initial_types=_float_input(sample), target_opset=_OPSET)
    original = {"label": np.asarray(model.predict(matrix))}
    if classifier:
        original["probabilities"] = np.asarray(model.predict_proba(matrix))
    provenance = _provenance(xgboost, type(model).__name__ + f" ({objective})")
    return Source(onnx_model, ["input"], original, [], provenance)


def _lightgbm(path: Path, sample: Sample, matrix: np.ndarray) -> Source:
    import lightgbm
    from onnxmltools import convert_lightgbm

    booster = lightgbm.Booster(model_file=str(path))
    objective = str(booster.dump_model()["objective"]).split()[0]
    onnx_model = convert_lightgbm(
        booster, initial_types=_float_input(sample), target_opset=_OPSET, zipmap=False
    )
    raw = np.asarray(booster.predict(matrix))
    if objective in ("binary", "multiclass", "multiclassova"):
        probabilities = raw if raw.ndim == 2 else np.column_stack([1 - raw, raw])
        original = {"label": probabilities.argmax(axis=1), "probabilities": probabilities}
    else:
        original = {"label": raw}
    provenance = _provenance(lightgbm, f"Booster ({objective})")
    return Source(onnx_model, ["input"], original, [], provenance)


def _provenance(module: Any, estimator: str) -> dict[str, str]:
    import onnxmltools

    return {
        "framework": module.__name__,
        "framework_version": str(module.__version__),
        "converter": "onnxmltools",
        "converter_version": str(onnxmltools.__version__),
        "estimator": estimator,
    }
