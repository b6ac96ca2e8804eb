"""Property-based fuzzing of the whole schema through the application: 1,000 generated
operations (queries and admin mutations, valid by construction, with arbitrary arguments) never
answer 5xx or INTERNAL_SERVER_ERROR, and the server keeps answering."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.auth import new_key
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS

EXAMPLES = 1000
seen: dict[str, int] = {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    key, hashed = new_key("fuzzer")
    (folder / "keys.toml").write_text(
        f'[[keys]]\nid = "fuzzer"\nhash = "{hashed}"\nscopes = ["predict", "metadata", "admin"]\n'
    )
    app = create_app(
        Settings.load(
            environ={
                "GATEWAY_MODELS": str(EXAMPLE_MODELS),
                "GATEWAY_API_KEYS_FILE": str(folder / "keys.toml"),
                "GATEWAY_POLL_SECONDS": "0",
            }
        )
    )
    # A loopback server answers only requests that name it (Host: localhost, not testserver).
    with TestClient(app, base_url="http://localhost") as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        sdl = app.state.gateway.current.as_sdl()
        yield client, key, sdl


def test_generated_operations_never_fail_the_server(fuzzed: tuple[TestClient, str, str]) -> None:
    client, key, sdl = fuzzed

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        query = data.draw(from_schema(sdl))
        response = client.post(
            "/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code < 500, (query, response.text)
        body: dict[str, Any] = response.json()
        for error in body.get("errors") or ():
            code = error["extensions"]["code"]
            seen[code] = seen.get(code, 0) + 1
            assert code != "INTERNAL_SERVER_ERROR", (query, error)
        seen["answered"] = seen.get("answered", 0) + 1

    one()
    assert seen["answered"] >= EXAMPLES
    assert client.get("/healthz").status_code == 200
    print(f"{seen['answered']} operations; error codes: {dict(sorted(seen.items()))}")
