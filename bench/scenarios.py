"""The scenarios: which servers answer which request, against which baseline, with what goals.

* ``tracing`` (the observability issue): the gateway on the bundled models answering the typed
  single-row iris query with tracing off (``OTEL_TRACES_SAMPLER=always_off``, the baseline) and
  on at 100% sampling, exporting OTLP/HTTP to the bench's own sink; both export metrics and write
  JSON logs, so only tracing differs. Goal: on/off req/s >= 0.90. For reference, the same with
  no tracer provider at all (``OTEL_TRACES_EXPORTER=none``): what the sampler's own work costs.
* The performance issue's scenarios, each against the bare Starlette + ONNX Runtime baseline:

  - ``iris-typed``: the typed single-row iris query on the gateway and on the minimal Strawberry
    baseline. Goals: gateway/bare >= 0.5 and gateway/minimal-strawberry >= 10.
  - ``iris-persisted``: the same query sent as an automatic persisted query (hash only; the
    server is sent the query with its hash once before the run). Goal: >= 0.7.
  - ``iris-256``: 256 rows per request: ``irisBatch`` (goal >= 0.5 of bare's rows/s), and
    ``infer`` with the rows as a ``[256, 4]`` tensor in JSON ``data`` and in ``b64`` (goals
    >= 1.0).
  - ``dense``: one row per request of a 512-1536-1536-1536-10 MLP (``bench/dense.py``) from 32
    clients: the gateway batches concurrent requests, bare runs each on its own. Goals:
    gateway rows/s >= 2.5x bare, gateway p99 <= 2x bare p99.
  - ``infer-b64``: generic ``infer`` with one iris row as a base64 tensor, outputs as ``b64``.
  - ``latency``: one connection; gateway p50 <= bare p50 + 0.3 ms; and, for reference, the p50
    of ``session.run`` on one row in the harness process.

* ``swap`` (the model lifecycle issue): the typed iris query on a gateway whose iris version is
  republished every 0.5 s and hot-reloaded under load, against the same gateway without
  publishes. Goal: p99 with swaps <= 1.5x p99 without.

The single-row iris query is a literal document, as a client with a fixed query sends it. The
bigger payloads (256 rows, 512 floats, tensors) travel as GraphQL variables, as a client with
changing data sends them: a literal would be compiled once with its arguments coerced, so the
gateway would skip decoding the very payload the baseline decodes on every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bench.dense import DENSE_INPUT, DENSE_MODEL, DENSE_OUTPUT, dense_row, write_dense_repository
from bench.inprocess import ProbeResult, iris_session_probe
from bench.load import Check
from bench.servers import ServerKind, ServerSpec
from bench.swap import Swapper, copy_model

__all__ = [
    "IRIS_BATCH_ROWS",
    "IRIS_QUERY",
    "IRIS_ROW",
    "Goal",
    "GoalMetric",
    "Scenario",
    "Target",
    "build_scenarios",
    "iris_batch_rows",
]

IRIS_ROW = (5.1, 3.5, 1.4, 0.2)
IRIS_QUERY = (
    "{ predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, "
    "petalWidth: 0.2}) { label probabilities { label probability } } } }"
)
IRIS_BATCH_ROWS = 256
IRIS_BATCH_QUERY = (
    "query IrisBatch($rows: [IrisInput!]!) { predict { irisBatch(inputs: $rows) "
    "{ label probabilities { label probability } } } }"
)
INFER_DATA_QUERY = (
    'query Infer($inputs: [TensorInput!]!) { infer(model: "iris", inputs: $inputs) '
    "{ outputs { name data } } }"
)
INFER_B64_QUERY = (
    'query Infer($inputs: [TensorInput!]!) { infer(model: "iris", inputs: $inputs) '
    "{ outputs { name b64 } } }"
)
DENSE_QUERY = (
    f"query Dense(${DENSE_INPUT}: [Float!]!) {{ predict {{ {DENSE_MODEL}(input: "
    f"{{{DENSE_INPUT}: ${DENSE_INPUT}}}) {{ {DENSE_OUTPUT} }} }} }}"
)
_IRIS_INPUT = "float_input"
_IRIS_LABEL_OUTPUT = "output_label"
_IRIS_PROBABILITY_OUTPUT = "output_probability"
_IRIS_FIELDS = ("sepalLength", "sepalWidth", "petalLength", "petalWidth")
_IRIS_PROTOTYPES = ((5.0, 3.4, 1.5, 0.2), (5.9, 2.8, 4.3, 1.3), (6.6, 3.0, 5.6, 2.1))
_IRIS_SEED = 7
_CLASSES = 3
_DENSE_CONNECTIONS = 32
# 8 x 256 rows in flight = the gateway's default max_queue (2048 rows): with more connections
# the closed loop would overfill the queue and most requests would be answered OVERLOADED.
# Requests of 256 rows exceed max_batch_size (64) and run alone anyway: 8 keep one core busy.
_IRIS_BATCH_CONNECTIONS = 8
_PROBE_CALLS = 2000

GoalMetric = Literal["rps_ratio", "p99_ratio", "p50_diff_ms"]


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
    prime: bytes | None = None
    """A request sent once (and checked) before ``body``: e.g. registering a persisted query."""
    during: Callable[[], AbstractContextManager[object]] | None = field(default=None, compare=False)
    """Active while this target is under load (warm-up and rounds): e.g. model swaps."""


@dataclass(frozen=True)
class Goal:
    """A bound on one figure of ``target``, paired round by round with ``reference``'s.

    * ``rps_ratio``: target req/s / reference req/s >= ``bound`` (= rows/s ratio: every target
      of a scenario sends the same rows per request);
    * ``p99_ratio``: target p99 / reference p99 <= ``bound``;
    * ``p50_diff_ms``: target p50 - reference p50 <= ``bound`` milliseconds.

    The measured value is the median over rounds of the figure computed per round.
    """

    target: str
    metric: GoalMetric
    bound: float
    reference: str | None = None
    """The other server; None means the scenario's baseline."""

    @property
    def at_least(self) -> bool:
        """Whether the value must be at least ``bound`` (else at most)."""
        return self.metric == "rps_ratio"

    def describe(self, baseline: str) -> str:
        """E.g. ``gateway / bare req/s >= 0.50``."""
        reference = self.reference or baseline
        if self.metric == "rps_ratio":
            return f"{self.target} / {reference} req/s >= {self.bound:.2f}"
        if self.metric == "p99_ratio":
            return f"{self.target} / {reference} p99 <= {self.bound:.2f}"
        return f"{self.target} p50 - {reference} p50 <= {self.bound:.2f} ms"


@dataclass(frozen=True)
class Scenario:
    """Servers measured side by side in one run; ratios are taken against ``baseline``."""

    name: str
    description: str
    targets: tuple[Target, ...]
    baseline: str
    rows_per_request: int
    connections: int
    goals: tuple[Goal, ...] = ()
    prepare: Callable[[], None] | None = field(default=None, compare=False)
    """Run before the servers start (e.g. write the model repository they serve)."""
    probe: Callable[[], ProbeResult] | None = field(default=None, compare=False)
    """A reference figure measured in the harness process while the servers are idle."""

    @property
    def uses_sink(self) -> bool:
        """Whether a target exports telemetry to the bench's OTLP sink."""
        return any(t.otlp for t in self.targets)


def build_scenarios(models: Path, scratch: Path | None = None) -> dict[str, Scenario]:
    """Every scenario, by name, over the model repository ``models``.

    ``scratch`` is a directory the run owns: the ``dense`` scenario writes its model repository
    there when it starts (nothing is written when it does not run). Without it, the ``dense``
    scenario is left out.
    """
    iris = _IrisReference(models)
    graphql_body = _graphql(IRIS_QUERY)
    bare_body = json.dumps({"inputs": [list(IRIS_ROW)]}).encode()

    def graphql(name: str, kind: ServerKind, env: dict[str, str], *, otlp: bool = False) -> Target:
        spec = ServerSpec(kind, models, env)
        return Target(name, spec, "/graphql", graphql_body, _check_graphql_iris, otlp=otlp)

    def bare(body: bytes = bare_body, check: Check = _check_bare_iris) -> Target:
        return Target("bare", ServerSpec("bare", models), "/predict", body, check)

    # Only tracing differs: both export metrics to the sink and write JSON logs.
    tracing_off = {"OTEL_TRACES_SAMPLER": "always_off", "GATEWAY_LOG_FORMAT": "json"}
    tracing_on = {"OTEL_TRACES_SAMPLER": "always_on", "GATEWAY_LOG_FORMAT": "json"}
    # For reference: no tracer provider at all (metrics still exported, logs the same).
    no_tracing = {"OTEL_TRACES_EXPORTER": "none", "GATEWAY_LOG_FORMAT": "json"}

    digest = hashlib.sha256(IRIS_QUERY.encode()).hexdigest()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    persisted = Target(
        "gateway persisted",
        ServerSpec("gateway", models),
        "/graphql",
        json.dumps({"extensions": apq}).encode(),
        _check_graphql_iris,
        prime=json.dumps({"query": IRIS_QUERY, "extensions": apq}).encode(),
    )

    rows = iris_batch_rows(IRIS_BATCH_ROWS)
    flat = [v for row in rows for v in row]
    tensor = {"name": _IRIS_INPUT, "shape": [IRIS_BATCH_ROWS, 4]}
    batch_targets = (
        bare(json.dumps({"inputs": rows}).encode(), iris.check_bare(rows)),
        Target(
            "gateway irisBatch",
            ServerSpec("gateway", models),
            "/graphql",
            _graphql(
                IRIS_BATCH_QUERY, rows=[dict(zip(_IRIS_FIELDS, r, strict=True)) for r in rows]
            ),
            iris.check_graphql_batch(rows),
        ),
        Target(
            "gateway infer data",
            ServerSpec("gateway", models),
            "/graphql",
            _graphql(INFER_DATA_QUERY, inputs=[{**tensor, "data": flat}]),
            iris.check_infer(rows),
        ),
        Target(
            "gateway infer b64",
            ServerSpec("gateway", models),
            "/graphql",
            _graphql(INFER_B64_QUERY, inputs=[{**tensor, "b64": _b64_f32(flat)}]),
            iris.check_infer(rows),
        ),
    )
    single_b64 = {"name": _IRIS_INPUT, "shape": [1, 4], "b64": _b64_f32(IRIS_ROW)}

    scenarios = [
        Scenario(
            name="tracing",
            description="gateway, typed single-row iris query: tracing on (100% sampled, "
            "OTLP/HTTP export to a local sink) vs off (sampler always_off); both export metrics "
            "and write JSON logs",
            targets=(
                graphql("gateway tracing=off", "gateway", tracing_off, otlp=True),
                graphql("gateway tracing=on", "gateway", tracing_on, otlp=True),
                graphql("gateway no tracer (reference)", "gateway", no_tracing, otlp=True),
            ),
            baseline="gateway tracing=off",
            rows_per_request=1,
            connections=32,
            goals=(Goal("gateway tracing=on", "rps_ratio", 0.90),),
        ),
        Scenario(
            name="iris-typed",
            description="typed single-row iris query on the gateway and on the minimal "
            "Strawberry baseline vs the same row as JSON on the bare Starlette baseline",
            targets=(
                bare(),
                graphql("minimal-strawberry", "minimal-strawberry", {}),
                graphql("gateway", "gateway", {}),
            ),
            baseline="bare",
            rows_per_request=1,
            connections=32,
            goals=(
                Goal("gateway", "rps_ratio", 0.5),
                Goal("gateway", "rps_ratio", 10.0, reference="minimal-strawberry"),
            ),
        ),
        Scenario(
            name="iris-persisted",
            description="the typed single-row iris query as an automatic persisted query "
            "(sha256 hash only, registered once before the run) and as the full query, vs bare",
            targets=(bare(), persisted, graphql("gateway query", "gateway", {})),
            baseline="bare",
            rows_per_request=1,
            connections=32,
            goals=(Goal("gateway persisted", "rps_ratio", 0.7),),
        ),
        Scenario(
            name="iris-256",
            description=f"{IRIS_BATCH_ROWS} iris rows per request: irisBatch with the rows as "
            f"a variable, infer with a [{IRIS_BATCH_ROWS}, 4] tensor as JSON data and as b64 "
            "(variables; outputs selected as data / b64), vs the rows as JSON on bare",
            targets=batch_targets,
            baseline="bare",
            rows_per_request=IRIS_BATCH_ROWS,
            connections=_IRIS_BATCH_CONNECTIONS,
            goals=(
                Goal("gateway irisBatch", "rps_ratio", 0.5),
                Goal("gateway infer data", "rps_ratio", 1.0),
                Goal("gateway infer b64", "rps_ratio", 1.0),
            ),
        ),
        Scenario(
            name="infer-b64",
            description="generic infer, one iris row as a base64 float32 tensor (a variable), "
            "outputs selected as b64, vs the row as JSON on bare",
            targets=(
                bare(),
                Target(
                    "gateway infer b64",
                    ServerSpec("gateway", models),
                    "/graphql",
                    _graphql(INFER_B64_QUERY, inputs=[single_b64]),
                    iris.check_infer([IRIS_ROW]),
                ),
            ),
            baseline="bare",
            rows_per_request=1,
            connections=32,
        ),
        Scenario(
            name="latency",
            description="one connection, typed single-row iris query vs the row as JSON on "
            "bare; reference: session.run on one row in the harness process "
            f"({_PROBE_CALLS} calls)",
            targets=(bare(), graphql("gateway", "gateway", {})),
            baseline="bare",
            rows_per_request=1,
            connections=1,
            goals=(Goal("gateway", "p50_diff_ms", 0.3),),
            probe=iris_session_probe(models, IRIS_ROW, calls=_PROBE_CALLS),
        ),
    ]
    if scratch is not None:
        scenarios.insert(4, _dense_scenario(scratch / "dense-models"))
        scenarios.append(_swap_scenario(models, scratch))
    return {s.name: s for s in scenarios}


_SWAP_INTERVAL = 0.5
_SWAP_ENV = {"GATEWAY_POLL_SECONDS": "0.1"}


def _swap_scenario(models: Path, scratch: Path) -> Scenario:
    """The typed iris query on two gateways polling their repositories every 0.1 s: one's
    iris version 2 is republished every 0.5 s (loaded, warmed up, swapped in), the other's
    never changes."""
    steady, swapping = scratch / "swap-steady", scratch / "swap-swapping"

    def prepare() -> None:
        for repository in (steady, swapping):
            copy_model(models, "iris", repository)

    swapper = Swapper(swapping / "iris" / "2" / "model.onnx", _SWAP_INTERVAL)
    body = _graphql(IRIS_QUERY)
    return Scenario(
        name="swap",
        description="typed single-row iris query; gateway swapping: its iris version 2 is "
        f"republished every {_SWAP_INTERVAL} s (write, then rename) and hot-reloaded while "
        "it answers; gateway steady: the same without publishes",
        targets=(
            Target(
                "gateway steady",
                ServerSpec("gateway", steady, _SWAP_ENV),
                "/graphql",
                body,
                _check_graphql_iris,
            ),
            Target(
                "gateway swapping",
                ServerSpec("gateway", swapping, _SWAP_ENV),
                "/graphql",
                body,
                _check_graphql_iris,
                during=lambda: swapper,
            ),
        ),
        baseline="gateway steady",
        rows_per_request=1,
        connections=32,
        goals=(Goal("gateway swapping", "p99_ratio", 1.5),),
        prepare=prepare,
    )


def _dense_scenario(repository: Path) -> Scenario:
    model = repository / DENSE_MODEL / "1" / "model.onnx"

    def prepare() -> None:
        if not model.is_file():
            write_dense_repository(repository)

    row = dense_row()
    reference = _DenseReference(model, row)
    return Scenario(
        name="dense",
        description="MLP 512-1536-1536-1536-10 (float32, seeded weights, built with "
        f"onnx.helper), one row per request from {_DENSE_CONNECTIONS} clients: typed query "
        "with the row as a variable, the gateway's dynamic batching on (defaults), vs bare "
        "/run/dense, one session.run per request; diagnostic, no goal: the row as a literal "
        "of the query (compiled once, no variable coercion per request)",
        targets=(
            Target(
                "bare",
                ServerSpec("bare", repository),
                f"/run/{DENSE_MODEL}",
                json.dumps({"inputs": [row]}).encode(),
                reference.check_bare,
            ),
            Target(
                "gateway",
                ServerSpec("gateway", repository),
                "/graphql",
                _graphql(DENSE_QUERY, **{DENSE_INPUT: row}),
                reference.check_graphql,
            ),
            # No goal: what the same request costs when the row is a literal of the document,
            # whose compiled plan keeps the coerced argument (no variable coercion per request).
            Target(
                "gateway literal row (diagnostic)",
                ServerSpec("gateway", repository),
                "/graphql",
                _graphql(_dense_literal_query(row)),
                reference.check_graphql,
            ),
        ),
        baseline="bare",
        rows_per_request=1,
        connections=_DENSE_CONNECTIONS,
        goals=(Goal("gateway", "rps_ratio", 2.5), Goal("gateway", "p99_ratio", 2.0)),
        prepare=prepare,
    )


def _dense_literal_query(row: Sequence[float]) -> str:
    argument = f"{{{DENSE_INPUT}: [{', '.join(repr(v) for v in row)}]}}"
    return f"{{ predict {{ {DENSE_MODEL}(input: {argument}) {{ {DENSE_OUTPUT} }} }} }}"


def iris_batch_rows(count: int, *, seed: int = _IRIS_SEED) -> list[list[float]]:
    """``count`` iris-like rows: the three species' prototypes in turn, plus seeded noise."""
    rng = np.random.default_rng(seed)
    prototypes = np.asarray(_IRIS_PROTOTYPES)
    rows = prototypes[np.arange(count) % len(prototypes)] + rng.normal(0, 0.15, (count, 4))
    return [[round(float(v), 1) for v in row] for row in rows]


def _graphql(query: str, **variables: Any) -> bytes:
    payload: dict[str, Any] = {"query": query}
    if variables:
        payload["variables"] = variables
    return json.dumps(payload).encode()


def _b64_f32(values: Sequence[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


class _IrisReference:
    """The right answers for iris rows: ONNX Runtime in this process, made on first use."""

    def __init__(self, models: Path) -> None:
        self._models = models
        self._labels: list[str] | None = None
        self._expected: dict[tuple[tuple[float, ...], ...], list[str]] = {}

    def expected(self, rows: Sequence[Sequence[float]]) -> tuple[list[str], list[str]]:
        """(label of each row, the model's labels in class order)."""
        from bench.baselines.common import find_iris, load_iris

        key = tuple(tuple(r) for r in rows)
        if key not in self._expected:
            model = load_iris(self._models)
            try:
                self._expected[key] = [p.label for p in model.predict_sync(rows)]
            finally:
                model.close()
        if self._labels is None:
            self._labels = find_iris(self._models)[1]
        return self._expected[key], self._labels

    def check_bare(self, rows: Sequence[Sequence[float]]) -> Check:
        def check(body: bytes) -> str | None:
            answer = _json(body)
            try:
                predictions = answer["predictions"]
                return self._compare(
                    rows, [(p["label"], p["probabilities"]) for p in predictions], "predictions"
                )
            except (KeyError, TypeError):
                return "no predictions"

        return check

    def check_graphql_batch(self, rows: Sequence[Sequence[float]]) -> Check:
        def check(body: bytes) -> str | None:
            answer = _json(body)
            if not isinstance(answer, dict) or answer.get("errors"):
                return "GraphQL errors or not a JSON object"
            try:
                batch = answer["data"]["predict"]["irisBatch"]
                return self._compare(
                    rows, [(p["label"], p["probabilities"]) for p in batch], "irisBatch"
                )
            except (KeyError, TypeError):
                return "no data.predict.irisBatch"

        return check

    def check_infer(self, rows: Sequence[Sequence[float]]) -> Check:
        def check(body: bytes) -> str | None:
            answer = _json(body)
            if not isinstance(answer, dict) or answer.get("errors"):
                return "GraphQL errors or not a JSON object"
            try:
                outputs = {o["name"]: o for o in answer["data"]["infer"]["outputs"]}
                labels = _tensor(outputs[_IRIS_LABEL_OUTPUT], "<i8")
                probabilities = _tensor(outputs[_IRIS_PROBABILITY_OUTPUT], "<f4")
            except (KeyError, TypeError, ValueError):
                return "no data.infer.outputs with output_label and output_probability"
            expected, names = self.expected(rows)
            if probabilities.size != len(rows) * _CLASSES:
                return f"expected {len(rows)} x {_CLASSES} probabilities"
            if [names[int(i)] for i in labels] != expected:
                return "labels differ from ONNX Runtime's"
            sums = probabilities.reshape(len(rows), _CLASSES).sum(axis=1)
            return None if np.allclose(sums, 1.0, atol=1e-3) else "probabilities do not sum to 1"

        return check

    def _compare(
        self, rows: Sequence[Sequence[float]], got: list[tuple[Any, Any]], what: str
    ) -> str | None:
        expected, _ = self.expected(rows)
        if len(got) != len(expected):
            return f"{len(got)} {what}, expected {len(expected)}"
        for i, ((label, probabilities), want) in enumerate(zip(got, expected, strict=True)):
            problem = _check_prediction(label, probabilities, want)
            if problem is not None:
                return f"row {i}: {problem}"
        return None


class _DenseReference:
    """The dense model's output for the scenario's row, from ONNX Runtime in this process."""

    def __init__(self, model: Path, row: list[float]) -> None:
        self._model = model
        self._row = row
        self._expected: np.ndarray[Any, Any] | None = None

    def expected(self) -> np.ndarray[Any, Any]:
        if self._expected is None:
            from bench.baselines.common import new_session

            session = new_session(self._model)
            feed = {DENSE_INPUT: np.asarray([self._row], dtype=np.float32)}
            self._expected = np.asarray(session.run([DENSE_OUTPUT], feed)[0][0])
        return self._expected

    def _compare(self, values: Any) -> str | None:
        try:
            got = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            return f"{DENSE_OUTPUT} is not a list of numbers"
        want = self.expected()
        if got.shape != want.shape:
            return f"{DENSE_OUTPUT} has shape {got.shape}, expected {want.shape}"
        if not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            return f"{DENSE_OUTPUT} differs from ONNX Runtime's"
        return None

    def check_bare(self, body: bytes) -> str | None:
        answer = _json(body)
        try:
            (row,) = answer["outputs"][DENSE_OUTPUT]
        except (KeyError, TypeError, ValueError):
            return f"not one row of outputs.{DENSE_OUTPUT}"
        return self._compare(row)

    def check_graphql(self, body: bytes) -> str | None:
        answer = _json(body)
        if not isinstance(answer, dict) or answer.get("errors"):
            return "GraphQL errors or not a JSON object"
        try:
            values = answer["data"]["predict"][DENSE_MODEL][DENSE_OUTPUT]
        except (KeyError, TypeError):
            return f"no data.predict.{DENSE_MODEL}.{DENSE_OUTPUT}"
        return self._compare(values)


def _tensor(output: dict[str, Any], dtype: str) -> np.ndarray[Any, Any]:
    """An ``infer`` output as a flat array, from its ``b64`` or its ``data``."""
    if output.get("b64") is not None:
        return np.frombuffer(base64.b64decode(output["b64"]), dtype=dtype)
    return np.asarray(output["data"], dtype=dtype)


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


def _check_prediction(label: Any, probabilities: Any, expected: str = "setosa") -> str | None:
    if label != expected:
        return f"label {label!r}, expected {expected!r}"
    if not isinstance(probabilities, list) or len(probabilities) != _CLASSES:
        return f"expected {_CLASSES} class probabilities"
    total = sum(float(p["probability"]) for p in probabilities)
    return None if abs(total - 1.0) < 1e-3 else f"probabilities sum to {total}"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
