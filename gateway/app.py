"""create_app(settings): the Starlette application, its lifespan, routes and error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from cross_web import HTTPException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.schema import BaseSchema

from gateway.api import GatewayContext, GatewaySchema, build_schema
from gateway.config import Settings
from gateway.errors import BadRequestError
from gateway.examples import example_operations
from gateway.graphiql import STATIC_DIR, ExampleTab, render_graphiql_page
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.security import ErrorCodes

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

GRAPHIQL_STATIC = "/graphiql/static"


class _GraphQLView(GraphQL[GatewayContext, None]):
    """Strawberry's ASGI view, serving the schema of the moment and our offline GraphiQL."""

    def __init__(self, gateway: _Gateway) -> None:
        self._gateway = gateway
        super().__init__(gateway.current.schema, graphql_ide="graphiql")

    # The schema is rebuilt when models load: every request reads the one of its moment.
    @property
    def schema(self) -> BaseSchema:
        return self._gateway.current.schema

    @schema.setter
    def schema(self, value: BaseSchema) -> None:
        pass  # set by the base class's __init__; the gateway's current schema is the truth

    async def get_context(self, request: Request | WebSocket, response: Any) -> GatewayContext:
        current = self._gateway.current
        return GatewayContext(
            self._gateway.runtime, self._gateway.settings, current.typed, request=request
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response: Response = await self.run(Request(scope, receive=receive))
        except HTTPException as exc:
            # Strawberry answers these in plain text; clients get a GraphQL error with a code.
            error = {"message": exc.reason, "extensions": {"code": BadRequestError.code}}
            response = JSONResponse({"errors": [error]}, status_code=exc.status_code)
        await response(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(self._gateway.graphiql_page(request))


class _Gateway:
    """The live parts of one application: settings, runtime, the current schema."""

    def __init__(self, settings: Settings, runtime: ModelRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.current: GatewaySchema = self._build()
        self._page: str | None = None

    def _build(self) -> GatewaySchema:
        return build_schema(list(self.runtime.entries.values()), extensions=[ErrorCodes])

    def rebuild(self) -> None:
        """Swap in a schema made from the versions' signatures as they are now."""
        self.current = self._build()
        self._page = None
        for name, typed in sorted(self.current.typed.items()):
            if isinstance(typed, str):
                logger.warning(
                    "model %s has no typed field: %s", name, typed, extra={"model": name}
                )

    def graphiql_page(self, request: Request) -> str:
        if self._page is None:
            configs = {n: e.spec.config for n, e in self.runtime.entries.items()}
            tabs = [ExampleTab(q) for q in example_operations(self.current.typed, configs)]
            self._page = render_graphiql_page(
                endpoint=str(request.url_for("graphql").path),
                static_url=str(request.url_for("graphiql-static", path="").path).rstrip("/"),
                tabs=tabs,
            )
        return self._page


def create_app(settings: Settings, *, runtime: ModelRuntime | None = None) -> Starlette:
    """The gateway as an ASGI application.

    Args:
        settings: the configuration.
        runtime: an existing runtime to serve (tests); default: one over ``settings.models``,
            loaded in the background when the application starts.
    """
    if runtime is None:
        scan = scan_repository(settings.models)
        for warning in scan.warnings:
            logger.warning("repository: %s", warning)
        runtime = ModelRuntime(settings, scan)
    gateway = _Gateway(settings, runtime)
    view = _GraphQLView(gateway)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading: asyncio.Task[None] | None = None
        if not gateway.runtime.initial_load_done:

            async def load() -> None:
                try:
                    await gateway.runtime.load_all_async()
                    gateway.rebuild()
                except Exception:  # a bug: /readyz stays 503 "loading", and this says why
                    logger.exception("the initial load failed")
                    raise
                logger.info("initial load finished: %d models", len(runtime.entries))

            loading = asyncio.create_task(load())
        else:
            gateway.rebuild()
        try:
            yield
        finally:
            if loading is not None and not loading.done():
                loading.cancel()
            gateway.runtime.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        rt = gateway.runtime
        if not rt.initial_load_done:
            return JSONResponse({"status": "loading"}, status_code=503)
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

    routes = [
        Route("/graphql", view, methods=["GET", "POST"], name="graphql"),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Mount(GRAPHIQL_STATIC, StaticFiles(directory=STATIC_DIR), name="graphiql-static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
