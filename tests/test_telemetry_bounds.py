"""What a client can make the gateway's telemetry keep, and who reads it: metric labels
(operation names only as the document has them, cut, the first N distinct), the trace store
(spans per trace, span names), and /metrics (rendered off the event loop, behind a scope or on a
port of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import sampling
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.app import create_app
from gateway.auth import new_key
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.observability import DEFAULT_OPERATION_NAMES
from gateway.telemetry import TraceStore
from gateway.telemetry.spans import DEFAULT_MAX_NAME_LENGTH, LeanTracerProvider
from gateway.telemetry.store import DEFAULT_MAX_SPANS
from tests.conftest import (
    free_port,
    identity_model,
    running,
    start_server,
    stop_server,
    write_repository,
)

MODELS = "{ models { name } }"
LABEL = "graphql_server_request_duration_seconds_count"
TRACES = "/debug/traces/api/traces"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@contextlib.asynccontextmanager
async def _gateway(root: Path, **env: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """An in-process gateway with real providers (Prometheus reader, trace store if asked)."""
    app = create_app(Settings.load(environ={"GATEWAY_MODELS": str(root), **env}))
    async with running(app) as client:
        yield client, app


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "repo", {"m/1": identity_model()})


def _labels(metrics: str) -> set[str]:
    """The graphql.operation.name labels in a Prometheus exposition."""
    names = set()
    for line in metrics.splitlines():
        if line.startswith(LABEL + "{"):
            attrs = line[len(LABEL) + 1 : line.rindex("}")]
            for pair in attrs.split('",'):
                key, _, value = pair.partition('="')
                if key == "graphql_operation_name":
                    names.add(value.rstrip('"'))
    return names


def test_an_operation_name_the_document_lacks_becomes_no_label_and_no_span_name(
    root: Path,
) -> None:
    unknown = "Forged" + "x" * 20_000

    async def scenario() -> tuple[str, list[dict[str, Any]], list[Any]]:
        async with _gateway(root, GATEWAY_TRACE_VIEWER="true") as (client, _):
            answers = []
            for _ in range(20):
                response = await client.post(
                    "/graphql", json={"query": "query Real " + MODELS, "operationName": unknown}
                )
                answers.append(response.json())
            metrics = (await client.get("/metrics")).text
            traces = (await client.get(TRACES)).json()["traces"]
            return metrics, traces, answers

    metrics, traces, answers = asyncio.run(scenario())
    assert all(a["errors"][0]["extensions"]["code"] for a in answers)
    assert "Forged" not in metrics and len(metrics) < 50_000
    assert _labels(metrics) == {""}
    assert traces and all("Forged" not in t["name"] for t in traces)


def test_long_operation_names_are_cut_and_later_names_are_counted_as_other(root: Path) -> None:
    long_name = "Long" + "n" * 5_000
    names = [long_name] + [f"Op{i}" for i in range(DEFAULT_OPERATION_NAMES + 5)] + ["Op0"]

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        async with _gateway(root, GATEWAY_TRACE_VIEWER="true") as (client, _):
            for name in names:
                response = await client.post("/graphql", json={"query": f"query {name} {MODELS}"})
                assert response.json()["data"] == {"models": [{"name": "m"}]}
            metrics = (await client.get("/metrics")).text
            return metrics, (await client.get(TRACES)).json()["traces"]

    metrics, traces = asyncio.run(scenario())
    cut = long_name[:100]
    # The first distinct names have labels of their own (Op0 keeps its label), the rest share
    # "other".
    firsts = {f"Op{i}" for i in range(DEFAULT_OPERATION_NAMES - 1)}
    assert _labels(metrics) == {cut, "other"} | firsts
    assert f"query {cut}" in {t["name"] for t in traces}
    assert max(len(t["name"]) for t in traces) == len(f"query {cut}")


def test_the_number_of_operation_labels_is_a_setting(root: Path) -> None:
    async def scenario() -> str:
        async with _gateway(root, GATEWAY_METRICS_OPERATION_NAMES="2") as (client, _):
            for name in ("A", "B", "C", "A"):
                await client.post("/graphql", json={"query": f"query {name} {MODELS}"})
            return (await client.get("/metrics")).text

    assert _labels(asyncio.run(scenario())) == {"A", "B", "other"}


class _SlowCollector(Collector):
    """A collector that takes a while, as a big registry does; counts its collections."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        time.sleep(self.seconds)
        yield GaugeMetricFamily("slow_metric", "A metric that takes its time.", value=1)


def test_metrics_are_rendered_off_the_event_loop_once_for_concurrent_scrapes(root: Path) -> None:
    async def scenario() -> tuple[float, list[float], list[httpx.Response], int]:
        async with _gateway(root) as (client, app):
            slow = _SlowCollector(0.6)
            app.state.gateway.telemetry.registry.register(slow)
            started = time.perf_counter()

            async def scrape() -> tuple[httpx.Response, float]:
                response = await client.get("/metrics")
                return response, time.perf_counter() - started

            scrapes = [asyncio.ensure_future(scrape()) for _ in range(3)]
            await asyncio.sleep(0.05)
            health = await client.get("/healthz")
            health_s = time.perf_counter() - started
            assert health.status_code == 200
            done = await asyncio.gather(*scrapes)
            return health_s, [s for _, s in done], [r for r, _ in done], slow.calls

    health_s, scrape_s, answers, calls = asyncio.run(scenario())
    # Answered while the exposition was being rendered (a rendering on the event loop would
    # have held it until the scrapes were answered).
    assert health_s < min(scrape_s)
    assert all(a.status_code == 200 and "slow_metric 1.0" in a.text for a in answers)
    # The three scrapes shared one rendering: 0.6 s, not 1.8.
    assert calls == 1 and max(scrape_s) < 1.6


@pytest.fixture
def keys_file(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    keys, lines = {}, []
    for key_id, scopes in {"scraper": ["metrics"], "ops": ["admin"], "app": ["predict"]}.items():
        key, hashed = new_key(key_id)
        keys[key_id] = key
        lines.append(f'[[keys]]\nid = "{key_id}"\nhash = "{hashed}"\nscopes = {json.dumps(scopes)}')
    path = tmp_path / "keys.toml"
    path.write_text("\n".join(lines) + "\n")
    return path, keys


def test_metrics_behind_the_metrics_or_admin_scope(
    root: Path, keys_file: tuple[Path, dict[str, str]]
) -> None:
    path, keys = keys_file

    async def scenario() -> dict[str, httpx.Response]:
        async with _gateway(root, GATEWAY_METRICS_AUTH="true", GATEWAY_API_KEYS_FILE=str(path)) as (
            client,
            _,
        ):
            answers = {"anonymous": await client.get("/metrics")}
            answers["forged"] = await client.get("/metrics", headers={"X-API-Key": "gw_x_00"})
            for key_id, key in keys.items():
                answers[key_id] = await client.get("/metrics", headers={"X-API-Key": key})
            return answers

    answers = asyncio.run(scenario())
    assert answers["scraper"].status_code == 200 and answers["ops"].status_code == 200
    assert "http_server_request_duration_seconds" in answers["scraper"].text
    for who, status, code in [
        ("anonymous", 403, "FORBIDDEN"),
        ("app", 403, "FORBIDDEN"),
        ("forged", 401, "UNAUTHENTICATED"),
    ]:
        assert answers[who].status_code == status, who
        (error,) = answers[who].json()["errors"]
        assert error["extensions"]["code"] == code
        assert code != "FORBIDDEN" or "metrics or admin scope" in error["message"]


@pytest.mark.e2e
def test_metrics_on_a_port_of_their_own_in_every_worker(root: Path, tmp_path: Path) -> None:
    port = free_port()
    server = start_server(
        root,
        tmp_path / "server.log",
        env={"GATEWAY_METRICS_PORT": str(port)},
        args=["--workers", "2"],
    )
    try:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 404
        for _ in range(4):  # whichever worker takes the connection answers
            scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert scrape.status_code == 200 and "# HELP" in scrape.text
        assert httpx.get(f"http://127.0.0.1:{port}/graphql", timeout=10).status_code == 404
    finally:
        stop_server(server)
    log = (tmp_path / "server.log").read_text()
    assert log.count(f"serving /metrics on 127.0.0.1:{port}") == 2 and "Traceback" not in log


def test_a_trace_keeps_at_most_its_span_budget() -> None:
    store = TraceStore(capacity=2, max_spans=5)
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON, processors=[store])
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("query Many") as root:
        for i in range(9):
            tracer.start_span(f"gateway.step{i}").end()
    (summary,) = store.summaries()
    assert summary["spanCount"] == 5 and summary["droppedSpans"] == 5
    detail = store.trace(summary["traceId"])
    assert detail is not None and len(detail["spans"]) == 5
    assert root.get_span_context().trace_id == int(summary["traceId"], 16)


def test_span_names_are_cut() -> None:
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON)
    span: Any = provider.get_tracer("t").start_span("n" * 10_000)
    assert len(span.name) == DEFAULT_MAX_NAME_LENGTH
    span.update_name("query " + "m" * 10_000)
    assert span.name == ("query " + "m" * 10_000)[:DEFAULT_MAX_NAME_LENGTH]


def test_requests_sharing_a_traceparent_fill_one_bounded_trace(root: Path) -> None:
    huge = "Huge" + "h" * 90_000  # under max_query_bytes (100 KiB), far over any name limit

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with _gateway(root, GATEWAY_TRACE_VIEWER="true") as (client, _):
            headers = {"traceparent": TRACEPARENT}
            for _ in range(1_000):
                await client.post("/graphql", json={"query": MODELS}, headers=headers)
            shared = (await client.get(f"{TRACES}/0af7651916cd43dd8448eb211c80319c")).json()
            named = await client.post("/graphql", json={"query": f"query {huge} {MODELS}"})
            trace_id = named.json()["extensions"]["traceId"]
            return shared, (await client.get(f"{TRACES}/{trace_id}")).json()

    shared, named = asyncio.run(scenario())
    assert shared["spanCount"] == len(shared["spans"]) == DEFAULT_MAX_SPANS
    assert shared["droppedSpans"] >= 1_000 - DEFAULT_MAX_SPANS
    assert len(json.dumps(named)) < 8_000  # 90 KB of operation name made a 90 KB+ trace


def test_a_metrics_port_in_use_stops_the_start(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        settings = Settings.load(
            environ={"GATEWAY_MODELS": str(root), "GATEWAY_METRICS_PORT": str(port)}
        )
        with pytest.raises(ConfigError, match=f"metrics_port: cannot listen on 127.0.0.1:{port}"):
            create_app(settings)
