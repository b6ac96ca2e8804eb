"""OTLP/HTTP export of recorded spans: a queue and a daemon thread that posts batches.

It follows the batch span processor's settings (``OTEL_BSP_SCHEDULE_DELAY``,
``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_BSP_EXPORT_TIMEOUT``) and
the OTLP exporter's retry rules: 429, 502, 503 and 504 are retried with exponential backoff
within the timeout; anything else drops the batch (and says so in the log). Posts go through
``http.client`` on one kept-alive connection: a post costs a fraction of what a requests
session's does, and it is paid on the core that serves requests.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from opentelemetry.util.types import AttributeValue

from gateway.telemetry.otlp import encode_request, encode_span
from gateway.telemetry.spans import RecordedSpan

__all__ = ["BatchSettings", "OtlpSpanExporter"]

_log = logging.getLogger(__name__)
_RETRYABLE = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class BatchSettings:
    """The batch span processor's settings (the ``OTEL_BSP_*`` variables)."""

    schedule_delay_ms: float = 5000
    max_queue_size: int = 2048
    max_export_batch_size: int = 512
    export_timeout_ms: float = 30000


class OtlpSpanExporter:
    """Queues ended spans and posts them in batches from a daemon thread.

    Spans beyond ``max_queue_size`` are dropped (counted in ``dropped``), never blocking the
    request that ends them.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        resource: Mapping[str, AttributeValue],
        scope: tuple[str, str],
        headers: Mapping[str, str] | None = None,
        compression: str = "none",
        timeout_s: float = 10.0,
        certificate: str | None = None,
        batch: BatchSettings | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.resource = dict(resource)
        self.scope = scope
        self.headers = dict(headers or {})
        self.compression = compression
        self.timeout_s = timeout_s
        self.batch = batch or BatchSettings()
        #: Spans dropped because the queue was full.
        self.dropped = 0
        self._queue: deque[bytes] = deque()
        self._wakeup = threading.Event()
        self._idle = threading.Condition()
        self._exporting = False
        self._flushing = False
        self._stopped = False
        self._connection = _Connection(endpoint, certificate=certificate)
        self._thread = threading.Thread(target=self._worker, name="otlp-spans", daemon=True)
        self._thread.start()

    def on_end(self, span: RecordedSpan) -> None:
        # Encoded now, on the thread that ends the span: the same CPU as later, but the queue
        # then holds bytes, not span objects that would live long enough for the garbage
        # collector's older generations (whose collections cost more than the encoding).
        queue = self._queue
        if len(queue) >= self.batch.max_queue_size:
            self.dropped += 1
            return
        try:
            queue.append(encode_span(span))
        except Exception:
            _log.exception("could not encode span %r; dropped", span.name)
            return
        if len(queue) == self.batch.max_export_batch_size:  # once per batch
            self._wakeup.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued so far; False when it did not finish in time."""
        deadline = time.monotonic() + timeout_millis / 1000
        with self._idle:
            self._flushing = True
            try:
                self._wakeup.set()
                while self._queue or self._exporting:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._idle.wait(left)
                    self._wakeup.set()
            finally:
                self._flushing = False
        return True

    def shutdown(self) -> None:
        self.force_flush(int(self.batch.export_timeout_ms))
        self._stopped = True
        self._wakeup.set()
        self._thread.join(timeout=1)
        self._connection.close()

    def _worker(self) -> None:
        size = self.batch.max_export_batch_size
        while not self._stopped:
            self._wakeup.wait(self.batch.schedule_delay_ms / 1000)
            self._wakeup.clear()
            with self._idle:
                self._exporting = True
            try:
                # Everything queued, then while full batches keep coming: no trickle of small
                # posts while requests keep ending spans.
                self._export(self._take())
                while len(self._queue) >= size or (self._queue and self._flushing):
                    self._export(self._take())
            finally:
                with self._idle:
                    self._exporting = False
                    self._idle.notify_all()

    def _take(self) -> list[bytes]:
        queue, size = self._queue, self.batch.max_export_batch_size
        return [queue.popleft() for _ in range(min(size, len(queue)))]

    def _export(self, spans: Sequence[bytes]) -> None:
        if not spans:
            return
        data = encode_request(spans, self.resource, self.scope)
        headers = {**self.headers, "Content-Type": "application/x-protobuf"}
        if self.compression == "gzip":
            data = gzip.compress(data)
            headers["Content-Encoding"] = "gzip"
        deadline = time.monotonic() + self.batch.export_timeout_ms / 1000
        delay = 1.0
        while True:
            timeout = max(min(self.timeout_s, deadline - time.monotonic()), 0.1)
            status = self._connection.post(data, headers, timeout)
            if status is not None and 200 <= status < 300:
                return
            if status is not None and status not in _RETRYABLE:
                _log.warning(
                    "OTLP endpoint %s answered %d: %d spans dropped",
                    self.endpoint,
                    status,
                    len(spans),
                )
                return
            if self._stopped or time.monotonic() + delay > deadline:
                _log.warning(
                    "OTLP endpoint %s unavailable: %d spans dropped", self.endpoint, len(spans)
                )
                return
            time.sleep(delay)
            delay *= 2


class _Connection:
    """One kept-alive HTTP(S) connection to the endpoint, reopened when it breaks."""

    def __init__(self, endpoint: str, *, certificate: str | None = None) -> None:
        url = urlsplit(endpoint)
        self._endpoint = endpoint
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port
        self._path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self._tls = ssl.create_default_context(cafile=certificate) if self._https else None
        self._connection: http.client.HTTPConnection | None = None

    def post(self, body: bytes, headers: Mapping[str, str], timeout: float) -> int | None:
        """The response status, or None when the endpoint could not be reached."""
        for _ in range(2):  # a kept-alive connection the server has closed: once more, anew
            connection = self._connection or self._open(timeout)
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                connection.request("POST", self._path, body=body, headers=dict(headers))
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                _log.debug("OTLP export to %s failed: %s", self._endpoint, exc)
                continue
            if response.will_close:
                self.close()
            return response.status
        return None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            self._connection = http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._tls
            )
        else:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        return self._connection
