"""Websockets do not outlive their credentials (issue 13, finding 7): each subscribe is
authenticated again, the socket closes (4403) when its token expires or its key is revoked, and
one socket holds at most ``max_subscriptions`` operations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from gateway.auth import new_key
from tests.conftest import in_process_client, write_repository
from tests.test_lifecycle import _scaled

SECRET = "websocket-tests-shared-secret-0123456789"
MODELS = "{ models { name } }"
EVENTS = "subscription { modelEvents { model } }"


def _token(**claims: Any) -> str:
    base = {"sub": "alice", "aud": "gateway", "iss": "https://idp.example", "scope": "metadata"}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def _keys(path: Path, **scopes: tuple[str, list[str]]) -> None:
    """Write ``{id: (hash, scopes)}`` as the keys file."""
    path.write_text(
        "".join(
            f'[[keys]]\nid = "{key_id}"\nhash = "{hashed}"\nscopes = {list(granted)!r}\n'.replace(
                "'", '"'
            )
            for key_id, (hashed, granted) in scopes.items()
        )
    )


@pytest.fixture
def keys_file(tmp_path: Path) -> tuple[Path, str, str]:
    key, hashed = new_key("reader")
    path = tmp_path / "keys.toml"
    _keys(path, reader=(hashed, ["metadata"]))
    return path, key, hashed


def _client(root: Path, keys: Path, **env: str) -> Iterator[TestClient]:
    environ = {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_API_KEYS_FILE": str(keys),
        "GATEWAY_JWT_SECRET": SECRET,
        "GATEWAY_JWT_AUDIENCE": "gateway",
        "GATEWAY_JWT_ISSUER": "https://idp.example",
        "GATEWAY_POLL_SECONDS": "0.2",
        **env,
    }
    yield from in_process_client(root, environ)


@pytest.fixture
def client(tmp_path: Path, keys_file: tuple[Path, str, str]) -> Iterator[TestClient]:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    yield from _client(root, keys_file[0])


def _open(client: TestClient, headers: dict[str, str]) -> Any:
    ws = client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
    )
    return ws


def _init(ws: WebSocketTestSession) -> None:
    ws.send_json({"type": "connection_init"})
    assert ws.receive_json()["type"] == "connection_ack"


def _query(ws: WebSocketTestSession, op_id: str, query: str = MODELS) -> dict[str, Any]:
    ws.send_json({"id": op_id, "type": "subscribe", "payload": {"query": query}})
    message: dict[str, Any] = ws.receive_json()
    if message["type"] == "next":
        assert ws.receive_json() == {"id": op_id, "type": "complete"}
    return message


def _closed_with(ws: WebSocketTestSession) -> int:
    """The close code of a socket the server closed (a ping is answered otherwise)."""
    with contextlib.suppress(anyio.ClosedResourceError):  # the server has finished with it
        ws.send_json({"type": "ping"})
    with pytest.raises(WebSocketDisconnect) as closed:
        message = ws.receive_json()
        pytest.fail(f"the socket is still open: {message}")
    return closed.value.code


def test_the_socket_closes_when_its_token_expires(client: TestClient) -> None:
    """Before: an operation on a socket opened with a JWT answered 15 s after its exp."""
    expires = time.time() + 1
    with _open(client, {"Authorization": f"Bearer {_token(exp=int(expires) + 1)}"}) as ws:
        _init(ws)
        assert _query(ws, "1")["payload"]["data"]["models"] == [{"name": "m"}]
        ws.send_json({"id": "events", "type": "subscribe", "payload": {"query": EVENTS}})
        # HTTP refuses the token 5 s (the clock-skew leeway) after exp: so does the socket.
        time.sleep(max(0.0, expires + 1 + 5.5 - time.time()))
        assert _closed_with(ws) == 4403


def test_each_subscribe_is_authenticated_again(
    client: TestClient, keys_file: tuple[Path, str, str]
) -> None:
    path, key, hashed = keys_file
    with _open(client, {"X-API-Key": key}) as ws:
        _init(ws)
        assert "errors" not in _query(ws, "1")["payload"]
        _keys(path, reader=(hashed, ["predict"]))  # metadata taken away
        time.sleep(0.6)  # poll_seconds, and then some
        refused = _query(ws, "2")["payload"]["errors"][0]
        assert refused["extensions"]["code"] == "FORBIDDEN"


def test_the_socket_closes_when_its_key_is_revoked(
    client: TestClient, keys_file: tuple[Path, str, str]
) -> None:
    path, key, _ = keys_file
    with _open(client, {"X-API-Key": key}) as ws:
        _init(ws)
        assert "errors" not in _query(ws, "1")["payload"]
        ws.send_json({"id": "events", "type": "subscribe", "payload": {"query": EVENTS}})
        path.write_text("")  # the key revoked
        time.sleep(1.0)  # the keys file is read within poll_seconds, the socket checked too
        assert _closed_with(ws) == 4403


def test_sockets_without_valid_credentials_answer_each_operation(client: TestClient) -> None:
    with _open(client, {"Authorization": "Bearer forged"}) as ws:
        _init(ws)
        for op_id in ("1", "2"):
            error = _query(ws, op_id)["payload"]["errors"][0]
            assert error["extensions"]["code"] == "UNAUTHENTICATED"


def test_a_key_added_later_works_on_an_open_socket_and_is_watched(
    client: TestClient, keys_file: tuple[Path, str, str]
) -> None:
    path, _, hashed = keys_file
    late, late_hash = new_key("late")
    with _open(client, {"X-API-Key": late}) as ws:
        _init(ws)
        error = _query(ws, "1")["payload"]["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        _keys(path, reader=(hashed, ["metadata"]), late=(late_hash, ["metadata"]))
        time.sleep(0.6)
        assert "errors" not in _query(ws, "2")["payload"]
        _keys(path, reader=(hashed, ["metadata"]))  # and revoked again
        time.sleep(1.0)
        assert _closed_with(ws) == 4403


@pytest.mark.parametrize("limit", [None, 3])
def test_operations_per_socket_are_capped(
    tmp_path: Path, keys_file: tuple[Path, str, str], limit: int | None
) -> None:
    """Before: 2,000 subscriptions were accepted on one socket (100 now, by default)."""
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = {"GATEWAY_MAX_SUBSCRIPTIONS": str(limit)} if limit else {}
    cap = limit or 100
    for client in _client(root, keys_file[0], **env):
        with _open(client, {"X-API-Key": keys_file[1]}) as ws:
            _init(ws)
            for i in range(cap):
                ws.send_json({"id": f"s{i}", "type": "subscribe", "payload": {"query": EVENTS}})
            for i in range(cap, cap + 5):
                ws.send_json({"id": f"s{i}", "type": "subscribe", "payload": {"query": EVENTS}})
                refused = ws.receive_json()
                assert refused["type"] == "error" and refused["id"] == f"s{i}", refused
                (error,) = refused["payload"]
                assert error["extensions"]["code"] == "BAD_REQUEST"
                assert f"already has {cap} operations open (max_subscriptions)" in error["message"]
            ws.send_json({"id": "s0", "type": "complete"})  # one fewer: room for one more
            time.sleep(0.1)
            assert _query(ws, "after", MODELS)["type"] == "next"
