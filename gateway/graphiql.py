"""The GraphiQL explorer page, built on assets vendored in ``static/graphiql/`` (no CDN).

The page loads React, ReactDOM, GraphiQL and the explorer plugin from ``static_url``, and
``boot.js`` renders GraphiQL from a JSON configuration embedded in the page. The page has no
inline JavaScript, so it carries a Content-Security-Policy that forbids inline scripts and
``eval``. Vendored versions and licenses: ``static/graphiql/VERSIONS.txt``.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from gateway import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["STATIC_DIR", "ExampleTab", "render_graphiql_page"]

STATIC_DIR: Final[Path] = Path(__file__).parent / "static" / "graphiql"
"""The directory of the vendored GraphiQL assets, to be served at the page's ``static_url``."""

# Loaded in this order (all `defer`, which keeps the order): GraphiQL's UMD build needs the
# React globals, the explorer plugin needs GraphiQL's, and boot.js needs them all.
_SCRIPTS: Final = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql-plugin-explorer.umd.js",
    "boot.js",
)
_STYLESHEETS: Final = ("graphiql.min.css", "graphiql-plugin-explorer.css", "page.css")


@dataclass(frozen=True)
class ExampleTab:
    """An example operation, opened as a GraphiQL tab."""

    query: str
    variables: str | None = None
    """The operation's variables as JSON text."""


def render_graphiql_page(
    *,
    endpoint: str,
    static_url: str,
    tabs: Sequence[ExampleTab],
    title: str = "Prediction gateway",
) -> str:
    """The GraphiQL HTML page: assets from `static_url`, queries POSTed to `endpoint`.

    Args:
        endpoint: where GraphiQL POSTs operations (JSON). A relative URL resolves against
            the page's own URL, so the page also works behind a path prefix.
        static_url: the URL at which `STATIC_DIR` is served, e.g. ``"/graphiql/static"``.
        tabs: example operations, opened as tabs (GraphiQL's ``defaultTabs``) unless the
            browser has tabs saved from an earlier visit.
        title: the page title.
    """
    base = static_url.rstrip("/")
    config = {
        "endpoint": endpoint,
        "tabs": [_tab_config(tab) for tab in tabs],
    }
    # `?v=` makes browsers fetch the assets again after an upgrade of the gateway.
    stylesheets = "".join(
        f'<link rel="stylesheet" href="{_attr(f"{base}/{name}?v={__version__}")}">\n'
        for name in _STYLESHEETS
    )
    scripts = "".join(
        f'<script defer src="{_attr(f"{base}/{name}?v={__version__}")}"></script>\n'
        for name in _SCRIPTS
    )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_attr(_csp(base, endpoint))}">\n'
        '<meta name="referrer" content="same-origin">\n'
        f"<title>{html.escape(title)}</title>\n"
        # An empty icon, so that the browser does not request /favicon.ico.
        '<link rel="icon" href="data:,">\n'
        f"{stylesheets}"
        # boot.js reads its settings from this element.
        f'<script type="application/json" id="graphiql-config">{_script_json(config)}</script>\n'
        f"{scripts}"
        "</head>\n"
        "<body>\n"
        '<div id="graphiql">Loading GraphiQL…</div>\n'
        "<noscript>GraphiQL needs JavaScript.</noscript>\n"
        "</body>\n"
        "</html>\n"
    )


def _tab_config(tab: ExampleTab) -> dict[str, str]:
    config = {"query": tab.query}
    if tab.variables is not None:
        config["variables"] = tab.variables
    return config


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _script_json(value: object) -> str:
    # Inside <script> the HTML parser only looks for `</script` (and `<!--`), so escaping every
    # `<` keeps any text from ending the element early; `>` and `&` for good measure.
    # JSON.parse turns the \u escapes back into the characters.
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp(static_url: str, endpoint: str) -> str:
    assets = " ".join(["'self'", *_origin(static_url)])
    api = " ".join(["'self'", *_origin(endpoint)])
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {assets}",
            # GraphiQL's dialogs inject <style> elements (checked: blocked without it).
            f"style-src {assets} 'unsafe-inline'",
            "font-src data:",
            f"img-src {assets} data:",
            f"connect-src {api}",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def _origin(url: str) -> list[str]:
    """The CSP source for `url`'s origin when it names one (absolute URLs), else nothing."""
    parts = urlsplit(url)
    if not parts.netloc:
        return []
    host = parts.netloc.rpartition("@")[2]
    return [f"{parts.scheme}://{host}" if parts.scheme else host]
