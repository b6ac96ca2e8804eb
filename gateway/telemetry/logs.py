"""Log records as JSON lines (or human text), with the trace and span id of the request.

Every record emitted while a span is current carries ``trace_id`` and ``span_id``, so a log line
leads to its trace and back. Fields passed with ``extra=`` become keys of the JSON object.

A record is one line whatever it quotes: messages can carry what a client sent (an operation
name), so a newline in them must not start what looks like another record. JSON escapes control
characters; the human format writes them as escapes (``\\n``, ``\\x1b``), and indents the lines
of a traceback, so that only a record's first line starts at the left margin.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from types import TracebackType
from typing import Any, TextIO

import orjson
from opentelemetry import trace

__all__ = ["HumanFormatter", "JsonFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else on a record came from `extra=`. uvicorn adds
# `color_message`, its message with ANSI colour codes for its own terminal formatter: not ours.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}

# C0 and C1 control characters, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str) -> str:
    """``text`` on one line, its control characters written as Python escapes."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    code = ord(char)
    return _ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def _indented(text: str) -> str:
    """A traceback's lines, escaped and indented (none can pass for a record of its own)."""
    return "\n".join(f"    {_escape(line)}" for line in text.split("\n"))


def _trace_ids() -> tuple[str, str] | None:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace ids, extras."""

    _stamp: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamp
        if int(record.created) != second:  # the date and time change once a second
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)  # one assignment: a tuple, whole for every thread
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = _trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # orjson: one line per request on the hot path, several times faster than json, which
        # stays the fallback for what orjson refuses (e.g. integers beyond 64 bits).
        try:
            text = orjson.dumps(entry, default=str).decode()
        except TypeError:
            text = json.dumps(entry, default=str, ensure_ascii=False)
        # Both escape control characters, not the Unicode line separators, which some readers
        # (Python's splitlines, editors) take for line ends. They can only be inside strings.
        if "\u2028" in text or "\u2029" in text:
            text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return text


class HumanFormatter(logging.Formatter):
    """``time level logger: message [trace=...]`` for a terminal, one line per record (and the
    indented lines of its traceback)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _escape(super().formatMessage(record))

    def formatException(
        self,
        ei: tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None],
    ) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _trace_ids()
        if ids is None:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [trace={ids[0]}]{newline}{rest}"


def configure_logging(level: str, fmt: str, *, stream: TextIO | None = None) -> None:
    """Send every logger (uvicorn's included) to one handler with the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else HumanFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # A record per request (the access line): skip what no formatter here prints, as the
    # Logging HOWTO's "Optimization" section shows (the caller's frame, thread and process).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
        # The root's level decides (a uvicorn.Config made earlier in the process set its own).
        logger.setLevel(logging.NOTSET)
    # The gateway writes its own access line per GraphQL operation; uvicorn's adds nothing.
    logging.getLogger("uvicorn.access").disabled = True
