"""``OTEL_TRACES_EXPORTER=console``: each ended span as one JSON line on standard output."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

import orjson

from gateway.telemetry.spans import RecordedSpan
from gateway.telemetry.store import span_json

__all__ = ["ConsoleSpanWriter"]


class ConsoleSpanWriter:
    """Writes spans as JSON lines (for debugging: it writes on the request's thread)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out or sys.stdout
        self._lock = threading.Lock()

    def on_end(self, span: RecordedSpan) -> None:
        line = orjson.dumps(span_json(span)).decode() + "\n"
        with self._lock:
            self._out.write(line)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._out.flush()
        return True

    def shutdown(self) -> None:
        self.force_flush()
