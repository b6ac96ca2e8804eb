"""create_app(settings): the Starlette application, its lifespan and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.context import header_map
from gateway.app.metrics import (
    HTTPMetricsMiddleware,
    listen_for_metrics,
    metrics_endpoint,
    metrics_server,
    observe_in_flight,
)
from gateway.app.state import Gateway, schema_extensions
from gateway.app.traces import trace_viewer_routes
from gateway.app.view import GraphQLView
from gateway.auth import ADMIN, METADATA
from gateway.config import Settings
from gateway.errors import BadRequestError, UnauthenticatedError
from gateway.graphiql import STATIC_DIR
from gateway.lifecycle import Lifecycle
from gateway.observability import Observer
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.telemetry import Telemetry, TraceStore, configure_logging, create_telemetry
from gateway.trust import Trust

__all__ = ["create_app", "create_app_from_environment", "schema_extensions"]

logger = logging.getLogger(__name__)

GRAPHIQL_STATIC = "/graphiql/static"


class _GatewayApp(Starlette):
    """Starlette, with GraphQL POSTs (the hot path) going straight to the view: no router, no
    error middlewares (the view answers its own errors; uvicorn turns a crash into a 500).
    Every request's Host is checked first (``gateway.trust``)."""

    graphql_post: ASGIApp | None = None
    trust: Trust | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trust is not None and self.trust.checks_host and scope["type"] != "lifespan":
            refused = self.trust.refused_host(header_map(scope))
            if refused is not None:
                await _bad_host(refused, scope, send)
                return
        if (
            self.graphql_post is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/graphql"
        ):
            scope["app"] = self
            await self.graphql_post(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _bad_host(reason: str, scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        # Closing before the handshake is accepted: the server answers it with HTTP 403.
        await send({"type": "websocket.close", "code": 1008, "reason": ""})
        return
    error = {"message": reason, "extensions": {"code": BadRequestError.code}}
    response = JSONResponse({"errors": [error]}, status_code=400)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _cors(settings: Settings) -> dict[str, Any]:
    return {
        "allow_origins": list(settings.cors_origins),
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["Authorization", "Content-Type", "X-API-Key", "X-Caller-Key"],
        "max_age": 600,
    }


async def _watch(gateway: Gateway) -> None:
    """Keep the served versions in line with the repository (see ``gateway.lifecycle``)."""
    settings = gateway.settings
    lifecycle = gateway.lifecycle = Lifecycle(gateway.runtime, settings.models)
    lifecycle.on_change = gateway.refresh
    if settings.poll_seconds <= 0:
        return
    while True:
        await asyncio.sleep(settings.poll_seconds)
        try:
            await lifecycle.reconcile()
        except Exception:  # a bug: keep serving what is loaded, and try again next time
            logger.exception("scanning the model repository failed")


def create_app_from_environment() -> Starlette:
    """The application of one ``gateway serve --workers N`` worker: settings from GATEWAY_*
    (the parent process put its flags there), logging as the parent set it up."""
    settings = Settings.load(environ=os.environ)
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings)


def create_app(
    settings: Settings,
    *,
    runtime: ModelRuntime | None = None,
    telemetry: Telemetry | None = None,
) -> Starlette:
    """The gateway as an ASGI application.

    Args:
        settings: the configuration.
        runtime: an existing runtime to serve (tests); default: one over ``settings.models``,
            loaded in the background when the application starts.
        telemetry: providers to use (tests); default: made from ``settings`` in the lifespan,
            so that each worker process has its own.
    """
    if runtime is None:
        scan = scan_repository(settings.models)
        for warning in scan.warnings:
            logger.warning("repository: %s", warning)
        runtime = ModelRuntime(settings, scan)
    gateway = Gateway(settings, runtime)
    # The trace store must exist when the routes are made; its spans come once the
    # lifespan has made the providers.
    store = (
        TraceStore(settings.trace_viewer_size, max_spans=settings.trace_viewer_spans)
        if settings.trace_viewer
        else None
    )

    metrics_socket = (
        listen_for_metrics(settings.host, settings.metrics_port) if settings.metrics_port else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # What exists now (modules, the application) lives as long as the process: keep the
        # garbage collector from walking it again and again. Its full collections then cost
        # well under a millisecond, which releasing a model version relies on.
        gc.freeze()
        made = telemetry or create_telemetry(settings, trace_store=store)
        gateway.telemetry = made
        observer = Observer(
            made.tracer_provider,
            made.meter_provider,
            record_document=settings.trace_document,
            min_step_us=settings.trace_min_step_us,
            operation_names=settings.metrics_operation_names,
        )
        gateway.runtime.attach(observer)
        observe_in_flight(gateway, observer.meter)
        loading: asyncio.Task[None] | None = None
        if not gateway.runtime.initial_load_done:

            async def load() -> None:
                try:
                    await gateway.runtime.load_all_async()
                    gateway.rebuild()
                    gateway.loaded = True  # /readyz: the schema has the models now
                except Exception:  # a bug: /readyz stays 503 "loading", and this says why
                    logger.exception("the initial load failed")
                    raise
                logger.info("initial load finished: %d models", len(gateway.runtime.entries))
                await _watch(gateway)

            loading = asyncio.create_task(load())
        else:
            gateway.rebuild()
            gateway.loaded = True
            loading = asyncio.create_task(_watch(gateway))
        # JWKS keys and the keys file, kept current in the background.
        credentials = asyncio.create_task(gateway.auth.maintain(settings.poll_seconds))
        await gateway.rate.check()  # a shared store that does not answer is logged
        try:
            async with contextlib.AsyncExitStack() as stack:
                if metrics_socket is not None:
                    await stack.enter_async_context(metrics_server(gateway, metrics_socket))
                yield
        finally:
            credentials.cancel()
            await gateway.rate.aclose()
            if loading is not None and not loading.done():
                loading.cancel()
            if gateway.lifecycle is not None:
                gateway.lifecycle.close()
            gateway.runtime.close()
            made.shutdown()

    def detailed(request: Request) -> bool:
        """Whether the caller may see what the health routes say beyond the status (model
        names, failure reasons, the PID): the metadata or admin scope. Credentials that do not
        verify are no reason to fail a probe: the caller just gets the status."""
        try:
            principal = gateway.authenticate(request.scope)
        except UnauthenticatedError:
            return False
        return bool(principal.scopes & {METADATA, ADMIN})

    async def healthz(request: Request) -> Response:
        if not detailed(request):
            return JSONResponse({"status": "alive"})
        return JSONResponse({"status": "alive", "pid": os.getpid()})

    async def readyz(request: Request) -> Response:
        rt = gateway.runtime
        if not gateway.loaded:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not detailed(request):
            ready = all(entry.default_version is not None for entry in rt.entries.values())
            if ready:
                return JSONResponse({"status": "ready"})
            return JSONResponse({"status": "not ready"}, status_code=503)
        not_ready = {
            entry.name: {
                str(v): {"state": mv.state.value, "reason": mv.reason}
                for v, mv in sorted(entry.versions.items())
            }
            for entry in rt.entries.values()
            if entry.default_version is None
        }
        if not_ready:
            return JSONResponse({"status": "not ready", "models": not_ready}, status_code=503)
        return JSONResponse({"status": "ready"})

    view = GraphQLView(gateway)
    routes: list[BaseRoute] = [
        Route("/graphql", view, methods=["GET", "POST"], name="graphql"),
        WebSocketRoute("/graphql", view),  # subscriptions (graphql-transport-ws)
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Mount(GRAPHIQL_STATIC, StaticFiles(directory=STATIC_DIR), name="graphiql-static"),
    ]
    if not settings.metrics_port:  # else on a port of its own, started in the lifespan
        routes.append(Route("/metrics", metrics_endpoint(gateway), methods=["GET"]))
    if store is not None:

        def allowed(request: Request) -> str | None:
            headers = header_map(request.scope)
            local = gateway.trust.is_local(request.scope, headers)
            try:
                principal = gateway.auth.authenticate(headers, local=local)
            except UnauthenticatedError as exc:
                return exc.message
            if ADMIN in principal.scopes:
                return None
            if principal.kind == "anonymous" and local:
                return None  # development on this machine
            return "the trace viewer needs the admin scope (an API key: /debug/traces#key=...)"

        routes += trace_viewer_routes(store, allowed=allowed)
    app = _GatewayApp(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            *([Middleware(CORSMiddleware, **_cors(settings))] if settings.cors_origins else []),
            Middleware(HTTPMetricsMiddleware, gateway=gateway),
        ],
    )
    graphql_post: ASGIApp = HTTPMetricsMiddleware(view, gateway=gateway)
    if settings.cors_origins:
        # The POST fast lane skips the middleware stack: it gets the same CORS handling.
        graphql_post = CORSMiddleware(graphql_post, **_cors(settings))
    app.graphql_post = graphql_post
    app.trust = gateway.trust
    app.state.gateway = gateway
    return app
