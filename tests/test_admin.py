"""Admin mutations and the model-events subscription, through the application in-process
(Starlette's test client: HTTP and a graphql-transport-ws websocket)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import make_model, tensor_info, write_repository
from tests.test_lifecycle import _publish, _scaled

INFER = (
    'query($v: Int) { infer(model: "m", version: $v, inputs: [{name: "x", shape: [1, 2], '
    "data: [1, 1]}]) { version outputs { data } } }"
)


def _client(root: Path, **env: str) -> Iterator[TestClient]:
    settings = Settings.load(environ={"GATEWAY_MODELS": str(root), **env})
    # As a browser on this machine: a loopback peer naming localhost (development privileges).
    local = TestClient(create_app(settings), base_url="http://localhost", client=("127.0.0.1", 1))
    with local as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.02)
        while client.app.state.gateway.lifecycle is None:  # type: ignore[attr-defined]
            time.sleep(0.01)
        yield client


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1), "m/2": _scaled(2)})
    yield from _client(root, GATEWAY_ADMIN_API="true", GATEWAY_POLL_SECONDS="0.05")


def _gql(client: TestClient, query: str, **variables: Any) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _version(client: TestClient, headers: dict[str, str] | None = None) -> int:
    response = client.post("/graphql", json={"query": INFER}, headers=headers or {})
    version: int = response.json()["data"]["infer"]["version"]
    return version


def test_mutations_are_forbidden_unless_enabled(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in _client(root):
        body = _gql(client, 'mutation { setDefaultVersion(name: "m", version: 1) { name } }')
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN"
        assert "GATEWAY_ADMIN_API" in error["message"]


def test_rollback_canary_unload_and_load(admin: TestClient) -> None:
    assert _version(admin) == 2
    body = _gql(
        admin,
        'mutation { setDefaultVersion(name: "m", version: 1) { defaultVersion pinnedVersion } }',
    )
    assert body["data"]["setDefaultVersion"] == {"defaultVersion": 1, "pinnedVersion": 1}
    assert _version(admin) == 1
    _gql(admin, 'mutation { setDefaultVersion(name: "m", version: null) { name } }')
    assert _version(admin) == 2

    split = (
        'mutation($s: [VersionWeightInput!]!) { setTrafficSplit(name: "m", split: $s) '
        "{ trafficSplit { version weight } } }"
    )
    body = _gql(admin, split, s=[{"version": 1, "weight": 1}, {"version": 2, "weight": 1}])
    assert body["data"]["setTrafficSplit"]["trafficSplit"] == [
        {"version": 1, "weight": 1.0},
        {"version": 2, "weight": 1.0},
    ]
    seen = {_version(admin) for _ in range(60)}
    assert seen == {1, 2}
    for caller in ("alice", "bob", "carol"):
        assert len({_version(admin, {"X-Caller-Key": caller}) for _ in range(8)}) == 1
    _gql(admin, split, s=[])

    body = _gql(admin, 'mutation { unloadModel(name: "m", version: 2) { name } }')
    assert "errors" not in body
    deadline = time.monotonic() + 10
    while _version(admin) != 1:
        assert time.monotonic() < deadline
    assert _gql(admin, INFER, v=2)["errors"][0]["extensions"]["code"] in (
        "MODEL_NOT_FOUND",
        "MODEL_NOT_READY",
    )
    time.sleep(0.3)  # polls happen: an operator's unload holds
    assert _version(admin) == 1
    _gql(admin, 'mutation { loadModel(name: "m", version: 2) { name } }')
    assert _version(admin) == 2


@pytest.mark.parametrize(
    ("mutation", "code"),
    [
        ('setDefaultVersion(name: "m", version: 9) { name }', "MODEL_NOT_FOUND"),
        ('setDefaultVersion(name: "nope", version: 1) { name }', "MODEL_NOT_FOUND"),
        (
            'setTrafficSplit(name: "m", split: [{version: 1, weight: -1}]) { name }',
            "BAD_USER_INPUT",
        ),
        ('setTrafficSplit(name: "m", split: [{version: 1, weight: 0}]) { name }', "BAD_USER_INPUT"),
        ('unloadModel(name: "m", version: 7) { name }', "MODEL_NOT_FOUND"),
    ],
)
def test_bad_admin_requests_have_codes(admin: TestClient, mutation: str, code: str) -> None:
    body = _gql(admin, f"mutation {{ {mutation} }}")
    assert body["errors"][0]["extensions"]["code"] == code


def test_events_stream_and_the_schema_follows_new_models(admin: TestClient, tmp_path: Path) -> None:
    with admin.websocket_connect(
        "ws://localhost/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { modelEvents { model version kind reason } }"},
            }
        )
        time.sleep(0.1)  # subscribed before the events
        _gql(admin, 'mutation { setDefaultVersion(name: "m", version: 1) { name } }')
        _publish(tmp_path / "repo", "fresh/1", _scaled(4))
        kinds = []
        while ("fresh", "READY") not in kinds:
            message = ws.receive_json()
            assert message["type"] == "next", message
            event = message["payload"]["data"]["modelEvents"]
            kinds.append((event["model"], event["kind"]))
        assert kinds[0] == ("m", "DEFAULT_CHANGED")
        assert ("fresh", "LOADING") in kinds
        ws.send_json({"id": "1", "type": "complete"})
    deadline = time.monotonic() + 10
    while "fresh" not in admin.post("/graphql", json={"query": "{ predict { __typename } }"}).text:
        body = _gql(admin, '{ model(name: "fresh") { typedField } }')
        if body["data"]["model"] and body["data"]["model"]["typedField"]:
            break
        assert time.monotonic() < deadline, "the schema never gained the new model"
        time.sleep(0.05)
    answer = _gql(admin, "{ predict { fresh(input: {x: [1, 1]}) { y } } }")
    assert answer["data"]["predict"]["fresh"]["y"] == [4.0, 4.0]


def test_shadow_traffic_is_compared_and_counted(admin: TestClient, tmp_path: Path) -> None:
    shadow = (
        'mutation($v: Int, $s: Float!) { setShadow(name: "m", version: $v, share: $s) { name } }'
    )
    stats = (
        '{ model(name: "m") { shadow { version requests agreed failed agreement meanLatencyMs '
        "comparison } } }"
    )
    assert "errors" not in _gql(admin, shadow, v=1, s=1.0)
    for _ in range(10):
        assert _version(admin) == 2  # served by the default; v1 (x * 1) runs in the shadow

    def counts() -> dict[str, Any]:
        found: dict[str, Any] = _gql(admin, stats)["data"]["model"]["shadow"]
        return found

    deadline = time.monotonic() + 10
    while counts()["requests"] < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first = counts()
    assert first["version"] == 1 and first["agreed"] == 0 and first["agreement"] == 0.0
    assert first["comparison"] == "VALUES"  # not a classifier: values within tolerance
    assert first["meanLatencyMs"] > 0 and first["failed"] == 0

    _publish(tmp_path / "repo", "m/3", _scaled(2))  # the same answers as v2
    _gql(admin, "mutation { reloadRepository { name } }")
    _gql(admin, 'mutation { setDefaultVersion(name: "m", version: 2) { name } }')
    assert "errors" not in _gql(admin, shadow, v=3, s=1.0)
    for _ in range(5):
        assert _version(admin) == 2
    deadline = time.monotonic() + 10
    while counts()["requests"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert counts()["agreement"] == 1.0
    scraped = admin.get("/metrics").text
    assert (
        'gateway_shadow_requests_total{gateway_model_name="m",gateway_model_version="3",gateway_outcome="agreed"}'
        in scraped
    )
    assert _gql(admin, shadow, v=9, s=0.5)["errors"][0]["extensions"]["code"] == "MODEL_NOT_FOUND"
    assert _gql(admin, shadow, v=3, s=1.5)["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "errors" not in _gql(admin, shadow, v=None, s=1.0)
    assert _gql(admin, stats)["data"]["model"]["shadow"] is None


def test_a_failed_reload_is_visible_and_the_previous_load_serves(
    admin: TestClient, tmp_path: Path
) -> None:
    _publish(tmp_path / "repo", "m/2", b"\x08\x07 not a model")
    _gql(admin, "mutation { reloadRepository { name } }")
    body = _gql(admin, '{ model(name: "m") { versions { version state loadError } } }')
    v2 = body["data"]["model"]["versions"][1]
    assert v2["version"] == 2 and v2["state"] == "READY"
    assert "the previous load still serves" in v2["loadError"]
    assert str(tmp_path) not in v2["loadError"]  # no file paths reach clients
    assert _version(admin) == 2


def _classifier(scale: float) -> onnx.ModelProto:
    """Two classes, probabilities softmax(x * scale), label their argmax: a positive scale
    changes the probabilities, never the label; a negative one flips the label."""
    return make_model(
        [
            helper.make_node("Mul", ["x", "k"], ["scaled"]),
            helper.make_node("Softmax", ["scaled"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        [tensor_info("x", TensorProto.FLOAT, ["N", 2])],
        [
            tensor_info("label", TensorProto.INT64, ["N"]),
            tensor_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        initializers=[helper.make_tensor("k", TensorProto.FLOAT, [], [scale])],
    )


def test_a_classifier_shadow_agrees_when_the_labels_do(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path / "repo",
        {"c/1": _classifier(1.0), "c/2": _classifier(3.0), "c/3": _classifier(-1.0)},
    )
    shadow = 'mutation($v: Int) { setShadow(name: "c", version: $v, share: 1.0) { name } }'
    stats = '{ model(name: "c") { shadow { requests agreed agreement comparison } } }'
    predict = "{ predict { c(input: {x: [0.2, 0.9]}) { label probabilities { probability } } } }"
    for client in _client(root, GATEWAY_ADMIN_API="true", GATEWAY_POLL_SECONDS="0.05"):
        _gql(client, 'mutation { setDefaultVersion(name: "c", version: 1) { name } }')
        for version, agreement in ((2, 1.0), (3, 0.0)):
            assert "errors" not in _gql(client, shadow, v=version)
            for _ in range(5):
                answer = _gql(client, predict)["data"]["predict"]["c"]
                assert answer["label"] == "1"
            deadline = time.monotonic() + 10
            while (found := _gql(client, stats)["data"]["model"]["shadow"])["requests"] < 5:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            # Version 2's probabilities differ by far more than 1e-4; its labels are the same.
            assert found["comparison"] == "LABELS"
            assert found["agreement"] == agreement, (version, found)
