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

A request only notes its deadline (a timer per request would cost a few microseconds on every
request); one sweep per event loop checks the deadlines every ``SWEEP_SECONDS``, so a deadline
is enforced up to that much late.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["SWEEP_SECONDS", "BoundedHttpProtocol"]

#: How often the deadlines of a loop's connections are checked.
SWEEP_SECONDS = 0.25
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
        #: When the request being read must be complete (loop time), or None.
        self.deadline: float | None = None
        #: Bytes received since the request began, while its head is incomplete; else None.
        self._head_bytes: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.deadline = self.loop.time() + self._header_timeout
        _sweep_of(self.loop).watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        _sweep_of(self.loop).forget(self)
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
        self.deadline = self.loop.time() + self._header_timeout

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self.deadline = self.loop.time() + self._body_timeout + _BODY_GRACE_SECONDS
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.deadline = None
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        # The connection is the websocket protocol's from now on.
        self.deadline = None
        _sweep_of(self.loop).forget(self)
        super().handle_websocket_upgrade()

    def expire(self) -> None:
        """The deadline has passed: refuse the request being read, and close."""
        self.deadline = None
        if self._head_bytes is not None:
            self._refuse(
                408,
                f"the request's headers did not arrive within {self._header_timeout:g} s "
                "(header_timeout_seconds)",
            )
            return
        # A body: the view has answered 408 by now if it was reading it; else an answer went
        # before the body came (a refusal), or nobody reads it. A connection that never sent
        # a byte is closed too.
        self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` (unless the previous request's answer is still being sent) and
        close the connection."""
        self.deadline = None
        self._head_bytes = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            error = {"message": message, "extensions": {"code": "BAD_REQUEST"}}
            body = orjson.dumps({"errors": [error]})
            head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
            self.transport.write(STATUS_LINE[status] + head + b"connection: close\r\n\r\n" + body)
        self.transport.close()


class _Sweep:
    """Checks the deadlines of one event loop's connections every SWEEP_SECONDS."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watched: set[BoundedHttpProtocol] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, protocol: BoundedHttpProtocol) -> None:
        self._watched.add(protocol)
        if self._handle is None:
            self._handle = self._loop.call_later(SWEEP_SECONDS, self._sweep)

    def forget(self, protocol: BoundedHttpProtocol) -> None:
        self._watched.discard(protocol)

    def _sweep(self) -> None:
        now = self._loop.time()
        for protocol in [p for p in self._watched if p.deadline is not None and p.deadline <= now]:
            protocol.expire()
        self._handle = self._loop.call_later(SWEEP_SECONDS, self._sweep) if self._watched else None


_sweeps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep] = weakref.WeakKeyDictionary()


def _sweep_of(loop: asyncio.AbstractEventLoop) -> _Sweep:
    sweep = _sweeps.get(loop)
    if sweep is None:
        sweep = _sweeps[loop] = _Sweep(loop)
    return sweep
