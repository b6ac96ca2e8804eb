"""The built-in trace viewer: its JSON API on a real server, its page's HTML, and the page in
Chromium (list, filters, waterfall, span details, links by URL hash)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from gateway.app.traces import STATIC_DIR
from tests.conftest import (
    CHROMIUM_ARGS,
    EXAMPLE_MODELS,
    LiveServer,
    chromium_executable,
    start_server,
    stop_server,
)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PREDICT_IRIS = (
    "query PredictIris { predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, "
    "petalLength: 1.4, petalWidth: 0.2}) { label } } }"
)
FAILING_INFER = '{ infer(model: "iris", inputs: []) { id } }'


@dataclass(frozen=True)
class Viewer:
    """A live server with the trace viewer on, after one typed query and one failing query."""

    server: LiveServer
    ok_id: str
    failed_id: str

    def api(self, path: str = "", **params: str) -> httpx.Response:
        return httpx.get(f"{self.server.url}/debug/traces/api/traces{path}", params=params)

    def summaries(self, **params: str) -> list[dict[str, Any]]:
        response = self.api(**params)
        assert response.status_code == 200, response.text
        traces: list[dict[str, Any]] = response.json()["traces"]
        return traces


def _trace_id(response: httpx.Response) -> str:
    trace_id = response.json()["extensions"]["traceId"]
    assert isinstance(trace_id, str) and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    return trace_id


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    log = tmp_path_factory.mktemp("trace-viewer") / "server.log"
    env = {"GATEWAY_TRACE_VIEWER": "true", "GATEWAY_TRACE_VIEWER_SIZE": "50"}
    server = start_server(EXAMPLE_MODELS, log, env=env)
    try:
        ok = server.graphql(PREDICT_IRIS)
        assert ok.json()["data"]["predict"]["iris"]["label"] == "setosa", ok.text
        failed = server.graphql(FAILING_INFER)
        assert failed.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        found = Viewer(server, _trace_id(ok), _trace_id(failed))
        # A trace is listed once its root span has ended: at most a moment after the response.
        deadline = time.monotonic() + 5
        while {found.ok_id, found.failed_id} - {t["traceId"] for t in found.summaries()}:
            assert time.monotonic() < deadline, "the traces were not listed within 5 s"
            time.sleep(0.05)
        yield found
    finally:
        stop_server(server)


def _by_id(traces: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {t["traceId"]: t for t in traces}


def _ids(traces: list[dict[str, Any]]) -> list[str]:
    return [t["traceId"] for t in traces]


# --- The JSON API ---------------------------------------------------------------------------


def test_list_has_both_traces_newest_first(viewer: Viewer) -> None:
    traces = viewer.summaries()
    found = _by_id(traces)
    ok, failed = found[viewer.ok_id], found[viewer.failed_id]

    assert _ids(traces).index(viewer.failed_id) < _ids(traces).index(viewer.ok_id)
    # Listed when they finish, so only these two, sent one after the other, compare by start.
    assert failed["startTime"] > ok["startTime"]
    assert ok["name"] == "query PredictIris"
    assert (ok["status"], ok["errorCode"]) == ("OK", None)
    assert (failed["status"], failed["errorCode"]) == ("ERROR", "BAD_USER_INPUT")
    assert "iris" in ok["models"] and "iris" in failed["models"]
    assert ok["spanCount"] >= 4 and failed["spanCount"] >= 2
    assert 0 < ok["durationMs"] < 10_000


def test_list_filters(viewer: Viewer) -> None:
    ok = _by_id(viewer.summaries())[viewer.ok_id]

    failed_only = viewer.summaries(failed="1")
    assert viewer.failed_id in _ids(failed_only) and viewer.ok_id not in _ids(failed_only)
    assert {t["status"] for t in failed_only} == {"ERROR"}

    slow = viewer.summaries(min_ms=str(ok["durationMs"]))
    assert viewer.ok_id in _ids(slow)
    assert all(t["durationMs"] >= ok["durationMs"] for t in slow)
    assert viewer.summaries(min_ms="1e9") == []

    iris = viewer.summaries(model="iris")
    assert {viewer.ok_id, viewer.failed_id} <= set(_ids(iris))
    assert all("iris" in t["models"] for t in iris)
    diabetes = viewer.summaries(model="diabetes")
    assert not {viewer.ok_id, viewer.failed_id} & set(_ids(diabetes))
    assert viewer.api(min_ms="slow").status_code == 400


def test_trace_detail_is_a_tree_under_the_operation_span(viewer: Viewer) -> None:
    response = viewer.api(f"/{viewer.ok_id}")
    assert response.status_code == 200
    trace = response.json()
    spans = trace["spans"]
    named = {span["name"]: span for span in spans}
    root, predict, run = named["query PredictIris"], named["gateway.predict"], named["gateway.run"]

    assert trace["traceId"] == viewer.ok_id  # the id the GraphQL response carried
    assert trace["spanCount"] == len(spans)
    assert [s["startTime"] for s in spans] == sorted(s["startTime"] for s in spans)
    assert [s for s in spans if s["parentSpanId"] is None] == [root]
    assert root["kind"] == "SERVER"
    assert predict["parentSpanId"] == root["spanId"]
    assert run["parentSpanId"] == predict["spanId"]
    assert run["attributes"]["gateway.model.name"] == "iris"
    assert run["attributes"]["gateway.batch.size"] >= 1
    assert all(re.fullmatch(r"[0-9a-f]{16}", s["spanId"]) for s in spans)


def test_failed_trace_marks_the_failed_spans(viewer: Viewer) -> None:
    trace = viewer.api(f"/{viewer.failed_id}").json()
    (infer,) = [s for s in trace["spans"] if s["name"] == "gateway.infer"]

    assert trace["status"] == "ERROR"
    assert infer["status"] == "ERROR"
    assert infer["attributes"]["gateway.error.code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("trace_id", ["0" * 32, "f" * 32, "not-a-trace-id"])
def test_unknown_trace_is_a_json_404(viewer: Viewer, trace_id: str) -> None:
    response = viewer.api(f"/{trace_id}")

    assert response.status_code == 404
    assert "error" in response.json()


def test_page_and_assets_are_served_with_a_strict_csp(viewer: Viewer) -> None:
    page_url = f"{viewer.server.url}/debug/traces"
    page = httpx.get(page_url)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "style-src 'self'" in page.headers["content-security-policy"]
    # Every relative URL of the page resolves under /debug/traces/static/ and is served.
    urls = _parse(page.text).urls
    assert urls
    for url in urls:
        absolute = urljoin(page_url, url)
        assert urlsplit(absolute).path.startswith("/debug/traces/static/"), url
        assert httpx.get(absolute).status_code == 200, url


def test_viewer_is_off_by_default(example_server: LiveServer) -> None:
    for path in ("", "/api/traces", "/static/viewer.js"):
        assert httpx.get(f"{example_server.url}/debug/traces{path}").status_code == 404


# --- The page's files -------------------------------------------------------------------------


class _Elements(HTMLParser):
    """Every tag name, every src/href, and whether any tag has a style attribute or inline text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.styled: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self.styled += [tag for name, _ in attrs if name == "style" or name.startswith("on")]
        self._in_script = tag == "script"
        if tag == "script" and not dict(attrs).get("src"):
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


def _parse(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return parser


def test_html_has_no_inline_script_or_style_and_no_external_url() -> None:
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    elements = _parse(html)

    assert elements.inline_scripts == 0
    assert "style" not in elements.tags
    assert elements.styled == []  # no style="" and no onclick="" attributes
    assert "http:" not in html and "https:" not in html
    for url in elements.urls:
        assert not urlsplit(url).scheme and not url.startswith("/"), url
        # Relative to the page at /debug/traces: "traces/static/x" is /debug/traces/static/x.
        assert url.startswith("traces/static/"), url
        assert (STATIC_DIR / url.removeprefix("traces/static/")).is_file(), url


def test_script_and_stylesheet_load_nothing_from_elsewhere() -> None:
    script = (STATIC_DIR / "viewer.js").read_text(encoding="utf-8")
    css = (STATIC_DIR / "viewer.css").read_text(encoding="utf-8")

    for text in (script, css):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert "url(" not in css and "@import" not in css
    # Span names and attribute values are caller data: they must never be parsed as HTML.
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)
    assert not re.search(r"\beval\(|new Function\(", script)


# --- In a real browser --------------------------------------------------------------------


@pytest.mark.e2e
def test_viewer_page_in_chromium(viewer: Viewer) -> None:
    base = f"{viewer.server.url}/debug/traces"
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_executable(), args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 860})
            context.on("request", lambda request: requests.append(request.url))
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))

            # The list: newest first, with status, error code and models.
            page.goto(base)
            rows = page.locator("#trace-rows tr")
            ok_row = page.locator(f'#trace-rows tr[data-trace-id="{viewer.ok_id}"]')
            failed_row = page.locator(f'#trace-rows tr[data-trace-id="{viewer.failed_id}"]')
            expect(ok_row).to_contain_text("query PredictIris")
            expect(ok_row).to_contain_text("OK")
            expect(ok_row).to_contain_text("iris")
            expect(failed_row).to_contain_text("BAD_USER_INPUT")
            ids = [row.get_attribute("data-trace-id") for row in rows.all()]
            assert ids.index(viewer.failed_id) < ids.index(viewer.ok_id)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "trace-viewer-list.png"))

            # The waterfall: one row per span, nested, with bars inside their parent's.
            ok_row.get_by_role("link").click()
            expect(page.locator("#trace-title")).to_have_text("query PredictIris")
            spans = page.get_by_role("treeitem")
            predict = spans.filter(has_text="gateway.predict")
            run = spans.filter(has_text="gateway.run")
            expect(predict).to_have_attribute("aria-level", "2")
            expect(run).to_have_attribute("aria-level", "3")
            expect(spans).to_have_count(_by_id(viewer.summaries())[viewer.ok_id]["spanCount"])
            predict_bar = predict.locator(".bar").bounding_box()
            run_bar = run.locator(".bar").bounding_box()
            assert predict_bar is not None and run_bar is not None
            assert predict_bar["width"] > 0 and run_bar["width"] > 0
            assert run_bar["x"] >= predict_bar["x"] - 1
            assert run_bar["x"] + run_bar["width"] <= predict_bar["x"] + predict_bar["width"] + 1

            # A span's details: its attributes; its id goes into the URL for sharing.
            run.click()
            expect(run).to_have_attribute("aria-selected", "true")
            details = page.locator("#span-details")
            expect(details.locator("h3")).to_have_text("gateway.run")
            model_row = details.locator("tr").filter(has_text="gateway.model.name")
            expect(model_row.locator("td")).to_have_text("iris")
            assert urlsplit(page.url).fragment.startswith(f"{viewer.ok_id}/")
            page.keyboard.press("ArrowUp")  # the waterfall is a tree: arrows move the selection
            expect(spans.filter(has_text="gateway.queue")).to_have_attribute(
                "aria-selected", "true"
            )
            expect(details.locator("h3")).to_have_text("gateway.queue")
            page.keyboard.press("ArrowDown")
            expect(run).to_have_attribute("aria-selected", "true")
            page.screenshot(path=str(ARTIFACTS / "trace-viewer-waterfall.png"))

            # A trace id in the URL opens that trace on load.
            shared = context.new_page()
            shared.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            shared.on("pageerror", lambda error: errors.append(str(error)))
            shared.goto(f"{base}#{viewer.ok_id}")
            expect(shared.locator("#trace-title")).to_have_text("query PredictIris")
            expect(shared.get_by_role("treeitem").filter(has_text="gateway.run")).to_be_visible()
            shared.close()

            # The search box takes a pasted id (here with JSON around it) and opens the failure,
            # showing the span where the error started.
            page.get_by_label("Trace id", exact=True).fill(f'"traceId": "{viewer.failed_id}"')
            page.get_by_label("Trace id", exact=True).press("Enter")
            expect(page.locator("#trace-title")).to_contain_text("query")
            expect(page.locator("#trace-status")).to_contain_text("BAD_USER_INPUT")
            expect(page.locator('[role="treeitem"][aria-selected="true"]')).to_have_class(
                re.compile(r"\bis-error\b")
            )

            # Filters go to the API: failed only, then a model, then an impossible duration.
            page.get_by_label("Failed only").check()
            expect(rows).to_have_count(1)
            expect(rows.first).to_have_attribute("data-trace-id", viewer.failed_id)
            page.get_by_label("Model", exact=True).select_option("iris")
            expect(rows).to_have_count(1)
            page.get_by_label("Failed only").uncheck()
            expect(ok_row).to_be_visible()
            page.get_by_label("Slower than").fill("1000000")
            expect(page.locator("#list-empty")).to_contain_text("No traces match these filters")
            expect(rows).to_have_count(0)
            assert errors == []

            # The API going away is said in words; the last list stays.
            page.get_by_label("Slower than").fill("")
            expect(ok_row).to_be_visible()
            page.route(re.compile(r"/api/traces"), lambda route: route.abort())
            page.get_by_role("button", name="Refresh").click()
            expect(page.get_by_role("alert")).to_contain_text("Cannot load the traces")
            expect(ok_row).to_be_visible()
        finally:
            browser.close()

    # Only the refused request of the last step failed.
    assert all(e.startswith("Failed to load resource") for e in errors), errors
    hosts = {urlsplit(url).hostname for url in requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}
