"""``gateway convert``: a trained model becomes the next version of a repository model, checked
for parity with the original. This module converts scikit-learn models and is the family's
entry point: ``convert_sample`` reads samples, ``convert_check`` checks batching and parity,
``convert_toml`` writes model.toml, ``convert_write`` writes and loads the version;
``boosting`` (XGBoost, LightGBM) and ``pytorch`` build on them.

Steps: read the sample (CSV, Parquet, ``.npy`` or ``.npz``); load the model (joblib/pickle runs
code from the file, so only the ``--sklearn`` flag does it, never the server); convert it with
the converter made for it; run both on the sample and compare (max absolute and relative error
per output, label agreement); write ``<repo>/<name>/<version>/model.onnx`` and
``<repo>/<name>/model.toml`` with the feature names, class labels, the conversion's provenance
and parity figures, and summary statistics of the sample as a baseline for drift monitoring;
then load the written version the way the server does (samples checked), undoing the write if
it fails.

Inputs: an estimator fitted on a table of numeric columns (a DataFrame, or a plain array) takes
one float input ``[N, F]``, the column names as its features; one fitted on a table with text
columns (a ColumnTransformer with numeric and categorical columns) takes one input per column,
so its typed GraphQL input has one field per column with its own type. A text pipeline fitted
on a list of strings (a TfidfVectorizer first) takes one string input named after the column.

Needs the ``convert`` extra (scikit-learn, skl2onnx, pandas, pyarrow).
"""

from __future__ import annotations

import copy
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gateway.convert_check import ParityError, first_line
from gateway.convert_sample import Sample, feeds_for, read_sample
from gateway.convert_write import (
    Conversion,
    Source,
    check_name,
    next_version,
    require_file,
    write_atomically,
    write_version,
)
from gateway.errors import ConfigError
from gateway.progress import Progress

__all__ = [
    "STRING_NORMALIZER_LOCALE",
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
# "C" is the one locale every C++ runtime has. skl2onnx leaves the text vectorisers'
# StringNormalizer locale unset and ONNX Runtime then asks for en_US.UTF-8, which fails where
# that locale is not installed (the Docker image, most slim systems). It lowercases ASCII only.
STRING_NORMALIZER_LOCALE = "C"


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
        ConfigError: a missing or unreadable file, an invalid name, a model that cannot be
            converted or does not run on the sample.
        ParityError: the ONNX model's answers differ from the original's beyond ``tolerance``.
    """
    import joblib

    check_name(name)
    require_file(model_path, "--sklearn")
    progress = progress or Progress()
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    with progress.step(f"loading {model_path.name} (a pickle: runs its code)"):
        try:
            estimator = joblib.load(model_path)  # runs code from the file: the caller asked
        except Exception as exc:  # not a pickle, or one of classes this Python cannot import
            raise ConfigError(
                f"--sklearn {model_path}: not a model saved with joblib.dump or pickle "
                f"({first_line(exc)})"
            ) from exc
    source = sklearn_source(estimator, sample, progress=progress)
    return write_version(
        source, sample, repository, name, tolerance, description, labels=labels, progress=progress
    )


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
            estimator was fitted on named columns, else as a float matrix, or the text).
        initial_types: skl2onnx input types (default: see the module docstring).
        zipmap: keep skl2onnx's default probability output, a list of {class: probability}
            maps (the gateway serves it too, but cannot batch it); a dense tensor otherwise.
    """
    progress = progress or Progress()
    what = type(estimator).__name__
    named = initial_types is None and hasattr(estimator, "feature_names_in_")
    columns = [str(c) for c in estimator.feature_names_in_] if named else []
    table = sample.select(columns, what=f"{what} was fitted on") if named else sample
    options = _options(options or {})
    with progress.step(f"converting {what} with skl2onnx"):
        onnx_model, inputs, per_column = _convert(
            estimator, table, name or what, initial_types, options, named=named, zipmap=zipmap
        )
    with progress.step(f"running the original on {sample.rows} rows"):
        original = _predict(estimator, table, data, named=named)
    # Class names name the probability columns (skl2onnx's labels are the classes themselves):
    # a classifier without probabilities answers scores, not always one per class.
    classes = getattr(estimator, "classes_", []) if "probabilities" in original else []
    return Source(
        onnx_model,
        inputs,
        original,
        [str(c) for c in classes],
        {
            "framework": "scikit-learn",
            "framework_version": _version("scikit-learn"),
            "converter": "skl2onnx",
            "converter_version": _version("skl2onnx"),
            "estimator": what,
        },
        per_column=per_column,
        columns=list(table.columns) if initial_types is None else [],
    )


def _options(given: dict[Any, Any]) -> dict[Any, Any]:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    options = dict(given)
    for vectorizer in (CountVectorizer, TfidfVectorizer):
        options[vectorizer] = {"locale": STRING_NORMALIZER_LOCALE, **given.get(vectorizer, {})}
    return options


def _dense_probabilities(estimator: Any) -> dict[Any, Any]:
    """Options that switch ZipMap off for the classifiers in ``estimator`` (itself, or the
    steps of a pipeline): dense probabilities (or scores), which have a batch dimension; the
    default ZipMap, a list of maps, does not. A classifier whose converter has no ZipMap
    (LinearSVC) gets an empty entry, which keeps skl2onnx from giving it the option anyway."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter
    from sklearn.base import is_classifier

    # A pipeline's own entry would reach its last step whatever that takes: the steps' only.
    options: dict[Any, Any] = {}
    steps = _steps(estimator)
    for step in steps:
        if not is_classifier(step):
            continue
        alias = sklearn_operator_name_map.get(type(step))
        allowed = get_converter(alias).get_allowed_options() if alias else None
        takes = not isinstance(allowed, dict) or "zipmap" in allowed
        options[id(step)] = {"zipmap": False} if takes else {}
    return options


def _steps(estimator: Any) -> list[Any]:
    """The estimators of a pipeline, nested ones included; the estimator itself otherwise."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return [estimator]
    return [leaf for _, step in estimator.steps for leaf in _steps(step)]


def _convert(
    estimator: Any,
    table: Sample,
    name: str,
    types: list[tuple[str, Any]] | None,
    options: dict[Any, Any],
    *,
    named: bool,
    zipmap: bool,
) -> tuple[onnx.ModelProto, list[str], bool]:
    """The ONNX model, its input names, and whether it takes one input per column."""
    if not zipmap:
        options = {**options, **_dense_probabilities(estimator)}
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    if types is not None:
        return _skl2onnx(estimator, name, types, options), [t[0] for t in types], False
    width = len(table.columns)
    if named and not table.text:
        # Numbers only: one [N, F] input (skl2onnx's operators take one input; ColumnTransformer
        # selections by name become positions). Per column if that does not convert.
        single = [("input", FloatTensorType([None, width]))]
        positioned = _by_position(estimator)
        keyed = {**options, **(_dense_probabilities(positioned) if not zipmap else {})}
        try:
            return _skl2onnx(positioned, name, single, keyed), ["input"], False
        except ConfigError as exc:
            first = exc
        try:
            return _per_column(estimator, table, name, options)
        except ConfigError:
            raise first from None
    if named:
        return _per_column(estimator, table, name, options)
    if table.text and len(table.text) == width == 1 and table.tabular:
        # Text fitted as a list of strings: one string input named after its column.
        column = table.text[0]
        model = _skl2onnx(estimator, name, [(column, StringTensorType([None, 1]))], options)
        return model, [column], True
    if table.text:
        raise ConfigError(
            f"the sample mixes text ({', '.join(table.text)}) with other columns, and "
            f"{type(estimator).__name__} was fitted on a plain array: fit it on a DataFrame "
            "with named columns to get one input per column"
        )
    single = [("input", FloatTensorType([None, width]))]
    return _skl2onnx(estimator, name, single, options), ["input"], False


def _per_column(
    estimator: Any, table: Sample, name: str, options: dict[Any, Any]
) -> tuple[onnx.ModelProto, list[str], bool]:
    """One input per column: mixed types cannot share a tensor, and each becomes a typed
    GraphQL field of its own. skl2onnx makes names like "mean radius" into valid input names
    ("mean_radius"): the inputs are matched with the columns by position."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    types = [
        (
            column,
            StringTensorType([None, 1]) if column in table.text else FloatTensorType([None, 1]),
        )
        for column in table.columns
    ]
    model = _skl2onnx(estimator, name, types, options)
    inputs = [i.name for i in model.graph.input]
    if len(inputs) != len(types):
        raise ConfigError(f"skl2onnx made {len(inputs)} inputs of {len(types)} columns")
    return model, inputs, True


def _by_position(estimator: Any) -> Any:
    """A copy whose leading ColumnTransformer selects columns by position instead of by name,
    for a model that takes the table as one [N, F] input (the estimator itself if it has none
    or selects otherwise)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    first = estimator.steps[0][1] if isinstance(estimator, Pipeline) else estimator
    if not isinstance(first, ColumnTransformer):
        return estimator
    names = [str(c) for c in estimator.feature_names_in_]
    positioned = []
    for label, transformer, selected in first.transformers_:
        if isinstance(selected, str):
            selected = names.index(selected)
        elif isinstance(selected, list | tuple | np.ndarray) and all(
            isinstance(c, str) for c in selected
        ):
            selected = [names.index(c) for c in selected]
        positioned.append((label, transformer, selected))
    copied = copy.deepcopy(estimator)
    target = copied.steps[0][1] if isinstance(copied, Pipeline) else copied
    target.transformers_ = positioned
    return copied


def _skl2onnx(
    estimator: Any, name: str, types: list[tuple[str, Any]], options: dict[Any, Any]
) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn

    try:
        model: onnx.ModelProto = convert_sklearn(
            estimator, name=name, initial_types=types, target_opset=TARGET_OPSET, options=options
        )
    except Exception as exc:  # skl2onnx's own errors: an unsupported estimator or option
        raise ConfigError(
            f"skl2onnx could not convert {type(estimator).__name__}: {first_line(exc)}"
        ) from exc
    return model


def _predict(estimator: Any, table: Sample, data: Any, *, named: bool) -> dict[str, np.ndarray]:
    """The original's answers on the sample: its prediction as "label", and its class
    probabilities as "probabilities" when it has them."""
    if data is not None:
        candidates = [data]
    elif named:
        candidates = [table.frame()]
    elif table.text:
        text = np.column_stack([c.astype(str) for c in table.columns.values()]).astype(object)
        # A text vectoriser takes a list of strings, an encoder a column of them.
        candidates = [text[:, 0], text] if text.shape[1] == 1 else [text]
    else:
        candidates = [table.matrix()]
    for index, candidate in enumerate(candidates):
        try:
            original = {"label": np.asarray(estimator.predict(candidate))}
            if hasattr(estimator, "predict_proba"):
                original["probabilities"] = np.asarray(estimator.predict_proba(candidate))
            return original
        except Exception as exc:  # the estimator's own refusal: a category it never saw...
            if index == len(candidates) - 1:
                raise ConfigError(
                    "the original model fails on the sample, so nothing can be compared: "
                    f"{first_line(exc)}"
                ) from exc
    raise AssertionError("no candidate data")  # candidates is never empty


def _version(package: str) -> str:
    try:
        return installed_version(package)
    except PackageNotFoundError:
        return "unknown"
