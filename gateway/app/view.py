"""The GraphQL endpoint: Strawberry's ASGI view on the schema of the moment, and GraphiQL."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.schema import BaseSchema
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from gateway.api import GatewayContext
from gateway.api.context import header_map
from gateway.api.fastpath import FastResponse, persisted_get
from gateway.api.limits import QueryLimits
from gateway.app.admission import admit
from gateway.app.body import read_body
from gateway.app.state import Gateway
from gateway.app.websocket import GatewayWSHandler
from gateway.auth import METADATA
from gateway.errors import BadRequestError, RequestTimeoutError, UnauthenticatedError
from gateway.examples import example_operations
from gateway.graphiql import ExampleTab, render_graphiql_page

__all__ = ["PAGE_HEADERS", "GraphQLView"]


#: On the HTML pages (the explorer sets its Content-Security-Policy in a meta element).
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _is_json(headers: dict[str, str]) -> bool:
    return headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _json(answer: FastResponse) -> Response:
    return Response(
        orjson.dumps(answer.body),
        status_code=answer.status,
        headers=answer.headers,
        media_type="application/json",
    )


def _timed_out(seconds: float) -> Response:
    error = {
        "message": f"the request ran longer than {seconds:g} s (request_timeout_seconds); "
        "its work was cancelled",
        "extensions": {"code": RequestTimeoutError.code},
    }
    return JSONResponse({"errors": [error]}, status_code=504)


def _unsupported_media(request: Request) -> Response:
    given = header_map(request.scope).get("content-type", "none")
    error = {
        "message": f"unsupported content type {given!r}: send application/json",
        "extensions": {"code": BadRequestError.code},
    }
    return JSONResponse({"errors": [error]}, status_code=415)


def _query_string(payload: dict[str, Any]) -> bytes:
    """A GraphQL-over-HTTP GET query string for a request body."""
    params = {k: v for k, v in payload.items() if k in ("query", "operationName") and v}
    for key in ("variables", "extensions"):
        if payload.get(key):
            params[key] = orjson.dumps(payload[key]).decode()
    return urlencode(params).encode()


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class GraphQLView(GraphQL[GatewayContext, None]):
    """Strawberry's ASGI view, serving the current schema and our offline GraphiQL."""

    graphql_transport_ws_handler_class = GatewayWSHandler

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._limits = QueryLimits.from_settings(gateway.settings)
        #: The explorer's page with and without model.toml's details: (schema made for, page).
        self._pages: dict[bool, tuple[object, str]] = {}
        # Strawberry refuses websockets opened by pages of other origins than these (a
        # subscription would run with the user's cookies and network position). Only
        # graphql-transport-ws, whose handler checks credentials for the socket's lifetime
        # and caps its operations (websocket.py).
        super().__init__(
            gateway.current.schema,
            graphql_ide="graphiql",
            allowed_origins=gateway.settings.cors_origins,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=None,
        )

    @property
    def gateway(self) -> Gateway:
        return self._gateway

    # The schema is rebuilt when models load: every request reads the one of its moment.
    @property
    def schema(self) -> BaseSchema:
        return self._gateway.current.schema

    @schema.setter
    def schema(self, value: BaseSchema) -> None:
        pass  # set by the base class's __init__; the gateway's current schema is the truth

    async def get_context(self, request: Request | WebSocket, response: Any) -> GatewayContext:
        current = self._gateway.current
        principal = request.scope.get("gateway.principal")
        failure = None
        if principal is None:  # a websocket: checked again at each subscribe (see websocket.py)
            try:
                principal = self._gateway.authenticate(request.scope)
            except UnauthenticatedError as exc:
                failure = exc.message
        return GatewayContext(
            self._gateway.runtime,
            self._gateway.settings,
            current.typed,
            request=request,
            response=response,
            lifecycle=self._gateway.lifecycle,
            caller_principal=principal,
            auth_failure=failure,
            budget=self._limits.budget(),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        headers = header_map(scope)
        # Every request, whatever its method or Accept header (the explorer's page included:
        # what it shows depends on the caller), is authenticated and counted here.
        refused = await admit(self._gateway, scope)
        if refused is not None:
            await refused(scope, receive, send)
            return
        if scope["method"] == "POST":
            settings = self._gateway.settings
            read = await read_body(
                scope,
                receive,
                limit=settings.max_body_bytes,
                drain=settings.max_drain_bytes,
                timeout=settings.body_timeout_seconds,
            )
            if read is None:  # the client left
                return
            if isinstance(read, Response):
                await read(scope, receive, send)
                return
            body = read
            if not _is_json(headers):  # GraphQL over HTTP: POST bodies are JSON
                await _unsupported_media(request)(scope, receive, send)
                return
            fast = await self._lean(request, body)
            if isinstance(fast, Response):
                await fast(scope, receive, send)
                return
            body = fast  # with a persisted query filled in
            # Strawberry reads the body again: replay it.
            request = Request(scope, receive=_replay(body))
        elif (
            scope["method"] == "GET"
            and "gateway.principal" in scope
            and (payload := persisted_get(request.query_params)) is not None
        ):
            # Apollo's persisted queries over GET: the hash in `extensions`, the query in
            # `query` once (to register it), variables as JSON text.
            fast = await self._lean(request, orjson.dumps(payload))
            if isinstance(fast, Response):
                await fast(scope, receive, send)
                return
            # Strawberry runs the query the hash stood for (over GET it refuses mutations).
            scope = {**scope, "query_string": _query_string(orjson.loads(fast))}
            request = Request(scope, receive=receive)
        try:
            async with asyncio.timeout(self._gateway.settings.request_timeout_seconds):
                response: Response = await self.run(request)
        except TimeoutError:
            response = _timed_out(self._gateway.settings.request_timeout_seconds)
        except HTTPException as exc:
            # Strawberry answers these in plain text; clients get a GraphQL error with a code.
            error = {"message": exc.reason, "extensions": {"code": BadRequestError.code}}
            response = JSONResponse({"errors": [error]}, status_code=exc.status_code)
        await response(scope, receive, send)

    async def _lean(self, request: Request, body: bytes) -> Response | bytes:
        """``_fast`` within the request's time-out."""
        seconds = self._gateway.settings.request_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                return await self._fast(request, body)
        except TimeoutError:
            return _timed_out(seconds)

    async def _fast(self, request: Request, body: bytes) -> Response | bytes:
        """Answer from the lean path, or the body for Strawberry to take."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if not isinstance(payload, dict):
            return body
        fast = self._gateway.fast
        refused = fast.resolve_persisted(payload)
        if refused is not None:
            return _json(refused)
        current = self._gateway.current
        ctx = GatewayContext(
            self._gateway.runtime,
            self._gateway.settings,
            current.typed,
            request=request,
            lifecycle=self._gateway.lifecycle,
            caller_principal=request.scope["gateway.principal"],
        )
        answer = await fast.handle(payload, ctx)
        if answer is not None:
            return _json(answer)
        extensions = payload.get("extensions")
        if isinstance(extensions, dict) and extensions.pop("persistedQuery", None) is not None:
            body = orjson.dumps(payload)  # Strawberry gets the query the hash stood for
        return body

    def encode_json(self, data: object) -> str:
        # Text, not bytes: graphql-transport-ws messages must be text frames (the compiled
        # path, the hot one, encodes its answers itself).
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        # orjson.JSONDecodeError is a json.JSONDecodeError: Strawberry still answers 400.
        return orjson.loads(data)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # Descriptions and [example] rows come from model.toml (real training data, as gateway
        # convert writes them): shown to callers with the metadata scope only. The others get
        # the same operations with placeholder values (names and types are in the schema).
        principal = request.scope.get("gateway.principal")
        detailed = principal is not None and METADATA in principal.scopes
        current = self._gateway.current
        page = self._pages.get(detailed)
        if page is None or page[0] is not current:
            configs = (
                {n: e.spec.config for n, e in self._gateway.runtime.entries.items()}
                if detailed
                else {}
            )
            tabs = [ExampleTab(q) for q in example_operations(current.typed, configs)]
            page = self._pages[detailed] = (
                current,
                render_graphiql_page(
                    endpoint=str(request.url_for("graphql").path),
                    static_url=str(request.url_for("graphiql-static", path="").path).rstrip("/"),
                    tabs=tabs,
                ),
            )
        return HTMLResponse(page[1], headers=PAGE_HEADERS)
