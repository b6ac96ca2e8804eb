"""The ``model.toml`` that ``gateway convert`` writes: what the conversion knows (features,
labels, an example, a sample check, provenance, baseline statistics), merged into what the file
already says.

The sample check is the first sample row without a missing value, with the original's answers
on it as the gateway's typed API gives them: a classifier's label, every other output's
value(s) (up to ``MAX_EXPECTED_VALUES`` of them; the sample check compares numbers within its
tolerance).
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from typing import Any

import numpy as np

from gateway.convert_sample import Sample
from gateway.errors import ConfigError
from gateway.samples import matches
from gateway.typed import TypedModel

__all__ = ["MAX_EXPECTED_VALUES", "check_row", "config_text", "predicted_classes", "statistics"]

#: An output with more values per row than this (an image, an embedding) is left out of a
#: sample's expectation: model.toml would be mostly numbers.
MAX_EXPECTED_VALUES = 64
_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Beyond this many distinct values (or more distinct values than half the rows), a text column
#: is free text, summarised by length rather than by category.
_MAX_CATEGORIES = 100
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: model.toml keys that describe a conversion: rewritten by each one. Other keys (``[access]``,
#: ``[versions]``, ``[batching]``...) are kept, and so are a description, an example and samples
#: someone wrote.
_CONVERSION_KEYS = ("features", "labels", "conversion", "baseline")


def check_row(
    typed: TypedModel, sample: Sample, answers: dict[str, Any], converted: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The explorer's example and a ``[[samples]]`` check (also run as the warm-up: synthetic
    zeros and empty strings trip categorical encoders) from the first complete sample row.

    Args:
        answers: the outputs on the whole sample, by output name, the original's where it has
            them: the expected values.
        converted: the converted model's outputs: a number of the original's that the sample
            check would not match with the converted model's (a value near zero, within the
            parity tolerance of the largest value but not within the check's own) is expected
            as the converted model answers it.
    """
    row = sample.complete_row()
    values = {k: _plain(v[row]) for k, v in sample.columns.items()}
    # GraphQL has no NaN: the explorer's example leaves a missing value out (it shows zero).
    example = {k: v for k, v in values.items() if not _missing(v)}
    check: dict[str, Any] = {"input": values}
    expect = _expectation(typed, answers, row)
    own = _expectation(typed, {**answers, **converted}, row)
    for key, value in expect.items():
        # The label is the original's, always: a converted model that disagrees fails its check.
        if key != "label" and key in own and not matches(own[key], value):
            expect[key] = own[key]
    if expect:
        check["expect"] = expect
    return example, check


def _expectation(typed: TypedModel, answers: dict[str, Any], row: int) -> dict[str, Any]:
    outputs = {k: v[row : row + 1] for k, v in answers.items() if isinstance(v, np.ndarray)}
    if any(name not in outputs for name in typed.output_names):
        return {}
    (predicted,) = typed.predictions(outputs, 1)
    expect: dict[str, Any] = {}
    if typed.classifier is not None:
        expect["label"] = predicted["label"]
    for f in typed.outputs:
        value = predicted[f.graphql]
        # A non-finite answer is None in GraphQL, which TOML cannot spell: not expected.
        if np.asarray(value, dtype=object).size <= MAX_EXPECTED_VALUES and not _missing(value):
            expect[f.graphql] = value
    return expect


def predicted_classes(typed: TypedModel, answers: dict[str, Any], rows: int) -> list[str]:
    """The class each sample row is predicted, named as the gateway answers it."""
    return [p["label"] for p in typed.predictions(answers, rows)]


def statistics(sample: Sample, classes: list[str]) -> dict[str, Any]:
    """The baseline for drift monitoring: per feature its count, missing values and summary
    statistics of the others; the share of each predicted class."""
    features: dict[str, Any] = {}
    for name, column in sample.columns.items():
        if column.dtype == object:
            features[name] = _text_statistics(column.astype(str))
            continue
        # A tensor (an image...) is summarised over all its values: per-element statistics of
        # thousands of elements would drown the table.
        values = column.astype(np.float64)
        gaps = np.isnan(values)
        present = values[~gaps]
        # Missing: the rows with a missing value (NaN) anywhere in this feature.
        missing = int(gaps.reshape(len(column), -1).any(axis=1).sum())
        features[name] = {"count": len(column), "missing": missing}
        if present.size:
            features[name].update(_number_statistics(present))
        if column.ndim > 1:
            features[name]["shape"] = list(column.shape[1:])
    baseline: dict[str, Any] = {"rows": sample.rows, "features": features}
    if classes:
        names, counts = np.unique(classes, return_counts=True)
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


def config_text(
    existing: dict[str, Any],
    *,
    description: str | None,
    generated: str,
    features: list[str],
    labels: list[str],
    example: dict[str, Any],
    check: dict[str, Any],
    conversion: dict[str, Any],
    baseline: dict[str, Any],
    digest: tuple[int, str],
) -> str:
    """model.toml: what the conversion knows, merged into what the file already says. The
    serving keys come first; provenance and the baseline last (JSON values are valid TOML inline
    values). Comments in an existing file are not kept.

    Raises:
        ConfigError: the text would not read back (a bug: said rather than written).
    """
    config = {k: v for k, v in existing.items() if k not in _CONVERSION_KEYS}
    config["description"] = description or existing.get("description") or generated
    if features:
        config["features"] = features
    if labels:
        config["labels"] = labels
    config.setdefault("example", example)
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
    try:
        tomllib.loads(text)  # what is written must read back
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model.toml would not read back: {exc}") from exc
    return text


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{_key(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        # TOML spells these nan, inf and -inf (JSON's NaN and Infinity are not TOML).
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value)


def _missing(value: Any) -> bool:
    """Whether a value is or holds a missing one (NaN, or GraphQL's None for it)."""
    if isinstance(value, list):
        return any(_missing(v) for v in value)
    return value is None or (isinstance(value, float) and math.isnan(value))


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
