"""One SERVER span, one metric point and one access-log line per GraphQL operation.

A lean replacement for Strawberry's OpenTelemetryExtension, which records every resolver's
arguments and turns every field into a coroutine: here only the operation is wrapped, and the
resolvers that do work open their own spans (``gateway.predict``, ``gateway.infer``...). Names
and attributes follow the OpenTelemetry GraphQL conventions; the caller's W3C ``traceparent`` is
continued, and the trace id is returned in the response's ``extensions``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.util.types import AttributeValue
from strawberry.extensions import SchemaExtension

from gateway.api.context import GatewayContext
from gateway.observability import CODE_ATTRIBUTE, MODELS_ATTRIBUTE

__all__ = ["OperationObserver"]

access_log = logging.getLogger("gateway.access")

#: Longest document recorded on a span when documents are recorded at all.
_MAX_DOCUMENT = 4096


class OperationObserver(SchemaExtension):
    """Traces, measures and logs each operation (see the module docstring)."""

    _span: trace.Span | None = None

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context.context
        if not isinstance(ctx, GatewayContext):  # a schema executed outside the gateway
            yield
            return
        observer = ctx.runtime.observer
        headers = getattr(ctx.request, "headers", None)
        parent = propagate.extract(headers) if headers else None
        started = time.perf_counter()
        span = observer.tracer.start_span(
            "GraphQL Operation", context=parent, kind=trace.SpanKind.SERVER
        )
        self._span = span
        token = otel_context.attach(trace.set_span_in_context(span))
        observer.instruments.active_requests.add(1)
        try:
            yield
        finally:
            op_type, op_name = self._operation()
            code = self._outcome()
            name = f"{op_type} {op_name}" if op_name else (op_type or "GraphQL Operation")
            span.update_name(name)
            attributes: dict[str, AttributeValue] = {}
            if op_type:
                attributes["graphql.operation.type"] = op_type
            if op_name:
                attributes["graphql.operation.name"] = op_name
            if observer.record_document and self.execution_context.query:
                attributes["graphql.document"] = self.execution_context.query[:_MAX_DOCUMENT]
            if ctx.models:
                attributes[MODELS_ATTRIBUTE] = sorted(ctx.models)
            span.set_attributes(attributes)
            if code != "OK":
                span.set_attribute(CODE_ATTRIBUTE, code)
                span.set_status(trace.Status(trace.StatusCode.ERROR, code))
            duration = time.perf_counter() - started
            observer.instruments.active_requests.add(-1)
            observer.instruments.request_duration.record(
                duration,
                {
                    "graphql.operation.type": op_type or "unknown",
                    "graphql.operation.name": op_name or "",
                    "gateway.outcome": code,
                },
            )
            if ctx.settings.access_log:
                access_log.info(
                    "%s %s %.1f ms",
                    name,
                    code,
                    duration * 1000,
                    extra={
                        "operation": name,
                        "models": sorted(ctx.models),
                        "outcome": code,
                        "duration_ms": round(duration * 1000, 3),
                    },
                )
            otel_context.detach(token)
            span.end()

    def get_results(self) -> dict[str, Any]:
        context = self._span.get_span_context() if self._span is not None else None
        if context is None or not context.is_valid or not context.trace_flags.sampled:
            return {}
        return {"traceId": trace.format_trace_id(context.trace_id)}

    def _operation(self) -> tuple[str | None, str | None]:
        ec = self.execution_context
        try:
            op_type: str | None = ec.operation_type.value
        except Exception:  # the document did not parse, or names no operation
            op_type = None
        try:
            op_name = ec.operation_name
        except Exception:
            op_name = None
        return op_type, op_name

    def _outcome(self) -> str:
        result = self.execution_context.result
        errors: list[GraphQLError] = list(getattr(result, "errors", None) or ())
        if not errors:
            return "OK"
        codes = [str((e.extensions or {}).get("code", "INTERNAL_SERVER_ERROR")) for e in errors]
        return codes[0]
