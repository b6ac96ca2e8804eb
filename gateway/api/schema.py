"""Build the Strawberry schema of a repository: generic API, metadata and typed fields."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gateway.api import generic
from gateway.api.admin import MUTATIONS, model_events
from gateway.api.predict import DirectResolvers, build_predict_type, direct_resolvers
from gateway.errors import ConfigError
from gateway.security import format_errors
from gateway.typed import TypedModel, build_typed_model
from gateway.versions import ModelEntry

__all__ = [
    "RESERVED_TYPE_NAMES",
    "GatewaySchema",
    "build_schema",
    "build_typed_models",
    "typed_field_warnings",
]

#: Type names the schema defines whatever the models; a model whose types would take one of
#: these is served through the generic API only.
RESERVED_TYPE_NAMES = frozenset(
    {
        "Query",
        "Mutation",
        "Subscription",
        "Predict",
        "ClassProbability",
        "DataType",
        "JSON",
        "Model",
        "ModelState",
        "ModelVersion",
        "Tensor",
        "TensorInput",
        "TensorSpec",
        "InferResult",
        "ModelEvent",
        "VersionWeight",
        "VersionWeightInput",
        "ShadowInfo",
        "ShadowComparison",
        "Warmup",
        "DateTime",
        "String",
        "Int",
        "Float",
        "Boolean",
        "ID",
    }
)


#: Why a model whose versions could not be read (or are still loading) has no typed field.
_UNREAD = "no version of the model could be read"


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Strawberry logs every error with its traceback; ErrorCodes logs the unexpected ones
        # once, with an error id, and a client's mistake is not worth a traceback. A
        # subscription's results bypass ErrorCodes: they get their codes here.
        if execution_context is not None and _is_subscription(execution_context):
            errors[:] = format_errors(errors)


def _is_subscription(execution_context: ExecutionContext) -> bool:
    try:
        return execution_context.operation_type is OperationType.SUBSCRIPTION
    except Exception:  # no operation (the document did not parse)
        return False


@dataclass(frozen=True, slots=True)
class GatewaySchema:
    """A built schema and the typed view of each model it was built from."""

    schema: strawberry.Schema
    #: Each model's typed view, or the reason it has none.
    typed: Mapping[str, TypedModel | str]
    #: The compiled path's resolvers for typed fields, and the types they answer as dicts.
    direct: DirectResolvers = field(default_factory=dict)
    dict_types: frozenset[str] = frozenset()

    def as_sdl(self) -> str:
        """The schema in GraphQL SDL, ending with a newline."""
        return self.schema.as_str() + "\n"


def build_typed_models(entries: Iterable[ModelEntry]) -> dict[str, TypedModel | str]:
    """The typed view of each model, or why it has none (a clash, an underivable name...)."""
    result: dict[str, TypedModel | str] = {}
    for entry in entries:
        mv = entry.schema_version
        if entry.spec.problem is not None:
            result[entry.name] = entry.spec.problem
            continue
        if mv is None or mv.signature is None:
            result[entry.name] = _UNREAD
            continue
        try:
            result[entry.name] = build_typed_model(entry.name, mv.signature, entry.spec.config)
        except ConfigError as exc:
            result[entry.name] = exc.message
    _mark_clashes(result)
    return result


def typed_field_warnings(
    entries: Iterable[ModelEntry], typed: Mapping[str, TypedModel | str]
) -> dict[str, str]:
    """By model, the warning that it has no typed field (what the server logs and ``gateway
    check`` prints). Models with no readable version or a model.toml that does not parse are
    left out: their FAILED versions say why, and one still loading will have its field."""
    warnings: dict[str, str] = {}
    for entry in entries:
        reason = typed.get(entry.name)
        if isinstance(reason, str) and reason not in (_UNREAD, entry.spec.problem):
            warnings[entry.name] = f"model {entry.name} has no typed field: {reason}"
    return warnings


def _mark_clashes(result: dict[str, TypedModel | str]) -> None:
    owners: dict[str, list[str]] = defaultdict(list)
    for name, tm in result.items():
        if isinstance(tm, TypedModel):
            for taken in (
                tm.field,
                tm.batch_field,
                f"{tm.type_stem}Input",
                f"{tm.type_stem}Prediction",
            ):
                owners[taken].append(name)
    for taken, names in owners.items():
        for name in names:
            if isinstance(result[name], str):
                continue
            if len(names) > 1:
                others = ", ".join(repr(n) for n in names if n != name)
                result[name] = f"its GraphQL name {taken!r} clashes with model(s) {others}"
            elif taken in RESERVED_TYPE_NAMES:
                result[name] = f"its GraphQL type name {taken!r} is reserved by the gateway"


def _doc(resolver: Callable[..., Any]) -> str:
    """A resolver's docstring as one line: the field's description."""
    return " ".join((resolver.__doc__ or "").split())


def build_schema(
    entries: Sequence[ModelEntry],
    *,
    extensions: Sequence[Callable[[], SchemaExtension]] = (),
    suggestions: bool = True,
) -> GatewaySchema:
    """The schema for ``entries``: a typed field per model that has one, plus the generic API.

    ``suggestions=False`` drops "Did you mean ...?" from errors (which would reveal the schema
    when introspection is off)."""
    typed = build_typed_models(entries)
    fields: dict[str, Any] = {
        "models": strawberry.field(resolver=generic.models),
        "model": strawberry.field(resolver=generic.model),
        "infer": strawberry.field(resolver=generic.infer),
    }
    typed_models = [tm for tm in typed.values() if isinstance(tm, TypedModel)]
    if typed_models:
        descriptions = {e.name: e.spec.config.description or "" for e in entries}
        predict_cls = build_predict_type(typed_models, descriptions)

        def predict() -> Any:
            return predict_cls()

        predict.__annotations__ = {"return": predict_cls}
        fields["predict"] = strawberry.field(
            resolver=predict, description="Typed predictions: a field per model."
        )
    query = strawberry.type(type("Query", (), fields))
    mutation = strawberry.type(
        type(
            "Mutation",
            (),
            {
                name: strawberry.mutation(resolver=r, description=_doc(r))
                for name, r in MUTATIONS.items()
            },
        ),
        description="Operating the models (FORBIDDEN unless the admin API is enabled).",
    )
    subscription = strawberry.type(
        type(
            "Subscription",
            (),
            {
                "model_events": strawberry.subscription(
                    resolver=model_events, description=_doc(model_events)
                )
            },
        )
    )
    schema = _Schema(
        query=query,
        mutation=mutation,
        subscription=subscription,
        extensions=list(extensions),
        config=StrawberryConfig(disable_field_suggestions=not suggestions),
    )
    direct, dict_types = direct_resolvers(typed_models)
    return GatewaySchema(schema, typed, direct, dict_types)
