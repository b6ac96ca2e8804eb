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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from graphql import GraphQLError, get_operation_ast
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.util.types import AttributeValue
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from gateway.api.context import GatewayContext, header_map
from gateway.errors import GatewayError
from gateway.observability import CODE_ATTRIBUTE, MODELS_ATTRIBUTE

__all__ = ["MAX_NAME_LENGTH", "OperationObserver", "OperationRecord", "outcome"]

access_log = logging.getLogger("gateway.access")

#: Longest document recorded on a span when documents are recorded at all.
_MAX_DOCUMENT = 4096
#: Longest operation name in a span name, an access line or a metric label; longer names
#: are cut (a name is one token of any length: the documents' limits do not bound it).
MAX_NAME_LENGTH = 100


_propagation: tuple[TextMapPropagator, frozenset[str]] | None = None


def _caller_context(headers: Mapping[str, str]) -> otel_context.Context | None:
    """The caller's trace context, read by the configured propagators (W3C ``traceparent`` and
    ``baggage`` by default), or None when the request carries none of their headers."""
    global _propagation
    propagator = propagate.get_global_textmap()
    if _propagation is None or _propagation[0] is not propagator:
        _propagation = (propagator, frozenset(propagator.fields))
    if not any(name in headers for name in _propagation[1]):
        return None
    return propagate.extract(headers)


class OperationRecord:
    """The span, metrics and access-log line of one operation, whichever path executes it."""

    def __init__(self, ctx: GatewayContext) -> None:
        self._ctx = ctx
        observer = ctx.runtime.observer
        self._started = time.perf_counter()
        self.span: trace.Span = trace.INVALID_SPAN
        self._token: Any = None
        if observer.tracing:
            scope = getattr(ctx.request, "scope", None)
            parent = _caller_context(header_map(scope)) if scope is not None else None
            self.span = observer.tracer.start_span(
                "GraphQL Operation", context=parent, kind=trace.SpanKind.SERVER
            )
            self._token = otel_context.attach(trace.set_span_in_context(self.span))

    def finish(
        self, op_type: str | None, op_name: str | None, query: str | None, code: str
    ) -> None:
        """Name and close the span, record the metric, write the access line.

        ``op_name`` must be the name of the operation in the parsed document (never the
        request's ``operationName`` as sent): it is cut to ``MAX_NAME_LENGTH`` here, and only
        the first distinct names get a metric label of their own (``Observer.operation_label``).
        """
        ctx, span = self._ctx, self.span
        observer = ctx.runtime.observer
        if op_name is not None and len(op_name) > MAX_NAME_LENGTH:
            op_name = op_name[:MAX_NAME_LENGTH]
        name = f"{op_type} {op_name}" if op_name else (op_type or "GraphQL Operation")
        duration = time.perf_counter() - self._started
        observer.instruments.request_duration.record(
            duration,
            {
                "graphql.operation.type": op_type or "unknown",
                "graphql.operation.name": observer.operation_label(op_name),
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
        if observer.tracing:  # last: the access line above still belongs to the trace
            self._close_span(span, name, op_type, op_name, query, code)

    def _close_span(
        self,
        span: trace.Span,
        name: str,
        op_type: str | None,
        op_name: str | None,
        query: str | None,
        code: str,
    ) -> None:
        ctx, observer = self._ctx, self._ctx.runtime.observer
        span.update_name(name)
        attributes: dict[str, AttributeValue] = {}
        if op_type:
            attributes["graphql.operation.type"] = op_type
        if op_name:
            attributes["graphql.operation.name"] = op_name
        if observer.record_document and query:
            attributes["graphql.document"] = query[:_MAX_DOCUMENT]
        if ctx.models:
            attributes[MODELS_ATTRIBUTE] = sorted(ctx.models)
        span.set_attributes(attributes)
        if code != "OK":
            span.set_attribute(CODE_ATTRIBUTE, code)
            span.set_status(trace.Status(trace.StatusCode.ERROR, code))
        otel_context.detach(self._token)
        span.end()

    def extensions(self) -> dict[str, Any]:
        """The response ``extensions``: the trace id, when the trace is recorded."""
        context = self.span.get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return {}
        return {"traceId": trace.format_trace_id(context.trace_id)}


def outcome(errors: Sequence[GraphQLError] | None) -> str:
    """``OK``, or the code of the first error."""
    if not errors:
        return "OK"
    return str((errors[0].extensions or {}).get("code", "INTERNAL_SERVER_ERROR"))


def _failure_code(exc: Exception) -> str:
    """The code of an operation that ended in an exception instead of a result."""
    if isinstance(exc, GatewayError):
        return exc.code
    if isinstance(exc, MissingQueryError | CannotGetOperationTypeError | InvalidOperationTypeError):
        return "BAD_REQUEST"
    return "INTERNAL_SERVER_ERROR"


class OperationObserver(SchemaExtension):
    """Traces, measures and logs each operation (see the module docstring)."""

    _record: OperationRecord | None = None

    def on_operation(self) -> Iterator[None]:
        ctx = self.execution_context.context
        if not isinstance(ctx, GatewayContext):  # a schema executed outside the gateway
            yield
            return
        self._record = OperationRecord(ctx)
        failure: Exception | None = None
        try:
            yield
        except Exception as exc:
            # Raised through the operation: Strawberry's view answers the request without a
            # result (an operation name the document lacks, a mutation over GET: HTTP 400).
            failure = exc
            raise
        finally:
            op_type, op_name = self._operation()
            errors = getattr(self.execution_context.result, "errors", None)
            code = outcome(errors) if failure is None else _failure_code(failure)
            self._record.finish(op_type, op_name, self.execution_context.query, code)

    def get_results(self) -> dict[str, Any]:
        return self._record.extensions() if self._record is not None else {}

    def _operation(self) -> tuple[str | None, str | None]:
        """The type and name of the operation the document holds, if it parsed and has the one
        asked for. Strawberry's ``operation_name`` is the request's ``operationName`` as sent,
        even when the document has no such operation: any text a client likes, which must not
        become a span name or a metric label."""
        ec = self.execution_context
        document = ec.graphql_document
        if document is None:  # it did not parse
            return None, None
        try:
            operation = get_operation_ast(document, ec.operation_name)
        except Exception:  # a name of another type than str
            operation = None
        if operation is None:
            return None, None
        name = operation.name.value if operation.name is not None else None
        return operation.operation.value, name
