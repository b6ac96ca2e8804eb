"""Tracer and meter providers, exporters and the log setup, from Settings: the only place that
wires the OpenTelemetry SDK. Everything else uses the OpenTelemetry API and is handed providers.

Configured by the standard variables (read into ``Settings.otel``): ``OTEL_SDK_DISABLED``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the per-signal
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``), ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (http/protobuf), ``OTEL_EXPORTER_OTLP_COMPRESSION`` (gzip or
none), ``OTEL_EXPORTER_OTLP_TIMEOUT`` and ``OTEL_EXPORTER_OTLP_CERTIFICATE`` (also per signal),
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (otlp, console or none),
``OTEL_METRIC_EXPORT_INTERVAL``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``,
``OTEL_BSP_EXPORT_TIMEOUT``, ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT``, ``OTEL_METRICS_EXEMPLAR_FILTER`` (default always_off).

Metrics use the SDK's ``MeterProvider``; spans use the lean provider of ``telemetry.spans`` and
the exporter of ``telemetry.export`` (the SDK's tracing pipeline costs too much per request).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import unquote

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import sampling
from prometheus_client import CollectorRegistry, generate_latest

from gateway import __version__
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.telemetry.console import ConsoleSpanWriter
from gateway.telemetry.export import BatchSettings, OtlpSpanExporter
from gateway.telemetry.logs import configure_logging
from gateway.telemetry.spans import DEFAULT_MAX_ATTRIBUTES, LeanTracerProvider, SpanProcessor
from gateway.telemetry.store import TraceStore

__all__ = ["Telemetry", "TraceStore", "configure_logging", "create_telemetry"]

SERVICE_NAME = "prediction-gateway"
#: Longest attribute value recorded on a span, unless OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT says.
DEFAULT_ATTRIBUTE_LENGTH = 2048


@dataclass
class Telemetry:
    """The providers one worker process uses, and what serves /metrics and the trace viewer."""

    tracer_provider: trace_api.TracerProvider
    meter_provider: metrics_api.MeterProvider
    registry: CollectorRegistry
    traces: TraceStore | None = None

    def metrics_text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters (spans and metrics still buffered are sent)."""
        if isinstance(self.tracer_provider, LeanTracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, MeterProvider):
            self.meter_provider.shutdown()


def create_telemetry(settings: Settings, *, trace_store: TraceStore | None = None) -> Telemetry:
    """Providers for this process, from ``settings`` (call in the application's lifespan).

    Args:
        settings: the configuration, ``settings.otel`` included.
        trace_store: where the trace viewer reads spans from, if it is on.
    """
    otel = settings.otel
    registry = CollectorRegistry()
    if _flag(otel, "OTEL_SDK_DISABLED"):
        return Telemetry(trace_api.NoOpTracerProvider(), metrics_api.NoOpMeterProvider(), registry)
    resource = _resource(otel)
    readers: list[MetricReader] = [
        # Without scope labels: every series would carry otel_scope_name="gateway" and two empty
        # labels; the resource (service.name...) is for OTLP, Prometheus knows its targets.
        PrometheusMetricReader(
            disable_target_info=True, scope_info_enabled=False, registry=registry
        )
    ]
    metric_exporter = _metric_exporter(otel)
    if metric_exporter is not None:
        interval = _number(otel, "OTEL_METRIC_EXPORT_INTERVAL", 60000)
        readers.append(
            PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval)
        )
    meter_provider = MeterProvider(
        metric_readers=readers,
        resource=resource,
        shutdown_on_exit=False,
        exemplar_filter=_exemplar_filter(otel),
    )
    processors: list[SpanProcessor] = []
    span_exporter = _span_exporter(otel, resource)
    if span_exporter is not None:
        processors.append(span_exporter)
    if trace_store is not None:
        processors.append(trace_store)
    sampler = _sampler(otel, default="parentbased_always_on")  # checked even when unused
    # Spans nobody reads cost every request (even unsampled ones are made): with no exporter,
    # no trace viewer and no sampler asked for, there is no tracing at all.
    if not processors and "OTEL_TRACES_SAMPLER" not in otel:
        return Telemetry(trace_api.NoOpTracerProvider(), meter_provider, registry)
    tracer_provider = LeanTracerProvider(
        sampler=sampler,
        processors=processors,
        max_attribute_length=int(
            _number(otel, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", DEFAULT_ATTRIBUTE_LENGTH)
        ),
        max_attributes=int(
            _number(otel, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", DEFAULT_MAX_ATTRIBUTES)
        ),
    )
    return Telemetry(tracer_provider, meter_provider, registry, trace_store)


def _flag(otel: Mapping[str, str], key: str) -> bool:
    return otel.get(key, "").strip().lower() == "true"


def _number(otel: Mapping[str, str], key: str, default: float) -> float:
    raw = otel.get(key, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}: invalid value {raw!r}: expected a number") from exc


def _resource(otel: Mapping[str, str]) -> Resource:
    attributes: dict[str, str] = {"service.version": __version__}
    for item in otel.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = value.strip()
    attributes["service.name"] = otel.get("OTEL_SERVICE_NAME") or attributes.get(
        "service.name", SERVICE_NAME
    )
    # Resource() rather than Resource.create(): create() would read os.environ again.
    return Resource(attributes)


_SAMPLERS: dict[str, Callable[[float], sampling.Sampler]] = {
    "always_on": lambda ratio: sampling.ALWAYS_ON,
    "always_off": lambda ratio: sampling.ALWAYS_OFF,
    "traceidratio": lambda ratio: sampling.TraceIdRatioBased(ratio),
    "parentbased_always_on": lambda ratio: sampling.ParentBased(sampling.ALWAYS_ON),
    "parentbased_always_off": lambda ratio: sampling.ParentBased(sampling.ALWAYS_OFF),
    "parentbased_traceidratio": lambda ratio: sampling.ParentBasedTraceIdRatio(ratio),
}


def _sampler(otel: Mapping[str, str], *, default: str) -> sampling.Sampler:
    name = otel.get("OTEL_TRACES_SAMPLER", default).strip().lower()
    if name not in _SAMPLERS:
        raise ConfigError(
            f"OTEL_TRACES_SAMPLER: invalid value {name!r}; expected one of {', '.join(_SAMPLERS)}"
        )
    ratio = _number(otel, "OTEL_TRACES_SAMPLER_ARG", 1.0)
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"OTEL_TRACES_SAMPLER_ARG: invalid value {ratio}: expected 0..1")
    return _SAMPLERS[name](ratio)


_EXEMPLAR_FILTERS: dict[str, Callable[[], ExemplarFilter]] = {
    "always_off": AlwaysOffExemplarFilter,
    "always_on": AlwaysOnExemplarFilter,
    "trace_based": TraceBasedExemplarFilter,
}


def _exemplar_filter(otel: Mapping[str, str]) -> ExemplarFilter:
    # Off unless asked for (the SDK's default is trace_based): sampling an exemplar on every
    # measurement of a traced request costs more than the rest of the metric, and /metrics
    # (Prometheus text) cannot show exemplars anyway.
    name = otel.get("OTEL_METRICS_EXEMPLAR_FILTER", "always_off").strip().lower()
    if name not in _EXEMPLAR_FILTERS:
        raise ConfigError(
            f"OTEL_METRICS_EXEMPLAR_FILTER: invalid value {name!r}; expected one of "
            + ", ".join(_EXEMPLAR_FILTERS)
        )
    return _EXEMPLAR_FILTERS[name]()


def _span_exporter(otel: Mapping[str, str], resource: Resource) -> SpanProcessor | None:
    target = _target(otel, "TRACES")
    if target is None:
        return None
    if target.kind == _CONSOLE:
        return ConsoleSpanWriter()
    return OtlpSpanExporter(
        target.endpoint,
        resource=dict(resource.attributes),
        scope=("gateway", __version__),
        headers=target.headers,
        compression=target.compression,
        timeout_s=target.timeout_s,
        certificate=target.certificate,
        batch=BatchSettings(
            schedule_delay_ms=_number(otel, "OTEL_BSP_SCHEDULE_DELAY", 5000),
            max_queue_size=int(_number(otel, "OTEL_BSP_MAX_QUEUE_SIZE", 2048)),
            max_export_batch_size=int(_number(otel, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)),
            export_timeout_ms=_number(otel, "OTEL_BSP_EXPORT_TIMEOUT", 30000),
        ),
    )


def _metric_exporter(otel: Mapping[str, str]) -> MetricExporter | None:
    target = _target(otel, "METRICS")
    if target is None:
        return None
    if target.kind == _CONSOLE:
        return ConsoleMetricExporter()
    return OTLPMetricExporter(
        endpoint=target.endpoint,
        headers=target.headers,
        timeout=target.timeout_s,
        certificate_file=target.certificate,
        compression=Compression(target.compression) if target.compression == "gzip" else None,
    )


_CONSOLE = "console"


class _Target(NamedTuple):
    kind: str  # "otlp" or "console"
    endpoint: str = ""
    headers: dict[str, str] = {}
    compression: str = "none"  # or "gzip"
    timeout_s: float = 10.0
    certificate: str | None = None  # CA bundle for https endpoints


def _target(otel: Mapping[str, str], signal: str) -> _Target | None:
    """Where a signal (TRACES or METRICS) goes: OTLP endpoint and headers, console, or None.

    OTLP is used when an endpoint is configured or the exporter is named ``otlp``.
    """
    kind = otel.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    specific = otel.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT", "").strip()
    base = otel.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if kind == "none" or (not kind and not specific and not base):
        return None
    if kind == _CONSOLE:
        return _Target(_CONSOLE)
    if kind not in ("", "otlp"):
        raise ConfigError(
            f"OTEL_{signal}_EXPORTER: invalid value {kind!r}: expected otlp, console or none"
        )
    protocol = otel.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "").strip()
    protocol = protocol or otel.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip() or "http/protobuf"
    if protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported; use http/protobuf"
        )
    path = "v1/traces" if signal == "TRACES" else "v1/metrics"
    endpoint = specific or f"{(base or 'http://localhost:4318').rstrip('/')}/{path}"
    raw_headers = otel.get(f"OTEL_EXPORTER_OTLP_{signal}_HEADERS") or otel.get(
        "OTEL_EXPORTER_OTLP_HEADERS", ""
    )
    compression = (
        (
            otel.get(f"OTEL_EXPORTER_OTLP_{signal}_COMPRESSION")
            or otel.get("OTEL_EXPORTER_OTLP_COMPRESSION")
            or "none"
        )
        .strip()
        .lower()
    )
    if compression not in ("none", "gzip"):
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_COMPRESSION: invalid value {compression!r}: expected gzip or none"
        )
    timeout_ms = _number(
        otel,
        f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT"
        if f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT" in otel
        else "OTEL_EXPORTER_OTLP_TIMEOUT",
        10000,
    )
    certificate = otel.get(f"OTEL_EXPORTER_OTLP_{signal}_CERTIFICATE") or otel.get(
        "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    return _Target(
        "otlp", endpoint, _headers(raw_headers), compression, timeout_ms / 1000, certificate
    )


def _headers(raw: str) -> dict[str, str]:
    headers = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            headers[key.strip()] = unquote(value.strip())
    return headers
