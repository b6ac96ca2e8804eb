"""A run's off switch: how work that nobody waits for any more is stopped.

The request time-out cancels the work of a request on the event loop; a model run is on a
worker thread meanwhile. ``Cancellation`` carries the news across: the event loop cancels it
when no request waits for the run any more (``gateway.batching``, ``gateway.runtime``), and the
run, which registered what stops it (ONNX Runtime's ``RunOptions.terminate``), stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["Cancellation"]


class Cancellation:
    """A run's off switch. The event loop pulls it when nobody waits for the run any more;
    the worker thread running it hands it to the run (``on_cancel``), which stops."""

    __slots__ = ("_callbacks", "_cancelled", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], object]] = []
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether the run should stop."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the run (any thread); calls what ``on_cancel`` registered, once."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` when the run is cancelled (at once if it already is)."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()
