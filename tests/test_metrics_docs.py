"""Every metric the documentation names exists: the README's metrics table, deploy/ and
bench/README.md are checked against a real /metrics scrape after predictions, a shadowed one
included (the shadow metrics appear only then)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLE_MODELS, ROOT, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

DOCS = [ROOT / "README.md", *sorted((ROOT / "deploy").iterdir()), ROOT / "bench" / "README.md"]
#: A metric or label name: the gateway's prefixes, then words joined by underscores.
NAME = re.compile(r"\b(?:gateway|graphql|http)_[a-z0-9_]*[a-z0-9]\b")
IRIS = "{ predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, petalWidth: 0.2}) { label } } }"  # noqa: E501


class Scrape:
    """Metric families (name -> type, label names) and sample names of one /metrics text."""

    def __init__(self, text: str) -> None:
        self.families: dict[str, tuple[str, set[str]]] = {}
        self.samples: set[str] = set()
        for family in text_string_to_metric_families(text):
            labels = {name for s in family.samples for name in s.labels if name != "le"}
            # The parser names a counter family without its _total suffix.
            name = f"{family.name}_total" if family.type == "counter" else family.name
            self.families[name] = (family.type, labels)
            self.samples |= {s.name for s in family.samples}

    @property
    def labels(self) -> set[str]:
        return {label for _, labels in self.families.values() for label in labels}


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    log = tmp_path_factory.mktemp("metrics") / "server.log"
    server = start_server(EXAMPLE_MODELS, log, env={"GATEWAY_ADMIN_API": "true"})
    try:
        yield _traffic_then_scrape(server)
    finally:
        stop_server(server)


def _traffic_then_scrape(server: LiveServer) -> Scrape:
    shadow = server.graphql('mutation { setShadow(name: "iris", version: 1, share: 1.0) { name } }')
    assert shadow.status_code == 200 and "errors" not in shadow.json(), shadow.text
    for _ in range(3):
        assert server.graphql(IRIS).json()["data"]["predict"]["iris"]["label"] == "setosa"
    deadline = time.monotonic() + 10
    while True:  # the shadow runs in the background, after the answer
        text = httpx.get(f"{server.url}/metrics").text
        if "gateway_shadow_requests_total{" in text or time.monotonic() > deadline:
            return Scrape(text)
        time.sleep(0.1)


def _named_in(path: Path) -> set[str]:
    return set(NAME.findall(path.read_text(encoding="utf-8")))


def _readme_metrics_table() -> list[tuple[str, str, set[str]]]:
    """(name, type, label names) of each row of the README's metrics table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = []
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1] in ("histogram", "gauge", "counter"):
            name = cells[0].strip("`")
            # Label names are in backticks; their values are in brackets after them.
            labels = set(re.findall(r"`([a-z0-9_]+)`", re.sub(r"\([^)]*\)", "", cells[2])))
            rows.append((name, cells[1], labels))
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_metric_a_document_names_exists(doc: Path, scrape: Scrape) -> None:
    known = set(scrape.families) | scrape.samples | scrape.labels
    missing = sorted(_named_in(doc) - known)
    assert not missing, f"{doc.name} names metrics or labels /metrics does not have: {missing}"


def test_the_readme_metrics_table_matches_the_scrape(scrape: Scrape) -> None:
    rows = _readme_metrics_table()
    assert {name for name, _, _ in rows} == set(scrape.families), "the table lists every metric"
    for name, kind, labels in rows:
        assert scrape.families[name] == (kind, labels), name
