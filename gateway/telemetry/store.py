"""An in-memory store of the last finished traces, for the built-in trace viewer.

A span processor of the lean tracer provider: every span that ends is kept under its trace; a
trace is listed once its local root span (no parent, or a remote parent from the caller's
``traceparent``) has ended. Only the newest ``capacity`` traces are kept, and at most
``max_spans`` spans of each (the others are counted: ``droppedSpans``). Names and attribute
values are the span's own, already bounded by the tracer provider's span limits.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

from gateway.telemetry.spans import RecordedSpan

__all__ = ["DEFAULT_MAX_SPANS", "TraceStore", "span_json"]

_MODEL_ATTRIBUTE = "gateway.model.name"
_MODELS_ATTRIBUTE = "gateway.models"
_CODE_ATTRIBUTE = "gateway.error.code"


#: Spans kept per trace unless told otherwise: a request makes a handful (an operation with
#: the most aliases a few hundred).
DEFAULT_MAX_SPANS = 512


class _Spans(list[RecordedSpan]):
    """The spans kept of one trace, and how many more there were."""

    dropped = 0


class TraceStore:
    """Keeps the newest ``capacity`` traces, at most ``max_spans`` spans each; thread-safe.

    A trace id is the caller's to choose (``traceparent``): requests that share one land in
    one trace, so without the cap a caller could grow a single trace without bound.
    """

    def __init__(self, capacity: int, *, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        self._capacity = capacity
        self._max_spans = max_spans
        self._lock = threading.Lock()
        self._pending: dict[int, _Spans] = {}
        self._done: OrderedDict[int, _Spans] = OrderedDict()

    def on_end(self, span: RecordedSpan) -> None:
        trace_id = span.context.trace_id
        is_root = span.parent is None or span.parent.is_remote
        with self._lock:
            spans = self._done.get(trace_id)  # a late span (e.g. a batch run) of a listed trace
            if spans is None:
                spans = self._pending.setdefault(trace_id, _Spans())
            if len(spans) < self._max_spans:
                spans.append(span)
            else:
                spans.dropped += 1
            if is_root and trace_id in self._pending:
                self._done[trace_id] = self._pending.pop(trace_id)
                while len(self._done) > self._capacity:
                    self._done.popitem(last=False)
            # Traces whose root never ends (cancelled requests) must not pile up.
            while len(self._pending) > self._capacity:
                self._pending.pop(next(iter(self._pending)))

    def shutdown(self) -> None:
        with self._lock:
            self._pending.clear()
            self._done.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def summaries(
        self, *, min_ms: float = 0.0, failed: bool = False, model: str | None = None
    ) -> list[dict[str, Any]]:
        """The kept traces, newest first, filtered; JSON-ready."""
        with self._lock:
            traces = [(list(spans), spans.dropped) for spans in reversed(self._done.values())]
        out = []
        for spans, dropped in traces:
            summary = _summary(spans, dropped)
            if summary["durationMs"] < min_ms or (failed and summary["status"] != "ERROR"):
                continue
            if model is not None and model not in summary["models"]:
                continue
            out.append(summary)
        return out

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace with all its spans, JSON-ready; None when it is not kept."""
        try:
            key = int(trace_id, 16)
        except ValueError:
            return None
        with self._lock:
            kept = self._done.get(key)
            spans, dropped = (list(kept), kept.dropped) if kept is not None else ([], 0)
        if not spans:
            return None
        return {**_summary(spans, dropped), "spans": [span_json(s) for s in _ordered(spans)]}


def _root(spans: Sequence[RecordedSpan]) -> RecordedSpan:
    roots = [s for s in spans if s.parent is None or s.parent.is_remote]
    return roots[0] if roots else min(spans, key=lambda s: s.start_time)


def _ordered(spans: Sequence[RecordedSpan]) -> list[RecordedSpan]:
    return sorted(spans, key=lambda s: s.start_time)


def _ms(start: int, end: int | None) -> float:
    return ((end or start) - start) / 1e6


def _summary(spans: Sequence[RecordedSpan], dropped: int) -> dict[str, Any]:
    root = _root(spans)
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    models: set[str] = set()
    for span in spans:
        for key in (_MODEL_ATTRIBUTE, _MODELS_ATTRIBUTE):
            value = (span.attributes or {}).get(key)
            if isinstance(value, str):
                models.add(value)
            elif isinstance(value, tuple | list):
                models.update(str(v) for v in value)
    codes = [
        str(s.attributes[_CODE_ATTRIBUTE])
        for s in failed
        if s.attributes and _CODE_ATTRIBUTE in s.attributes
    ]
    return {
        "traceId": format_trace_id(root.context.trace_id),
        "name": root.name,
        "startTime": root.start_time / 1e6,
        "durationMs": _ms(root.start_time, root.end_time),
        "status": "ERROR" if failed else "OK",
        "errorCode": codes[0] if codes else None,
        "models": sorted(models),
        "spanCount": len(spans),
        "droppedSpans": dropped,
    }


def span_json(span: RecordedSpan) -> dict[str, Any]:
    """One span, JSON-ready (as the viewer and the console exporter show it)."""
    parent = span.parent
    return {
        "traceId": format_trace_id(span.context.trace_id),
        "spanId": format_span_id(span.context.span_id),
        "parentSpanId": None
        if parent is None or parent.is_remote
        else format_span_id(parent.span_id),
        "name": span.name,
        "kind": span.kind.name,
        "startTime": span.start_time / 1e6,
        "durationMs": _ms(span.start_time, span.end_time),
        "status": span.status.status_code.name,
        "statusMessage": span.status.description,
        "attributes": {k: _value(v) for k, v in (span.attributes or {}).items()},
        "events": [
            {
                "name": e.name,
                "time": e.timestamp / 1e6,
                "attributes": {k: _value(v) for k, v in (e.attributes or {}).items()},
            }
            for e in span.events
        ],
        "links": [
            {
                "traceId": format_trace_id(link.context.trace_id),
                "spanId": format_span_id(link.context.span_id),
            }
            for link in span.links
        ],
    }


def _value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
