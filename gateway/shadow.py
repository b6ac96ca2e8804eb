"""Shadow traffic: a share of a model's requests also runs on another version, whose answers
are compared with the served ones and discarded.

The served answer never waits for the shadow run (it starts after the answer is computed, in
the background). How answers are compared depends on the model:

* a classifier's (LABELS): they agree when every row's predicted label is the same. Two
  versions of a classifier (retrained, another estimator, another opset) rarely give the same
  probabilities to 1e-4, and the label is what a caller acts on. A request that does not ask
  for the label output (``infer`` with ``outputs``) is compared by values.
* any other model's (VALUES): every output has the same shape and, for floats, values within
  ``rtol=1e-4, atol=1e-5`` (integers, strings and booleans: equal).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from gateway.errors import ConfigError
from gateway.repository import ModelConfig
from gateway.signature import Signature
from gateway.typed import build_typed_model

__all__ = ["Shadow", "ShadowComparison", "label_output", "outputs_agree"]


class ShadowComparison(enum.Enum):
    """How a shadow's answers are compared with the served ones (see the module docstring)."""

    LABELS = "LABELS"
    VALUES = "VALUES"


@dataclass(slots=True)
class Shadow:
    """Mirror ``share`` (0..1) of a model's requests to ``version``; the counts so far."""

    version: int
    share: float
    #: A classifier's label output: answers agree when their labels do. None: by values.
    label_output: str | None = None
    requests: int = 0
    agreed: int = 0
    #: Shadow runs that failed (the version not READY, the inputs not fitting it, an error).
    failed: int = 0
    seconds: float = 0.0

    @property
    def comparison(self) -> ShadowComparison:
        """Whether answers are compared by label or by value."""
        return ShadowComparison.VALUES if self.label_output is None else ShadowComparison.LABELS

    @property
    def agreement(self) -> float | None:
        """Share of compared requests whose outputs agreed (None before the first)."""
        compared = self.requests - self.failed
        return self.agreed / compared if compared else None

    @property
    def mean_latency_ms(self) -> float | None:
        """Mean duration of the shadow runs that completed."""
        done = self.requests - self.failed
        return self.seconds / done * 1000 if done else None

    def record(self, *, agreed: bool | None, seconds: float) -> None:
        """Count one mirrored request (``agreed`` None: the shadow run failed)."""
        self.requests += 1
        if agreed is None:
            self.failed += 1
            return
        self.agreed += agreed
        self.seconds += seconds


def label_output(model: str, signature: Signature, config: ModelConfig) -> str | None:
    """The output holding a classifier's predicted labels, as its typed view reads it; None
    when the model is not a classifier (or has no typed view)."""
    try:
        typed = build_typed_model(model, signature, config)
    except ConfigError:
        return None
    return typed.classifier.label_output if typed.classifier is not None else None


def outputs_agree(
    served: Mapping[str, np.ndarray],
    shadow: Mapping[str, np.ndarray],
    *,
    label_output: str | None = None,
) -> bool:
    """Whether the shadow's outputs match the served ones: by the labels in ``label_output``
    when given and asked for, else by values (see the module docstring)."""
    if served.keys() != shadow.keys():
        return False
    if label_output is not None and label_output in served:
        labels, other = served[label_output], shadow[label_output]
        return labels.shape == other.shape and bool(np.array_equal(labels, other))
    for name, a in served.items():
        b = shadow[name]
        if a.shape != b.shape:
            return False
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            if not np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
        elif not np.array_equal(a, b):
            return False
    return True
