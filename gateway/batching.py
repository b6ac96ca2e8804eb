"""Dynamic batching: rows of concurrent requests to one model version share one run.

A ``Batcher`` keeps a queue per model version. Its loop takes what is queued (at most
``max_batch_size`` rows of requests whose inputs can be stacked), optionally waits up to
``max_delay_us`` for more, concatenates the inputs along the first dimension, runs them on a
worker thread and splits the outputs back. While a batch runs, new requests queue up, so under
load batches form by themselves without any added delay (``max_delay_us = 0``, as Triton's
default). With no delay, a batch still lets the event loop finish the requests it is reading
(a few loop iterations, while they bring rows): otherwise the clients of one batch, answered
together, come back together and split into two alternating half-size batches, each costing
nearly a full run. Beyond ``max_queue`` queued rows a request fails fast with
``OverloadedError``.

Failures fan out and nobody hangs: when a batch of several requests fails, each request is run
alone, so that a bad row fails only its own request; if the loop itself dies, every pending
request gets the error and the next request starts a new loop.

Work nobody waits for is dropped: a request cancelled while it waits (the request time-out
cancels the work of a request) leaves the queue at once, and a run whose every request was
cancelled is stopped through its ``Cancellation`` (ONNX Runtime's ``RunOptions.terminate``,
checked between two operators).

Tracing: the run is one ``gateway.run`` span, a child of the first request's span with a link to
every request in the batch; each request gets a ``gateway.queue`` span (its wait) linking to the
run it joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from gateway.cancellation import Cancellation
from gateway.errors import GatewayError, ModelNotReadyError, OverloadedError
from gateway.observability import MODEL_ATTRIBUTE, VERSION_ATTRIBUTE, Observer, mark_failed

__all__ = ["BatchPolicy", "Batcher", "RunFunction"]

logger = logging.getLogger(__name__)


#: Runs a model on stacked feeds (on a worker thread); returns outputs by name. It stops,
#: raising, once its Cancellation is cancelled.
RunFunction = Callable[
    [Mapping[str, np.ndarray], Sequence[str] | None, Cancellation], dict[str, np.ndarray]
]


#: Loop iterations without new rows that end the wait for requests being read, and its bound.
_SETTLE_QUIET = 3
_SETTLE_LIMIT_S = 0.01


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How one model version batches."""

    max_batch_size: int = 64
    max_delay_us: int = 0
    max_queue: int = 2048


@dataclass(eq=False, slots=True)
class _Request:
    feeds: Mapping[str, np.ndarray]
    outputs: tuple[str, ...] | None
    rows: int
    key: tuple[object, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    span: trace.SpanContext
    enqueued: int = field(default_factory=time.time_ns)
    #: The run it joined, once taken from the queue.
    run: _Run | None = None


@dataclass(eq=False, slots=True)
class _Run:
    """One batch on a worker thread: its requests and the off switch it stops by."""

    requests: list[_Request]
    cancellation: Cancellation = field(default_factory=Cancellation)


class Batcher:
    """The queue and batching loop of one model version (see the module docstring)."""

    def __init__(
        self,
        *,
        model: str,
        version: int,
        run: RunFunction,
        executor: Executor,
        policy: BatchPolicy,
        observer: Callable[[], Observer],
        max_in_flight: int,
    ) -> None:
        self._run = run
        self._executor = executor
        self._policy = policy
        self._observer = observer
        self._labels: dict[str, AttributeValue] = {
            MODEL_ATTRIBUTE: model,
            VERSION_ATTRIBUTE: version,
        }
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._max_in_flight = max_in_flight
        self._closed = False

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch."""
        return self._queued_rows

    async def submit(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None
    ) -> dict[str, np.ndarray]:
        """Queue validated ``feeds`` (rows on the first dimension); wait for their outputs.

        Raises:
            OverloadedError: more than ``max_queue`` rows are already waiting.
        """
        if self._closed:
            raise ModelNotReadyError("the model version is being unloaded")
        rows = _rows(feeds)
        if self._queued_rows + rows > self._policy.max_queue and self._queue:
            raise OverloadedError(
                f"the queue of this model is full ({self._queued_rows} rows waiting, at most "
                f"{self._policy.max_queue}); retry later"
            )
        loop = asyncio.get_running_loop()
        request = _Request(
            feeds=feeds,
            outputs=tuple(outputs) if outputs is not None else None,
            rows=rows,
            key=_key(feeds, outputs),
            future=loop.create_future(),
            span=trace.get_current_span().get_span_context(),
        )
        self._queue.append(request)
        self._queued_rows += rows
        self._ensure_loop()
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await request.future
        except asyncio.CancelledError:
            self._abandon(request)
            raise

    def _abandon(self, request: _Request) -> None:
        """Drop what ``request`` was waiting for, its caller gone: its rows from the queue, or
        the run it joined once every request of that run is gone."""
        run = request.run
        if run is None:
            with contextlib.suppress(ValueError):  # the loop failed everything meanwhile
                self._queue.remove(request)
                self._queued_rows -= request.rows
        elif all(r.future.done() for r in run.requests):
            run.cancellation.cancel()

    def close(self) -> None:
        """Stop the loop; requests still queued fail with ModelNotReadyError."""
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._fail_all(ModelNotReadyError("the model version was unloaded"))

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wakeup = asyncio.Event()
            self._in_flight = asyncio.Semaphore(self._max_in_flight)
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self._wakeup is not None and self._in_flight is not None
        try:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                # Hold a worker slot first: while every slot is busy, requests keep queuing
                # and the next batch is larger.
                await self._in_flight.acquire()
                await self._wait_for_more()
                batch = self._take()
                task = asyncio.get_running_loop().create_task(self._execute(batch))
                task.add_done_callback(lambda _: self._in_flight.release())  # type: ignore[union-attr]
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in the loop: nobody may hang on it
            logger.exception("batching loop failed")
            self._fail_all(exc)

    async def _wait_for_more(self) -> None:
        delay = self._policy.max_delay_us
        if self._queued_rows >= self._policy.max_batch_size:
            return
        if delay <= 0:
            await self._let_the_loop_finish()
            return
        deadline = self._queue[0].enqueued / 1e9 + delay / 1e6
        assert self._wakeup is not None
        while self._queued_rows < self._policy.max_batch_size:
            left = deadline - time.time()
            if left <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), left)

    async def _let_the_loop_finish(self) -> None:
        """Give the event loop the requests it is already reading: while a few more of its
        iterations bring more rows, keep going (up to a bound). No time passes idle: the loop
        is busy, and the rows those requests bring would otherwise make a second, smaller
        batch, which costs a run more (a batch of 16 rows costs nearly what one of 32 does)."""
        rows, quiet = self._queued_rows, 0
        deadline = time.perf_counter() + _SETTLE_LIMIT_S
        while quiet < _SETTLE_QUIET and time.perf_counter() < deadline:
            await asyncio.sleep(0)
            if self._queued_rows >= self._policy.max_batch_size:
                return
            quiet = quiet + 1 if self._queued_rows == rows else 0
            rows = self._queued_rows

    def _take(self) -> list[_Request]:
        """The oldest request and the queued ones that can be stacked with it."""
        first = self._queue.popleft()
        batch, rows, kept = [first], first.rows, deque[_Request]()
        while self._queue:
            request = self._queue.popleft()
            if request.key == first.key and rows + request.rows <= self._policy.max_batch_size:
                batch.append(request)
                rows += request.rows
            else:
                kept.append(request)
        self._queue = kept
        self._queued_rows -= rows
        return batch

    async def _execute(self, batch: list[_Request]) -> None:
        batch = [r for r in batch if not r.future.done()]  # callers that went away
        if not batch:
            return
        try:
            results = await self._start(batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # Isolate the failure: each request alone, so a bad one fails only itself.
            for request in batch:
                if request.future.done():  # gone meanwhile: nobody to run it for
                    continue
                try:
                    alone = await self._start([request])
                except Exception as single:
                    _settle(request, single)
                else:
                    _settle(request, alone[0])
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result)

    async def _start(self, batch: list[_Request]) -> list[dict[str, np.ndarray]]:
        """Run ``batch`` on a worker thread, stoppable once all its callers are gone."""
        run = _Run(batch)
        for request in batch:
            request.run = run
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run_batch, batch, run.cancellation
        )

    def _run_batch(
        self, batch: list[_Request], cancellation: Cancellation
    ) -> list[dict[str, np.ndarray]]:
        observer = self._observer()
        instruments = observer.instruments
        started = time.time_ns()
        rows = sum(r.rows for r in batch)
        first = batch[0]
        model = {MODEL_ATTRIBUTE: self._labels[MODEL_ATTRIBUTE]}
        span = self._spans(observer, batch, rows, started) if observer.tracing else None
        for request in batch:
            instruments.queue_wait.record((started - request.enqueued) / 1e9, model)
        try:
            feeds = _stack([r.feeds for r in batch]) if len(batch) > 1 else first.feeds
            outputs = self._run(feeds, first.outputs, cancellation)
            split = _split(outputs, [r.rows for r in batch]) if len(batch) > 1 else [outputs]
        except Exception as exc:
            if span is not None:
                mark_failed(span, exc)
            raise
        finally:
            if span is not None:
                span.end()
        instruments.inference_duration.record((time.time_ns() - started) / 1e9, self._labels)
        instruments.batch_size.record(rows, self._labels)
        return split

    def _spans(
        self, observer: Observer, batch: list[_Request], rows: int, started: int
    ) -> trace.Span:
        """The run's span (linked to every request) and each request's queue span (linked to
        the run); returns the run's, still open."""
        first = batch[0]
        parent = trace.set_span_in_context(trace.NonRecordingSpan(first.span))
        span = observer.tracer.start_span(
            "gateway.run",
            context=parent,
            attributes={
                **self._labels,
                "gateway.batch.size": rows,
                "gateway.batch.requests": len(batch),
            },
            links=[trace.Link(r.span) for r in batch if r.span.is_valid],
        )
        model = {MODEL_ATTRIBUTE: self._labels[MODEL_ATTRIBUTE]}
        joined = [trace.Link(span.get_span_context())]
        for request in batch:
            wait_parent = trace.set_span_in_context(trace.NonRecordingSpan(request.span))
            observer.tracer.start_span(
                "gateway.queue",
                context=wait_parent,
                attributes=model,
                links=joined,
                start_time=request.enqueued,
            ).end(end_time=started)
        return span

    def _fail_all(self, exc: BaseException) -> None:
        while self._queue:
            request = self._queue.popleft()
            _settle(request, exc)
        self._queued_rows = 0


def _settle(request: _Request, outcome: dict[str, np.ndarray] | BaseException) -> None:
    if request.future.done():
        return
    if isinstance(outcome, BaseException):
        if not isinstance(outcome, GatewayError | asyncio.CancelledError):
            logger.debug("batch failed", exc_info=outcome)
        request.future.set_exception(outcome)
    else:
        request.future.set_result(outcome)


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _key(feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None) -> tuple[object, ...]:
    """Requests stack only with the same outputs and the same per-row shapes and dtypes."""
    shapes = tuple((name, a.shape[1:], a.dtype.str) for name, a in sorted(feeds.items()))
    return (tuple(outputs) if outputs is not None else None, shapes)


def _stack(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}


def _split(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    total = sum(rows)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            raise GatewayError(
                f"output {name!r} has {array.shape[0] if array.ndim else 0} rows for {total} "
                "input rows; the model cannot be batched"
            )
    bounds = np.cumsum(rows)[:-1]
    parts = {name: np.split(array, bounds) for name, array in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(rows))]
