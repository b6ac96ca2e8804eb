"""Subscriptions over graphql-transport-ws, with credentials that stay checked.

A socket is opened with the credentials of its handshake. Strawberry's handler would run every
later operation with them as they were then; this one:

* authenticates each ``subscribe`` again (a key's scopes may have changed in the keys file);
* closes the socket with 4403 (Forbidden, the protocol's code for refused credentials) as soon
  as credentials that were valid stop being so: at the token's ``exp`` (as HTTP would refuse
  it), or within ``poll_seconds`` of its API key leaving the keys file;
* keeps at most ``max_subscriptions`` operations open at once on a socket; the next one gets
  an ``error`` message with code ``BAD_REQUEST``;
* counts each operation against the caller's rate limit, as a request (``app.admission``): one
  over it gets an ``error`` message with code ``RATE_LIMITED`` and the socket stays open.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import TYPE_CHECKING

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    ErrorMessage,
    Message,
    SubscribeMessage,
)

from gateway.api import GatewayContext
from gateway.app.admission import operation_wait, rate_limited_error
from gateway.auth import JWT_LEEWAY_SECONDS
from gateway.errors import BadRequestError, UnauthenticatedError

if TYPE_CHECKING:
    from gateway.app.state import Gateway

__all__ = ["CREDENTIALS_CLOSE_CODE", "GatewayWSHandler"]

#: graphql-transport-ws: "Forbidden", what a server closes with when it refuses credentials.
CREDENTIALS_CLOSE_CODE = 4403


class GatewayWSHandler(BaseGraphQLTransportWSHandler[GatewayContext, None]):
    """Strawberry's graphql-transport-ws handler with the rules of the module docstring."""

    _watch: asyncio.Task[None] | None = None
    #: Closed for its credentials: messages still arriving (sent before the client saw the
    #: close) are dropped, and nothing more is sent.
    _closed = False

    @property
    def _gateway(self) -> Gateway:
        gateway: Gateway = self.view.gateway  # type: ignore[attr-defined]
        return gateway

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        await super().handle_connection_init(message)
        if self.connection_acknowledged:
            self._start_watch()

    def _start_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_credentials())

    async def handle_message(self, message: Message) -> None:
        if not self._closed:
            await super().handle_message(message)

    async def send_message(self, message: Message) -> None:
        if not self._closed:
            await super().send_message(message)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if not self.connection_acknowledged or message["id"] in self.operations:
            await super().handle_subscribe(message)  # the protocol's own answers (4401, 4409)
            return
        if not await self._reauthenticate():
            return
        limit = self._gateway.settings.max_subscriptions
        if len(self.operations) >= limit:
            error = GraphQLError(
                f"this socket already has {limit} operations open (max_subscriptions): "
                "complete one first, or open another socket",
                extensions={"code": BadRequestError.code},
            )
            refusal: ErrorMessage = {
                "id": message["id"],
                "type": "error",
                "payload": [error.formatted],
            }
            await self.send_message(refusal)
            return
        wait = await operation_wait(self._gateway, self.context)
        if wait is not None:
            limited: ErrorMessage = {
                "id": message["id"],
                "type": "error",
                "payload": [rate_limited_error(wait)],
            }
            await self.send_message(limited)
            return
        await super().handle_subscribe(message)
        await self._let_others_run()

    async def cleanup_operation(self, operation_id: str) -> None:
        await super().cleanup_operation(operation_id)
        await self._let_others_run()

    @staticmethod
    async def _let_others_run() -> None:
        # Setting an operation up (parse, validation, extensions) or tearing it down takes a
        # millisecond or so of the event loop. A burst of them from one socket (100 subscribes,
        # or a socket closing with 100 open) would queue that many steps at once ahead of
        # everyone else's requests; one step per turn of the loop lets others run between.
        await asyncio.sleep(0)

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with suppress(asyncio.CancelledError):
                await self._watch
        await super().shutdown()

    async def _reauthenticate(self) -> bool:
        """Check the socket's credentials again; False if the socket was closed for them."""
        context = self.context
        try:
            principal = self._gateway.authenticate(context.request.scope)
        except UnauthenticatedError as exc:
            if context.auth_failure is not None:
                return True  # never valid: each operation answers UNAUTHENTICATED, as before
            await self._close(exc.message)
            return False
        context.caller_principal = principal
        if context.auth_failure is not None:  # a key added to the keys file since
            context.auth_failure = None
            self._start_watch()
        return True

    async def _watch_credentials(self) -> None:
        """Close the socket when its credentials stop being valid (see the module docstring)."""
        principal = self.context.caller_principal
        if principal is None or principal.kind == "anonymous":
            return
        poll = self._gateway.settings.poll_seconds
        while True:
            waits = [poll] if principal.kind == "api-key" and poll > 0 else []
            if principal.expires is not None:
                # The moment HTTP starts answering 401 for this token.
                waits.append(principal.expires + JWT_LEEWAY_SECONDS + 0.01 - time.time())
            if not waits:
                return
            await asyncio.sleep(max(0.0, min(waits)))
            try:
                principal = self._gateway.authenticate(self.context.request.scope)
            except UnauthenticatedError as exc:
                await self._close(exc.message)
                return
            self.context.caller_principal = principal

    async def _close(self, why: str) -> None:
        # A close reason is at most 123 bytes.
        reason = f"Forbidden: {why}".encode()[:123].decode(errors="ignore")
        self._closed = True
        await self.websocket.close(code=CREDENTIALS_CLOSE_CODE, reason=reason)
