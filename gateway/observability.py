"""The gateway's tracer and metric instruments, through the OpenTelemetry API only.

``Observer`` is handed to the runtime and reaches resolvers through the request context; with no
providers it is a no-op, which is what in-process tests and ``gateway check`` use. The providers
themselves are made in ``gateway.telemetry``.

Metric names follow the OpenTelemetry conventions (Prometheus names in brackets):

========================================  =========  ==============================================
graphql.server.request.duration           histogram  s; per operation type, name and outcome code
                                                     (graphql_server_request_duration_seconds);
                                                     names as the document has them, cut at 100
                                                     characters, the first N with a label of
                                                     their own, the rest as "other"
http.server.request.duration              histogram  s; per method, route, status code
http.server.active_requests               gauge      HTTP requests in flight (observed)
gateway.inference.duration                histogram  s; one ONNX Runtime run, per model, version
gateway.inference.batch_size              histogram  rows per run, per model, version (its sum:
                                                     the rows run)
gateway.inference.queue_wait              histogram  s; wait for a worker thread, per model
gateway.inference.queue_depth             gauge      runs waiting for a worker thread
gateway.model.load.duration               histogram  s; load and warm-up, per model, version, state
gateway.model.state                       gauge      1 for the state each version is in
gateway.shadow.requests                   counter    mirrored requests, per model, shadow version,
                                                     outcome (agreed, disagreed, error)
gateway.shadow.duration                   histogram  s; the shadow version's run
========================================  =========  ==============================================
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType

from opentelemetry import context, metrics, trace
from opentelemetry.util.types import AttributeValue

from gateway.errors import GatewayError

__all__ = [
    "CODE_ATTRIBUTE",
    "DEFAULT_OPERATION_NAMES",
    "MODELS_ATTRIBUTE",
    "MODEL_ATTRIBUTE",
    "OTHER_OPERATIONS",
    "VERSION_ATTRIBUTE",
    "Instruments",
    "Observer",
    "mark_failed",
]

MODEL_ATTRIBUTE = "gateway.model.name"
#: On the operation span: every model the operation used.
MODELS_ATTRIBUTE = "gateway.models"
VERSION_ATTRIBUTE = "gateway.model.version"
CODE_ATTRIBUTE = "gateway.error.code"

#: Distinct operation names with a metric label of their own, unless told otherwise.
DEFAULT_OPERATION_NAMES = 100
#: The metric label of the operations named after the first ``operation_names`` names.
OTHER_OPERATIONS = "other"

_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]


@dataclass(frozen=True, slots=True)
class Instruments:
    """Every synchronous metric instrument the gateway records."""

    request_duration: metrics.Histogram
    http_duration: metrics.Histogram
    inference_duration: metrics.Histogram
    batch_size: metrics.Histogram
    queue_wait: metrics.Histogram
    load_duration: metrics.Histogram
    shadow_requests: metrics.Counter
    shadow_duration: metrics.Histogram

    @classmethod
    def create(cls, meter: metrics.Meter) -> Instruments:
        """The instruments, made with ``meter``."""

        def seconds(name: str, description: str) -> metrics.Histogram:
            return meter.create_histogram(
                name,
                unit="s",
                description=description,
                explicit_bucket_boundaries_advisory=_SECONDS,
            )

        return cls(
            request_duration=seconds(
                "graphql.server.request.duration", "Duration of GraphQL operations."
            ),
            http_duration=seconds("http.server.request.duration", "Duration of HTTP requests."),
            inference_duration=seconds(
                "gateway.inference.duration", "Duration of one ONNX Runtime run."
            ),
            batch_size=meter.create_histogram(
                "gateway.inference.batch_size",
                unit="{row}",
                description="Rows per ONNX Runtime run.",
                explicit_bucket_boundaries_advisory=_ROWS,
            ),
            queue_wait=seconds(
                "gateway.inference.queue_wait", "Wait for a worker thread before a run."
            ),
            load_duration=seconds(
                "gateway.model.load.duration", "Load and warm-up of a model version."
            ),
            shadow_requests=meter.create_counter(
                "gateway.shadow.requests",
                unit="{request}",
                description="Requests mirrored to a shadow version, by outcome (agreed, "
                "disagreed, error).",
            ),
            shadow_duration=seconds(
                "gateway.shadow.duration", "Duration of a shadow version's run."
            ),
        )


class Observer:
    """The tracer, the meter and the instruments of one gateway."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        record_document: bool = False,
        min_step_us: int = 0,
        operation_names: int = DEFAULT_OPERATION_NAMES,
    ) -> None:
        tracer_provider = tracer_provider or trace.NoOpTracerProvider()
        meter_provider = meter_provider or metrics.NoOpMeterProvider()
        self.tracer = tracer_provider.get_tracer("gateway")
        #: False when spans go nowhere: the request path then skips them altogether.
        self.tracing = not isinstance(self.tracer, trace.NoOpTracer)
        self.meter = meter_provider.get_meter("gateway")
        self.instruments = Instruments.create(self.meter)
        #: Whether the operation span may carry the GraphQL document.
        self.record_document = record_document
        #: Leaf steps shorter than this are an attribute of their parent span, not a span.
        self.min_step_ns = min_step_us * 1000
        self._operation_names = operation_names
        self._labelled: set[str] = set()

    def operation_label(self, name: str | None) -> str:
        """The ``graphql.operation.name`` metric attribute of an operation named ``name``: the
        name itself for the first ``operation_names`` distinct names, ``other`` after them.

        Each distinct value is a series in /metrics for as long as the process lives (the
        exposition is cumulative: a series is never dropped), so the cap holds over the
        process's lifetime; the names that got a label keep it.
        """
        if not name:
            return ""
        labelled = self._labelled
        if name in labelled:
            return name
        if len(labelled) >= self._operation_names:
            return OTHER_OPERATIONS
        labelled.add(name)
        return name

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        current: bool = True,
    ) -> AbstractContextManager[trace.Span]:
        """A span around a step (a context manager giving the span); a failure sets its status
        and error code, never its message (messages may quote input values).

        ``current=False`` is for a leaf step, which starts no spans of its own and does not use
        the span it is given (a non-recording one): it is not made the current span, and when
        it ends sooner than ``min_step_ns`` without failing, its duration becomes an attribute
        of the current span (``<name>.duration_us``) instead of a span. Single-row requests
        then cost four spans instead of six: a span costs a few µs to record and export, about
        as much as decoding one row.
        """
        if not current and self.min_step_ns:
            return _LeafStep(self, name, attributes)
        return _Step(self, name, attributes, current)


class _Step:
    """``Observer.span``: a class rather than a generator, because it runs several times per
    request."""

    __slots__ = ("_attributes", "_current", "_name", "_observer", "_span", "_token")

    def __init__(
        self,
        observer: Observer,
        name: str,
        attributes: Mapping[str, AttributeValue] | None,
        current: bool,
    ) -> None:
        self._observer = observer
        self._name = name
        self._attributes = attributes
        self._current = current
        self._token: object = None
        self._span: trace.Span = trace.INVALID_SPAN

    def __enter__(self) -> trace.Span:
        observer = self._observer
        if not observer.tracing:
            return trace.INVALID_SPAN
        span = self._span = observer.tracer.start_span(self._name, attributes=self._attributes)
        if self._current:
            self._token = context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        span = self._span
        if span is trace.INVALID_SPAN:
            return
        if exc is not None and isinstance(exc, Exception):
            mark_failed(span, exc)
        if self._token is not None:
            context.detach(self._token)  # type: ignore[arg-type]
        span.end()


_DURATION_KEYS: dict[str, str] = {}


class _LeafStep:
    """A leaf step that becomes a span only if it is slow or fails (see ``Observer.span``)."""

    __slots__ = ("_attributes", "_name", "_observer", "_started")

    def __init__(
        self, observer: Observer, name: str, attributes: Mapping[str, AttributeValue] | None
    ) -> None:
        self._observer = observer
        self._name = name
        self._attributes = attributes
        self._started = 0

    def __enter__(self) -> trace.Span:
        if self._observer.tracing:
            self._started = time.time_ns()
        return trace.INVALID_SPAN

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        started = self._started
        if not started:
            return
        ended = time.time_ns()
        observer = self._observer
        if exc is None and ended - started < observer.min_step_ns:
            key = _DURATION_KEYS.get(self._name)
            if key is None:
                key = _DURATION_KEYS.setdefault(self._name, f"{self._name}.duration_us")
            trace.get_current_span().set_attribute(key, (ended - started) // 1000)
            return
        span = observer.tracer.start_span(
            self._name, attributes=self._attributes, start_time=started
        )
        if isinstance(exc, Exception):
            mark_failed(span, exc)
        span.end(end_time=ended)


def mark_failed(span: trace.Span, exc: BaseException) -> None:
    """Set ERROR status and the error code on ``span``."""
    code = exc.code if isinstance(exc, GatewayError) else "INTERNAL_SERVER_ERROR"
    span.set_attribute(CODE_ATTRIBUTE, code)
    span.set_status(trace.Status(trace.StatusCode.ERROR, code))
