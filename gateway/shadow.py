"""Shadow traffic: a share of a model's requests also runs on another version, whose answers
are compared with the served ones and discarded.

The served answer never waits for the shadow run (it starts after the answer is computed, in
the background). Outputs agree when every output has the same shape and, for floats, values
within ``rtol=1e-4, atol=1e-5`` (integers, strings and booleans: equal).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["Shadow", "outputs_agree"]


@dataclass(slots=True)
class Shadow:
    """Mirror ``share`` (0..1) of a model's requests to ``version``; the counts so far."""

    version: int
    share: float
    requests: int = 0
    agreed: int = 0
    #: Shadow runs that failed (the version not READY, the inputs not fitting it, an error).
    failed: int = 0
    seconds: float = 0.0

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


def outputs_agree(served: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray]) -> bool:
    """Whether the shadow's outputs match the served ones (see the module docstring)."""
    if served.keys() != shadow.keys():
        return False
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
