"""Query limits: what one operation may ask of the server, refused up front when exceeded.

Every limit answers ``QUERY_TOO_COMPLEX`` (or, for the body size, HTTP 413), on every path:

* the document's text: ``max_query_bytes``, checked before anything else (inputs belong in
  variables), so that no cache, parse or log holds a document of megabytes;
* tokens: parsing stops past ``max_tokens`` (graphql-core's own limit);
* depth, aliases, directives, fields (fragments expanded), and the *cost*: checked on the
  parsed document before the rest of its validation, on both paths (``check_limits``). The cost
  is the model rows the document asks for in literals: one per typed prediction field, the
  length of a batch field's list, the first dimension of each ``infer`` input. Rows that
  arrive in variables are counted as each field starts (``RowBudget``): a batch field whose
  rows exceed the budget is refused
  before anything of it runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from gateway.config import Settings
from gateway.errors import InvalidInputError, QueryTooComplexError

__all__ = [
    "DEFAULT_MAX_OPERATION_STRING_BYTES",
    "DEFAULT_MAX_STRING_BYTES",
    "TOO_COMPLEX",
    "QueryLimits",
    "RowBudget",
    "document_too_large",
    "check_limits",
    "too_many_tokens",
]

TOO_COMPLEX = "QUERY_TOO_COMPLEX"
DEFAULT_MAX_STRING_BYTES = 65_536
DEFAULT_MAX_OPERATION_STRING_BYTES = 1_048_576


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The limits of one operation."""

    max_depth: int = 15
    max_aliases: int = 30
    max_directives: int = 20
    max_tokens: int = 2000
    max_cost: int = 4096
    max_fields: int = 5000
    max_query_bytes: int = 102_400
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    max_operation_string_bytes: int = DEFAULT_MAX_OPERATION_STRING_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        """The limits ``settings`` configure."""
        return cls(
            max_depth=settings.max_depth,
            max_aliases=settings.max_aliases,
            max_directives=settings.max_directives,
            max_tokens=settings.max_tokens,
            max_cost=settings.max_cost,
            max_fields=settings.max_fields,
            max_query_bytes=settings.max_query_bytes,
            max_string_bytes=settings.max_string_bytes,
            max_operation_string_bytes=settings.max_operation_string_bytes,
        )

    def budget(self) -> RowBudget:
        """What one operation may send to models, whole."""
        return RowBudget(
            self.max_cost,
            max_string_bytes=self.max_string_bytes,
            string_bytes=self.max_operation_string_bytes,
        )


class RowBudget:
    """Model rows an operation may still run, and string bytes it may still send to models
    (counted as each prediction field starts: a variable used by several fields counts for
    each, as each runs the model on it)."""

    __slots__ = ("_left", "_limit", "_max_string", "_strings", "_strings_left")

    def __init__(
        self,
        limit: int,
        *,
        max_string_bytes: int = DEFAULT_MAX_STRING_BYTES,
        string_bytes: int = DEFAULT_MAX_OPERATION_STRING_BYTES,
    ) -> None:
        self._limit = limit
        self._left = limit
        self._max_string = max_string_bytes
        self._strings = string_bytes
        self._strings_left = string_bytes

    def spend(self, rows: int) -> None:
        """Take ``rows``; raises QueryTooComplexError when the operation would exceed it."""
        if rows > self._left:
            raise QueryTooComplexError(
                f"the operation asks for more than {self._limit} model rows (max_cost); "
                "split it into several requests"
            )
        self._left -= rows

    def spend_strings(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Take the string bytes (UTF-8) of ``feeds``, before they run.

        Raises:
            InvalidInputError: one string is longer than ``max_string_bytes``.
            QueryTooComplexError: the operation would send more than its string budget.
        """
        total = 0
        for name, array in feeds.items():
            if array.dtype.kind not in "OUS":
                continue
            for value in array.flat:
                size = _utf8_length(value)
                if size > self._max_string:
                    raise InvalidInputError(
                        f"input {name!r} has a string of {size} bytes; at most "
                        f"{self._max_string} (max_string_bytes)"
                    )
                total += size
        if total > self._strings_left:
            raise QueryTooComplexError(
                f"the operation sends more than {self._strings} bytes of strings to models "
                "(max_operation_string_bytes; each use of a variable counts): split it into "
                "several requests"
            )
        self._strings_left -= total


def _utf8_length(value: object) -> int:
    if isinstance(value, str):
        # ASCII is one byte a character, which CPython knows without looking.
        return len(value) if value.isascii() else len(value.encode(errors="surrogatepass"))
    if isinstance(value, bytes):
        return len(value)
    return 0  # not a string: the decoder refuses it


# GraphQL's tokens, near enough to bound a document's size before parsing it (a string is one
# token, a comment none but its words count here: the estimate errs on the high side).
_TOKEN = re.compile(
    r'"""(?:[^"]|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|[_A-Za-z][_0-9A-Za-z]*'
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\.\.|[!$&()\[\]{}:=@|]"
)


def document_too_large(query: str, limit: int) -> str | None:
    """Why ``query`` is refused unparsed (longer than ``limit`` bytes in UTF-8), or None."""
    size = len(query)
    if size * 4 <= limit:  # a character is at most four bytes
        return None
    if size <= limit:
        size = len(query.encode())
        if size <= limit:
            return None
    return (
        f"the document is {size} bytes long; at most {limit} (max_query_bytes): send inputs "
        "as variables"
    )


def too_many_tokens(query: str, limit: int) -> bool:
    """Whether ``query`` has more than ``limit`` tokens, found by a regular expression that
    stops at the limit: a megabyte-sized document costs a millisecond, not a parse."""
    if len(query) <= limit:  # a token is at least one character
        return False
    return next(islice(_TOKEN.finditer(query), limit, None), None) is not None


def check_limits(document: DocumentNode, limits: QueryLimits) -> list[GraphQLError]:
    """What in ``document`` is over ``limits`` (depth, aliases, directives, fields, literal
    cost), per operation; each error coded QUERY_TOO_COMPLEX.

    Run before graphql-core's validation, and alone when it finds something: refusing a
    document then costs one walk of it, not every rule (two hundred repeated directives made
    graphql-core report 199 errors, 50 ms of work)."""
    definitions = document.definitions
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    walk = _Walk(fragments)  # fragments' summaries are shared by the operations
    errors = []
    for operation in definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        summary = walk.selection_set(operation.selection_set, _ROOT)
        summary.directives += len(operation.directives or ())
        errors += [
            GraphQLError(problem, operation, extensions={"code": TOO_COMPLEX})
            for problem in _problems(summary, limits)
        ]
    return errors


def _problems(summary: _Summary, limits: QueryLimits) -> list[str]:
    problems = []
    if summary.depth > limits.max_depth:
        problems.append(f"the operation is nested {summary.depth} deep; at most {limits.max_depth}")
    if summary.aliases > limits.max_aliases:
        problems.append(
            f"the operation has {summary.aliases} aliases; at most {limits.max_aliases}"
        )
    if summary.directives > limits.max_directives:
        problems.append(
            f"the operation has {summary.directives} directives; at most {limits.max_directives}"
        )
    if summary.fields > limits.max_fields:
        problems.append(
            f"the operation selects {summary.fields} fields, fragments expanded; at most "
            f"{limits.max_fields} (max_fields)"
        )
    if summary.cost > limits.max_cost:
        problems.append(
            f"the operation asks for {summary.cost} model rows; at most {limits.max_cost} "
            "(max_cost): split it into several requests"
        )
    return problems


# Where a selection set sits: what its fields cost depends on it (a typed prediction field
# under ``predict``, ``infer`` at the root).
_ROOT, _PREDICT, _OTHER = 0, 1, 2


@dataclass(slots=True)
class _Summary:
    """What a selection set asks for, fragments expanded."""

    depth: int = 0  # its deepest field; a field of the set itself is 1
    aliases: int = 0
    directives: int = 0
    fields: int = 0
    cost: int = 0

    def add(self, other: _Summary, *, below: bool = False) -> None:
        self.depth = max(self.depth, other.depth + 1 if below else other.depth)
        self.aliases += other.aliases
        self.directives += other.directives
        self.fields += other.fields
        self.cost += other.cost


_NOTHING = _Summary()


class _Walk:
    """Summaries of an operation's selection sets, fragments expanded: each spread counts
    again (an upper bound of what executing it costs), but each fragment is walked once per
    place it is spread (root, ``predict``, elsewhere) and its summary reused. Expanding it
    at every spread instead doubles the work with each level of ``fragment F2 { ...F1 ...F1 }``:
    a 1 KB document kept the event loop busy for hours."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._summaries: dict[tuple[str, int], _Summary] = {}
        self._expanding: set[str] = set()

    def selection_set(self, selection_set: SelectionSetNode, where: int) -> _Summary:
        summary = _Summary()
        for selection in selection_set.selections:
            summary.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                summary.add(self._field(selection, where))
            elif isinstance(selection, InlineFragmentNode):
                summary.add(self.selection_set(selection.selection_set, where))
            elif isinstance(selection, FragmentSpreadNode):
                summary.add(self._fragment(selection.name.value, where))
        return summary

    def _fragment(self, name: str, where: int) -> _Summary:
        known = self._summaries.get((name, where))
        if known is not None:
            return known
        fragment = self._fragments.get(name)
        if fragment is None or name in self._expanding:
            return _NOTHING  # unknown or cyclic: other validation rules report it
        self._expanding.add(name)
        summary = self.selection_set(fragment.selection_set, where)
        summary.directives += len(fragment.directives or ())
        self._expanding.discard(name)
        self._summaries[(name, where)] = summary
        return summary

    def _field(self, node: FieldNode, where: int) -> _Summary:
        summary = _Summary(depth=1, aliases=int(node.alias is not None), fields=1)
        name = node.name.value
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        if where == _PREDICT and not name.startswith("__"):
            batch = arguments.get("inputs")
            summary.cost = len(batch.values) if isinstance(batch, ListValueNode) else 1
        elif where == _ROOT and name == "infer":
            summary.cost = _infer_rows(arguments.get("inputs"))
        if node.selection_set is not None:
            below = _PREDICT if name == "predict" else _OTHER
            summary.add(self.selection_set(node.selection_set, below), below=True)
        return summary


def _infer_rows(inputs: Any) -> int:
    """The first dimension of literal ``infer`` inputs (1 when it comes in a variable)."""
    if not isinstance(inputs, ListValueNode):
        return 1
    rows = 1
    for tensor in inputs.values:
        if not isinstance(tensor, ObjectValueNode):
            continue
        for f in tensor.fields:
            shape = f.value
            if f.name.value == "shape" and isinstance(shape, ListValueNode) and shape.values:
                first = shape.values[0]
                if isinstance(first, IntValueNode):
                    rows = max(rows, int(first.value))
    return rows
