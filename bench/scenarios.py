"""The scenarios: which servers answer which request, against which baseline, with what goal.

* ``tracing`` (the observability issue): the gateway on the bundled models answering the typed
  single-row iris query with tracing off (``OTEL_TRACES_SAMPLER=always_off``, the baseline) and
  on at 100% sampling, exporting OTLP/HTTP to the bench's own sink; both export metrics and write
  JSON logs, so only tracing differs. Goal: the
  ON/OFF ratio of requests per second is at least 0.90.
* ``iris-typed``: the same query on the gateway and on the minimal Strawberry baseline, and its
  JSON equivalent on the bare Starlette baseline (the baseline): what the GraphQL layer and the
  gateway's own machinery cost over the same ONNX Runtime call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Check
from bench.servers import ServerKind, ServerSpec

__all__ = [
    "IRIS_QUERY",
    "IRIS_ROW",
    "Scenario",
    "Target",
    "build_scenarios",
]

IRIS_ROW = (5.1, 3.5, 1.4, 0.2)
IRIS_QUERY = (
    "{ predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, "
    "petalWidth: 0.2}) { label probabilities { label probability } } } }"
)
_EXPECTED_LABEL = "setosa"
_CLASSES = 3


@dataclass(frozen=True)
class Target:
    """One server of a scenario and the request it is measured with."""

    name: str
    server: ServerSpec
    path: str
    body: bytes
    check: Check
    otlp: bool = False
    """Point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at the sink the bench starts for the scenario."""


@dataclass(frozen=True)
class Scenario:
    """Servers measured side by side in one run; ratios are taken against ``baseline``."""

    name: str
    description: str
    targets: tuple[Target, ...]
    baseline: str
    rows_per_request: int
    connections: int
    goal: float | None = None
    """The least ratio to the baseline each other target should reach, if there is a goal."""

    @property
    def uses_sink(self) -> bool:
        """Whether a target exports telemetry to the bench's OTLP sink."""
        return any(t.otlp for t in self.targets)


def build_scenarios(models: Path) -> dict[str, Scenario]:
    """Every scenario, by name, over the model repository ``models``."""
    graphql_body = json.dumps({"query": IRIS_QUERY}).encode()
    bare_body = json.dumps({"inputs": [list(IRIS_ROW)]}).encode()

    def graphql(name: str, kind: ServerKind, env: dict[str, str], *, otlp: bool = False) -> Target:
        spec = ServerSpec(kind, models, env)
        return Target(name, spec, "/graphql", graphql_body, _check_graphql_iris, otlp=otlp)

    # Only tracing differs: both export metrics to the sink and write JSON logs.
    tracing_off = {"OTEL_TRACES_SAMPLER": "always_off", "GATEWAY_LOG_FORMAT": "json"}
    tracing_on = {"OTEL_TRACES_SAMPLER": "always_on", "GATEWAY_LOG_FORMAT": "json"}
    scenarios = [
        Scenario(
            name="tracing",
            description="gateway, typed single-row iris query: tracing on (100% sampled, "
            "OTLP/HTTP export to a local sink) vs off (sampler always_off); both export metrics "
            "and write JSON logs",
            targets=(
                graphql("gateway tracing=off", "gateway", tracing_off, otlp=True),
                graphql("gateway tracing=on", "gateway", tracing_on, otlp=True),
            ),
            baseline="gateway tracing=off",
            rows_per_request=1,
            connections=32,
            goal=0.90,
        ),
        Scenario(
            name="iris-typed",
            description="typed single-row iris query on the gateway and on the minimal "
            "Strawberry baseline vs the same row as JSON on the bare Starlette baseline",
            targets=(
                Target("bare", ServerSpec("bare", models), "/predict", bare_body, _check_bare_iris),
                graphql("minimal-strawberry", "minimal-strawberry", {}),
                graphql("gateway", "gateway", {}),
            ),
            baseline="bare",
            rows_per_request=1,
            connections=32,
        ),
    ]
    return {s.name: s for s in scenarios}


def _check_graphql_iris(body: bytes) -> str | None:
    answer = _json(body)
    if not isinstance(answer, dict):
        return "not a JSON object"
    if answer.get("errors"):
        return "GraphQL errors"
    try:
        iris = answer["data"]["predict"]["iris"]
        return _check_prediction(iris["label"], iris["probabilities"])
    except (KeyError, TypeError):
        return "no data.predict.iris"


def _check_bare_iris(body: bytes) -> str | None:
    answer = _json(body)
    try:
        (prediction,) = answer["predictions"]
        return _check_prediction(prediction["label"], prediction["probabilities"])
    except (KeyError, TypeError, ValueError):
        return "not one prediction"


def _check_prediction(label: Any, probabilities: Any) -> str | None:
    if label != _EXPECTED_LABEL:
        return f"label {label!r}, expected {_EXPECTED_LABEL!r}"
    if not isinstance(probabilities, list) or len(probabilities) != _CLASSES:
        return f"expected {_CLASSES} class probabilities"
    total = sum(float(p["probability"]) for p in probabilities)
    return None if abs(total - 1.0) < 1e-3 else f"probabilities sum to {total}"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
