"""Operating models through GraphQL: the admin mutations and the model-events subscription.

Mutations need the ``admin`` scope (``admin_api`` grants it to anonymous callers, for
development on a loopback host). The subscription needs ``metadata``, like ``models``.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any

import strawberry

from gateway.api.context import Info
from gateway.api.generic import Model, model_info
from gateway.auth import ADMIN, METADATA
from gateway.errors import (
    ForbiddenError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from gateway.lifecycle import Lifecycle, ModelEvent
from gateway.shadow import Shadow, label_output
from gateway.versions import ModelEntry

__all__ = ["MUTATIONS", "VersionWeightInput", "model_events"]


@strawberry.input(description="A version's share of the requests that name no version.")
class VersionWeightInput:
    version: int
    weight: float = strawberry.field(description="Relative weight, >= 0.")


@strawberry.type(name="ModelEvent", description="Something that happened to a model.")
class ModelEventInfo:
    model: str
    version: int | None
    kind: str = strawberry.field(
        description="LOADING, READY, FAILED (the version does not serve), RELOAD_FAILED (a "
        "changed model file or model.toml did not load; the previous load still serves), "
        "UNLOADED, DEFAULT_CHANGED, TRAFFIC_CHANGED or SHADOW_CHANGED."
    )
    reason: str | None
    at: datetime.datetime


def _event(event: ModelEvent) -> ModelEventInfo:
    at = datetime.datetime.fromtimestamp(event.at, tz=datetime.UTC)
    return ModelEventInfo(
        model=event.model, version=event.version, kind=event.kind, reason=event.reason, at=at
    )


def _lifecycle(info: Info) -> Lifecycle:
    ctx = info.context
    if ADMIN not in ctx.principal.scopes:
        raise ForbiddenError(
            "the admin mutations need the admin scope (an API key or token with it; or, for "
            "development on a loopback host, GATEWAY_ADMIN_API=true)"
        )
    if ctx.lifecycle is None:
        raise ModelNotReadyError("the initial load has not finished; retry")
    return ctx.lifecycle


def _entry(info: Info, name: str) -> ModelEntry:
    entry = info.context.runtime.entries.get(name)
    if entry is None:
        known = ", ".join(sorted(info.context.runtime.entries)) or "none"
        raise ModelNotFoundError(f"no model named {name!r}; models served: {known}")
    return entry


def _info(info: Info, entry: ModelEntry) -> Model:
    typed = info.context.typed.get(entry.name)
    if typed is None or isinstance(typed, str):
        return model_info(entry, None, typed)
    return model_info(entry, typed.field, None)


def _ready(entry: ModelEntry, version: int) -> None:
    if version not in entry.versions:
        known = ", ".join(str(v) for v in sorted(entry.versions)) or "none"
        raise ModelNotFoundError(
            f"model {entry.name!r} has no version {version}; versions: {known}"
        )
    if not entry.ready(version):
        state = entry.versions[version].state.value
        raise ModelNotReadyError(f"model {entry.name!r} version {version} is {state}")


async def load_model(
    info: Info,
    name: str,
    version: Annotated[int | None, strawberry.argument(description="Default: all.")] = None,
) -> Model:
    """Load (or reload) a model's versions from the repository now, and stop holding any an
    operator unloaded."""
    lifecycle = _lifecycle(info)
    await lifecycle.load(name, version)
    return _info(info, _entry(info, name))


async def unload_model(
    info: Info,
    name: str,
    version: Annotated[int | None, strawberry.argument(description="Default: all.")] = None,
) -> Model:
    """Drain and unload a version (or the whole model); it stays unloaded until loadModel."""
    lifecycle = _lifecycle(info)
    entry = _entry(info, name)
    if version is not None and version not in entry.versions:
        raise ModelNotFoundError(f"model {name!r} has no version {version}")
    await lifecycle.unload(name, version)
    return _info(info, entry)


async def reload_repository(info: Info) -> list[Model]:
    """Scan the repository now and apply what changed (files are taken as complete)."""
    lifecycle = _lifecycle(info)
    await lifecycle.reconcile(settle=False)
    entries = info.context.runtime.entries
    return [_info(info, entries[name]) for name in sorted(entries)]


def set_default_version(
    info: Info,
    name: str,
    version: Annotated[
        int | None,
        strawberry.argument(description="A READY version; null: back to the usual default."),
    ],
) -> Model:
    """Pin the version that serves requests naming none: a rollback, or a promotion."""
    lifecycle = _lifecycle(info)
    entry = _entry(info, name)
    if version is not None:
        _ready(entry, version)
    entry.pinned = version
    lifecycle.emit(ModelEvent(name, version, "DEFAULT_CHANGED"))
    return _info(info, entry)


def set_traffic_split(
    info: Info,
    name: str,
    split: Annotated[
        list[VersionWeightInput],
        strawberry.argument(description="READY versions and weights; empty: no split."),
    ],
) -> Model:
    """Share the requests that name no version between versions (a canary); a request with
    an ``X-Caller-Key`` header always lands on the same version while the split stays."""
    lifecycle = _lifecycle(info)
    entry = _entry(info, name)
    for share in split:
        _ready(entry, share.version)
        if not share.weight >= 0:
            raise InvalidInputError(f"version {share.version}: a weight must be >= 0")
    if len({s.version for s in split}) != len(split):
        raise InvalidInputError("each version may appear once in a split")
    if split and sum(s.weight for s in split) <= 0:
        raise InvalidInputError("the weights of a split must not all be 0")
    entry.split = tuple((s.version, float(s.weight)) for s in split)
    lifecycle.emit(ModelEvent(name, None, "TRAFFIC_CHANGED"))
    return _info(info, entry)


def set_shadow(
    info: Info,
    name: str,
    version: Annotated[
        int | None, strawberry.argument(description="The shadow version; null: stop.")
    ],
    share: Annotated[
        float, strawberry.argument(description="Share of the requests to mirror, 0..1.")
    ] = 0.1,
) -> Model:
    """Mirror a share of a model's requests to another version: its answers are discarded but
    compared with the served ones, by label for a classifier, else by value (Model.shadow,
    metric gateway.shadow.requests)."""
    lifecycle = _lifecycle(info)
    entry = _entry(info, name)
    if version is None:
        entry.shadow = None
    else:
        _ready(entry, version)
        if not 0 < share <= 1:
            raise InvalidInputError(f"share: {share} is not in (0, 1]")
        served = entry.schema_version
        labels = None
        if served is not None and served.signature is not None:
            labels = label_output(entry.name, served.signature, entry.spec.config)
        entry.shadow = Shadow(version, share, label_output=labels)
    lifecycle.emit(ModelEvent(name, version, "SHADOW_CHANGED"))
    return _info(info, entry)


MUTATIONS: dict[str, Callable[..., Any]] = {
    "load_model": load_model,
    "unload_model": unload_model,
    "reload_repository": reload_repository,
    "set_default_version": set_default_version,
    "set_traffic_split": set_traffic_split,
    "set_shadow": set_shadow,
}


async def model_events(
    info: Info,
    model: Annotated[
        str | None, strawberry.argument(description="Only this model's events.")
    ] = None,
) -> AsyncGenerator[ModelEventInfo, None]:
    """Model lifecycle events as they happen: loads, failures, unloads, default and traffic
    changes."""
    info.context.principal.check(METADATA)
    lifecycle = info.context.lifecycle
    if lifecycle is None:
        raise ModelNotReadyError("the initial load has not finished; retry")
    queue = lifecycle.listen()
    try:
        while True:
            event = await queue.get()
            if model is None or event.model == model:
                yield _event(event)
    finally:
        lifecycle.unlisten(queue)
