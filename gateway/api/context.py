"""What every resolver reaches through ``info.context``: the live runtime and the settings."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import strawberry

from gateway.api.limits import RowBudget
from gateway.auth import Principal
from gateway.config import Settings
from gateway.errors import UnauthenticatedError
from gateway.lifecycle import Lifecycle
from gateway.runtime import ModelRuntime
from gateway.typed import TypedModel

__all__ = ["CALLER_HEADER", "GatewayContext", "Info", "header_map"]

CALLER_HEADER = "x-caller-key"
#: The caller of an in-process execution (tests, ``gateway check``): no request, every scope.
IN_PROCESS = Principal("in-process", frozenset({"predict", "metadata", "admin"}), "in-process")


def header_map(scope: MutableMapping[str, Any]) -> dict[str, str]:
    """The request's headers as a dict, made once per request. ASGI servers give the names in
    lower case; Starlette's ``Headers`` scans the raw list on each lookup, and a missing header
    costs it a KeyError: on the hot path, several lookups per request add up."""
    headers: dict[str, str] | None = scope.get("gateway.headers")
    if headers is None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        scope["gateway.headers"] = headers
    return headers


@dataclass(slots=True)
class GatewayContext:
    """Per-request context; the runtime and settings are shared, the rest is the request's."""

    runtime: ModelRuntime
    settings: Settings
    #: The typed view of each model, or why it has none; built with the schema.
    typed: Mapping[str, TypedModel | str] = field(default_factory=dict)
    #: The HTTP request, when there is one (None in-process).
    request: Any = None
    #: The HTTP response being prepared (status code, headers), when there is one.
    response: Any = None
    #: The models this operation used, for its span and access-log line.
    models: set[str] = field(default_factory=set)
    #: What loads and unloads versions (None until the initial load is done, and in-process).
    lifecycle: Lifecycle | None = None
    #: The authenticated caller (None: anonymous with every scope, as in-process).
    caller_principal: Principal | None = None
    #: Why the credentials sent were refused (a websocket learns it per operation).
    auth_failure: str | None = None
    #: Model rows the operation may still run (None: no limit, as in-process).
    budget: RowBudget | None = None

    def spend(self, rows: int) -> None:
        """Count ``rows`` against the operation's budget (QUERY_TOO_COMPLEX past it)."""
        if self.budget is not None:
            self.budget.spend(rows)

    def spend_strings(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Count the strings of ``feeds`` against the operation's budget, before they run
        (BAD_USER_INPUT for one too long, QUERY_TOO_COMPLEX past the budget)."""
        if self.budget is not None:
            self.budget.spend_strings(feeds)

    @property
    def principal(self) -> Principal:
        """The caller; raises UnauthenticatedError if the credentials sent were refused."""
        if self.auth_failure is not None:
            raise UnauthenticatedError(self.auth_failure)
        return self.caller_principal or IN_PROCESS

    def check_predict(self, model: str) -> None:
        """Raises FORBIDDEN unless the caller may run ``model`` (scopes, model.toml access)."""
        entry = self.runtime.entries.get(model)
        required = entry.spec.config.access if entry is not None else ()
        self.principal.check_predict(model, required)

    @property
    def caller(self) -> str | None:
        """The caller's key (the ``X-Caller-Key`` header): a canary split sends the same
        caller to the same version."""
        scope = getattr(self.request, "scope", None)
        return header_map(scope).get(CALLER_HEADER) if scope is not None else None


Info = strawberry.Info[GatewayContext, None]
