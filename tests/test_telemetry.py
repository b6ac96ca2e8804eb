"""Telemetry in-process: providers from OTEL_* settings, spans in an in-memory exporter, the
trace store, log formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import sampling
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.telemetry import Telemetry, TraceStore, configure_logging, create_telemetry
from gateway.telemetry.export import OtlpSpanExporter
from gateway.telemetry.spans import LeanTracerProvider
from tests.conftest import EXAMPLE_MODELS, SpanCollector, collecting_provider, running

IRIS = (
    "query PredictIris { predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, "
    "petalLength: 1.4, petalWidth: 0.2}) { label } } }"
)


def _settings(**environ: str) -> Settings:
    return Settings.load(environ={"GATEWAY_MODELS": str(EXAMPLE_MODELS), **environ})


def _serve(settings: Settings, telemetry: Telemetry | None, *queries: str) -> list[Any]:
    app = create_app(settings, telemetry=telemetry)
    answers: list[Any] = []

    async def scenario() -> None:
        async with running(app) as client:
            for query in queries:
                answers.append((await client.post("/graphql", json={"query": query})).json())
            answers.append((await client.get("/debug/traces/api/traces")).status_code)

    asyncio.run(scenario())
    return answers


def _in_memory() -> tuple[Telemetry, SpanCollector]:
    provider, collector = collecting_provider()
    return Telemetry(provider, NoOpMeterProvider(), CollectorRegistry()), collector


def test_document_is_recorded_only_when_configured() -> None:
    telemetry, exporter = _in_memory()
    _serve(_settings(), telemetry, IRIS)
    root = next(s for s in exporter.spans if s.name == "query PredictIris")
    assert "graphql.document" not in (root.attributes or {})

    telemetry, exporter = _in_memory()
    _serve(_settings(GATEWAY_TRACE_DOCUMENT="true"), telemetry, IRIS)
    root = next(s for s in exporter.spans if s.name == "query PredictIris")
    assert (root.attributes or {})["graphql.document"] == IRIS


def test_slow_or_failing_steps_are_spans_and_quick_ones_attributes() -> None:
    telemetry, exporter = _in_memory()
    _serve(_settings(GATEWAY_TRACE_MIN_STEP_US="0"), telemetry, IRIS)
    spans = {s.name: s for s in exporter.spans}
    predict = spans["gateway.predict"]
    for step in ("gateway.decode", "gateway.encode"):
        parent, ended = spans[step].parent, spans[step].end_time
        assert parent is not None and parent.span_id == predict.context.span_id
        assert ended is not None and predict.start_time <= spans[step].start_time <= ended
    assert "gateway.decode.duration_us" not in predict.attributes

    telemetry, exporter = _in_memory()
    wrong = IRIS.replace("sepalLength: 5.1", 'sepalLength: "x"')
    bad_row = (
        '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], b64: "@@"}]) { id } }'
    )
    # Quick: anything under a minute (a step is timed on a busy machine too).
    _serve(_settings(GATEWAY_TRACE_MIN_STEP_US="60000000"), telemetry, IRIS, bad_row, wrong)
    names = [s.name for s in exporter.spans]
    assert names.count("gateway.predict") == 1 and "gateway.encode" not in names
    (decode,) = [s for s in exporter.spans if s.name == "gateway.decode"]  # the failed one
    assert decode.attributes["gateway.error.code"] == "BAD_USER_INPUT"
    predict = next(s for s in exporter.spans if s.name == "gateway.predict")
    assert {"gateway.decode.duration_us", "gateway.encode.duration_us"} <= set(predict.attributes)


def test_spans_are_sampled_by_default_only_when_something_reads_them() -> None:
    (answer, _) = _serve(_settings(OTEL_TRACES_SAMPLER="parentbased_always_on"), None, IRIS)
    assert len(answer["extensions"]["traceId"]) == 32
    (answer, _) = _serve(_settings(), None, IRIS)
    assert "traceId" not in answer.get("extensions", {})
    (answer, _) = _serve(_settings(GATEWAY_TRACE_VIEWER="true"), None, IRIS)
    assert len(answer["extensions"]["traceId"]) == 32


def test_sampling_off_gives_no_trace_id_and_disabled_sdk_no_metrics() -> None:
    (answer, viewer) = _serve(_settings(OTEL_TRACES_SAMPLER="always_off"), None, IRIS)
    assert answer["data"]["predict"]["iris"]["label"] == "setosa"
    assert "extensions" not in answer or "traceId" not in answer["extensions"]
    assert viewer == 404  # the trace viewer is off by default

    telemetry = create_telemetry(_settings(OTEL_SDK_DISABLED="true"))
    assert isinstance(telemetry.tracer_provider, trace.NoOpTracerProvider)
    assert telemetry.metrics_text() == b""


def test_the_trace_viewer_api_when_enabled() -> None:
    failing = '{ infer(model: "nope", inputs: []) { id } }'
    ok, failed, status = _serve(_settings(GATEWAY_TRACE_VIEWER="true"), None, IRIS, failing)
    assert status == 200
    assert ok["extensions"]["traceId"] != failed["extensions"]["traceId"]


@pytest.mark.parametrize(
    ("environ", "phrase"),
    [
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER: invalid value 'sometimes'"),
        ({"OTEL_TRACES_SAMPLER_ARG": "2"}, "OTEL_TRACES_SAMPLER_ARG: invalid value 2.0"),
        ({"OTEL_TRACES_SAMPLER_ARG": "half"}, "OTEL_TRACES_SAMPLER_ARG: invalid value 'half'"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "'grpc' is not supported",
        ),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: invalid value 'zipkin'"),
        ({"OTEL_METRICS_EXEMPLAR_FILTER": "some"}, "OTEL_METRICS_EXEMPLAR_FILTER: invalid"),
    ],
)
def test_bad_otel_settings_name_the_variable(environ: dict[str, str], phrase: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_telemetry(_settings(**environ))
    assert phrase in str(info.value)


def test_resource_and_exporters_from_the_environment() -> None:
    telemetry = create_telemetry(
        _settings(
            OTEL_SERVICE_NAME="svc",
            OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test,team=ml",
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/v1/traces",
            OTEL_METRICS_EXPORTER="none",
        )
    )
    try:
        provider = telemetry.tracer_provider
        assert isinstance(provider, LeanTracerProvider)
        (exporter,) = provider.processors
        assert isinstance(exporter, OtlpSpanExporter)
        assert exporter.endpoint == "http://127.0.0.1:9/v1/traces"
        attributes = dict(exporter.resource)
        assert attributes["service.name"] == "svc"
        assert attributes["deployment.environment"] == "test" and attributes["team"] == "ml"
    finally:
        telemetry.shutdown()


def _span(provider: LeanTracerProvider, name: str, model: str, *, fail: bool = False) -> str:
    attrs = {"gateway.model.name": model}
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(name, attributes=attrs) as root:
        with tracer.start_as_current_span("gateway.run", attributes=attrs):
            pass
        if fail:
            root.set_attribute("gateway.error.code", "BAD_USER_INPUT")
            root.set_status(trace.Status(trace.StatusCode.ERROR, "BAD_USER_INPUT"))
        return trace.format_trace_id(root.get_span_context().trace_id)


def test_trace_store_keeps_the_newest_and_filters() -> None:
    store = TraceStore(capacity=3)
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON, processors=[store])
    ids = [_span(provider, f"query Q{i}", "iris") for i in range(4)]
    failed = _span(provider, "query Bad", "digits", fail=True)
    listed = store.summaries()
    assert [t["traceId"] for t in listed] == [failed, ids[3], ids[2]]  # newest first, 3 kept
    assert store.trace(ids[0]) is None
    assert [t["name"] for t in store.summaries(failed=True)] == ["query Bad"]
    assert listed[0]["errorCode"] == "BAD_USER_INPUT" and listed[0]["models"] == ["digits"]
    assert [t["traceId"] for t in store.summaries(model="iris")] == [ids[3], ids[2]]
    assert store.summaries(min_ms=60_000) == []
    detail = store.trace(ids[3])
    assert detail is not None
    root, child = detail["spans"]
    assert root["parentSpanId"] is None and child["parentSpanId"] == root["spanId"]
    assert child["attributes"] == {"gateway.model.name": "iris"}
    assert store.trace("not-hex") is None


def test_json_and_human_log_formats() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    provider, _ = collecting_provider()
    try:
        with provider.get_tracer("t").start_as_current_span("op") as span:
            logging.getLogger("gateway.test").info("hello %s", "world", extra={"model": "iris"})
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("gateway.test").exception("failed")
        first, second = (json.loads(line) for line in stream.getvalue().splitlines())
        assert first["message"] == "hello world" and first["model"] == "iris"
        assert first["trace_id"] == trace_id and first["level"] == "info"
        assert "trace_id" not in second and "ValueError: boom" in second["exception"]

        stream = io.StringIO()
        configure_logging("warning", "human", stream=stream)
        with provider.get_tracer("t").start_as_current_span("op"):
            logging.getLogger("gateway.test").info("hidden")
            logging.getLogger("gateway.test").warning("shown")
        (line,) = stream.getvalue().splitlines()
        assert "WARNING" in line and "gateway.test: shown [trace=" in line
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)


def test_json_logs_keep_values_orjson_refuses() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    try:
        logging.getLogger("gateway.test").info("big", extra={"count": 2**70})
        (line,) = stream.getvalue().splitlines()
        assert json.loads(line)["count"] == 2**70
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)


def test_a_record_is_one_line_whatever_its_message_quotes() -> None:
    forged = "A\n2026-01-01 00:00:00,000 ERROR   gateway.auth: admin key accepted\r\x1b[31m\u2028"
    try:
        stream = io.StringIO()
        configure_logging("info", "human", stream=stream)
        try:
            raise ValueError(f"bad name {forged}")
        except ValueError:
            logging.getLogger("gateway.test").exception("operation %s", forged)
        first, *rest = stream.getvalue().splitlines()
        assert first.endswith(
            "gateway.test: operation A\\n2026-01-01 00:00:00,000 ERROR   gateway.auth: "
            "admin key accepted\\r\\x1b[31m\\u2028"
        )
        # The traceback follows, every line of it indented, the exception's message too.
        assert rest and all(line.startswith("    ") for line in rest)
        assert rest[-2:] == [
            "    ValueError: bad name A",
            "    2026-01-01 00:00:00,000 ERROR   gateway.auth: admin key accepted"
            "\\r\\x1b[31m\\u2028",
        ]

        stream = io.StringIO()
        configure_logging("info", "json", stream=stream)
        logging.getLogger("uvicorn.error").info(
            "Started %s", forged, extra={"color_message": "Started \x1b[36m%s\x1b[0m"}
        )
        (line,) = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["message"] == f"Started {forged}" and "color_message" not in record
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)
