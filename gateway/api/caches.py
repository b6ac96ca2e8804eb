"""Caches of operations: bounded in entries and in bytes, keyed by digest, no refused document.

A client chooses what goes into these caches, so each is bounded twice: ``query_cache_size``
entries and ``query_cache_bytes`` of estimated memory (a parsed document costs far more than
its text: about 450 bytes per token, its source included), the least recently used going
first. Keys are sha256 digests, never the text itself. A document is kept only once an
operation on it has run without being refused (FORBIDDEN, UNAUTHENTICATED): a caller who may
do nothing cannot fill the caches, and no document that fails to parse, to validate or to
pass the query limits is kept (documents over ``max_query_bytes`` are not even parsed). The
compiled path remembers by digest, without the document, which operations go to the normal
executor (invalid ones included, so that they are not parsed twice) and the answers of
documents over the limits (in a store of their own, which cannot push plans out).

``DocumentCache`` is the Strawberry path's cache (GraphQL over GET, websockets, what the
compiled path does not cover): parsed and validated documents. The compiled path keeps its
plans in a ``BoundedCache`` of its own (``gateway.api.fastpath``).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    Token,
    get_operation_ast,
    parse,
)
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension

from gateway.api.limits import TOO_COMPLEX, QueryLimits, check_limits, document_too_large
from gateway.api.variable_cost import check_variables, variable_uses
from gateway.security import error_code

__all__ = [
    "BoundedCache",
    "DocumentCache",
    "digest",
    "document_size",
    "refused",
]

_V = TypeVar("_V")

#: Estimated bytes a parsed document holds per token (tokens, nodes, locations), measured
#: with tracemalloc on the gateway's documents: 370-480.
_BYTES_PER_TOKEN = 450
#: What refuses the caller rather than the document: such operations leave nothing cached.
_REFUSALS = frozenset({"FORBIDDEN", "UNAUTHENTICATED"})


class BoundedCache(Generic[_V]):
    """A least-recently-used map of digests, bounded in entries and in (estimated) bytes."""

    def __init__(self, *, max_entries: int, max_bytes: int) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[_V, int]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return self._bytes

    def get(self, key: bytes) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, value: _V, size: int) -> None:
        """Keep ``value`` (about ``size`` bytes); one larger than the whole cache is not kept."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self._max_bytes:
            return
        self._entries[key] = (value, size)
        self._bytes += size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1][1]


def digest(query: str, operation_name: str | None = None) -> bytes:
    """The key of a document (and of one of its operations, when named)."""
    h = hashlib.sha256(query.encode())
    if operation_name is not None:
        h.update(b"\0" + operation_name.encode())
    return h.digest()


def document_size(document: DocumentNode) -> int:
    """The estimated memory of a parsed document: its text and its tokens."""
    loc = document.loc
    if loc is None:
        return 0
    tokens = 0
    token: Token | None = loc.start_token
    while token is not None:  # a linked list, from <SOF> to <EOF>
        tokens += 1
        token = token.next
    return len(loc.source.body) + _BYTES_PER_TOKEN * tokens


def refused(errors: Sequence[GraphQLError] | None) -> bool:
    """Whether an operation with ``errors`` was refused to its caller (nothing to keep)."""
    return any(
        (e.extensions or {}).get("code") in _REFUSALS or error_code(e) in _REFUSALS
        for e in errors or ()
    )


class DocumentCache(SchemaExtension):
    """Parsing and validation on Strawberry's path (GET, websockets, what the compiled path
    leaves), with the query limits, cached by digest (see the module docstring).

    A document over ``max_query_bytes`` is refused before it is parsed: the operation is
    answered QUERY_TOO_COMPLEX as a validation error, with a placeholder document (the
    request's operation name, no fields) standing in for the one that was not parsed. A parsed
    document over the other limits is refused before the rest of validation runs
    (``check_limits``). A syntax error is left to Strawberry's own parse, which reports it the
    usual way (with its code).
    """

    def __init__(self, cache: BoundedCache[DocumentNode], *, limits: QueryLimits) -> None:
        self._cache = cache
        self._limits = limits
        self._key: bytes | None = None  # set while a parsed document may yet be kept
        self._valid = False

    def on_operation(self) -> Iterator[None]:
        self._key, self._valid = None, False
        yield
        context = self.execution_context
        document = context.graphql_document
        result = context.result
        if self._key is None or not self._valid or document is None:
            return
        if result is not None and refused(result.errors):
            return
        self._cache.put(self._key, document, document_size(document))

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        problem = document_too_large(query, self._limits.max_query_bytes)
        if problem is not None:
            context.graphql_document = _placeholder(context.operation_name)
            context.pre_execution_errors = [GraphQLError(problem, extensions={"code": TOO_COMPLEX})]
            yield
            return
        key = digest(query)
        cached = self._cache.get(key)
        if cached is not None:
            context.graphql_document = cached
            # Kept documents passed validation with this schema's rules: skip it.
            context.pre_execution_errors = []
        else:
            try:
                context.graphql_document = parse(query, **context.parse_options)
            except GraphQLError:
                pass  # Strawberry parses it again and reports the error with its code
            else:
                self._key = key
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.pre_execution_errors is None and document is not None:
            errors = check_limits(document, self._limits)
            if errors:  # refused alone: validation is skipped
                context.pre_execution_errors = errors
        yield
        self._valid = not context.pre_execution_errors

    def on_execute(self) -> Iterator[None]:
        # What the variables send to models, for the whole operation, before any field runs
        # (gateway.api.variable_cost); a result set here is what Strawberry answers.
        context = self.execution_context
        document = context.graphql_document
        operation = (
            get_operation_ast(document, context.operation_name) if document is not None else None
        )
        if context.result is None and operation is not None and context.variables:
            assert document is not None
            uses = variable_uses(document, operation)
            # Values that do not fit their types are graphql-core's to refuse, as on the
            # compiled path (whose variables are coerced first): checked only once they fit.
            coerced = get_variable_values(
                context.schema._schema, operation.variable_definitions or (), context.variables
            )
            error = (
                None
                if isinstance(coerced, list)
                else (check_variables(uses, context.variables, self._limits))
            )
            if error is not None:
                context.result = ExecutionResult(data=None, errors=[error])
        yield


def _placeholder(operation_name: str | None) -> DocumentNode:
    """A document of one empty query named ``operation_name``: what the operation type of a
    refused, unparsed document is read from."""
    name = NameNode(value=operation_name) if operation_name is not None else None
    operation = OperationDefinitionNode(
        operation=OperationType.QUERY,
        name=name,
        variable_definitions=(),
        directives=(),
        selection_set=SelectionSetNode(selections=()),
    )
    return DocumentNode(definitions=(operation,))
