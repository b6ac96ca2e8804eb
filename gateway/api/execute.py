"""Running a compiled operation: graphql-core's execution semantics, without its executor.

The same resolvers graphql-core would call, with the same ``GraphQLResolveInfo``, the same value
completion (non-null checks, lists, scalar serialisation), the same error locations and null
propagation; sibling fields that return awaitables run concurrently, as graphql-core runs them
(so aliases still share batches). Variables are coerced here for the common shapes and by
graphql-core for anything else. Compilation is in ``gateway.api.plan``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Sequence
from math import isfinite
from typing import Any, NoReturn, TypeGuard

from graphql import (
    GraphQLError,
    GraphQLFloat,
    GraphQLInputObjectType,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLString,
    default_field_resolver,
    is_leaf_type,
    located_error,
)
from graphql.execution.values import (
    VariableValues,
    VariableValueSource,
    get_argument_values,
    get_variable_values,
)
from graphql.pyutils import Path, Undefined
from graphql.pyutils import inspect as gql_inspect
from graphql.type.definition import GraphQLResolveInfoHelpers

from gateway.api.plan import FieldPlan, OperationPlan, PlanResult

__all__ = ["coerce_variables", "execute_plan"]

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
    fast = _fast_variables(plan, inputs)
    if fast is not None:
        return fast
    return get_variable_values(plan.schema, plan.operation.variable_definitions or (), inputs)


_FAIL: Any = object()
_FLOATS = frozenset({float})


def _fast_variables(plan: OperationPlan, inputs: dict[str, Any]) -> VariableValues | None:
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    for signature in plan.variables:
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
        # The common big one (a feature vector, an image): C loops, no recursion. A finite sum
        # means no NaN or infinity; an overflowing sum of finite floats takes the slow path.
        if floats and set(map(type, value)) <= _FLOATS and isfinite(sum(value)):
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
                except Exception as exc:
                    self.item_failed(f, item_type, exc, item_path)
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
        if args is None and f.arg_template is not None:
            args = f.arg_template.fill(self.variables.coerced)
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
            except Exception as exc:
                self.item_failed(f, item_type, exc, item_path)
                items.append(None)
        return items

    def item_failed(self, f: FieldPlan, item_type: Any, exc: Exception, path: Path) -> None:
        """A list item that failed: its error is recorded (a _Null already was); the item is
        null, or the whole list is when items are non-null."""
        if not isinstance(exc, _Null):
            self.errors.append(located_error(exc, [f.node], path.as_list()))
        if isinstance(item_type, GraphQLNonNull):
            raise _Null from exc


def _is_awaitable(value: Any) -> TypeGuard[Awaitable[Any]]:
    return inspect.isawaitable(value)


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*values))
