"""Sample checks: rows with expected predictions in ``model.toml``, run before a version takes
traffic; a version that answers otherwise is FAILED (and the previous load keeps serving).

```toml
[[samples]]
input = { sepal_length = 5.1, sepal_width = 3.5, petal_length = 1.4, petal_width = 0.2 }
expect = { label = "setosa" }      # prediction fields; numbers within a tolerance
```

Numbers match within ``REL_TOLERANCE`` of the expected value, or ``ABS_TOLERANCE`` near zero (a
regression's float32 answer differs from the float64 original's in the last digits). A list of
numbers (an output of several values per row) matches element by element.

Inputs are named like ``[example]`` (feature or GraphQL field names); the expected values use
the prediction type's GraphQL field names (``label``, an output's field...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gateway.errors import ConfigError, GatewayError, ModelLoadError
from gateway.repository import ModelConfig
from gateway.signature import Signature
from gateway.typed import TypedModel, build_typed_model

__all__ = ["ABS_TOLERANCE", "REL_TOLERANCE", "check_samples", "matches"]

REL_TOLERANCE = 1e-4
ABS_TOLERANCE = 1e-5

Run = Callable[[Mapping[str, np.ndarray], tuple[str, ...]], Mapping[str, np.ndarray]]


def check_samples(model: str, signature: Signature, config: ModelConfig, run: Run) -> None:
    """Run each sample and compare its prediction with the expected values.

    Raises:
        ModelLoadError: a sample cannot run or its prediction differs (the reason says how).
    """
    if not config.samples:
        return
    try:
        typed = build_typed_model(model, signature, config)
    except ConfigError as exc:
        raise ModelLoadError(f"samples need the model's typed view: {exc.message}") from exc
    for number, sample in enumerate(config.samples, start=1):
        row = _row(typed, sample.input, number)
        try:
            outputs = run(typed.feeds([row]), typed.output_names)
            (predicted,) = typed.predictions(outputs, 1)
        except GatewayError as exc:
            raise ModelLoadError(f"sample {number} failed to run: {exc.message}") from exc
        for name, expected in sample.expect.items():
            if name not in predicted:
                known = ", ".join(sorted(predicted))
                raise ModelLoadError(
                    f"sample {number}: no prediction field {name!r}; fields: {known}"
                )
            got = _plain(predicted[name])
            if not matches(got, expected):
                raise ModelLoadError(
                    f"sample {number}: expected {name} = {expected!r}, the model answered "
                    f"{got!r}; not loaded"
                )


def _row(typed: TypedModel, values: Mapping[str, Any], number: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for f in typed.inputs:
        for key in (f.source, f.graphql):
            if key in values:
                row[f.graphql] = values[key]
                break
        else:
            raise ModelLoadError(f"sample {number}: no value for input {f.source!r}")
    return row


def _plain(value: Any) -> Any:
    """Prediction values as TOML spells them: class probabilities as a table."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return {str(k): v for k, v in value}
    return value


def matches(got: Any, expected: Any) -> bool:
    """Whether a prediction value matches an expected one (numbers within the tolerances)."""
    if isinstance(expected, float) or (isinstance(got, float) and isinstance(expected, int)):
        return isinstance(got, int | float) and math.isclose(
            got, expected, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE
        )
    if isinstance(expected, list):
        return (
            isinstance(got, list)
            and len(got) == len(expected)
            and all(matches(g, e) for g, e in zip(got, expected, strict=True))
        )
    if isinstance(expected, dict):
        return isinstance(got, dict) and all(
            k in got and matches(got[k], v) for k, v in expected.items()
        )
    return bool(got == expected)
