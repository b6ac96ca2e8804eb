"""Argument templates: a field's arguments with variables, coerced once, filled per request.

graphql-core coerces a field's argument literals on every execution, walking the AST; with
variables (the way clients send changing data) that is several calls per node even when all
that changes is the variables' values. A template is made by coercing the arguments once with a
placeholder standing for each variable (graphql-core passes a variable's value through as is),
so filling it is a copy of the containers that hold placeholders.

Where filling could differ from coercing, there is no template, or it is not used, and
graphql-core coerces: a nullable variable whose value is null (a non-null position would reject
it), an input type whose ``out_type`` builds something other than a dict (the placeholder would
be hidden inside it), a coercion that fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLField,
    NonNullTypeNode,
    OperationDefinitionNode,
    VariableNode,
)
from graphql.execution.values import VariableValues, get_argument_values
from graphql.language import Visitor, visit

__all__ = ["ArgumentTemplate", "build_argument_template"]


class _Placeholder:
    """Stands for a variable's value in a template."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


@dataclass(frozen=True, slots=True)
class ArgumentTemplate:
    """Coerced arguments with placeholders where the variables go."""

    values: dict[str, Any]
    #: Variables declared nullable: a null value means the template may not be used.
    nullable: frozenset[str]

    def fill(self, variables: Mapping[str, Any]) -> dict[str, Any] | None:
        """The arguments for these coerced variable values; None when graphql-core must
        coerce them (a nullable variable is null)."""
        for name in self.nullable:
            if variables.get(name) is None:
                return None
        return {name: _fill(value, variables) for name, value in self.values.items()}


def _fill(value: Any, variables: Mapping[str, Any]) -> Any:
    if type(value) is _Placeholder:
        return variables[value.name]
    if type(value) is dict:
        return {k: _fill(v, variables) for k, v in value.items()}
    if type(value) is list:
        return [_fill(v, variables) for v in value]
    return value


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.uses: list[str] = []

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.uses.append(node.name.value)


def build_argument_template(
    field_def: GraphQLField, node: FieldNode, operation: OperationDefinitionNode
) -> ArgumentTemplate | None:
    """The template of ``node``'s arguments, or None when they must be coerced each time."""
    finder = _Variables()
    for argument in node.arguments or ():
        visit(argument, finder)
    declared = {d.variable.name.value: d for d in operation.variable_definitions or ()}
    if not finder.uses or any(name not in declared for name in finder.uses):
        return None
    placeholders = {name: _Placeholder(name) for name in finder.uses}
    try:
        values = get_argument_values(field_def, node, VariableValues({}, placeholders))
    except GraphQLError:
        return None
    if _count(values) != len(finder.uses):  # one is hidden in a custom out_type's value
        return None
    nullable = frozenset(
        name for name in finder.uses if not isinstance(declared[name].type, NonNullTypeNode)
    )
    return ArgumentTemplate(values, nullable)


def _count(value: Any) -> int:
    if type(value) is _Placeholder:
        return 1
    if type(value) is dict:
        return sum(_count(v) for v in value.values())
    if type(value) is list:
        return sum(_count(v) for v in value)
    return 0
