"""HTTP server metrics for every request, and the Prometheus ``/metrics`` endpoint."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.app.state import Gateway

__all__ = ["HTTPMetricsMiddleware", "metrics_endpoint", "observe_in_flight"]

#: Routes reported as themselves; any other path is reported under a prefix or as "other", so
#: that a scan of random URLs cannot blow up the metric's cardinality.
_ROUTES = ("/graphql", "/healthz", "/readyz", "/metrics", "/debug/traces")
_PREFIXES = ("/graphiql/static", "/debug/traces")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _route(path: str) -> str:
    if path in _ROUTES:
        return path
    for prefix in _PREFIXES:
        if path.startswith(prefix + "/"):
            return prefix + "/*"
    return "other"


class HTTPMetricsMiddleware:
    """Records ``http.server.request.duration`` and ``http.server.active_requests``."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self._app = app
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        instruments = self._gateway.runtime.observer.instruments
        method = scope["method"] if scope["method"] in ("GET", "POST", "HEAD") else "_OTHER"
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": _route(scope["path"]),
        }
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # In flight: a plain count, read by an observable gauge at collection, which costs a
        # request nothing (a synchronous up-down counter costs two SDK measurements).
        key = (method, attributes["http.route"])
        in_flight = self._gateway.http_in_flight
        in_flight[key] = in_flight.get(key, 0) + 1
        started = time.perf_counter()
        try:
            await self._app(scope, receive, send_with_status)
        finally:
            in_flight[key] -= 1
            instruments.http_duration.record(
                time.perf_counter() - started,
                {**attributes, "http.response.status_code": status},
            )


def observe_in_flight(gateway: Gateway, meter: Meter) -> None:
    """Register ``http.server.active_requests``, observed from the gateway's counts."""

    def observe(options: CallbackOptions) -> Iterable[Observation]:
        for (method, route), count in list(gateway.http_in_flight.items()):
            yield Observation(count, {"http.request.method": method, "http.route": str(route)})

    meter.create_observable_up_down_counter(
        "http.server.active_requests",
        callbacks=[observe],
        unit="{request}",
        description="HTTP requests in flight.",
    )


def metrics_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` handler: Prometheus text of this process's metrics."""

    async def metrics(request: Request) -> Response:
        telemetry = gateway.telemetry
        body = telemetry.metrics_text() if telemetry is not None else b""
        return Response(body, media_type=PROMETHEUS_CONTENT_TYPE)

    return metrics
