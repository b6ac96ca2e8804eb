"""Telemetry of a real server: OTLP/HTTP export decoded from protobuf, /metrics scraped after
known traffic, JSON logs with trace ids."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLE_MODELS, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SENTINEL = "zebra-sentinel-7f3a"  # an input value that must never leave in telemetry
IRIS = (
    "query PredictIris { predict { iris(input: {sepalLength: 5.123456, sepalWidth: 3.5, "
    "petalLength: 1.4, petalWidth: 0.2}) { label } } }"
)
TOPIC = f'query Topic {{ predict {{ datasetTopic(input: {{text: "{SENTINEL}"}}) {{ label }} }} }}'
FAILING = (
    '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], b64: "@@"}]) { id } }'
)


class OTLPReceiver:
    """A test OTLP/HTTP receiver: keeps every decoded export request and the raw bytes."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.raw: list[bytes] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                assert self.headers["Content-Type"] == "application/x-protobuf"
                receiver.raw.append(body)
                if self.path == "/v1/traces":
                    receiver.traces.append(ExportTraceServiceRequest.FromString(body))
                elif self.path == "/v1/metrics":
                    receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[tuple[dict[str, Any], Span]]:
        """Every received span, with its resource's attributes."""
        found: list[tuple[dict[str, Any], Span]] = []
        for request in self.traces:
            for rs in request.resource_spans:
                resource = _attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    found.extend((resource, span) for span in ss.spans)
        return found

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 15
        while not predicate():
            assert time.monotonic() < deadline, f"no {what} received"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items if isinstance(kv, KeyValue)}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced_server(
    receiver: OTLPReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("traced") / "server.log"
    server = start_server(
        EXAMPLE_MODELS,
        log,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "gateway-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
            "GATEWAY_LOG_FORMAT": "json",
            # Decoding or encoding a row is a span only past a minute: never, on any machine.
            "GATEWAY_TRACE_MIN_STEP_US": "60000000",
        },
    )
    yield server
    stop_server(server)


def _post(server: LiveServer, query: str, headers: dict[str, str] | None = None) -> Any:
    response = httpx.post(
        f"{server.url}/graphql", json={"query": query}, headers=headers or {}, timeout=30
    )
    assert response.status_code == 200
    return response.json()


def test_spans_of_a_typed_prediction_continue_the_callers_trace(
    traced_server: LiveServer, receiver: OTLPReceiver
) -> None:
    body = _post(traced_server, IRIS, {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert body["data"]["predict"]["iris"]["label"] == "setosa"
    assert body["extensions"]["traceId"] == TRACE_ID

    def mine() -> list[tuple[dict[str, Any], Span]]:
        return [(r, s) for r, s in receiver.spans() if s.trace_id.hex() == TRACE_ID]

    receiver.wait_for(lambda: len(mine()) >= 4, "spans of the traced request")
    resource, _ = mine()[0]
    assert resource["service.name"] == "gateway-under-test"
    spans = {s.name: s for _, s in mine()}
    root = spans["query PredictIris"]
    assert root.kind == Span.SPAN_KIND_SERVER
    assert root.parent_span_id.hex() == PARENT_ID  # the caller's span
    assert _attributes(root.attributes) == {
        "graphql.operation.type": "query",
        "graphql.operation.name": "PredictIris",
        "gateway.models": ["iris"],
    }
    predict = spans["gateway.predict"]
    assert predict.parent_span_id == root.span_id
    attributes = _attributes(predict.attributes)
    # Decoding and encoding take less than GATEWAY_TRACE_MIN_STEP_US: timed on the resolver's
    # span rather than spans of their own.
    steps = {
        k: attributes.pop(k) for k in ("gateway.decode.duration_us", "gateway.encode.duration_us")
    }
    assert all(isinstance(v, int) and 0 <= v < 60_000_000 for v in steps.values()), steps
    assert attributes == {
        "gateway.model.name": "iris",
        "gateway.model.version": 2,
        "gateway.rows": 1,
    }
    assert set(spans) == {"query PredictIris", "gateway.predict", "gateway.queue", "gateway.run"}
    for child in ("gateway.queue", "gateway.run"):
        assert spans[child].parent_span_id == predict.span_id, child
    run = _attributes(spans["gateway.run"].attributes)
    assert run["gateway.batch.size"] == 1 and run["gateway.model.version"] == 2
    # Steps happen in order, inside their parent.
    assert spans["gateway.queue"].end_time_unix_nano <= spans["gateway.run"].start_time_unix_nano
    assert root.start_time_unix_nano <= predict.start_time_unix_nano
    assert predict.end_time_unix_nano <= root.end_time_unix_nano
    assert all(s.status.code != Status.STATUS_CODE_ERROR for s in spans.values())


def test_a_failure_sets_status_and_code_but_no_message(
    traced_server: LiveServer, receiver: OTLPReceiver
) -> None:
    body = _post(traced_server, FAILING)
    trace_id = body["extensions"]["traceId"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    def mine() -> dict[str, Span]:
        return {s.name: s for _, s in receiver.spans() if s.trace_id.hex() == trace_id}

    receiver.wait_for(lambda: {"query", "gateway.infer"} <= set(mine()), "failed spans")
    root, infer = mine()["query"], mine()["gateway.infer"]
    for span in (root, infer):
        assert span.status.code == Status.STATUS_CODE_ERROR
        assert span.status.message == "BAD_USER_INPUT"
        assert _attributes(span.attributes)["gateway.error.code"] == "BAD_USER_INPUT"
        assert not span.events  # no exception event: messages may quote input values
    assert infer.parent_span_id == root.span_id


def test_input_values_never_leave_in_telemetry(
    traced_server: LiveServer, receiver: OTLPReceiver
) -> None:
    body = _post(traced_server, TOPIC)
    trace_id = body["extensions"]["traceId"]
    receiver.wait_for(
        lambda: any(s.trace_id.hex() == trace_id for _, s in receiver.spans()), "spans"
    )
    everything = b"".join(receiver.raw)
    assert SENTINEL.encode() not in everything
    assert b"5.123456" not in everything
    assert b"graphql.document" not in everything  # off unless configured
    assert SENTINEL not in traced_server.log.read_text()


def test_metrics_are_exported_over_otlp_too(
    traced_server: LiveServer, receiver: OTLPReceiver
) -> None:
    _post(traced_server, IRIS)

    def names() -> set[str]:
        return {
            metric.name
            for request in receiver.metrics
            for rm in request.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }

    receiver.wait_for(lambda: "gateway.inference.duration" in names(), "OTLP metrics")
    assert {"graphql.server.request.duration", "gateway.inference.batch_size"} <= names()


def test_json_logs_carry_the_trace_of_their_request(traced_server: LiveServer) -> None:
    body = _post(traced_server, IRIS)
    trace_id = body["extensions"]["traceId"]
    time.sleep(0.2)
    records = [json.loads(line) for line in traced_server.log.read_text().splitlines() if line]
    access = [
        r for r in records if r["logger"] == "gateway.access" and r.get("trace_id") == trace_id
    ]
    assert len(access) == 1
    (line,) = access
    assert line["operation"] == "query PredictIris" and line["outcome"] == "OK"
    assert line["models"] == ["iris"] and line["duration_ms"] > 0
    assert line["level"] == "info" and len(line["span_id"]) == 16
    assert {"time", "message"} <= set(line)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _value_of(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    matches = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def test_metrics_after_known_traffic(tmp_path: Path) -> None:
    server = start_server(EXAMPLE_MODELS, tmp_path / "server.log")
    try:
        for _ in range(5):
            _post(server, IRIS)
        rows = ", ".join(
            ["{sepalLength: 6.4, sepalWidth: 3.2, petalLength: 4.5, petalWidth: 1.5}"] * 7
        )
        for _ in range(2):
            _post(
                server, f"query Batch {{ predict {{ irisBatch(inputs: [{rows}]) {{ label }} }} }}"
            )
        for _ in range(3):
            _post(server, FAILING)
        text = httpx.get(f"{server.url}/metrics").text
    finally:
        stop_server(server)
    s = _samples(text)
    count = "graphql_server_request_duration_seconds_count"
    assert _value_of(s, count, graphql_operation_name="PredictIris", gateway_outcome="OK") == 5
    assert _value_of(s, count, graphql_operation_name="Batch", gateway_outcome="OK") == 2
    assert (
        _value_of(
            s,
            count,
            graphql_operation_type="query",
            graphql_operation_name="",
            gateway_outcome="BAD_USER_INPUT",
        )
        == 3
    )
    iris2 = {"gateway_model_name": "iris", "gateway_model_version": "2"}
    assert _value_of(s, "gateway_inference_batch_size_sum", **iris2) == 5 + 2 * 7  # rows
    assert _value_of(s, "gateway_inference_duration_seconds_count", **iris2) == 7
    batch = "gateway_inference_batch_size_bucket"
    assert _value_of(s, batch, le="1", **iris2) == 5
    assert _value_of(s, batch, le="4", **iris2) == 5
    assert _value_of(s, batch, le="8", **iris2) == 7
    assert (
        _value_of(s, "gateway_inference_queue_wait_seconds_count", gateway_model_name="iris") == 7
    )
    assert (
        _value_of(
            s, "gateway_model_state", gateway_model_name="digits", gateway_model_state="READY"
        )
        == 1
    )
    assert (
        _value_of(
            s, "gateway_model_state", gateway_model_name="digits", gateway_model_state="FAILED"
        )
        == 0
    )
    assert (
        _value_of(
            s,
            "gateway_model_load_duration_seconds_count",
            gateway_model_name="iris",
            gateway_model_version="1",
            gateway_model_state="READY",
        )
        == 1
    )
    http = "http_server_request_duration_seconds_count"
    assert (
        _value_of(
            s,
            http,
            http_route="/graphql",
            http_request_method="POST",
            http_response_status_code="200",
        )
        == 10
    )
    assert (
        _value_of(
            s, "http_server_active_requests", http_route="/graphql", http_request_method="POST"
        )
        == 0
    )
    assert _value_of(s, "gateway_inference_queue_depth", gateway_queue="worker") == 0
    assert (
        _value_of(
            s, "gateway_inference_queue_depth", gateway_queue="batch", gateway_model_version="2"
        )
        == 0
    )
    assert "otel_scope_name" not in text


def test_a_batched_run_links_every_request_it_served(
    traced_server: LiveServer, receiver: OTLPReceiver
) -> None:
    rows = "{sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, petalWidth: 0.2}"
    aliases = " ".join(f"a{i}: iris(input: {rows}) {{ label }}" for i in range(4))
    body = _post(traced_server, f"query Aliased {{ predict {{ {aliases} }} }}")
    trace_id = body["extensions"]["traceId"]

    def mine() -> list[Span]:
        return [s for _, s in receiver.spans() if s.trace_id.hex() == trace_id]

    receiver.wait_for(lambda: len([s for s in mine() if s.name == "gateway.queue"]) == 4, "queues")
    spans = mine()
    predicts = {s.span_id for s in spans if s.name == "gateway.predict"}
    runs = [s for s in spans if s.name == "gateway.run"]
    assert len(predicts) == 4 and len(runs) == 1  # four fields, one ONNX Runtime run
    (run,) = runs
    assert {link.span_id for link in run.links} == predicts
    assert _attributes(run.attributes)["gateway.batch.size"] == 4
    for queue in (s for s in spans if s.name == "gateway.queue"):
        assert [link.span_id for link in queue.links] == [run.span_id]
        assert queue.parent_span_id in predicts
