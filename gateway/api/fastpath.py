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
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from graphql import ASTValidationRule, GraphQLError, parse, specified_rules, validate

from gateway.api.context import GatewayContext
from gateway.api.execute import coerce_variables, execute_plan
from gateway.api.limits import (
    TOO_COMPLEX,
    QueryLimits,
    RowBudget,
    query_limits_rule,
    too_many_tokens,
)
from gateway.api.observe import OperationRecord, outcome
from gateway.api.plan import OperationPlan, Unsupported, compile_operation
from gateway.api.schema import GatewaySchema
from gateway.security import format_errors

__all__ = ["FastPath", "FastResponse", "PersistedQueries", "persisted_get"]


@dataclass(slots=True)
class FastResponse:
    """An answer: the JSON body, the HTTP status and extra headers."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class PersistedQueries:
    """Query texts by sha256, the newest ``capacity`` kept."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._queries: OrderedDict[str, str] = OrderedDict()

    def get(self, digest: str) -> str | None:
        query = self._queries.get(digest)
        if query is not None:
            self._queries.move_to_end(digest)
        return query

    def put(self, digest: str, query: str) -> None:
        self._queries[digest] = query
        self._queries.move_to_end(digest)
        while len(self._queries) > self._capacity:
            self._queries.popitem(last=False)


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
        limits: QueryLimits | None = None,
        rules: Sequence[type[ASTValidationRule]] = (),
    ) -> None:
        self._built = built
        self._graphql_schema = built.schema._schema
        self._persisted = persisted
        self._capacity = capacity
        self._limits = limits or QueryLimits()
        # Strawberry's order: graphql-core's rules, then the extensions' (limits, introspection).
        self._rules = [*specified_rules, query_limits_rule(self._limits), *rules]
        self._plans: OrderedDict[tuple[str, str | None], OperationPlan | _Refusal | None] = (
            OrderedDict()
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
        plan = self._plan(query, name)
        if plan is None:
            return None
        if isinstance(plan, _Refusal):
            OperationRecord(ctx).finish(None, None, query, TOO_COMPLEX)
            return FastResponse({"data": None, "errors": list(plan.errors)})
        coerced = coerce_variables(plan, variables)
        if isinstance(coerced, list):  # the normal path words these errors
            return None
        record = OperationRecord(ctx)
        ctx.budget = RowBudget(self._limits.max_cost)
        result = await execute_plan(plan, coerced, ctx)
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

    def _plan(self, query: str, name: str | None) -> OperationPlan | _Refusal | None:
        key = (query, name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = self._compile(query, name)
        self._plans[key] = plan
        while len(self._plans) > self._capacity:
            self._plans.popitem(last=False)
        return plan

    def _compile(self, query: str, name: str | None) -> OperationPlan | _Refusal | None:
        # The same limits as Strawberry's path. A document over them is refused here, and the
        # refusal kept like a plan: repeating it costs a lookup, not a parse.
        if too_many_tokens(query, self._limits.max_tokens):
            message = f"the document has more than {self._limits.max_tokens} tokens (max_tokens)"
            return _Refusal(({"message": message, "extensions": {"code": TOO_COMPLEX}},))
        try:
            document = parse(query, max_tokens=self._limits.max_tokens)
        except GraphQLError:
            return None
        errors = validate(self._graphql_schema, document, self._rules)
        if any((e.extensions or {}).get("code") == TOO_COMPLEX for e in errors):
            # Worded as Strawberry's validation words them: every error, with its code.
            formatted = format_errors(errors, validation=errors)
            return _Refusal(tuple(dict(e.formatted) for e in formatted))
        if errors:
            return None
        try:
            return compile_operation(
                self._graphql_schema,
                document,
                name,
                resolvers=self._built.direct,
                dict_types=self._built.dict_types,
            )
        except Unsupported:
            return None


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A document over the query limits: the errors it is answered with."""

    errors: tuple[dict[str, Any], ...]


class _Status:
    """Collects the status and headers error formatting may set (OVERLOADED: 503)."""

    def __init__(self) -> None:
        self.status_code: int | None = None
        self.headers: dict[str, str] = {}
