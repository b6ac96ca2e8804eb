"""Query limits: what one operation may ask of the server, refused up front when exceeded.

Every limit answers ``QUERY_TOO_COMPLEX`` (or, for the body size, HTTP 413), on every path:

* tokens: parsing stops past ``max_tokens`` (graphql-core's own limit);
* depth, aliases and directives, and the *cost*: a validation rule, run by Strawberry's
  validation and by the compiled path's (``QueryLimitsRule``). The cost is the model rows the
  document asks for in literals: one per typed prediction field, the length of a batch field's
  list, the first dimension of each ``infer`` input. Rows that arrive in variables are counted
  as each field starts (``RowBudget``): a batch field whose rows exceed the budget is refused
  before anything of it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import islice
from typing import Any

from graphql import (
    ASTValidationRule,
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
from gateway.errors import QueryTooComplexError

__all__ = ["TOO_COMPLEX", "QueryLimits", "RowBudget", "query_limits_rule", "too_many_tokens"]

TOO_COMPLEX = "QUERY_TOO_COMPLEX"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The limits of one operation."""

    max_depth: int = 15
    max_aliases: int = 30
    max_directives: int = 20
    max_tokens: int = 2000
    max_cost: int = 4096

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        """The limits ``settings`` configure."""
        return cls(
            settings.max_depth,
            settings.max_aliases,
            settings.max_directives,
            settings.max_tokens,
            settings.max_cost,
        )


class RowBudget:
    """Model rows an operation may still run (counted as each prediction field starts)."""

    __slots__ = ("_left", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._left = limit

    def spend(self, rows: int) -> None:
        """Take ``rows``; raises QueryTooComplexError when the operation would exceed it."""
        if rows > self._left:
            raise QueryTooComplexError(
                f"the operation asks for more than {self._limit} model rows (max_cost); "
                "split it into several requests"
            )
        self._left -= rows


# GraphQL's tokens, near enough to bound a document's size before parsing it (a string is one
# token, a comment none but its words count here: the estimate errs on the high side).
_TOKEN = re.compile(
    r'"""(?:[^"]|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|[_A-Za-z][_0-9A-Za-z]*'
    r"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\.\.\.|[!$&()\[\]{}:=@|]"
)


def too_many_tokens(query: str, limit: int) -> bool:
    """Whether ``query`` has more than ``limit`` tokens, found by a regular expression that
    stops at the limit: a megabyte-sized document costs a millisecond, not a parse."""
    if len(query) <= limit:  # a token is at least one character
        return False
    return next(islice(_TOKEN.finditer(query), limit, None), None) is not None


def query_limits_rule(limits: QueryLimits) -> type[ASTValidationRule]:
    """A validation rule enforcing ``limits`` (depth, aliases, directives, literal cost)."""

    class QueryLimitsRule(ASTValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            context = self.context
            fragments = {
                d.name.value: d
                for d in context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            walk = _Walk(fragments)
            walk.selections(node.selection_set, 1, in_predict=False)
            walk.directives += len(node.directives or ())
            for problem in _problems(walk, limits):
                context.report_error(GraphQLError(problem, node, extensions={"code": TOO_COMPLEX}))

    return QueryLimitsRule


def _problems(walk: _Walk, limits: QueryLimits) -> list[str]:
    problems = []
    if walk.depth > limits.max_depth:
        problems.append(f"the operation is nested {walk.depth} deep; at most {limits.max_depth}")
    if walk.aliases > limits.max_aliases:
        problems.append(f"the operation has {walk.aliases} aliases; at most {limits.max_aliases}")
    if walk.directives > limits.max_directives:
        problems.append(
            f"the operation has {walk.directives} directives; at most {limits.max_directives}"
        )
    if walk.cost > limits.max_cost:
        problems.append(
            f"the operation asks for {walk.cost} model rows; at most {limits.max_cost} "
            "(max_cost): split it into several requests"
        )
    return problems


class _Walk:
    """Depth, aliases, directives and literal rows of a selection, fragments expanded (each
    spread counts again: that is what executing it costs)."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._expanding: set[str] = set()
        self.depth = 0
        self.aliases = 0
        self.directives = 0
        self.cost = 0

    def selections(self, selection_set: SelectionSetNode, depth: int, *, in_predict: bool) -> None:
        for selection in selection_set.selections:
            self.directives += len(selection.directives or ())
            if isinstance(selection, FieldNode):
                self._field(selection, depth, in_predict=in_predict)
            elif isinstance(selection, InlineFragmentNode):
                self.selections(selection.selection_set, depth, in_predict=in_predict)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self._fragments.get(name)
                if fragment is None or name in self._expanding:
                    continue  # unknown or cyclic: other validation rules report it
                self._expanding.add(name)
                self.directives += len(fragment.directives or ())
                self.selections(fragment.selection_set, depth, in_predict=in_predict)
                self._expanding.discard(name)

    def _field(self, node: FieldNode, depth: int, *, in_predict: bool) -> None:
        self.depth = max(self.depth, depth)
        if node.alias is not None:
            self.aliases += 1
        name = node.name.value
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        if in_predict and not name.startswith("__"):
            batch = arguments.get("inputs")
            self.cost += len(batch.values) if isinstance(batch, ListValueNode) else 1
        elif name == "infer" and depth == 1:
            self.cost += _infer_rows(arguments.get("inputs"))
        if node.selection_set is not None:
            self.selections(node.selection_set, depth + 1, in_predict=name == "predict")


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
