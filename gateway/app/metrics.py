"""HTTP server metrics for every request, and the Prometheus ``/metrics`` endpoint: open, or
behind the metrics scope (``metrics_auth``), on the API's port or its own (``metrics_port``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import uvicorn
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.context import header_map
from gateway.app.state import Gateway
from gateway.auth import ADMIN
from gateway.errors import ConfigError, ForbiddenError, UnauthenticatedError

__all__ = [
    "METRICS_SCOPE",
    "HTTPMetricsMiddleware",
    "listen_for_metrics",
    "metrics_endpoint",
    "metrics_server",
    "observe_in_flight",
]

logger = logging.getLogger(__name__)

#: The scope that lets a caller read /metrics when ``metrics_auth`` is on (as admin does).
METRICS_SCOPE = "metrics"

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


def _refusal(gateway: Gateway, request: Request) -> Response | None:
    """With ``metrics_auth``: None for a caller with the metrics or admin scope, else 401/403."""
    try:
        principal = gateway.auth.authenticate(header_map(request.scope))
    except UnauthenticatedError as exc:
        return _error(exc.message, exc.code, 401, {"WWW-Authenticate": "Bearer"})
    if principal.scopes & {METRICS_SCOPE, ADMIN}:
        return None
    return _error(
        "/metrics needs a key or token with the metrics or admin scope (metrics_auth)",
        ForbiddenError.code,
        403,
    )


def _error(message: str, code: str, status: int, headers: dict[str, str] | None = None) -> Response:
    error = {"message": message, "extensions": {"code": code}}
    return JSONResponse({"errors": [error]}, status_code=status, headers=headers)


def metrics_endpoint(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    """The ``/metrics`` handler: Prometheus text of this process's metrics, rendered on a
    worker thread (a big exposition takes a while and must not hold up the event loop); scrapes
    that arrive while one is rendered share its text."""
    rendering: asyncio.Future[bytes] | None = None

    async def metrics(request: Request) -> Response:
        nonlocal rendering
        if gateway.settings.metrics_auth:
            refused = _refusal(gateway, request)
            if refused is not None:
                return refused
        telemetry = gateway.telemetry
        if telemetry is None:
            return Response(b"", media_type=PROMETHEUS_CONTENT_TYPE)
        if rendering is None or rendering.done():
            rendering = asyncio.ensure_future(asyncio.to_thread(telemetry.metrics_text))
        # Shielded: a scraper that hangs up does not cancel the others' rendering.
        body = await asyncio.shield(rendering)
        return Response(body, media_type=PROMETHEUS_CONTENT_TYPE)

    return metrics


def listen_for_metrics(host: str, port: int) -> socket.socket:
    """The listening socket of ``metrics_port``, bound now, so that a port in use stops the
    start with a ConfigError (not a failed lifespan). SO_REUSEPORT: each process of ``gateway
    serve --workers N`` binds it, as each binds the API's port."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"metrics_port: cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"metrics_port: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def metrics_server(gateway: Gateway, sock: socket.socket) -> AsyncIterator[None]:
    """Serve ``/metrics`` on ``sock`` (``listen_for_metrics``) while the context lasts; the
    socket is closed at its end."""
    app = Starlette(routes=[Route("/metrics", metrics_endpoint(gateway), methods=["GET"])])
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, proxy_headers=False
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    loop = asyncio.create_task(server.main_loop())
    host, port = sock.getsockname()[:2]
    logger.info("serving /metrics on %s:%d", host, port)
    try:
        yield
    finally:
        server.should_exit = True
        await loop
        await server.shutdown(sockets=[sock])
