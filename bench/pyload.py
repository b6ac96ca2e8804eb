"""A Python load generator for when ``wrk`` is not installed: ``python -m bench.pyload``.

``connections`` asyncio tasks, each with one keep-alive HTTP/1.1 connection (raw streams: an
HTTP client library would spend more CPU than the server under test), send the request body
read from stdin back to back for ``seconds``; a final line ``BENCH_RESULT {json}`` gives the
counts and latency percentiles. Bounded: every request has a timeout and the run a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.load import DEFAULT_SAMPLE_EVERY, ERROR_MARKER, LoadResult, percentile

__all__ = ["generate", "main"]

_REQUEST_TIMEOUT = 10.0


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    sampled: int = 0


async def generate(
    url: str, body: bytes, *, connections: int, seconds: float, sample_every: int
) -> LoadResult:
    """Keep ``connections`` connections busy posting ``body`` to ``url`` for ``seconds``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    message = head.encode("ascii") + body
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + seconds
    workers = [
        _connection(host, port, message, deadline, tally, sample_every) for _ in range(connections)
    ]
    await asyncio.wait_for(asyncio.gather(*workers), seconds + 2 * _REQUEST_TIMEOUT)
    elapsed = time.perf_counter() - started
    latencies = sorted(tally.latencies)
    return LoadResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=tally.errors,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        sampled=tally.sampled,
    )


async def _connection(
    host: str, port: int, message: bytes, deadline: float, tally: _Tally, sample_every: int
) -> None:
    writer: asyncio.StreamWriter | None = None
    count = 0
    while time.perf_counter() < deadline:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                start = time.perf_counter()
                writer.write(message)
                status, body, keep_alive = await _read_response(reader)
                tally.latencies.append(time.perf_counter() - start)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            tally.errors += 1
            await _close(writer)
            writer = None
            continue
        count += 1
        if status != 200:
            tally.errors += 1
        elif count % sample_every == 1 or sample_every == 1:
            tally.sampled += 1
            tally.errors += ERROR_MARKER in body
        if not keep_alive:
            await _close(writer)
            writer = None
    await _close(writer)


async def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()
        # The peer may have closed first: then there is nothing left to flush.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep_alive = headers.get("connection", "").lower() != "close"
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # no trailers are sent by the servers under test
        body = b"".join(chunks)
    else:
        body, keep_alive = await reader.read(), False
    return status, body, keep_alive


def main(argv: Sequence[str] | None = None) -> int:
    """Run once with the request body from stdin; print ``BENCH_RESULT {json}``."""
    parser = argparse.ArgumentParser(prog="python -m bench.pyload", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--sample-every", type=int, default=DEFAULT_SAMPLE_EVERY)
    args = parser.parse_args(argv)
    body = sys.stdin.buffer.read()
    result = asyncio.run(
        generate(
            args.url,
            body,
            connections=args.connections,
            seconds=args.seconds,
            sample_every=args.sample_every,
        )
    )
    print("BENCH_RESULT " + json.dumps(result.to_json()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
