"""Compiled operations: a known query runs without graphql-core's generic executor.

``compile_operation`` turns a validated query into a tree of ``FieldPlan`` once: which fields,
under which response keys, with which resolvers, return types and (when they hold no variables)
already coerced arguments. ``execute_plan`` then runs it: the same resolvers graphql-core would
call, with the same ``GraphQLResolveInfo``, the same value completion (non-null checks, lists,
scalar serialisation), the same error locations and null propagation; sibling fields that
return awaitables run concurrently, as graphql-core runs them (so aliases still share batches).

What the plan does not cover raises ``Unsupported`` at compile time and the operation goes to
the normal executor: directives, abstract types, introspection, repeated response keys,
fragments on other types, mutations and subscriptions. Differential tests run both paths on
generated queries and compare the answers.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from typing import Any, NoReturn, TypeGuard

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLFloat,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLString,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    default_field_resolver,
    get_named_type,
    is_leaf_type,
    located_error,
)
from graphql.execution.get_variable_signature import get_variable_signature
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_values,
)
from graphql.language import Visitor, visit
from graphql.pyutils import Path, Undefined
from graphql.pyutils import inspect as gql_inspect
from graphql.type.definition import GraphQLResolveInfoHelpers

__all__ = [
    "OperationPlan",
    "PlanResult",
    "Unsupported",
    "coerce_variables",
    "compile_operation",
    "execute_plan",
]


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
    options = _Options(resolvers or {}, dict_types)
    fields = _compile_selection(schema, root, operation.selection_set, fragments, options)
    return OperationPlan(schema, document, operation, fragments, root, fields)


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
    _flatten(parent, selection_set, fragments, nodes)
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
) -> None:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            out.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            condition = selection.type_condition
            if condition is not None and condition.name.value != parent.name:
                raise Unsupported("a fragment on another type")
            _flatten(parent, selection.selection_set, fragments, out)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments[selection.name.value]
            if fragment.type_condition.name.value != parent.name:
                raise Unsupported("a fragment on another type")
            _flatten(parent, fragment.selection_set, fragments, out)


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
    static = None
    if not any(_has_variable(a.value) for a in node.arguments or ()):
        static = get_argument_values(field_def, node, None)
    return FieldPlan(
        key,
        name,
        node,
        parent,
        field_def,
        field_def.type,
        static,
        children,
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


_FLOAT = GraphQLFloat
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1  # GraphQL's Int


class _Null(Exception):
    """A non-null field completed to null: its parent becomes null (the error is recorded)."""


def coerce_variables(
    plan: OperationPlan, variables: dict[str, Any] | None
) -> VariableValues | list[GraphQLError]:
    """The operation's variables coerced to their types, or the errors saying why not.

    The common case (every variable given, values of the right shapes) is coerced here without
    graphql-core's per-value machinery; anything else (a default, a null, a wrong value) goes to
    graphql-core, which gives the same result and words the errors.
    """
    inputs = variables or {}
    definitions = plan.operation.variable_definitions or ()
    fast = _fast_variables(plan, definitions, inputs)
    if fast is not None:
        return fast
    return get_variable_values(plan.schema, definitions, inputs)


_FAIL: Any = object()


def _fast_variables(
    plan: OperationPlan, definitions: Sequence[Any], inputs: dict[str, Any]
) -> VariableValues | None:
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    for definition in definitions:
        signature = get_variable_signature(plan.schema, definition)
        if isinstance(signature, GraphQLError):
            return None
        value = inputs.get(signature.name, Undefined)
        if value is Undefined:
            return None
        result = _coerce(value, signature.type)
        if result is _FAIL:
            return None
        sources[signature.name] = VariableValueSource(signature, value)
        coerced[signature.name] = result
    return VariableValues(sources, coerced)


def _coerce(value: Any, type_: Any) -> Any:
    """graphql-core's coerce_input_value for well-formed values; _FAIL for anything else."""
    if isinstance(type_, GraphQLNonNull):
        return _FAIL if value is None else _coerce(value, type_.of_type)
    if value is None:
        return None
    if type_ is _FLOAT and type(value) is float and isfinite(value):
        return value  # what GraphQLFloat.parse_value returns for it
    if isinstance(type_, GraphQLList):
        if not isinstance(value, list):
            return _FAIL
        inner = type_.of_type
        floats = inner is _FLOAT or (isinstance(inner, GraphQLNonNull) and inner.of_type is _FLOAT)
        # The common big one (a feature vector, an image): one pass, no recursion.
        if floats and all(type(v) is float and isfinite(v) for v in value):
            return list(value)
        items = [_coerce(v, inner) for v in value]
        return _FAIL if any(i is _FAIL for i in items) else items
    if isinstance(type_, GraphQLInputObjectType):
        fields = type_.fields
        if not isinstance(value, dict) or type_.is_one_of or any(k not in fields for k in value):
            return _FAIL
        out: dict[str, Any] = {}
        for name, field in fields.items():
            if name not in value:
                if field.default_value is not Undefined or isinstance(field.type, GraphQLNonNull):
                    return _FAIL
                continue
            item = _coerce(value[name], field.type)
            if item is _FAIL:
                return _FAIL
            out[field.out_name or name] = item
        return type_.out_type(out)
    try:
        parsed = type_.parse_value(value)
    except Exception:
        return _FAIL
    return _FAIL if parsed is Undefined else parsed


async def execute_plan(plan: OperationPlan, variables: VariableValues, context: Any) -> PlanResult:
    """Run a compiled operation with coerced variables (see ``coerce_variables``)."""
    run = _Run(plan, variables, context)
    try:
        data: dict[str, Any] | None = await run.fields(plan.fields, None, None)
    except _Null:
        data = None
    return PlanResult(data, run.errors)


class _Run:
    def __init__(self, plan: OperationPlan, variables: VariableValues, context: Any) -> None:
        self.plan = plan
        self.variables = variables
        self.context = context
        self.errors: list[GraphQLError] = []
        self.helpers = GraphQLResolveInfoHelpers(_gather, lambda values: None)

    async def fields(
        self, fields: Sequence[FieldPlan], source: Any, path: Path | None
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        pending: list[tuple[FieldPlan, Path, Awaitable[Any]]] = []
        for f in fields:
            if f.by_key and f.leaf is not None:
                result[f.key] = self.key_leaf(f, source, path)
                continue
            field_path = Path(path, f.key, f.parent_type.name)
            try:
                value = self.resolve(f, source, field_path)
            except Exception as exc:
                self.fail(f, exc, field_path)
                result[f.key] = None
                continue
            if inspect.isawaitable(value):
                result[f.key] = None  # keeps the selection's order
                pending.append((f, field_path, value))
            else:
                result[f.key] = await self.field_value(f, value, field_path)
        if len(pending) == 1:
            f, field_path, awaitable = pending[0]
            result[f.key] = await self.awaited_value(f, awaitable, field_path)
        elif pending:
            values = await asyncio.gather(
                *(self.awaited_value(f, a, p) for f, p, a in pending), return_exceptions=True
            )
            for (f, _, _), value in zip(pending, values, strict=True):
                if isinstance(value, BaseException):
                    raise value
                result[f.key] = value
        return result

    def key_leaf(self, f: FieldPlan, source: Any, path: Path | None) -> Any:
        """A scalar key of a dict answer, completed in place; serialize() is skipped when the
        value is already what it would return."""
        value = source.get(f.name)
        leaf, kind = f.leaf, type(value)
        if (
            (kind is str and leaf is GraphQLString)
            or (kind is float and leaf is _FLOAT and isfinite(value))
            or (kind is int and leaf is GraphQLInt and _INT_MIN <= value <= _INT_MAX)
        ):
            return value
        return self.leaf_value(f, value, path)

    def plain_fields(
        self, fields: Sequence[FieldPlan], source: Any, path: Path | None
    ) -> dict[str, Any]:
        """``fields`` for a selection that only reads dict keys: no coroutine at all."""
        result: dict[str, Any] = {}
        for f in fields:
            if f.leaf is not None:
                result[f.key] = self.key_leaf(f, source, path)
                continue
            field_path = Path(path, f.key, f.parent_type.name)
            try:
                result[f.key] = self.complete_plain(
                    f, f.return_type, source.get(f.name), field_path
                )
            except _Null:
                if isinstance(f.return_type, GraphQLNonNull):
                    raise
                result[f.key] = None
            except Exception as exc:
                self.fail(f, exc, field_path)
                result[f.key] = None
        return result

    def complete_plain(
        self, f: FieldPlan, return_type: GraphQLOutputType, value: Any, path: Path
    ) -> Any:
        """``complete`` for a value whose selection only reads dict keys."""
        if isinstance(return_type, GraphQLNonNull):
            completed = self.complete_plain(f, return_type.of_type, value, path)
            if completed is None:
                self.null_error(f, path)
            return completed
        if value is None:
            return None
        if isinstance(return_type, GraphQLList):
            item_type = return_type.of_type
            items: list[Any] = []
            for index, item in enumerate(value):
                item_path = path.add_key(index)
                try:
                    items.append(self.complete_plain(f, item_type, item, item_path))
                except _Null:
                    if isinstance(item_type, GraphQLNonNull):
                        raise
                    items.append(None)
                except Exception as exc:
                    self.errors.append(located_error(exc, [f.node], item_path.as_list()))
                    if isinstance(item_type, GraphQLNonNull):
                        raise _Null from exc
                    items.append(None)
            return items
        if is_leaf_type(return_type):
            return self.serialize(return_type, value)
        assert f.children is not None
        return self.plain_fields(f.children, value, path)

    def serialize(self, leaf: Any, value: Any) -> Any:
        serialized = leaf.serialize(value)
        if serialized is Undefined or serialized is None:
            raise TypeError(
                f"Expected `{gql_inspect(leaf)}.serialize({gql_inspect(value)})`"
                f" to return non-nullish value, returned: {gql_inspect(serialized)}"
            )
        return serialized

    def null_error(self, f: FieldPlan, path: Path) -> NoReturn:
        """Record graphql-core's error for a null in a non-null field; null the parent."""
        message = f"Cannot return null for non-nullable field {f.parent_type.name}.{f.name}."
        self.errors.append(located_error(TypeError(message), [f.node], path.as_list()))
        raise _Null

    def leaf_value(self, f: FieldPlan, value: Any, path: Path | None) -> Any:
        if value is None:
            if isinstance(f.return_type, GraphQLNonNull):
                self.null_error(f, Path(path, f.key, f.parent_type.name))
            return None
        try:
            return self.serialize(f.leaf, value)
        except Exception as exc:
            self.fail(f, exc, Path(path, f.key, f.parent_type.name))
            return None

    def resolve(self, f: FieldPlan, source: Any, path: Path) -> Any:
        if f.field_def is None:
            return f.parent_type.name
        if f.by_key:
            return source.get(f.name)
        args = f.static_args
        if args is None:
            args = get_argument_values(f.field_def, f.node, self.variables)
        info = GraphQLResolveInfo(
            f.name,
            [f.node],
            f.return_type,
            f.parent_type,
            path,
            self.plan.schema,
            self.plan.fragments,
            None,
            self.plan.operation,
            self.variables,
            self.context,
            _is_awaitable,
            None,
            self.helpers,
        )
        resolver = f.resolver or f.field_def.resolve or default_field_resolver
        return resolver(source, info, **args)

    async def awaited_value(self, f: FieldPlan, awaitable: Awaitable[Any], path: Path) -> Any:
        try:
            value = await awaitable
        except Exception as exc:
            self.fail(f, exc, path)
            return None
        return await self.field_value(f, value, path)

    async def field_value(self, f: FieldPlan, value: Any, path: Path) -> Any:
        try:
            if f.plain_below and not isinstance(value, Exception):
                return self.complete_plain(f, f.return_type, value, path)
            return await self.complete(f, f.return_type, value, path)
        except _Null:
            if isinstance(f.return_type, GraphQLNonNull):
                raise
            return None
        except Exception as exc:
            self.fail(f, exc, path)
            return None

    def fail(self, f: FieldPlan, exc: Exception, path: Path) -> None:
        """Record a field error; null, or _Null upwards for a non-null field."""
        self.errors.append(located_error(exc, [f.node], path.as_list()))
        if isinstance(f.return_type, GraphQLNonNull):
            raise _Null

    async def complete(
        self, f: FieldPlan, return_type: GraphQLOutputType, value: Any, path: Path
    ) -> Any:
        if isinstance(value, Exception):
            raise value
        if isinstance(return_type, GraphQLNonNull):
            completed = await self.complete(f, return_type.of_type, value, path)
            if completed is None:
                self.null_error(f, path)
            return completed
        if value is None:
            return None
        if isinstance(return_type, GraphQLList):
            return await self.complete_list(f, return_type, value, path)
        if is_leaf_type(return_type):
            return self.serialize(return_type, value)
        assert f.children is not None
        return await self.fields(f.children, value, path)

    async def complete_list(
        self, f: FieldPlan, return_type: GraphQLList[Any], value: Any, path: Path
    ) -> list[Any]:
        item_type = return_type.of_type
        items: list[Any] = []
        for index, item in enumerate(value):
            item_path = path.add_key(index)
            if inspect.isawaitable(item):
                item = await item
            try:
                items.append(await self.complete(f, item_type, item, item_path))
            except _Null:
                if isinstance(item_type, GraphQLNonNull):
                    raise
                items.append(None)
            except Exception as exc:
                self.errors.append(located_error(exc, [f.node], item_path.as_list()))
                if isinstance(item_type, GraphQLNonNull):
                    raise _Null from exc
                items.append(None)
        return items


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return inspect.isawaitable(value)


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*values))
