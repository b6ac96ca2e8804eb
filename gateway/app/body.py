"""Reading a GraphQL request's body within bounds: its size (``max_body_bytes``), the time it
takes to arrive (``body_timeout_seconds``), and, for a body over the limit, how much of it is
read and thrown away (``max_drain_bytes``) before the 413.

Why drain: HTTP clients (urllib, requests, httpx) send the whole body before they read the
answer. Closing the connection while a body is still coming makes the kernel reset it, and the
client sees ``Connection reset by peer`` instead of the 413. Reading the rest (and discarding
it as it comes, so memory does not grow) lets the client read the answer. A client that asked
``Expect: 100-continue`` has sent nothing yet: it gets the 413 without reading.
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope

from gateway.api.context import header_map
from gateway.errors import BadRequestError

__all__ = ["read_body"]


async def read_body(
    scope: Scope, receive: Receive, *, limit: int, drain: int, timeout: float
) -> bytes | Response | None:
    """The body; or the answer that refuses it (413, 408); or None when the client left.

    Args:
        scope: the request's ASGI scope.
        receive: its ASGI receive channel.
        limit: the largest body accepted, in bytes.
        drain: the most bytes of a body over ``limit`` read (and discarded) before answering.
        timeout: the seconds the whole body (and the draining) may take.
    """
    headers = header_map(scope)
    declared = headers.get("content-length", "")
    length = int(declared) if declared.isdigit() else None
    try:
        async with asyncio.timeout(timeout):
            if length is not None and length > limit:
                waiting = headers.get("expect", "").lower() == "100-continue"
                if length <= drain and not waiting and not await _discard(receive, drain):
                    return None
                return _too_large(limit)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    if not await _discard(receive, drain - size):
                        return None
                    return _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        return _error(
            408, f"the request body did not arrive within {timeout:g} s (body_timeout_seconds)"
        )


async def _discard(receive: Receive, budget: int) -> bool:
    """Read and drop the rest of the body, at most ``budget`` bytes; False if the client left
    (beyond the budget the answer goes anyway, and the connection is closed after it)."""
    while budget >= 0:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return True


def _too_large(limit: int) -> Response:
    return _error(413, f"the request body is larger than {limit} bytes (max_body_bytes)")


def _error(status: int, message: str) -> Response:
    error = {"message": message, "extensions": {"code": BadRequestError.code}}
    # Connection: close: whatever the client still sends is not read.
    return JSONResponse({"errors": [error]}, status_code=status, headers={"Connection": "close"})
