"""What callers without the metadata scope learn from the health routes and the explorer's
page: the status only, and example operations without model.toml's descriptions and rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.auth import new_key
from gateway.config import Settings
from tests.conftest import identity_model, write_repository

DESCRIPTION = "Churn from the 2025 customer table"
MODEL_TOML = f"""description = "{DESCRIPTION}"
features = ["tenure", "spend", "calls", "region"]
[example]
tenure = 31.5
spend = 4217.25
calls = 7.0
region = 3.0
"""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write_repository(
        tmp_path / "repo",
        {"churn/1": identity_model(), "broken/1": b"not an onnx model"},
        {"churn": MODEL_TOML},
    )


@pytest.fixture
def metadata_key(tmp_path: Path) -> tuple[Path, str]:
    key, hashed = new_key("dashboard")
    path = tmp_path / "keys.toml"
    path.write_text(f'[[keys]]\nid = "dashboard"\nhash = "{hashed}"\nscopes = ["metadata"]\n')
    return path, key


def _client(root: Path, **env: str) -> Iterator[TestClient]:
    settings = Settings.load(environ={"GATEWAY_MODELS": str(root), **env})
    # As a browser on this machine would name it (a loopback gateway refuses other hosts).
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost", client=("127.0.0.1", 1)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        yield client


@pytest.fixture
def exposed(repository: Path, metadata_key: tuple[Path, str]) -> Iterator[TestClient]:
    """Bound to every interface: anonymous callers have no scope."""
    yield from _client(
        repository, GATEWAY_HOST="0.0.0.0", GATEWAY_API_KEYS_FILE=str(metadata_key[0])
    )


def test_health_routes_give_anonymous_callers_off_loopback_the_status_only(
    exposed: TestClient, metadata_key: tuple[Path, str]
) -> None:
    health = exposed.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "alive"}
    ready = exposed.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {"status": "not ready"}
    # Credentials that do not verify: still the status (a probe must not fail on them).
    forged = exposed.get("/readyz", headers={"X-API-Key": "gw_dashboard_" + "0" * 64})
    assert forged.status_code == 503 and forged.json() == {"status": "not ready"}
    # The metadata scope sees what is not ready and why, and the process.
    key = {"X-API-Key": metadata_key[1]}
    detailed = exposed.get("/readyz", headers=key)
    assert detailed.status_code == 503
    assert detailed.json()["models"]["broken"]["1"]["state"] == "FAILED"
    assert "pid" in exposed.get("/healthz", headers=key).json()


def test_health_details_on_loopback_for_anonymous_callers(repository: Path) -> None:
    for client in _client(repository):
        assert "broken" in client.get("/readyz").json()["models"]
        assert "pid" in client.get("/healthz").json()


def _page(client: TestClient, **headers: str) -> str:
    response = client.get("/graphql", headers={"Accept": "text/html", **headers})
    assert response.status_code == 200
    return response.text


def test_the_explorer_shows_model_toml_details_to_metadata_callers_only(
    exposed: TestClient, metadata_key: tuple[Path, str]
) -> None:
    anonymous = _page(exposed)
    assert "query PredictChurn" in anonymous  # the operations are there, as in the schema
    assert DESCRIPTION not in anonymous and "4217.25" not in anonymous
    detailed = _page(exposed, **{"X-API-Key": metadata_key[1]})
    assert DESCRIPTION in detailed and "4217.25" in detailed
    assert DESCRIPTION not in _page(exposed)  # each caller its own page (both are cached)


def test_the_explorer_on_loopback_shows_the_details(repository: Path) -> None:
    for client in _client(repository):
        page = _page(client)
        assert DESCRIPTION in page and "4217.25" in page
