"""The lean request path: persisted queries, and compiled plans for operations seen before.

``FastPath.handle`` takes a decoded GraphQL-over-HTTP request body and either answers it (a
compiled query: no Strawberry view, no extension runner, no graphql-core executor) or returns
None, and the request goes to Strawberry unchanged. Both paths give the same answers: same data,
same errors and codes, same span, metrics and access line.

Automatic persisted queries follow Apollo's protocol: a client sends
``extensions.persistedQuery = {"version": 1, "sha256Hash": ...}`` without the query; an unknown
hash answers ``PERSISTED_QUERY_NOT_FOUND`` and the client resends with the query once. Over GET
(``?extensions={"persistedQuery":...}``) the same, for queries only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import ASTValidationRule, GraphQLError, parse, specified_rules, validate

from gateway.api.caches import BoundedCache, digest, document_size, refused
from gateway.api.context import GatewayContext
from gateway.api.execute import coerce_variables, execute_plan
from gateway.api.limits import (
    TOO_COMPLEX,
    QueryLimits,
    check_limits,
    document_too_large,
    too_many_tokens,
)
from gateway.api.observe import OperationRecord, outcome
from gateway.api.plan import OperationPlan, Unsupported, compile_operation
from gateway.api.schema import GatewaySchema
from gateway.api.variable_cost import check_variables
from gateway.security import format_errors

__all__ = ["FastPath", "FastResponse", "PersistedQueries", "persisted_get"]


@dataclass(slots=True)
class FastResponse:
    """An answer: the JSON body, the HTTP status and extra headers."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


#: Default of ``query_cache_bytes``: what each cache of queries may hold.
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
#: What the answers of refused documents may hold (a few thousand of them).
_REFUSALS_BYTES = 1024 * 1024


class PersistedQueries:
    """Query texts by sha256: the most recently used, at most ``capacity`` of them and
    ``max_bytes`` of text."""

    def __init__(self, capacity: int, *, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self._queries: BoundedCache[str] = BoundedCache(max_entries=capacity, max_bytes=max_bytes)

    def get(self, sha256: str) -> str | None:
        return self._queries.get(sha256.encode())

    def put(self, sha256: str, query: str) -> None:
        self._queries.put(sha256.encode(), query, len(query))


def _coded(message: str, code: str = TOO_COMPLEX) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}


def persisted_get(params: Mapping[str, str]) -> dict[str, Any] | None:
    """A GET request's parameters as a request body when they carry a persisted query (its
    ``extensions`` and ``variables`` are JSON text); None otherwise, and for text that is not
    JSON (the normal path answers those)."""
    raw = params.get("extensions")
    if not raw:
        return None
    try:
        extensions = orjson.loads(raw)
        variables = orjson.loads(params["variables"]) if params.get("variables") else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(extensions, dict) or "persistedQuery" not in extensions:
        return None
    payload: dict[str, Any] = {"extensions": extensions, "variables": variables}
    for key in ("query", "operationName"):
        if key in params:
            payload[key] = params[key]
    return payload


def _error(message: str, code: str, status: int = 200) -> FastResponse:
    return FastResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status)


class FastPath:
    """Compiled plans of one schema, and the persisted queries of the application."""

    def __init__(
        self,
        built: GatewaySchema,
        persisted: PersistedQueries,
        capacity: int,
        *,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        limits: QueryLimits | None = None,
        rules: Sequence[type[ASTValidationRule]] = (),
        plans: BoundedCache[object] | None = None,
    ) -> None:
        """The compiled path of ``built``.

        Args:
            capacity: most plans kept (with ``max_bytes``, their estimated memory).
            rules: validation rules beside graphql-core's and the query limits'.
            plans: the cache of plans (default: a new one, bounded as said).
        """
        self._built = built
        self._graphql_schema = built.schema._schema
        self._persisted = persisted
        self._limits = limits or QueryLimits()
        # Strawberry's order: graphql-core's rules, then the extensions' (introspection). The
        # limits are checked before, alone.
        self._rules = [*specified_rules, *rules]
        #: Compiled plans, and markers of the operations the normal executor takes, by digest
        #: of the document and operation name (see gateway.api.caches: bounded, no refusal).
        if plans is None:
            plans = BoundedCache(max_entries=capacity, max_bytes=max_bytes)
        self._plans = plans
        #: The answers of documents over the limits, by digest: the errors, never the document,
        #: and apart from the plans, which refused documents cannot push out. A client that
        #: repeats one pays a lookup; one that varies it pays its parse, as it would anyway.
        self._refused: BoundedCache[_Refusal] = BoundedCache(
            max_entries=capacity, max_bytes=_REFUSALS_BYTES
        )

    def resolve_persisted(self, payload: dict[str, Any]) -> FastResponse | None:
        """Apply the persisted-query protocol to ``payload`` in place: fill in or remember its
        query. Returns an error answer, or None to go on."""
        extensions = payload.get("extensions")
        persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
        if persisted is None:
            return None
        digest = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
        if not isinstance(digest, str) or persisted.get("version") != 1:
            return _error(
                "persistedQuery needs version 1 and a sha256Hash", "BAD_REQUEST", status=400
            )
        query = payload.get("query")
        if query is None:
            known = self._persisted.get(digest)
            if known is None:
                return _error("PersistedQueryNotFound", "PERSISTED_QUERY_NOT_FOUND")
            payload["query"] = known
            return None
        if not isinstance(query, str) or hashlib.sha256(query.encode()).hexdigest() != digest:
            return _error("provided sha256Hash does not match the query", "BAD_REQUEST", 400)
        problem = document_too_large(query, self._limits.max_query_bytes)
        if problem is not None:  # never kept
            return FastResponse({"data": None, "errors": [_coded(problem)]})
        self._persisted.put(digest, query)
        return None

    async def handle(self, payload: dict[str, Any], ctx: GatewayContext) -> FastResponse | None:
        """Answer a compiled query, or None when the normal path must take it."""
        query, name = payload.get("query"), payload.get("operationName")
        variables = payload.get("variables")
        if not isinstance(query, str) or not (name is None or isinstance(name, str)):
            return None
        if variables is not None and not isinstance(variables, dict):
            return None
        problem = document_too_large(query, self._limits.max_query_bytes)
        if problem is not None:  # before anything else: hashing megabytes costs too
            OperationRecord(ctx).finish(None, None, None, TOO_COMPLEX)
            return FastResponse({"data": None, "errors": [_coded(problem)]})
        key = digest(query, name)
        kept = self._plans.get(key) or self._refused.get(key)
        plan = kept if isinstance(kept, _Cached) else self._compile(query, name)
        if isinstance(plan, _Refusal):
            if kept is None:
                self._refused.put(key, plan, plan.size)
            OperationRecord(ctx).finish(None, None, query, plan.code)
            return FastResponse({"data": None, "errors": list(plan.errors)})
        if isinstance(plan, _NormalPath):
            if kept is None:
                self._plans.put(key, plan, len(key))
            return None
        coerced = coerce_variables(plan, variables)
        if isinstance(coerced, list):  # the normal path words these errors
            return None
        record = OperationRecord(ctx)
        if plan.variable_uses is not None:
            # The whole operation's variables against the limits, before any field runs.
            over = check_variables(plan.variable_uses, variables, self._limits)
            if over is not None:
                if kept is None:  # a valid plan, refused for these variables only: keep it
                    self._plans.put(key, plan, document_size(plan.document) * 5 // 4)
                code = str((over.extensions or {})["code"])
                record.finish("query", plan.name, query, code)
                return FastResponse({"data": None, "errors": [over.formatted]})
        ctx.budget = self._limits.budget()
        result = await execute_plan(plan, coerced, ctx)
        if kept is None and not refused(result.errors):
            # Plans hold their document; measured, the rest adds a fifth at most.
            self._plans.put(key, plan, document_size(plan.document) * 5 // 4)
        headers: dict[str, str] = {}
        status = _Status()
        errors = format_errors(result.errors, response=status) if result.errors else []
        record.finish("query", plan.name, query, outcome(errors))
        body: dict[str, Any] = {"data": result.data}
        if errors:
            body["errors"] = [e.formatted for e in errors]
        extensions = record.extensions()
        if extensions:
            body["extensions"] = extensions
        headers.update(status.headers)
        return FastResponse(body, status.status_code or 200, headers)

    def _compile(self, query: str, name: str | None) -> OperationPlan | _NormalPath | _Refusal:
        """A plan; or the normal executor's (what the plan does not cover, and documents that
        do not parse, whose errors it words); or a refusal (over the limits: size and tokens
        are counted before parsing, the limits walk the document once before the rest of
        validation runs; or invalid for the schema)."""
        if too_many_tokens(query, self._limits.max_tokens):
            message = f"the document has more than {self._limits.max_tokens} tokens (max_tokens)"
            return _Refusal((_coded(message),))
        try:
            document = parse(query, max_tokens=self._limits.max_tokens)
        except GraphQLError:
            return _NORMAL_PATH
        errors = check_limits(document, self._limits)
        if errors:
            # Worded as Strawberry's validation words them, with their code.
            formatted = format_errors(errors, validation=errors)
            return _Refusal(tuple(dict(e.formatted) for e in formatted))
        invalid = validate(self._graphql_schema, document, self._rules)
        if invalid:
            # Answered as Strawberry answers it (codes, no field suggestions when they are
            # off), and kept: repeating an invalid document costs a lookup, not a validation
            # (circular fragments took 5 ms of the event loop per request).
            if self._built.schema.config.disable_field_suggestions:
                for error in invalid:
                    self._built.schema.remove_field_suggestion(error)
            formatted = format_errors(invalid, validation=invalid)
            return _Refusal(tuple(dict(e.formatted) for e in formatted), VALIDATION_FAILED)
        try:
            return compile_operation(
                self._graphql_schema,
                document,
                name,
                resolvers=self._built.direct,
                dict_types=self._built.dict_types,
            )
        except Unsupported:
            return _NORMAL_PATH


#: The code of a document that is not valid for the schema (as ``gateway.security`` says).
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


class _NormalPath:
    """An operation the normal executor takes: one the plan does not cover, or a document that
    does not parse (whose errors it words). Kept by digest: a marker, no document."""


_NORMAL_PATH = _NormalPath()


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A document refused whatever its variables (over the query limits, or invalid for the
    schema): the errors it is answered with, and their code."""

    errors: tuple[dict[str, Any], ...]
    code: str = TOO_COMPLEX

    @property
    def size(self) -> int:
        """Its estimated memory."""
        return 200 + sum(len(str(e)) for e in self.errors)


_Cached = OperationPlan | _NormalPath | _Refusal


class _Status:
    """Collects the status and headers error formatting may set (OVERLOADED: 503)."""

    def __init__(self) -> None:
        self.status_code: int | None = None
        self.headers: dict[str, str] = {}
