"""Progress of the long steps of ``gateway convert`` and ``gateway optimize``: one line per step,
with its duration, on a stream of the caller's choosing (the CLI's stderr, so that ``--json``
output on stdout stays clean)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Reports steps as ``<what>... 1.2 s``; silent without a stream."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        stream = self._stream
        if stream is None:
            yield
            return
        # The step's name is written before it runs, so a slow step shows what it is doing.
        stream.write(f"{what}...")
        stream.flush()
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            stream.write(" failed\n")
            raise
        stream.write(f" {time.perf_counter() - started:.1f} s\n")
        stream.flush()
