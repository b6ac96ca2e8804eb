"""The lean tracer provider, its OTLP encoder (against the SDK's, message for message) and the
OTLP/HTTP exporter (against a real local receiver: retries, drops, gzip, reconnects)."""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SdkEvent
from opentelemetry.sdk.trace import ReadableSpan, sampling
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from gateway.telemetry.console import ConsoleSpanWriter
from gateway.telemetry.export import BatchSettings, OtlpSpanExporter
from gateway.telemetry.otlp import encode_spans
from gateway.telemetry.spans import LeanTracerProvider, RecordedSpan
from tests.conftest import SpanCollector

RESOURCE: dict[str, AttributeValue] = {"service.name": "gw", "service.version": "1.0", "n": 3}
SCOPE = ("gateway", "1.0")


def _provider(
    sampler: sampling.Sampler = sampling.ALWAYS_ON, **limits: Any
) -> tuple[LeanTracerProvider, SpanCollector]:
    collector = SpanCollector()
    return LeanTracerProvider(sampler=sampler, processors=[collector], **limits), collector


def _as_sdk(span: RecordedSpan) -> ReadableSpan:
    attributes = BoundedAttributes(attributes=span.attributes, immutable=False)
    attributes.dropped = span.dropped_attributes
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=Resource(RESOURCE),
        attributes=attributes,
        events=[SdkEvent(e.name, e.attributes, e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        instrumentation_scope=InstrumentationScope(*SCOPE),
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
    )


def _same_as_sdk(spans: list[RecordedSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans, RESOURCE, SCOPE))
    theirs = sdk_encode([_as_sdk(s) for s in spans])
    assert ours == theirs


def test_encoding_matches_the_sdk_encoder_on_every_span_feature() -> None:
    provider, collector = _provider(max_attribute_length=10)
    tracer = provider.get_tracer("t")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span("root", parent, kind=SpanKind.SERVER) as root:
        root.set_attributes({"s": "x" * 20, "i": -3, "f": 1.5, "b": True, "l": ["ab", "c"]})
        child = tracer.start_span("child", links=[Link(root.get_span_context(), {"k": "v"})])
        child.add_event("step", {"n": 1})
        child.set_status(StatusCode.ERROR, "BAD_USER_INPUT")
        child.end()
        with pytest.raises(ValueError), tracer.start_as_current_span("failing"):
            raise ValueError("a secret input value")
    spans = collector.spans
    assert [s.name for s in spans] == ["child", "failing", "root"]
    assert spans[2].attributes["s"] == "x" * 10 and spans[2].attributes["l"] == ("ab", "c")
    failing = spans[1]
    assert failing.status.status_code is StatusCode.ERROR
    assert [e.attributes for e in failing.events] == [{"exception.type": "ValueError"}]
    _same_as_sdk(spans)


_values = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.lists(st.text(max_size=4), max_size=3),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=3),
    st.binary(max_size=6),
    st.dictionaries(
        st.text(min_size=1, max_size=3), st.integers(0, 9) | st.text(max_size=3), max_size=2
    ),
)


@settings(max_examples=60, deadline=None)
@given(
    attributes=st.dictionaries(st.text(min_size=1, max_size=10), _values, max_size=6),
    name=st.text(max_size=20),
    kind=st.sampled_from(list(SpanKind)),
    status=st.sampled_from([StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR]),
)
def test_encoding_matches_the_sdk_encoder_on_generated_spans(
    attributes: dict[str, Any], name: str, kind: SpanKind, status: StatusCode
) -> None:
    provider, collector = _provider()
    span = provider.get_tracer("t").start_span(name, kind=kind, attributes=attributes)
    span.set_status(Status(status, "why" if status is StatusCode.ERROR else None))
    span.end()
    _same_as_sdk(collector.spans)


def test_children_keep_the_roots_sampling_decision() -> None:
    provider, collector = _provider(sampling.TraceIdRatioBased(0.5))
    tracer = provider.get_tracer("t")
    sampled = 0
    for _ in range(200):
        with tracer.start_as_current_span("root") as root:
            child = tracer.start_span("child")
            child.end()
            assert child.get_span_context().trace_flags == root.get_span_context().trace_flags
            assert child.is_recording() is False or root.is_recording()
            sampled += root.get_span_context().trace_flags.sampled
    assert 50 < sampled < 150
    assert len(collector.spans) == 2 * sampled


def test_a_remote_parent_is_continued_and_its_decision_kept_by_parent_based() -> None:
    provider, collector = _provider(sampling.ParentBased(sampling.ALWAYS_ON))
    tracer = provider.get_tracer("t")
    carrier = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}
    unsampled = TraceContextTextMapPropagator().extract(carrier)
    span = tracer.start_span("op", unsampled)
    assert (
        not span.is_recording()
        and span.get_span_context().trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    )
    span.end()
    sampled = TraceContextTextMapPropagator().extract(
        {"traceparent": carrier["traceparent"][:-2] + "01"}
    )
    with tracer.start_as_current_span("op", sampled) as span:
        assert span.is_recording()
    (recorded,) = collector.spans
    assert recorded.parent is not None and recorded.parent.is_remote
    assert recorded.parent.span_id == 0x00F067AA0BA902B7


def test_limits_and_what_an_ended_span_ignores() -> None:
    provider, collector = _provider(max_attributes=2)
    span = provider.get_tracer("t").start_span("s", attributes={"a": 1, "b": 2, "c": 3})
    span.set_attribute("a", 10)  # replacing an existing key is not a new attribute
    span.set_status(StatusCode.OK)
    span.set_status(StatusCode.ERROR, "too late: OK is final")
    span.end()
    span.set_attribute("d", 4)
    span.update_name("renamed")
    span.end()
    (recorded,) = collector.spans
    assert recorded.attributes == {"a": 10, "b": 2} and recorded.dropped_attributes == 1
    assert recorded.name == "s" and recorded.status.status_code is StatusCode.OK
    _same_as_sdk([recorded])  # the dropped count is encoded too


def test_a_failing_processor_never_fails_the_span() -> None:
    class Broken(SpanCollector):
        def on_end(self, span: RecordedSpan) -> None:
            raise RuntimeError("broken processor")

    good = SpanCollector()
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON, processors=[Broken(), good])
    provider.get_tracer("t").start_span("s").end()
    assert [s.name for s in good.spans] == ["s"]


def test_the_console_writer_prints_one_json_line_per_span() -> None:
    out = io.StringIO()
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON, processors=[ConsoleSpanWriter(out)])
    with provider.get_tracer("t").start_as_current_span("outer"):
        token = context.attach(context.get_current())
        provider.get_tracer("t").start_span("inner", attributes={"k": "v"}).end()
        context.detach(token)
    provider.shutdown()
    inner, outer = (json.loads(line) for line in out.getvalue().splitlines())
    assert inner["name"] == "inner" and inner["attributes"] == {"k": "v"}
    assert inner["parentSpanId"] == outer["spanId"] and inner["traceId"] == outer["traceId"]


class _Receiver:
    """A local OTLP/HTTP endpoint answering the statuses it is told to, in order, then 200."""

    def __init__(self, statuses: list[int] | None = None, *, keep_alive: bool = True) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[ExportTraceServiceRequest] = []
        self.encodings: list[str | None] = []
        self.connections: set[int] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.connections.add(self.client_address[1])
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    encoding = self.headers.get("Content-Encoding")
                    receiver.encodings.append(encoding)
                    raw = gzip.decompress(body) if encoding == "gzip" else body
                    receiver.bodies.append(ExportTraceServiceRequest.FromString(raw))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def names(self) -> list[str]:
        return [
            span.name
            for request in self.bodies
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    receiver = _Receiver()
    yield receiver
    receiver.close()


def _exporter(url: str, **options: Any) -> OtlpSpanExporter:
    batch = options.pop("batch", BatchSettings(schedule_delay_ms=60_000, export_timeout_ms=5000))
    return OtlpSpanExporter(url, resource=RESOURCE, scope=SCOPE, batch=batch, **options)


def _spans(exporter: OtlpSpanExporter, count: int, prefix: str = "s") -> None:
    provider = LeanTracerProvider(sampler=sampling.ALWAYS_ON, processors=[exporter])
    for i in range(count):
        provider.get_tracer("t").start_span(f"{prefix}{i}").end()


def test_full_batches_are_posted_without_waiting_and_the_rest_on_flush(
    receiver: _Receiver,
) -> None:
    exporter = _exporter(
        receiver.url,
        batch=BatchSettings(schedule_delay_ms=60_000, max_export_batch_size=4),
        headers={"x-tenant": "ml"},
    )
    _spans(exporter, 9)
    deadline = time.monotonic() + 10
    while len(receiver.names()) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(receiver.names()) == sorted(f"s{i}" for i in range(8))  # two full batches
    assert exporter.force_flush(5000)
    assert len(receiver.names()) == 9 and receiver.encodings == [None, None, None]
    (first, *_) = receiver.bodies
    attributes = {kv.key for kv in first.resource_spans[0].resource.attributes}
    assert attributes == set(RESOURCE)
    assert len(receiver.connections) == 1  # one kept-alive connection for every post
    exporter.shutdown()


def test_retryable_statuses_are_retried_and_others_drop_the_batch(receiver: _Receiver) -> None:
    receiver.statuses = [503, 429]
    exporter = _exporter(receiver.url)
    _spans(exporter, 2, "kept")
    started = time.monotonic()
    assert exporter.force_flush(10_000)
    assert time.monotonic() - started >= 3  # backoff: 1 s, then 2 s
    assert receiver.names() == ["kept0", "kept1"]

    receiver.statuses = [400]
    _spans(exporter, 1, "dropped")
    assert exporter.force_flush(5000)
    _spans(exporter, 1, "after")
    exporter.shutdown()  # flushes what is queued
    assert receiver.names() == ["kept0", "kept1", "after0"]


def test_gzip_a_closing_server_and_an_unreachable_one() -> None:
    closing = _Receiver(keep_alive=False)
    try:
        exporter = _exporter(closing.url, compression="gzip")
        for round_ in range(3):
            _spans(exporter, 1, f"r{round_}-")
            assert exporter.force_flush(5000)
        assert closing.names() == ["r0-0", "r1-0", "r2-0"]
        assert closing.encodings == ["gzip"] * 3 and len(closing.connections) == 3
        exporter.shutdown()
    finally:
        closing.close()

    gone = _exporter(
        "http://127.0.0.1:9/v1/traces",
        batch=BatchSettings(schedule_delay_ms=60_000, export_timeout_ms=200),
    )
    _spans(gone, 1)
    assert gone.force_flush(5000)  # given up within the export timeout, not hung
    gone.shutdown()


def test_a_full_queue_drops_spans_instead_of_blocking(receiver: _Receiver) -> None:
    exporter = _exporter(
        receiver.url,
        batch=BatchSettings(schedule_delay_ms=60_000, max_queue_size=5, max_export_batch_size=512),
    )
    _spans(exporter, 8)
    assert exporter.dropped == 3
    exporter.shutdown()
    assert len(receiver.names()) == 5
