"""The generic API fixed by ../shared/API.md: tensors in and out, and model metadata."""

from __future__ import annotations

import uuid
from typing import Annotated, cast

import numpy as np
import strawberry
from strawberry.scalars import JSON

from gateway.api.context import Info
from gateway.auth import METADATA
from gateway.errors import InvalidInputError
from gateway.observability import MODEL_ATTRIBUTE, VERSION_ATTRIBUTE
from gateway.shadow import ShadowComparison
from gateway.signature import IOSpec
from gateway.tensors import DataType, datatype_of, decode_tensor, encode_b64, encode_data
from gateway.versions import ModelEntry, ModelState, ModelVersion, Warmup

__all__ = [
    "InferResult",
    "Model",
    "ModelVersionInfo",
    "Tensor",
    "TensorInput",
    "ShadowInfo",
    "TensorSpec",
    "VersionWeight",
    "infer",
    "model",
    "model_info",
    "models",
]

DataTypeEnum = strawberry.enum(DataType, name="DataType", description="Tensor element type.")
ModelStateEnum = strawberry.enum(
    ModelState, name="ModelState", description="Where a model version is in its life."
)
WarmupEnum = strawberry.enum(
    Warmup,
    name="Warmup",
    description="How a version was warmed up before it took traffic: SYNTHETIC (one run on "
    "zeros and empty strings), SAMPLES (model.toml's [[samples]], checked), SKIPPED (the model "
    "rejected the synthetic input, e.g. an input that is a shape or indices: it serves "
    "unwarmed; warmupSkipped says why), OFF (the warmup setting is off, and no samples).",
)
ShadowComparisonEnum = strawberry.enum(
    ShadowComparison,
    name="ShadowComparison",
    description="How a shadow's answers are compared with the served ones: LABELS (a "
    "classifier: the predicted label of every row is the same) or VALUES (every output has the "
    "same shape, floats within rtol 1e-4, atol 1e-5, other types equal).",
)


@strawberry.input(description="A named tensor: exactly one of data or b64.")
class TensorInput:
    name: str = strawberry.field(description="The model input it feeds.")
    shape: list[int] = strawberry.field(description="Dimensions, outermost first.")
    datatype: DataType | None = strawberry.field(
        default=None, description="Element type; defaults to the model's declared type."
    )
    data: JSON | None = strawberry.field(
        default=None,
        description='Flat row-major list: numbers ("NaN", "Infinity", "-Infinity" allowed for '
        "floats), booleans, or strings for BYTES.",
    )
    b64: str | None = strawberry.field(
        default=None, description="Or: the raw little-endian bytes, base64 (not for BYTES)."
    )


@strawberry.type(description="A named output tensor.")
class Tensor:
    name: str
    datatype: DataType
    shape: list[int]
    array: strawberry.Private[np.ndarray]

    @strawberry.field(
        description='Flat row-major list; non-finite floats as "NaN", "Infinity", "-Infinity".'
    )  # type: ignore[untyped-decorator]  # strawberry's field() overloads lose the type here
    def data(self, info: Info) -> JSON:
        with info.context.runtime.observer.span(
            "gateway.encode", {"gateway.tensor": self.name}, current=False
        ):
            return cast(JSON, encode_data(self.array))

    @strawberry.field(description="Raw little-endian bytes, base64; null for BYTES.")  # type: ignore[untyped-decorator]
    def b64(self, info: Info) -> str | None:
        with info.context.runtime.observer.span(
            "gateway.encode", {"gateway.tensor": self.name}, current=False
        ):
            return encode_b64(self.array)


@strawberry.type(description="A model input or output: name, element type and shape.")
class TensorSpec:
    name: str
    datatype: DataType
    shape: list[int] = strawberry.field(description="Dimensions; -1 = dynamic.")
    onnx_type: str = strawberry.field(
        description="The type in the ONNX graph. A seq(map(...)) output (e.g. skl2onnx's ZipMap) "
        "is served as the dense FP32 tensor [N, classes] this spec describes."
    )
    labels: list[str] | None = strawberry.field(
        description="For map outputs: the keys, in column order, when the graph declares them."
    )


@strawberry.type(name="ModelVersion", description="One version of a model.")
class ModelVersionInfo:
    version: int
    state: ModelState
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state_reason: str | None = strawberry.field(description="Why the version is not READY.")
    load_time_ms: float | None = strawberry.field(
        description="Milliseconds to load and warm up the version."
    )
    load_error: str | None = strawberry.field(
        description="Why the last load of changed files (the model file or model.toml) failed "
        "while this load kept serving."
    )
    warmup: Warmup | None = strawberry.field(
        description="How this load was warmed up (null until it is loaded)."
    )
    warmup_skipped: str | None = strawberry.field(
        description="Why the synthetic warm-up was skipped (warmup SKIPPED): what the model "
        "said of the synthetic input."
    )


@strawberry.type(description="A version's share of the requests that name no version.")
class VersionWeight:
    version: int
    weight: float


@strawberry.type(description="A version that a share of the requests also runs on, compared.")
class ShadowInfo:
    version: int
    share: float = strawberry.field(description="Share of the model's requests mirrored, 0..1.")
    requests: int = strawberry.field(description="Requests mirrored so far.")
    agreed: int = strawberry.field(description="Mirrored requests whose outputs agreed.")
    failed: int = strawberry.field(description="Shadow runs that failed.")
    comparison: ShadowComparison = strawberry.field(
        description="How answers are compared: by label (a classifier) or by value."
    )
    agreement: float | None = strawberry.field(
        description="agreed / (requests - failed), compared as comparison says."
    )
    mean_latency_ms: float | None = strawberry.field(
        description="Mean duration of the shadow runs."
    )


@strawberry.type(description="A model of the repository.")
class Model:
    name: str
    description: str | None
    versions: list[ModelVersionInfo]
    default_version: int | None = strawberry.field(
        description="The version that serves requests naming none (and no traffic split): "
        "the pinned one, else model.toml's default, else the highest READY one."
    )
    pinned_version: int | None = strawberry.field(
        description="The default set with setDefaultVersion (a rollback), if any."
    )
    traffic_split: list[VersionWeight] = strawberry.field(
        description="A canary: shares of the requests that name no version (empty: none)."
    )
    shadow: ShadowInfo | None = strawberry.field(
        description="Shadow traffic to another version, and how its answers compare."
    )
    typed_field: str | None = strawberry.field(
        description="The model's field under Query.predict, or null when it has none."
    )
    typed_field_error: str | None = strawberry.field(
        description="Why the model has no typed field (it is still served by infer)."
    )


@strawberry.type(description="The outputs of one inference.")
class InferResult:
    model: str
    version: int
    id: strawberry.ID
    outputs: list[Tensor]


def _spec(io: IOSpec) -> TensorSpec:
    labels = [str(k) for k in io.keys] if io.keys else None
    return TensorSpec(
        name=io.name,
        datatype=io.datatype,
        shape=list(io.shape),
        onnx_type=io.onnx_type,
        labels=labels,
    )


def _version_info(mv: ModelVersion) -> ModelVersionInfo:
    sig = mv.signature
    return ModelVersionInfo(
        version=mv.version,
        state=mv.state,
        inputs=[_spec(i) for i in sig.inputs] if sig else [],
        outputs=[_spec(o) for o in sig.outputs] if sig else [],
        state_reason=mv.reason,
        load_time_ms=None if mv.load_seconds is None else mv.load_seconds * 1000.0,
        load_error=mv.load_error,
        warmup=mv.warmup,
        warmup_skipped=mv.warmup_skipped,
    )


def _shadow(entry: ModelEntry) -> ShadowInfo | None:
    shadow = entry.shadow
    if shadow is None:
        return None
    return ShadowInfo(
        version=shadow.version,
        share=shadow.share,
        requests=shadow.requests,
        agreed=shadow.agreed,
        failed=shadow.failed,
        comparison=shadow.comparison,
        agreement=shadow.agreement,
        mean_latency_ms=shadow.mean_latency_ms,
    )


def model_info(entry: ModelEntry, typed: str | None, typed_error: str | None) -> Model:
    """The metadata of one model."""
    return Model(
        name=entry.name,
        description=entry.spec.config.description,
        versions=[_version_info(mv) for _, mv in sorted(entry.versions.items())],
        default_version=entry.default_version,
        pinned_version=entry.pinned,
        traffic_split=[VersionWeight(version=v, weight=w) for v, w in entry.split],
        shadow=_shadow(entry),
        typed_field=typed,
        typed_field_error=typed_error,
    )


def _model(info: Info, name: str) -> Model | None:
    entry = info.context.runtime.entries.get(name)
    if entry is None:
        return None
    typed = info.context.typed.get(name)
    if typed is None or isinstance(typed, str):
        return model_info(entry, None, typed)
    return model_info(entry, typed.field, None)


def models(info: Info) -> list[Model]:
    """Every model of the repository, by name."""
    info.context.principal.check(METADATA)
    with info.context.runtime.observer.span("gateway.metadata"):
        found = (_model(info, name) for name in sorted(info.context.runtime.entries))
        return [m for m in found if m is not None]


def model(
    info: Info, name: Annotated[str, strawberry.argument(description="The model's name.")]
) -> Model | None:
    """One model, or null when there is none of that name."""
    info.context.principal.check(METADATA)
    with info.context.runtime.observer.span("gateway.metadata", {MODEL_ATTRIBUTE: name}):
        return _model(info, name)


async def infer(
    info: Info,
    model: str,
    version: Annotated[
        int | None, strawberry.argument(description="Default: the highest READY version.")
    ] = None,
    *,
    inputs: list[TensorInput],
    outputs: Annotated[
        list[str] | None, strawberry.argument(description="Outputs to compute; default all.")
    ] = None,
    id: Annotated[
        strawberry.ID | None, strawberry.argument(description="Echoed back; default a new UUID.")
    ] = None,
) -> InferResult:
    """Run a model on tensors (shaped after the Open Inference Protocol)."""
    ctx = info.context
    ctx.check_predict(model)
    ctx.models.add(model)
    with ctx.runtime.observer.span("gateway.infer", {MODEL_ATTRIBUTE: model}) as span:
        mv = ctx.runtime.resolve(model, version, caller=ctx.caller if version is None else None)
        span.set_attribute(VERSION_ATTRIBUTE, mv.version)
        with ctx.runtime.observer.span("gateway.decode", current=False):
            feeds = _decode_inputs(mv, inputs, outputs, ctx.settings.max_tensor_elements)
        ctx.spend(max((int(a.shape[0]) if a.ndim else 1 for a in feeds.values()), default=1))
        ctx.spend_strings(feeds)
        result = await ctx.runtime.run(mv, feeds, outputs)
    tensors = [
        Tensor(name=name, datatype=datatype_of(a), shape=list(a.shape), array=a)
        for name, a in result.items()
    ]
    return InferResult(
        model=model,
        version=mv.version,
        id=strawberry.ID(id or str(uuid.uuid4())),
        outputs=tensors,
    )


def _decode_inputs(
    mv: ModelVersion,
    inputs: list[TensorInput],
    outputs: list[str] | None,
    max_elements: int,
) -> dict[str, np.ndarray]:
    """Validate the request against ``mv``'s signature and decode its tensors."""
    signature = mv.signature
    assert signature is not None  # READY versions have one
    feeds: dict[str, np.ndarray] = {}
    for tensor in inputs:
        spec = signature.input(tensor.name)
        if spec is None:
            known = ", ".join(i.name for i in signature.inputs)
            raise InvalidInputError(f"unknown input {tensor.name!r}; the model's inputs: {known}")
        if tensor.name in feeds:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        feeds[tensor.name] = decode_tensor(
            spec.tensor,
            shape=tensor.shape,
            datatype=tensor.datatype,
            data=tensor.data,
            b64=tensor.b64,
            max_elements=max_elements,
        )
    missing = [i.name for i in signature.inputs if i.name not in feeds]
    if missing:
        raise InvalidInputError(
            f"missing input {missing[0]!r}; the model needs: "
            + ", ".join(i.name for i in signature.inputs)
        )
    # ONNX Runtime does not check that inputs agree on their batch size: it would answer
    # outputs of different row counts (and a batch of such requests would mix their rows).
    for group in signature.shared_first_dims:
        sizes = {name: int(feeds[name].shape[0]) for name in group}
        if len(set(sizes.values())) > 1:
            given = ", ".join(f"{name!r} has {size}" for name, size in sizes.items())
            first = signature.input(group[0])
            symbol = first.dim_names[0] if first is not None and first.dim_names else ""
            symbol = f" {symbol!r}" if symbol else ""
            raise InvalidInputError(
                f"inputs {', '.join(map(repr, group))} share their first (batch) "
                f"dimension{symbol} and must have the same size in it; {given}"
            )
    if outputs is not None:
        known_out = [o.name for o in signature.outputs]
        unknown = [o for o in outputs if o not in known_out]
        if unknown or not outputs:
            what = f"unknown output {unknown[0]!r}" if unknown else "outputs is empty"
            raise InvalidInputError(f"{what}; the model's outputs: {', '.join(known_out)}")
    return feeds
