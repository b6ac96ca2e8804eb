"""Compiled operations: a known query runs without graphql-core's generic executor.

``compile_operation`` turns a validated query into a tree of ``FieldPlan`` once: which fields,
under which response keys, with which resolvers, return types and already coerced arguments
(when they hold variables, a template the variables' values fill: ``gateway.api.arguments``);
``gateway.api.execute`` runs it with graphql-core's semantics.

What the plan does not cover raises ``Unsupported`` at compile time and the operation goes to
the normal executor: directives, abstract types, introspection, repeated response keys,
fragments on other types, mutations and subscriptions. Differential tests run both paths on
generated queries and compare the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import (
    get_argument_values,
)
from graphql.language import Visitor, visit

from gateway.api.arguments import ArgumentTemplate, build_argument_template
from gateway.api.variable_cost import VariableUses, variable_uses

__all__ = ["FieldPlan", "OperationPlan", "PlanResult", "Unsupported", "compile_operation"]


class Unsupported(Exception):
    """The operation needs the normal executor."""


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """One field of a selection, ready to resolve and complete."""

    key: str
    name: str
    node: FieldNode
    parent_type: GraphQLObjectType
    field_def: GraphQLField | None  # None for __typename
    return_type: GraphQLOutputType
    static_args: dict[str, Any] | None  # coerced once when no argument uses a variable
    children: tuple[FieldPlan, ...] | None  # for object types
    #: With variables: the arguments coerced once, the variables' values filled in per request.
    arg_template: ArgumentTemplate | None = None
    #: Replaces the field's own resolver (the gateway's direct resolvers for typed fields).
    resolver: Callable[..., Any] | None = None
    #: The parent value is a dict keyed by GraphQL field name: read the key, no resolver.
    by_key: bool = False
    #: The scalar or enum type of a leaf field that is not a list (completed in place).
    leaf: Any = None
    #: Every field below reads a dict key: the value completes without awaiting anything.
    plain_below: bool = False


@dataclass(frozen=True, slots=True)
class OperationPlan:
    """A compiled query operation."""

    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    root_type: GraphQLObjectType
    fields: tuple[FieldPlan, ...]
    #: The operation's variables, name and type resolved once.
    variables: tuple[GraphQLVariableSignature, ...] = ()
    #: Which variables reach models, and how often (checked against the limits per request).
    variable_uses: VariableUses | None = None

    @property
    def name(self) -> str | None:
        """The operation's name."""
        return self.operation.name.value if self.operation.name else None


@dataclass(slots=True)
class PlanResult:
    """What execution produced: data (None when a non-null root field failed) and errors."""

    data: dict[str, Any] | None
    errors: list[GraphQLError]


@dataclass(frozen=True, slots=True)
class _Options:
    resolvers: Mapping[tuple[str, str], Callable[..., Any]]
    dict_types: frozenset[str]
    operation: OperationDefinitionNode


def compile_operation(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    *,
    resolvers: Mapping[tuple[str, str], Callable[..., Any]] | None = None,
    dict_types: frozenset[str] = frozenset(),
) -> OperationPlan:
    """Compile the operation of a *validated* document.

    Args:
        schema: the schema the document was validated against.
        document: the parsed document.
        operation_name: the operation to run (None: the only one).
        resolvers: resolvers to call instead of the schema's, by (type name, field name).
        dict_types: object types whose values are dicts keyed by GraphQL field name.

    Raises:
        Unsupported: the operation needs the normal executor.
    """
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        if len(operations) != 1:
            raise Unsupported("an operation name is needed")
        operation = operations[0]
    else:
        named = [o for o in operations if o.name and o.name.value == operation_name]
        if len(named) != 1:
            raise Unsupported("no such operation")
        operation = named[0]
    if operation.operation is not OperationType.QUERY or operation.directives:
        raise Unsupported("only queries without directives")
    if _uses_directives(document):
        raise Unsupported("directives")
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    root = schema.query_type
    assert root is not None
    options = _Options(resolvers or {}, dict_types, operation)
    fields = _compile_selection(schema, root, operation.selection_set, fragments, options)
    signatures = [get_variable_signature(schema, d) for d in operation.variable_definitions or ()]
    if any(isinstance(s, GraphQLError) for s in signatures):
        raise Unsupported("a variable of an unknown or output type")
    variables = tuple(s for s in signatures if isinstance(s, GraphQLVariableSignature))
    uses = variable_uses(document, operation)
    return OperationPlan(schema, document, operation, fragments, root, fields, variables, uses)


class _DirectiveFinder(Visitor):
    found = False

    def enter_directive(self, *_: Any) -> None:
        self.found = True


def _uses_directives(document: DocumentNode) -> bool:
    finder = _DirectiveFinder()
    visit(document, finder)
    return finder.found


def _compile_selection(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    options: _Options,
) -> tuple[FieldPlan, ...]:
    nodes: list[FieldNode] = []
    _flatten(parent, selection_set, fragments, nodes, set())
    plans: list[FieldPlan] = []
    keys: set[str] = set()
    for node in nodes:
        key = node.alias.value if node.alias else node.name.value
        if key in keys:
            raise Unsupported("a response key selected twice")
        keys.add(key)
        plans.append(_compile_field(schema, parent, node, fragments, key, options))
    return tuple(plans)


def _flatten(
    parent: GraphQLObjectType,
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    out: list[FieldNode],
    spread: set[str],
) -> None:
    """The fields of ``selection_set``, fragments expanded. A fragment spread twice in one
    selection set is collected once, as graphql-core's executor does (``spread``): expanding
    each spread would double the work with each level of ``fragment F2 { ...F1 ...F1 }``."""
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            out.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            if condition is not None and condition.name.value != parent.name:
                raise Unsupported("a fragment on another type")
            _flatten(parent, selection.selection_set, fragments, out, spread)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in spread:
                continue
            spread.add(name)
            fragment = fragments[name]
            if fragment.type_condition.name.value != parent.name:
                raise Unsupported("a fragment on another type")
            _flatten(parent, fragment.selection_set, fragments, out, spread)


def _compile_field(
    schema: GraphQLSchema,
    parent: GraphQLObjectType,
    node: FieldNode,
    fragments: dict[str, FragmentDefinitionNode],
    key: str,
    options: _Options,
) -> FieldPlan:
    name = node.name.value
    if name == "__typename":
        return FieldPlan(key, name, node, parent, None, GraphQLString, {}, None)
    if name.startswith("__"):
        raise Unsupported("introspection")
    field_def = parent.fields[name]
    named = get_named_type(field_def.type)
    children = None
    if not is_leaf_type(named):
        if not isinstance(named, GraphQLObjectType) or node.selection_set is None:
            raise Unsupported("an abstract type")
        children = _compile_selection(schema, named, node.selection_set, fragments, options)
    static, template = None, None
    if not any(_has_variable(a.value) for a in node.arguments or ()):
        static = get_argument_values(field_def, node, None)
    else:
        template = build_argument_template(field_def, node, options.operation)
    return FieldPlan(
        key,
        name,
        node,
        parent,
        field_def,
        field_def.type,
        static,
        children,
        arg_template=template,
        resolver=options.resolvers.get((parent.name, name)),
        by_key=parent.name in options.dict_types,
        leaf=_scalar_of(field_def.type),
        plain_below=children is not None and all(_plain(c) for c in children),
    )


def _plain(f: FieldPlan) -> bool:
    """Whether ``f`` and everything below it read dict keys (no resolver to call)."""
    return f.by_key and (f.children is None or f.plain_below)


def _scalar_of(return_type: GraphQLOutputType) -> Any:
    inner = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    return inner if is_leaf_type(inner) else None


def _has_variable(value: Any) -> bool:
    if isinstance(value, VariableNode):
        return True
    for attr in ("values", "fields"):
        for item in getattr(value, attr, None) or ():
            if _has_variable(getattr(item, "value", item)):
                return True
    return False
