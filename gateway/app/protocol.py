"""uvicorn's HTTP/1.1 protocol with bounds on how a client sends a request (slow loris).

uvicorn waits for a request's line and headers as long as bytes keep coming, holds headers of
any size, and reads a body the application has stopped reading as long as it trickles. Here:

* the line and headers of a request must arrive within ``header_timeout_seconds`` (counted from
  the connection's start, or from the request's first byte on a kept-alive connection): beyond,
  HTTP 408 and the connection is closed (a connection that sent nothing is just closed);
* they may take at most ``max_header_bytes``: beyond, HTTP 431 and the connection is closed;
* a body must have arrived ``body_timeout_seconds`` after its headers. The GraphQL view reads
  bodies within that time itself and answers 408; a body nobody reads (the answer was sent
  first) gets one second more, then the connection is closed.

Idle kept-alive connections are closed after uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["BoundedHttpProtocol"]

#: Beyond body_timeout_seconds, the time the view has to answer 408 before the connection goes.
_BODY_GRACE_SECONDS = 1.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with time and size bounds on reading a request."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        body_timeout: float,
        max_header_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._max_header_bytes = max_header_bytes
        self._timer: asyncio.TimerHandle | None = None
        #: Bytes received since the request began, while its head is incomplete; else None.
        self._head_bytes: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm(self._header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_bytes is not None:  # still inside a request's line and headers
            self._head_bytes += len(data)
            if self._head_bytes > self._max_header_bytes:
                self._refuse(
                    431,
                    f"the request's headers are larger than {self._max_header_bytes} bytes "
                    "(max_header_bytes)",
                )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm(self._header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._arm(self._body_timeout + _BODY_GRACE_SECONDS, self._body_timed_out)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._head_bytes is None:  # nothing of a request yet: a connection left idle
            self.transport.close()
            return
        self._refuse(
            408,
            f"the request's headers did not arrive within {self._header_timeout:g} s "
            "(header_timeout_seconds)",
        )

    def _body_timed_out(self) -> None:
        # The view has answered 408 by now if it was reading the body; else an answer was sent
        # before the body came (a refusal), or nobody reads it: the connection goes.
        self._timer = None
        self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the connection is the websocket protocol's from now on
        super().handle_websocket_upgrade()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless the previous request's answer is still being sent) and
        close the connection."""
        self._disarm()
        self._head_bytes = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            error = {"message": message, "extensions": {"code": "BAD_REQUEST"}}
            body = orjson.dumps({"errors": [error]})
            head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            self.transport.write(STATUS_LINE[status] + head + b"connection: close\r\n\r\n" + body)
        self.transport.close()
