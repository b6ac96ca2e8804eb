"""A tiny OTLP/HTTP sink: answers 200 to ``POST /v1/traces`` and ``/v1/metrics`` and counts.

It does not decode the protobuf payloads: requests and bytes per path are enough to show that
spans were exported, and decoding would cost the benchmark's own core. It runs in the
harness process (pinned to the load generator's core), on a stdlib ThreadingHTTPServer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["OtlpSink", "SinkCounts", "running_sink"]

_PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


@dataclass
class SinkCounts:
    """What one path received: export requests and body bytes."""

    requests: int = 0
    bytes: int = 0


@dataclass
class OtlpSink:
    """A live sink; ``endpoint`` is what ``OTEL_EXPORTER_OTLP_ENDPOINT`` should say."""

    endpoint: str
    counts: dict[str, SinkCounts] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, SinkCounts]:
        """A copy of the counts per path so far."""
        with self.lock:
            return {p: SinkCounts(c.requests, c.bytes) for p, c in self.counts.items()}


@contextlib.contextmanager
def running_sink() -> Iterator[OtlpSink]:
    """Serve a sink on a free port of 127.0.0.1 until the block exits."""
    sink = OtlpSink(endpoint="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the OTLP exporters' sessions expect

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            path = self.path.split("?", 1)[0]
            if path not in _PATHS:
                self._answer(404)
                return
            with sink.lock:
                counts = sink.counts.setdefault(path, SinkCounts())
                counts.requests += 1
                counts.bytes += len(body)
            self._answer(200)

        def _answer(self, status: int) -> None:
            # An empty body is a valid Export*ServiceResponse in protobuf.
            self.send_response(status)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per export on stderr would drown the report

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="otlp-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
