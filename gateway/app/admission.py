"""Who may send one more request: authentication and the rate limit, in one place for every path.

``admit`` runs once for each HTTP request to ``/graphql`` (POST, GET with a query, the explorer
page: no exceptions by method or ``Accept``), and the websocket handler (``app.websocket``) asks
``operation_wait`` for each operation a socket sends (graphql-transport-ws ``subscribe``): a
socket is not a way around the limit. The client's address is the socket peer, or what a
configured proxy says it is (``gateway.trust``): a forwarded header from anyone else is ignored,
so rotating ``X-Forwarded-For`` makes no new caller.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from graphql import GraphQLFormattedError
from starlette.responses import JSONResponse, Response

from gateway.api import GatewayContext
from gateway.app.state import Gateway
from gateway.auth import Principal
from gateway.errors import RateLimitedError, UnauthenticatedError

__all__ = ["admit", "operation_wait", "rate_limited_error"]


def rate_limited_error(wait: int) -> GraphQLFormattedError:
    """The GraphQL error of a caller over its rate, to retry in ``wait`` seconds."""
    return {
        "message": f"too many requests from this caller; retry in {wait} s",
        "extensions": {"code": RateLimitedError.code, "retryAfter": wait},
    }


def _rate_limited(wait: int) -> Response:
    return JSONResponse(
        {"errors": [rate_limited_error(wait)]},
        status_code=429,
        headers={"Retry-After": str(wait)},
    )


def _unauthenticated(exc: UnauthenticatedError) -> Response:
    # GraphQL over HTTP: a request the server refuses to run gets a 4xx status.
    error = {"message": exc.message, "extensions": {"code": exc.code}}
    return JSONResponse(
        {"errors": [error]}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


async def _wait(
    gateway: Gateway, principal: Principal, scope: MutableMapping[str, Any]
) -> int | None:
    rate = gateway.rate
    if not rate.applies(principal):  # no limit: nothing to count (the default)
        return None
    return await rate.retry_after(principal, gateway.trust.client_address(scope))


async def admit(gateway: Gateway, scope: MutableMapping[str, Any]) -> Response | None:
    """None when the HTTP request may go on, its caller then in ``scope["gateway.principal"]``;
    else the answer that refuses it (401 UNAUTHENTICATED or 429 RATE_LIMITED)."""
    try:
        principal = gateway.authenticate(scope)
    except UnauthenticatedError as exc:
        # Counted against the address, as an anonymous request: a flood of forged credentials
        # is limited like any other.
        wait = await _wait(gateway, gateway.auth.anonymous, scope)
        return _rate_limited(wait) if wait is not None else _unauthenticated(exc)
    scope["gateway.principal"] = principal
    if not gateway.rate.applies(principal):  # no limit (the default): no coroutine to await
        return None
    wait = await _wait(gateway, principal, scope)
    return _rate_limited(wait) if wait is not None else None


async def operation_wait(gateway: Gateway, context: GatewayContext) -> int | None:
    """The rate limit for one operation on a websocket: seconds to wait, or None to go on. Its
    caller is the socket's (anonymous, by address, when the socket's credentials were
    refused)."""
    principal = context.caller_principal
    if principal is None or context.auth_failure is not None:
        principal = gateway.auth.anonymous
    return await _wait(gateway, principal, context.request.scope)
