"""deploy/: the compose file (gateway + Jaeger + Prometheus) hangs together."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def _load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_compose_wires_traces_to_jaeger_and_metrics_to_prometheus() -> None:
    compose = _load("compose.yaml")
    services = compose["services"]
    assert set(services) == {"gateway", "jaeger", "prometheus"}
    gateway = services["gateway"]
    assert (DEPLOY / gateway["build"] / "Dockerfile").is_file()
    endpoint = urlsplit(gateway["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
    assert endpoint.hostname == "jaeger" and endpoint.port == 4318  # OTLP/HTTP
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    assert "16686:16686" in services["jaeger"]["ports"]
    mounted = services["prometheus"]["volumes"][0].split(":")[0]
    assert (DEPLOY / mounted).resolve() == (DEPLOY / "prometheus.yml").resolve()


def test_prometheus_scrapes_the_gateway_metrics_endpoint() -> None:
    (job,) = _load("prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8000"]
