"""The built-in trace viewer: a page and a JSON API over the in-memory trace store.

Mounted only when ``trace_viewer`` is on; its data needs the ``admin`` scope, except for
anonymous callers of a gateway on a loopback host (development). The page
(``gateway/static/traces/``) needs no external service and no CDN; it sends an API key given
once in its address (``/debug/traces#key=...``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.telemetry import TraceStore

__all__ = ["STATIC_DIR", "trace_viewer_routes"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "traces"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def trace_viewer_routes(
    store: TraceStore, *, allowed: Callable[[Request], str | None]
) -> list[BaseRoute]:
    """``/debug/traces`` (the page), ``/debug/traces/api/traces[/{trace_id}]`` (JSON; for the
    callers ``allowed`` lets through: it returns None, or why not)."""

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    async def list_traces(request: Request) -> Response:
        refused = allowed(request)
        if refused is not None:
            return JSONResponse({"error": refused}, status_code=403)
        query = request.query_params
        try:
            min_ms = float(query.get("min_ms") or 0)
        except ValueError:
            return JSONResponse({"error": "min_ms must be a number"}, status_code=400)
        failed = query.get("failed", "").lower() in ("1", "true", "yes")
        model = query.get("model") or None
        traces = store.summaries(min_ms=min_ms, failed=failed, model=model)
        return JSONResponse({"traces": traces}, headers={"Cache-Control": "no-store"})

    async def one_trace(request: Request) -> Response:
        refused = allowed(request)
        if refused is not None:
            return JSONResponse({"error": refused}, status_code=403)
        found = store.trace(request.path_params["trace_id"])
        if found is None:
            return JSONResponse({"error": "no such trace (kept: the newest)"}, status_code=404)
        return JSONResponse(found, headers={"Cache-Control": "no-store"})

    return [
        Route("/debug/traces", page, methods=["GET"]),
        Route("/debug/traces/api/traces", list_traces, methods=["GET"]),
        Route("/debug/traces/api/traces/{trace_id}", one_trace, methods=["GET"]),
        Mount("/debug/traces/static", StaticFiles(directory=STATIC_DIR), name="traces-static"),
    ]
