"""Dynamic batching: coalescing, limits, failure isolation, overload, tracing links."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper

from gateway.api import GatewayContext
from gateway.batching import Batcher, BatchPolicy, RunFunction
from gateway.cancellation import Cancellation
from gateway.errors import (
    InvalidInputError,
    ModelNotReadyError,
    OverloadedError,
    RequestTimeoutError,
)
from gateway.observability import Observer
from tests.conftest import (
    InProcessGateway,
    collecting_provider,
    make_model,
    start_server,
    stop_server,
    tensor_info,
    write_repository,
)

F = TensorProto.FLOAT


class Recorder:
    """A run function that doubles x and records the batch sizes it saw."""

    def __init__(self, *, fail_on: float | None = None, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        cancellation: Cancellation,
    ) -> dict[str, np.ndarray]:
        x = feeds["x"]
        with self.lock:
            self.sizes.append(int(x.shape[0]))
        if self.delay:
            threading.Event().wait(self.delay)
        if self.fail_on is not None and (x == self.fail_on).any():
            raise InvalidInputError("bad row")
        return {"y": x * 2}


def _batcher(run: RunFunction, pool: concurrent.futures.Executor, **policy: int) -> Batcher:
    return Batcher(
        model="m",
        version=1,
        run=run,
        executor=pool,
        policy=BatchPolicy(**policy),
        observer=Observer,
        max_in_flight=1,
    )


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        yield executor


def _feeds(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


def test_concurrent_requests_share_runs_and_get_their_own_rows(
    pool: concurrent.futures.Executor,
) -> None:
    run = Recorder(delay=0.01)
    batcher = _batcher(run, pool, max_batch_size=64)

    async def scenario() -> list[dict[str, np.ndarray]]:
        return list(
            await asyncio.gather(*(batcher.submit(_feeds(i, i + 0.5), None) for i in range(40)))
        )

    results = asyncio.run(scenario())
    for i, result in enumerate(results):
        assert result["y"].ravel().tolist() == [2 * i, 2 * i + 1]
    assert sum(run.sizes) == 80
    assert len(run.sizes) < 10  # 40 requests, a few runs: the first alone, then big batches
    assert max(run.sizes) > 20


def test_requests_the_loop_is_still_reading_join_the_batch(
    pool: concurrent.futures.Executor,
) -> None:
    """Without max_delay, rows that arrive while the event loop is busy (requests a few loop
    iterations from being queued) still make one batch, not a run for the first alone."""
    run = Recorder()
    batcher = _batcher(run, pool, max_batch_size=64)

    async def arriving(value: float, steps: int) -> dict[str, np.ndarray]:
        for _ in range(steps):  # parsing, validating: a few loop iterations each
            await asyncio.sleep(0)
        return await batcher.submit(_feeds(value), None)

    async def scenario() -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(*(arriving(i, i % 3) for i in range(12))))

    results = asyncio.run(scenario())
    assert [r["y"].item() for r in results] == [2 * i for i in range(12)]
    assert run.sizes == [12]

    async def alone() -> float:  # and a lone request is not held back
        started = time.perf_counter()
        result = await batcher.submit(_feeds(7), None)
        assert result["y"].item() == 14
        return time.perf_counter() - started

    # The best of a few: on a busy machine one request can wait for the CPU, not the batcher.
    assert min(asyncio.run(alone()) for _ in range(5)) < 0.005


def test_batches_respect_max_batch_size_and_a_big_request_runs_alone(
    pool: concurrent.futures.Executor,
) -> None:
    run = Recorder(delay=0.01)
    batcher = _batcher(run, pool, max_batch_size=8)

    async def scenario() -> None:
        await asyncio.gather(
            *(batcher.submit(_feeds(1, 2, 3), None) for _ in range(10)),
            batcher.submit(_feeds(*range(20)), None),
        )

    asyncio.run(scenario())
    assert sum(run.sizes) == 50
    assert 20 in run.sizes  # bigger than max_batch_size: alone, never split
    assert all(size <= 8 for size in run.sizes if size != 20)


def test_a_bad_request_fails_alone(pool: concurrent.futures.Executor) -> None:
    run = Recorder(fail_on=13.0, delay=0.005)
    batcher = _batcher(run, pool)

    async def scenario() -> list[Any]:
        calls = [batcher.submit(_feeds(i), None) for i in (1, 2, 13, 4, 5, 6)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(scenario())
    assert isinstance(results[2], InvalidInputError)
    good = [r for i, r in enumerate(results) if i != 2]
    assert [r["y"].item() for r in good] == [2, 4, 8, 10, 12]


def test_overload_fails_fast_and_close_fails_what_waits(
    pool: concurrent.futures.Executor,
) -> None:
    run = Recorder(delay=0.05)
    batcher = _batcher(run, pool, max_queue=4)

    async def scenario() -> list[Any]:
        calls = [batcher.submit(_feeds(1, 2), None) for _ in range(8)]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    results = asyncio.run(scenario())
    overloaded = [r for r in results if isinstance(r, OverloadedError)]
    assert overloaded and "queue of this model is full" in str(overloaded[0])
    assert any(isinstance(r, dict) for r in results)

    async def closing() -> Any:
        waiting = asyncio.ensure_future(batcher.submit(_feeds(1), None))
        await asyncio.sleep(0)
        batcher.close()
        return await asyncio.gather(waiting, return_exceptions=True)

    (outcome,) = asyncio.run(closing())
    assert isinstance(outcome, ModelNotReadyError)


class Stoppable:
    """A run function that works until its Cancellation stops it (at most ``seconds``)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.sizes: list[int] = []

    def __call__(
        self,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        cancellation: Cancellation,
    ) -> dict[str, np.ndarray]:
        self.sizes.append(int(feeds["x"].shape[0]))
        cancellation.on_cancel(self.stopped.set)
        self.started.set()
        if self.stopped.wait(self.seconds):
            raise RequestTimeoutError("stopped")
        return {"y": feeds["x"] * 2}


def test_a_request_whose_caller_went_away_leaves_the_queue_at_once(
    pool: concurrent.futures.Executor,
) -> None:
    run = Stoppable(seconds=0.5)
    batcher = _batcher(run, pool)

    async def scenario() -> None:
        busy = asyncio.ensure_future(batcher.submit(_feeds(1), None))
        while not run.started.is_set():  # the only worker slot is taken
            await asyncio.sleep(0.001)
        waiting = asyncio.ensure_future(batcher.submit(_feeds(2, 3), None))
        await asyncio.sleep(0.01)
        assert batcher.queued_rows == 2
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        assert batcher.queued_rows == 0  # not when the loop comes to it: now
        assert (await busy)["y"].item() == 2

    asyncio.run(scenario())
    assert run.sizes == [1]  # the abandoned rows never ran


def test_a_run_stops_once_every_request_of_it_went_away(
    pool: concurrent.futures.Executor,
) -> None:
    run = Stoppable()
    batcher = _batcher(run, pool)

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(_feeds(1), None))
        second = asyncio.ensure_future(batcher.submit(_feeds(2), None))
        while not run.started.is_set():
            await asyncio.sleep(0.001)
        first.cancel()
        await asyncio.sleep(0.05)
        assert not run.stopped.is_set()  # the second request still waits for the run
        started = time.perf_counter()
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        assert run.stopped.wait(1) and time.perf_counter() - started < 0.5

    asyncio.run(scenario())
    assert run.sizes == [2]  # one run of both, stopped; the failure was not retried row by row


def _batch_size_model() -> Any:
    """y = x + 0, and n = the number of rows in the run, for every row."""
    return make_model(
        [
            helper.make_node("Identity", ["x"], ["y"]),
            helper.make_node("Shape", ["x"], ["shape"], start=0, end=1),
            helper.make_node("Expand", ["shape", "shape"], ["n"]),
        ],
        [tensor_info("x", F, ["N", 2])],
        [tensor_info("y", F, ["N", 2]), tensor_info("n", TensorProto.INT64, ["N"])],
    )


def test_aliases_of_one_document_share_one_run_and_links_are_traced(
    gateway_factory: Any,
) -> None:
    gw: InProcessGateway = gateway_factory({"sized/1": _batch_size_model()})
    provider, collector = collecting_provider()
    gw.runtime.attach(Observer(provider))
    query = (
        "{ predict { "
        + " ".join(f"a{i}: sized(input: {{x: [{i}, {i}]}}) {{ y n }}" for i in range(6))
        + " } }"
    )
    context = GatewayContext(gw.runtime, gw.settings, gw.built.typed)
    result = asyncio.run(gw.built.schema.execute(query, context_value=context))
    assert result.errors is None and result.data is not None
    answers = result.data["predict"]
    assert [answers[f"a{i}"]["y"] for i in range(6)] == [[float(i), float(i)] for i in range(6)]
    assert {answers[f"a{i}"]["n"] for i in range(6)} == {6}  # one run of six rows

    spans = collector.spans
    (run,) = [s for s in spans if s.name == "gateway.run"]
    predicts = [s for s in spans if s.name == "gateway.predict"]
    queues = [s for s in spans if s.name == "gateway.queue"]
    assert len(predicts) == 6 and len(queues) == 6
    assert run.attributes is not None and run.attributes["gateway.batch.size"] == 6
    assert run.attributes["gateway.batch.requests"] == 6
    linked = {link.context.span_id for link in run.links}
    assert linked == {p.context.span_id for p in predicts if p.context is not None}
    for queue in queues:
        assert run.context is not None
        assert [link.context.span_id for link in queue.links] == [run.context.span_id]
        assert queue.parent is not None
        assert queue.parent.span_id in linked  # each request's own wait, in its own span


def _flood(root: Path, log: Path, env: dict[str, str]) -> list[httpx.Response]:
    server = start_server(root, log, env={"GATEWAY_INFERENCE_THREADS": "1", **env})
    query = (
        '{ infer(model: "sized", inputs: [{name: "x", shape: [1, 2], data: [1, 2]}]) '
        "{ outputs { name data } } }"
    )
    try:

        async def clients() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                calls = [client.post("/graphql", json={"query": query}) for _ in range(64)]
                return list(await asyncio.gather(*calls))

        return asyncio.run(clients())
    finally:
        stop_server(server)


def _run_sizes(responses: list[httpx.Response]) -> list[int]:
    sizes = []
    for response in responses:
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o["data"] for o in response.json()["data"]["infer"]["outputs"]}
        assert outputs["y"] == [1.0, 2.0]
        sizes.append(int(outputs["n"][0]))
    return sizes


def test_concurrent_http_clients_are_batched(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"sized/1": _batch_size_model()})
    sizes = _run_sizes(_flood(root, tmp_path / "server.log", {}))
    assert len(sizes) == 64 and max(sizes) > 1


def test_overload_is_a_503_with_retry_after(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"sized/1": _batch_size_model()})
    responses = _flood(root, tmp_path / "server.log", {"GATEWAY_MAX_QUEUE": "2"})
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "no request was shed"
    for response in shed:
        assert response.headers["retry-after"] == "1"
        assert response.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
    served = _run_sizes([r for r in responses if r.status_code != 503])
    assert served and len(served) + len(shed) == 64


def test_a_parameter_input_is_never_stacked_across_requests(gateway_factory: Any) -> None:
    # y = x[:, idx]: x's rows may be stacked, but idx is a parameter with its own dimension K.
    # Stacked, [0, 2] and [1] became [0, 2, 1] for both requests.
    gather = make_model(
        [helper.make_node("Gather", ["x", "idx"], ["y"], axis=1)],
        [tensor_info("x", F, ["N", 3]), tensor_info("idx", TensorProto.INT64, ["K"])],
        [tensor_info("y", F, ["N", "K"])],
    )
    gw: InProcessGateway = gateway_factory({"pick/1": gather})
    assert gw.runtime.entries["pick"].versions[1].batcher is None
    alias = (
        '{name}: infer(model: "pick", inputs: [{{name: "x", shape: [1, 3], data: [10, 20, 30]}}, '
        '{{name: "idx", shape: [{k}], data: {idx}}}]) {{ outputs {{ shape data }} }}'
    )
    query = "{ " + alias.format(name="a", k=2, idx="[0, 2]")
    query += " " + alias.format(name="b", k=1, idx="[1]") + " }"
    answer = gw.execute(query)
    assert "errors" not in answer, answer
    assert answer["data"]["a"]["outputs"] == [{"shape": [1, 2], "data": [10.0, 30.0]}]
    assert answer["data"]["b"]["outputs"] == [{"shape": [1, 1], "data": [20.0]}]
