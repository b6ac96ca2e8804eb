"""The typed, per-model API: ``Query.predict`` with a field per model, made from TypedModel.

For a model ``iris``: ``predict { iris(input: IrisInput!, version: Int): IrisPrediction!
irisBatch(inputs: [IrisInput!]!, version: Int): [IrisPrediction!]! }``. Python attribute names
are positional (``f0``, ``o0``...) so that any feature name works, Python keywords included; the
GraphQL names come from ``gateway.naming``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import numpy as np
import strawberry
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from gateway.api.context import GatewayContext, Info
from gateway.errors import InvalidInputError, UnknownCategoryError
from gateway.observability import MODEL_ATTRIBUTE, VERSION_ATTRIBUTE
from gateway.tensors import DataType
from gateway.typed import InputField, OutputField, TypedModel
from gateway.versions import ModelVersion

__all__ = [
    "ClassProbability",
    "DirectResolvers",
    "build_predict_type",
    "direct_resolvers",
    "predict_rows",
]

_INTS = {DataType.INT8, DataType.INT16, DataType.INT32, DataType.UINT8, DataType.UINT16}
# GraphQL's Int is 32-bit: wider integer outputs are served as Float (exact up to 2**53).
_WIDE_INTS = {DataType.INT64, DataType.UINT32, DataType.UINT64}


@strawberry.type(description="The probability the model gives one class.")
class ClassProbability:
    label: str
    probability: float


def build_predict_type(typed_models: Sequence[TypedModel], descriptions: dict[str, str]) -> type:
    """The ``Predict`` type: two fields (one row, a batch of rows) per typed model.

    The fields are nullable, so that one failed prediction (null, with its error) leaves the
    other fields of the same document answered.
    """
    namespace: dict[str, Any] = {}
    for i, tm in enumerate(typed_models):
        input_cls = _input_type(tm)
        prediction_cls = _prediction_type(tm)
        about = descriptions.get(tm.model, "").strip() or f"Model {tm.model}"
        if not about.endswith((".", "!", "?")):
            about += "."  # a sentence, whatever model.toml's description ends with
        namespace[f"m{i}"] = strawberry.field(
            resolver=_single_resolver(tm, input_cls, prediction_cls),
            name=tm.field,
            description=f"{about} One row.",
        )
        namespace[f"m{i}_batch"] = strawberry.field(
            resolver=_batch_resolver(tm, input_cls, prediction_cls),
            name=tm.batch_field,
            description=f"{about} Many rows, answered in one model run where the model allows.",
        )
    return strawberry.type(
        type("Predict", (), namespace),
        description="Predictions in each model's own terms: one field per model.",
    )


async def predict_rows(
    ctx: GatewayContext, tm: TypedModel, rows: Sequence[dict[str, Any]], version: int | None
) -> tuple[int, list[dict[str, Any]]]:
    """Run ``rows`` through the model; returns the version that answered and per-row values."""
    ctx.check_predict(tm.model)
    ctx.spend(len(rows))
    ctx.models.add(tm.model)
    attributes: dict[str, AttributeValue] = {MODEL_ATTRIBUTE: tm.model, "gateway.rows": len(rows)}
    with ctx.runtime.observer.span("gateway.predict", attributes) as span:
        return await _predict(ctx, tm, rows, version, span)


async def _predict(
    ctx: GatewayContext,
    tm: TypedModel,
    rows: Sequence[dict[str, Any]],
    version: int | None,
    span: trace.Span,
) -> tuple[int, list[dict[str, Any]]]:
    observer = ctx.runtime.observer
    caller = ctx.caller if version is None else None
    mv = ctx.runtime.resolve(tm.model, version, caller=caller)
    fits = _fits(tm, mv)
    if not fits and version is None:
        # A canary split (or a default changing under a schema not rebuilt yet) picked a
        # version with another signature: the field goes to the versions that fit it.
        mv = ctx.runtime.resolve(tm.model, caller=caller, accept=lambda v: _fits(tm, v))
        fits = _fits(tm, mv)
    span.set_attribute(VERSION_ATTRIBUTE, mv.version)
    if not fits:
        raise InvalidInputError(
            f"version {mv.version} of model {tm.model!r} has another signature than the one its "
            "typed field was built from; call that version through infer"
        )
    if len(rows) > ctx.settings.max_batch_rows:
        raise InvalidInputError(
            f"{len(rows)} rows in one field; at most {ctx.settings.max_batch_rows} are accepted"
        )
    if not rows:
        return mv.version, []
    # A model without a free batch dimension runs once per row.
    groups = [list(rows)] if tm.batched else [[row] for row in rows]
    runs = []
    with observer.span("gateway.decode", current=False):
        for group in groups:
            feeds = tm.feeds(group)
            _check_size(feeds, ctx.settings.max_tensor_elements)
            ctx.spend_strings(feeds)
            runs.append(ctx.runtime.run(mv, feeds, tm.output_names))
    try:
        outputs = [await runs[0]] if len(runs) == 1 else await asyncio.gather(*runs)
    except UnknownCategoryError as exc:
        raise tm.refusal(exc, rows) from exc  # named as the caller named it: field and row
    with observer.span("gateway.encode", current=False):
        values = [
            p
            for group, out in zip(groups, outputs, strict=True)
            for p in tm.predictions(out, len(group))
        ]
    return mv.version, values


def _fits(tm: TypedModel, mv: ModelVersion) -> bool:
    """Whether the typed field ``tm`` can run on ``mv``: the same inputs, outputs and labels
    (the signatures compare what a caller sees, not the opset)."""
    # Identity first: the default version's signature is the very object the field was built from.
    return mv.signature is tm.signature or mv.signature == tm.signature


def _check_size(feeds: dict[str, np.ndarray], limit: int) -> None:
    for name, array in feeds.items():
        if array.size > limit:
            raise InvalidInputError(
                f"input {name!r} would have {array.size} elements; at most {limit} are accepted"
            )


def _scalar(datatype: DataType, *, output: bool) -> Any:
    if datatype is DataType.BOOL:
        return bool
    if datatype is DataType.BYTES:
        return str
    if datatype in _INTS or (datatype in _WIDE_INTS and not output):
        return int
    if datatype in _WIDE_INTS:
        return float
    return float | None if output else float  # NaN and infinity come out as null


def _python_type(datatype: DataType, row_shape: tuple[int, ...], *, output: bool) -> Any:
    annotation = _scalar(datatype, output=output)
    for _ in row_shape:
        annotation = list[annotation]  # type: ignore[valid-type]
    return annotation


def _shape_text(row_shape: tuple[int, ...]) -> str:
    return "a scalar" if not row_shape else f"nested lists of shape {list(row_shape)}"


def _input_type(tm: TypedModel) -> type:
    namespace: dict[str, Any] = {"__annotations__": {}}
    for i, f in enumerate(tm.inputs):
        if f.nullable:
            # A missing value: null, or the field left out, reaches the model as NaN.
            namespace["__annotations__"][f"f{i}"] = float | None
            namespace[f"f{i}"] = strawberry.field(
                name=f.graphql, description=_input_doc(f), default=None
            )
            continue
        namespace["__annotations__"][f"f{i}"] = _python_type(f.datatype, f.row_shape, output=False)
        namespace[f"f{i}"] = strawberry.field(name=f.graphql, description=_input_doc(f))
    return strawberry.input(
        type(f"{tm.type_stem}Input", (), namespace),
        description=f"One row of input for model {tm.model}.",
    )


def _input_doc(f: InputField) -> str:
    missing = " Null or left out: a missing value, sent to the model as NaN." if f.nullable else ""
    if f.column is not None:
        return (
            f"Feature {f.source!r}: column {f.column} of input {f.tensor!r} "
            f"({f.datatype.value}).{missing}"
        )
    return f"Input {f.tensor!r} ({f.datatype.value}), {_shape_text(f.row_shape)} per row.{missing}"


def _output_doc(f: OutputField) -> str:
    return f"Output {f.tensor!r} ({f.datatype.value}), {_shape_text(f.row_shape)} per row."


def _prediction_type(tm: TypedModel) -> type:
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {"__annotations__": annotations}
    if tm.classifier is not None:
        annotations["label"] = str
        namespace["label"] = strawberry.field(description="The predicted class.")
        annotations["probabilities"] = list[ClassProbability]
        namespace["probabilities"] = strawberry.field(
            description="The probability of each class, in the model's class order."
        )
    for i, f in enumerate(tm.outputs):
        annotations[f"o{i}"] = _python_type(f.datatype, f.row_shape, output=True)
        namespace[f"o{i}"] = strawberry.field(name=f.graphql, description=_output_doc(f))
    annotations["model_version"] = int
    namespace["model_version"] = strawberry.field(description="The model version that answered.")
    return strawberry.type(
        type(f"{tm.type_stem}Prediction", (), namespace),
        description=f"A prediction of model {tm.model}.",
    )


def _row(tm: TypedModel, value: Any) -> dict[str, Any]:
    return {f.graphql: getattr(value, f"f{i}") for i, f in enumerate(tm.inputs)}


def _builder(tm: TypedModel, prediction_cls: type) -> Callable[[int, dict[str, Any]], Any]:
    attrs = {f.graphql: f"o{i}" for i, f in enumerate(tm.outputs)}

    def build(version: int, values: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {attrs.get(k, k): v for k, v in values.items()}
        if "probabilities" in kwargs:
            kwargs["probabilities"] = [
                ClassProbability(label=label, probability=p) for label, p in kwargs["probabilities"]
            ]
        return prediction_cls(model_version=version, **kwargs)

    return build


_Resolver = Callable[..., Coroutine[Any, Any, Any]]
_VERSION_DOC = "The model version; default: the highest READY one."


def _single_resolver(tm: TypedModel, input_cls: type, prediction_cls: type) -> _Resolver:
    build = _builder(tm, prediction_cls)

    async def resolve(info: Info, input: Any, version: int | None = None) -> Any:
        answered, values = await predict_rows(info.context, tm, [_row(tm, input)], version)
        return build(answered, values[0])

    resolve.__annotations__ = {
        "info": Info,
        "input": Annotated[input_cls, strawberry.argument(description="The row to predict.")],
        "version": Annotated[int | None, strawberry.argument(description=_VERSION_DOC)],
        "return": prediction_cls | None,
    }
    return resolve


def _batch_resolver(tm: TypedModel, input_cls: type, prediction_cls: type) -> _Resolver:
    build = _builder(tm, prediction_cls)

    async def resolve(info: Info, inputs: list[Any], version: int | None = None) -> list[Any]:
        rows = [_row(tm, value) for value in inputs]
        answered, values = await predict_rows(info.context, tm, rows, version)
        return [build(answered, v) for v in values]

    resolve.__annotations__ = {
        "info": Info,
        "inputs": Annotated[
            list[input_cls],  # type: ignore[valid-type]
            strawberry.argument(description="The rows to predict, answered in order."),
        ],
        "version": Annotated[int | None, strawberry.argument(description=_VERSION_DOC)],
        "return": list[prediction_cls] | None,  # type: ignore[valid-type]
    }
    return resolve


#: Resolvers for the compiled path, keyed by (type name, field name): they answer typed
#: predictions as plain dicts (what the JSON response holds) instead of Strawberry objects.
DirectResolvers = dict[tuple[str, str], Callable[..., Any]]


def direct_resolvers(typed_models: Sequence[TypedModel]) -> tuple[DirectResolvers, frozenset[str]]:
    """The compiled path's resolvers for ``Predict`` fields, and the names of the types whose
    values they return as dicts keyed by GraphQL field name."""
    resolvers: DirectResolvers = {("Query", "predict"): _namespace}
    dict_types = {"ClassProbability"}
    for tm in typed_models:
        dict_types.add(f"{tm.type_stem}Prediction")
        resolvers[("Predict", tm.field)] = _direct_single(tm)
        resolvers[("Predict", tm.batch_field)] = _direct_batch(tm)
    return resolvers, frozenset(dict_types)


def _namespace(source: Any, info: Any) -> object:
    # Query.predict is a namespace: its fields read nothing from it.
    return _NAMESPACE


_NAMESPACE = object()


def _plain(version: int, values: dict[str, Any]) -> dict[str, Any]:
    row = dict(values)
    row["modelVersion"] = version
    if "probabilities" in row:
        row["probabilities"] = [
            {"label": label, "probability": p} for label, p in row["probabilities"]
        ]
    return row


def _direct_single(tm: TypedModel) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def resolve(
        source: Any, info: Any, input: dict[str, Any], version: int | None = None
    ) -> dict[str, Any]:
        answered, values = await predict_rows(info.context, tm, [input], version)
        return _plain(answered, values[0])

    return resolve


def _direct_batch(tm: TypedModel) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def resolve(
        source: Any, info: Any, inputs: list[dict[str, Any]], version: int | None = None
    ) -> list[dict[str, Any]]:
        answered, values = await predict_rows(info.context, tm, inputs, version)
        return [_plain(answered, v) for v in values]

    return resolve
