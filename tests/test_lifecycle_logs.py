"""The log of a serving gateway as its models change: each line true, and said once per event."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import write_repository
from tests.test_admin import _classifier, _gql
from tests.test_lifecycle import _publish, _scaled


def test_each_problem_is_logged_once_and_working_fields_are_not_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_repository(
        tmp_path / "repo",
        {"m/1": _scaled(1), "labelled/1": _classifier(1.0), "broken/1": b"not a model"},
        {"labelled": 'labels = ["a", "b", "c"]\n'},  # three labels, two classes
    )
    caplog.set_level(logging.INFO, logger="gateway")
    settings = Settings.load(environ={"GATEWAY_MODELS": str(root), "GATEWAY_POLL_SECONDS": "0.05"})
    app = create_app(settings)
    with TestClient(app, base_url="http://localhost", client=("127.0.0.1", 1)) as client:
        deadline = time.monotonic() + 20
        # /readyz stays 503 (broken has no READY version): wait for the watcher instead.
        while client.app.state.gateway.lifecycle is None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the initial load never finished"
            time.sleep(0.02)
        # Each of these rebuilds the schema (a model appears, loads; versions come).
        _publish(root, "fresh/1", _scaled(4))
        _publish(root, "m/2", _scaled(2))
        while True:
            body = _gql(client, '{ model(name: "fresh") { typedField } }')
            if (body["data"]["model"] or {}).get("typedField") == "fresh":
                break
            assert time.monotonic() < deadline, "the new model never got its typed field"
            time.sleep(0.05)
        while (
            _gql(client, '{ model(name: "m") { defaultVersion } }')["data"]["model"][
                "defaultVersion"
            ]
            != 2
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        answer = _gql(client, "{ predict { fresh(input: {x: [1, 1]}) { y } } }")
        assert answer["data"]["predict"]["fresh"]["y"] == [4.0, 4.0]
    lines = [r.getMessage() for r in caplog.records]
    warned = [line for line in lines if "has no typed field" in line]
    assert warned == [
        "model labelled has no typed field: model.toml has 3 labels but the model has 2 classes"
    ]
    assert [line for line in lines if line.startswith("model broken ")] == [
        "model broken version 1 FAILED: not a readable ONNX model (DecodeError)"
    ]
    for event in ("fresh version 1 LOADING", "fresh version 1 READY", "m version 2 READY"):
        assert sum(line.startswith(f"model {event}") for line in lines) == 1, (event, lines)
