"""Who may send one more request: authentication and the rate limit, in one place for every path.

``admit`` runs once for each HTTP request to ``/graphql`` (POST, GET with a query, the explorer
page: no exceptions by method or ``Accept``), and the websocket handlers made by
``websocket_handlers`` run the same rate limit for each operation a socket sends
(graphql-transport-ws ``subscribe`` and graphql-ws ``start``): a socket is not a way around it.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from graphql import GraphQLFormattedError
from starlette.responses import JSONResponse, Response
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ErrorMessage as TransportErrorMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import ErrorMessage, StartMessage

from gateway.api import GatewayContext
from gateway.api.context import header_map
from gateway.app.state import Gateway
from gateway.auth import Principal
from gateway.errors import RateLimitedError, UnauthenticatedError

__all__ = ["admit", "peer_address", "websocket_handlers"]


def peer_address(scope: MutableMapping[str, Any]) -> str | None:
    """The client's address as the socket gives it. A forwarded header (X-Forwarded-For) is
    whatever the caller wrote: uvicorn is started without its proxy-header rewriting, so this is
    the peer."""
    client = scope.get("client")
    return str(client[0]) if client else None


def _rate_limited_error(wait: int) -> GraphQLFormattedError:
    return {
        "message": f"too many requests from this caller; retry in {wait} s",
        "extensions": {"code": RateLimitedError.code, "retryAfter": wait},
    }


def _rate_limited(wait: int) -> Response:
    return JSONResponse(
        {"errors": [_rate_limited_error(wait)]},
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
    return await rate.retry_after(principal, peer_address(scope))


async def admit(gateway: Gateway, scope: MutableMapping[str, Any]) -> Response | None:
    """None when the HTTP request may go on, its caller then in ``scope["gateway.principal"]``;
    else the answer that refuses it (401 UNAUTHENTICATED or 429 RATE_LIMITED)."""
    try:
        principal = gateway.auth.authenticate(header_map(scope))
    except UnauthenticatedError as exc:
        # Counted against the address, as an anonymous request: a flood of forged credentials
        # is limited like any other.
        wait = await _wait(gateway, gateway.auth.anonymous, scope)
        return _rate_limited(wait) if wait is not None else _unauthenticated(exc)
    scope["gateway.principal"] = principal
    if not gateway.rate.applies(principal):  # no limit (the default): no coroutine to await
        return None
    wait = await gateway.rate.retry_after(principal, peer_address(scope))
    return _rate_limited(wait) if wait is not None else None


async def _operation_wait(gateway: Gateway, context: GatewayContext) -> int | None:
    """The rate limit for one operation on a websocket: its caller is the socket's (anonymous,
    by address, when the socket's credentials were refused)."""
    principal = context.caller_principal
    if principal is None or context.auth_failure is not None:
        principal = gateway.auth.anonymous
    return await _wait(gateway, principal, context.request.scope)


def websocket_handlers(
    gateway: Gateway,
) -> tuple[
    type[BaseGraphQLTransportWSHandler[GatewayContext, None]],
    type[BaseGraphQLWSHandler[GatewayContext, None]],
]:
    """Strawberry's handlers of the two websocket protocols, with each operation admitted."""

    class TransportWSHandler(BaseGraphQLTransportWSHandler[GatewayContext, None]):
        async def handle_subscribe(self, message: SubscribeMessage) -> None:
            # Before the acknowledgement the protocol closes the socket (the base class does).
            if self.connection_acknowledged and message["id"] not in self.operations:
                wait = await _operation_wait(gateway, self.context)
                if wait is not None:
                    error = [_rate_limited_error(wait)]
                    await self.send_message(
                        TransportErrorMessage(id=message["id"], type="error", payload=error)
                    )
                    return
            await super().handle_subscribe(message)

    class WSHandler(BaseGraphQLWSHandler[GatewayContext, None]):
        async def handle_start(self, message: StartMessage) -> None:
            if self.connection_acknowledged:
                wait = await _operation_wait(gateway, self.context)
                if wait is not None:
                    error = _rate_limited_error(wait)
                    await self.send_message(
                        ErrorMessage(id=message["id"], type="error", payload=error)
                    )
                    return
            await super().handle_start(message)

    return TransportWSHandler, WSHandler
