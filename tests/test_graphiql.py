"""The GraphiQL page: its HTML, the vendored assets, and the page running in Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import strawberry
import uvicorn
from playwright.sync_api import expect, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension

from gateway.graphiql import STATIC_DIR, ExampleTab, render_graphiql_page
from tests.conftest import (
    CHROMIUM_ARGS,
    EXAMPLE_MODELS,
    LiveServer,
    chromium_executable,
    start_server,
    stop_server,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
HELLO = ExampleTab(query="query Greeting {\n  hello\n}\n")
ECHO = ExampleTab(
    query="# </script><script>alert(1)</script> <!-- stays a comment\n"
    "query Echo($text: String!) {\n  echo(text: $text)\n}\n",
    variables='{"text": "</script> & <b>safe</b>"}',
)


class _Elements(HTMLParser):
    """Collects the page's <script> elements (attributes, text) and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        if tag == "script":
            self.scripts.append((dict(attrs), ""))
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def _parse(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def _page(*tabs: ExampleTab) -> str:
    return render_graphiql_page(endpoint="/graphql", static_url="/graphiql/static/", tabs=tabs)


def test_page_references_no_external_url() -> None:
    page = _page(HELLO, ECHO)

    assert "http://" not in page
    assert "https://" not in page
    assert all(not url.startswith("//") for url in _parse(page).urls)


def test_page_loads_every_asset_from_static_url() -> None:
    elements = _parse(_page(HELLO))
    assets = [url for url in elements.urls if not url.startswith("data:")]

    assert assets
    for url in assets:
        path = urlsplit(url).path
        assert path.startswith("/graphiql/static/")
        assert (STATIC_DIR / path.removeprefix("/graphiql/static/")).is_file()


def test_only_inline_script_is_the_json_config() -> None:
    elements = _parse(_page(HELLO))

    inline = [attrs for attrs, _ in elements.scripts if "src" not in attrs]
    assert inline == [{"type": "application/json", "id": "graphiql-config"}]


def test_tab_text_cannot_break_out_of_the_config_element() -> None:
    page = _page(HELLO, ECHO)
    elements = _parse(page)

    assert "alert(1)</script>" not in page
    assert len(elements.scripts) == page.count("</script>")
    (config_text,) = [text for attrs, text in elements.scripts if "src" not in attrs]
    assert json.loads(config_text) == {
        "endpoint": "/graphql",
        "tabs": [{"query": HELLO.query}, {"query": ECHO.query, "variables": ECHO.variables}],
    }


def test_title_is_escaped() -> None:
    page = render_graphiql_page(endpoint="/g", static_url="/s", tabs=[], title="<b>A & B</b>")

    assert "<title>&lt;b&gt;A &amp; B&lt;/b&gt;</title>" in page


def test_csp_allows_an_absolute_endpoint_origin() -> None:
    page = render_graphiql_page(
        endpoint="https://api.example.test:8443/graphql", static_url="/s", tabs=[]
    )

    assert "connect-src &#x27;self&#x27; https://api.example.test:8443;" in page


def test_vendored_files_match_versions_txt() -> None:
    versions = (STATIC_DIR / "VERSIONS.txt").read_text(encoding="utf-8")
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)", versions, flags=re.MULTILINE)

    assert len(sums) == 6
    for digest, name in sums:
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name
    assert (STATIC_DIR / "LICENSES.txt").is_file()


# --- In a real browser ---------------------------------------------------------------------


@strawberry.type
class _Query:
    @strawberry.field
    def hello(self) -> str:
        return "Hello from the gateway"

    @strawberry.field
    def echo(self, text: str) -> str:
        return text


class _ServedBy(SchemaExtension):
    def get_results(self) -> dict[str, object]:
        return {"servedBy": "test-extension"}


def _browser_app() -> Starlette:
    """The page under a path prefix, with relative URLs, as behind a reverse proxy."""
    schema = strawberry.Schema(query=_Query, extensions=[_ServedBy])
    page = render_graphiql_page(
        endpoint="graphql", static_url="graphiql/static", tabs=[HELLO, ECHO]
    )

    async def graphiql(request: Request) -> HTMLResponse:
        return HTMLResponse(page)

    prefixed = [
        Route("/graphql", graphiql, methods=["GET"]),
        Route("/graphql", GraphQL(schema, graphql_ide=None), methods=["POST"]),
        Mount("/graphiql/static", StaticFiles(directory=STATIC_DIR)),
    ]
    return Starlette(routes=[Mount("/prefix", routes=prefixed)])


@pytest.fixture
def server_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _browser_app(), lifespan="off", ws="none", log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.mark.e2e
def test_graphiql_runs_the_example_tabs_in_chromium(server_url: str) -> None:
    requests: list[str] = []
    posts: list[tuple[str, str]] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.on("request", lambda request: requests.append(request.url))
            context.on(
                "request",
                lambda request: (
                    posts.append((request.url, request.headers["content-type"]))
                    if request.method == "POST"
                    else None
                ),
            )
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))

            page.goto(f"{server_url}/prefix/graphql")
            editor = page.locator(".graphiql-query-editor")
            result = page.locator(".graphiql-response")
            expect(editor).to_contain_text("query Greeting", timeout=15_000)

            page.locator(".graphiql-execute-button").click()
            expect(result).to_contain_text("Hello from the gateway")
            expect(result).to_contain_text("test-extension")  # response `extensions` shown

            page.get_by_role("tab", name="Echo").click()
            expect(editor).to_contain_text("echo(text: $text)")
            page.locator(".graphiql-execute-button").click()
            expect(result).to_contain_text("</script> & <b>safe</b>")

            page.get_by_role("button", name="Show GraphiQL Explorer").click()
            expect(page.locator(".graphiql-explorer-root")).to_contain_text("hello")

            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "graphiql.png"))
        finally:
            browser.close()

    assert errors == []
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}
    # Relative URLs resolved under the prefix; the first POST is GraphiQL's introspection.
    assert len(posts) >= 3
    assert set(posts) == {(f"{server_url}/prefix/graphql", "application/json")}


@pytest.mark.e2e
def test_graphiql_on_the_real_server_runs_the_example_models(example_server: LiveServer) -> None:
    errors: list[str] = []
    hosts: set[str | None] = set()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda request: hosts.add(urlsplit(request.url).hostname))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{example_server.url}/graphql")
            editor = page.locator(".graphiql-query-editor")
            result = page.locator(".graphiql-response")
            expect(editor).to_contain_text("query PredictDatasetTopic", timeout=15_000)

            page.get_by_role("tab", name="PredictIris").click()
            expect(editor).to_contain_text("sepalLength: 5.1")
            page.locator(".graphiql-execute-button").click()
            expect(result).to_contain_text('"label": "setosa"')
            expect(result).to_contain_text('"modelVersion": 2')

            page.get_by_role("tab", name="Infer").click()
            page.locator(".graphiql-execute-button").click()
            expect(result).to_contain_text('"datatype": "BYTES"')
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "graphiql-gateway.png"))
        finally:
            browser.close()
    assert errors == []
    assert hosts - {None} == {"127.0.0.1"}


@pytest.mark.e2e
def test_a_model_served_since_the_last_visit_gets_its_example_tab(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    shutil.copytree(EXAMPLE_MODELS / "iris", repository / "iris")
    server = start_server(repository, tmp_path / "server.log", env={"GATEWAY_POLL_SECONDS": "0.5"})
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_executable(), args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_context().new_page()  # one browser profile: tabs are saved
                page.goto(f"{server.url}/graphql")
                editor = page.locator(".graphiql-query-editor")
                expect(editor).to_contain_text("query PredictIris", timeout=15_000)
                expect(page.get_by_role("tab")).to_have_count(3)  # PredictIris, Models, Infer
                page.get_by_role("tab", name="Models").click()
                editor.locator(".CodeMirror").click()
                page.keyboard.press("Control+Home")
                page.keyboard.type("# my edit\n")
                expect(editor).to_contain_text("# my edit")

                # A text model is published while the page is open.
                shutil.copytree(EXAMPLE_MODELS / "dataset-topic", repository / "dataset-topic")
                deadline = time.monotonic() + 30
                while (
                    "PredictDatasetTopic"
                    not in httpx.get(f"{server.url}/graphql", headers={"Accept": "text/html"}).text
                ):
                    assert time.monotonic() < deadline, "the model was not loaded"
                    time.sleep(0.2)

                for _ in range(2):  # a second visit adds nothing more
                    page.reload()
                    expect(page.get_by_role("tab", name="PredictDatasetTopic")).to_have_count(1)
                    names = page.get_by_role("tab").all_inner_texts()
                    assert names == ["PredictIris", "Models", "Infer", "PredictDatasetTopic"]
                page.get_by_role("tab", name="Models").click()
                expect(editor).to_contain_text("# my edit")  # the saved tabs are kept
                page.get_by_role("tab", name="PredictDatasetTopic").click()
                page.locator(".graphiql-execute-button").click()
                expect(page.locator(".graphiql-response")).to_contain_text('"label": "iris"')
            finally:
                browser.close()
    finally:
        stop_server(server)
