"""Reference figures measured inside the harness process, without any server or HTTP.

``iris_session_probe`` times ``session.run`` on one iris row with ``time.perf_counter``, on an
ONNX Runtime session made with the gateway's default options (one thread inside and across
operators, all graph optimisations, CPU provider) over the model the servers serve: the floor
under every server's latency. The runner calls a scenario's probe while its servers are idle,
with the harness thread moved to the servers' core, so that the figure comes from the same CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.load import percentile

__all__ = ["ProbeResult", "iris_session_probe", "time_calls"]

_WARMUP_CALLS = 50


@dataclass(frozen=True)
class ProbeResult:
    """Latency of ``calls`` back-to-back calls of one function in the harness process."""

    name: str
    calls: int
    p50_ms: float
    p99_ms: float
    core: int | None = None
    """The CPU the calls ran on, when the runner pinned them."""

    def to_json(self) -> dict[str, float | int | str | None]:
        """The fields, rounded, for machine output."""
        return {
            "name": self.name,
            "calls": self.calls,
            "p50_ms": round(self.p50_ms, 4),
            "p99_ms": round(self.p99_ms, 4),
            "core": self.core,
        }


def time_calls(name: str, call: Callable[[], object], calls: int) -> ProbeResult:
    """Call ``call`` a few times unrecorded, then ``calls`` times, each timed on its own."""
    if calls < 1:
        raise ValueError("calls must be at least 1")
    for _ in range(_WARMUP_CALLS):
        call()
    latencies: list[float] = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    latencies.sort()
    return ProbeResult(
        name, calls, percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    )


def iris_session_probe(
    models: Path, row: tuple[float, ...], *, calls: int = 2000
) -> Callable[[], ProbeResult]:
    """A probe timing ``session.run`` on ``row`` of the iris model the servers serve (the
    highest version in the repository ``models``)."""

    def probe() -> ProbeResult:
        from bench.baselines.common import find_iris, new_session

        session = new_session(find_iris(models)[0])
        feed = {session.get_inputs()[0].name: np.asarray([row], dtype=np.float32)}
        return time_calls(
            "onnxruntime in-process session.run", lambda: session.run(None, feed), calls
        )

    return probe
