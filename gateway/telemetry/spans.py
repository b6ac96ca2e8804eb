"""A lean implementation of the OpenTelemetry tracing API: the spans the gateway exports.

Why not the SDK's ``TracerProvider``: with its OTLP exporter, one span costs about 70 µs of
Python (30 to create and end, 40 to encode), and a traced request has six; tracing every request
would halve the throughput of a single-row prediction. Here a span is a plain object that, when it
ends, is handed to the processors (the OTLP exporter's queue, the trace viewer's store); its
encoding is done later in a batch by ``gateway.telemetry.otlp``. Same API, same semantics where
the gateway uses them: samplers (the SDK's, asked for each root span and each span with a remote
parent; a local child keeps its parent's decision, which is what every standard sampler decides),
attribute value length limits, events, links, status, W3C trace state. Span names are cut at
``max_name_length`` too (they may carry client input).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

__all__ = [
    "DEFAULT_MAX_ATTRIBUTES",
    "DEFAULT_MAX_NAME_LENGTH",
    "UNSET",
    "Event",
    "LeanTracerProvider",
    "RecordedSpan",
    "SpanProcessor",
]

#: Attributes kept per span, event or link (the OpenTelemetry default); later ones are dropped.
DEFAULT_MAX_ATTRIBUTES = 128
#: Longest span name kept (longer ones are cut): names can carry client input, such as the
#: GraphQL operation's name, and OpenTelemetry sets no limit of its own.
DEFAULT_MAX_NAME_LENGTH = 256

#: The status of a span nobody set one on (shared: compare with ``is``).
UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_log = logging.getLogger(__name__)
_SCALARS = frozenset({int, float, bool})


class SpanProcessor(Protocol):
    """Receives every recorded span when it ends (called on the thread that ends it)."""

    def on_end(self, span: RecordedSpan) -> None: ...

    def force_flush(self, timeout_millis: int = 30000) -> bool: ...

    def shutdown(self) -> None: ...


class Event:
    """A span event: a named point in time with attributes."""

    __slots__ = ("attributes", "name", "timestamp")

    def __init__(self, name: str, timestamp: int, attributes: dict[str, AttributeValue]) -> None:
        self.name = name
        self.timestamp = timestamp
        self.attributes = attributes


class LeanTracerProvider(trace.TracerProvider):
    """Makes tracers whose spans go to ``processors`` (see the module docstring)."""

    def __init__(
        self,
        *,
        sampler: Sampler,
        processors: Sequence[SpanProcessor] = (),
        max_attribute_length: int | None = None,
        max_attributes: int = DEFAULT_MAX_ATTRIBUTES,
        max_name_length: int = DEFAULT_MAX_NAME_LENGTH,
    ) -> None:
        self.sampler = sampler
        self.processors = tuple(processors)
        self.max_attribute_length = max_attribute_length
        self.max_attributes = max_attributes
        self.max_name_length = max_name_length
        self._tracer = LeanTracer(self)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> trace.Tracer:
        # One instrumentation scope: the exporter names it (the gateway is the only user).
        return self._tracer

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(p.force_flush(timeout_millis) for p in self.processors)

    def shutdown(self) -> None:
        for processor in self.processors:
            processor.shutdown()

    def bound(self, value: AttributeValue) -> AttributeValue:
        """``value`` with strings cut to the length limit, sequences as tuples (hashable and
        immutable, as the SDK keeps them)."""
        if type(value) in _SCALARS:
            return value
        limit = self.max_attribute_length
        if isinstance(value, str):
            return value if limit is None else value[:limit]
        if isinstance(value, Sequence):
            if limit is None:
                return tuple(value)
            return tuple(v[:limit] if isinstance(v, str) else v for v in value)
        return value


class LeanTracer(trace.Tracer):
    """Starts ``RecordedSpan`` objects, or non-recording spans for unsampled traces."""

    def __init__(self, provider: LeanTracerProvider) -> None:
        self._provider = provider

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id = parent.trace_id
            trace_state = parent.trace_state
        else:
            trace_id = random.getrandbits(128) or 1
            trace_state = None
        if parent.is_valid and not parent.is_remote:
            sampled = parent.trace_flags.sampled
        else:
            result = self._provider.sampler.should_sample(
                context, trace_id, name, kind, attributes, links
            )
            sampled = result.decision is Decision.RECORD_AND_SAMPLE
            trace_state = result.trace_state
        span_id = random.getrandbits(64) or 1
        if len(name) > self._provider.max_name_length:
            name = name[: self._provider.max_name_length]
        if not sampled:
            return trace.NonRecordingSpan(
                SpanContext(trace_id, span_id, False, _UNSAMPLED, trace_state)
            )
        return RecordedSpan(
            self._provider,
            name,
            SpanContext(trace_id, span_id, False, _SAMPLED, trace_state),
            parent if parent.is_valid else None,
            kind,
            attributes,
            links,
            start_time or time.time_ns(),
        )

    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class RecordedSpan(trace.Span):
    """A sampled span: plain fields, read by the processors once it has ended."""

    __slots__ = (
        "_provider",
        "attributes",
        "context",
        "dropped_attributes",
        "end_time",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "start_time",
        "status",
    )

    def __init__(
        self,
        provider: LeanTracerProvider,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: Attributes,
        links: Sequence[Link] | None,
        start_time: int,
    ) -> None:
        self._provider = provider
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self.end_time: int | None = None
        self.dropped_attributes = 0
        self.events: list[Event] = []
        self.links: list[Link] = list(links) if links else []
        self.status = UNSET
        self.attributes: dict[str, AttributeValue] = {}
        if attributes:
            self.set_attributes(attributes)

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attributes(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self.end_time is not None:
            return
        mine, provider = self.attributes, self._provider
        bound, limit = provider.bound, provider.max_attributes
        for key, value in attributes.items():
            if len(mine) >= limit and key not in mine:
                self.dropped_attributes += 1
            else:
                mine[key] = value if type(value) in _SCALARS else bound(value)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        if self.end_time is not None:
            return
        if key not in self.attributes and len(self.attributes) >= self._provider.max_attributes:
            self.dropped_attributes += 1
            return
        self.attributes[key] = self._provider.bound(value)

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        if self.end_time is not None:
            return
        bounded = {k: self._provider.bound(v) for k, v in (attributes or {}).items()}
        self.events.append(Event(name, timestamp or time.time_ns(), bounded))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if self.end_time is None and context.is_valid:
            bounded = {k: self._provider.bound(v) for k, v in (attributes or {}).items()}
            self.links.append(Link(context, bounded or None))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name[: self._provider.max_name_length]

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # OK is final, as in the SDK
        if isinstance(status, StatusCode):
            status = Status(status, description)
        self.status = status

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The type only: messages may quote input values, which never go into spans.
        event: dict[str, AttributeValue] = {"exception.type": type(exception).__name__}
        self.add_event("exception", {**event, **(attributes or {})}, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        for processor in self._provider.processors:
            try:
                processor.on_end(self)
            except Exception:  # a processor's fault must never fail the request
                _log.exception("span processor %r failed", processor)
