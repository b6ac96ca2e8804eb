"""Rate limits on every path: POST, GET (whatever its Accept header), the explorer's page, each
websocket operation and refused credentials; the caller's address is the socket peer, never
X-Forwarded-For; counters in Redis shared by two gateway processes, reached asynchronously, with
the limits held in memory while Redis cannot be reached."""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.auth import Principal
from gateway.errors import ConfigError
from gateway.ratelimit import RateLimiter, caller_key
from tests.conftest import (
    ROOT,
    LiveServer,
    free_port,
    identity_model,
    start_server,
    stop_server,
    write_repository,
)
from tests.test_auth import _app

MODELS = "{ models { name } }"
ANONYMOUS = Principal("anonymous", frozenset(), "anonymous")


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[TestClient]:
    """A loopback gateway (anonymous callers may predict and read metadata), 3 requests a
    minute per caller."""
    root = write_repository(tmp_path / "repo", {"m/1": identity_model()})
    yield from _app(root, GATEWAY_RATE_LIMIT="3/minute")


def _code(response: Any) -> str | None:
    errors = response.json().get("errors") if "json" in response.headers["content-type"] else None
    return errors[0]["extensions"]["code"] if errors else None


_PATHS: dict[str, dict[str, Any]] = {
    "POST": {"method": "POST", "json": {"query": MODELS}},
    "GET with a query": {"method": "GET", "params": {"query": MODELS}},
    # The bypass: the view took any GET accepting HTML for the explorer's page.
    "GET with a query, accepting HTML": {
        "method": "GET",
        "params": {"query": MODELS},
        "headers": {"Accept": "text/html"},
    },
    "the explorer's page": {"method": "GET", "headers": {"Accept": "text/html"}},
}


@pytest.mark.parametrize("path", list(_PATHS))
def test_every_http_request_is_counted(limited: TestClient, path: str) -> None:
    options = dict(_PATHS[path])
    responses = [limited.request(url="/graphql", **options) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    refused = responses[-1]
    assert _code(refused) == "RATE_LIMITED"
    assert int(refused.headers["Retry-After"]) >= 1


def _transport_ws_operation(ws: Any, op: str) -> dict[str, Any]:
    """Send one operation over graphql-transport-ws; its first answer (next or error)."""
    ws.send_json({"id": op, "type": "subscribe", "payload": {"query": MODELS}})
    message: dict[str, Any] = ws.receive_json()
    if message["type"] == "next":
        assert ws.receive_json() == {"id": op, "type": "complete"}
    return message


def test_each_graphql_transport_ws_operation_is_counted_with_the_requests(
    limited: TestClient,
) -> None:
    assert limited.post("/graphql", json={"query": MODELS}).status_code == 200
    with limited.websocket_connect(
        "ws://localhost/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        answers = [_transport_ws_operation(ws, str(i)) for i in range(3)]
        assert [a["type"] for a in answers] == ["next", "next", "error"]
        assert answers[0]["payload"]["data"] == {"models": [{"name": "m"}]}
        (error,) = answers[2]["payload"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] >= 1
        assert "retry in" in error["message"]
        # The socket stays open: the caller may go on once its window allows.
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}
    assert limited.post("/graphql", json={"query": MODELS}).status_code == 429


def test_the_legacy_graphql_ws_protocol_is_no_way_around(limited: TestClient) -> None:
    # graphql-ws (subscriptions-transport-ws) is not offered: its operations would need a
    # handler of their own to be counted, and to have their credentials checked again.
    with (
        pytest.raises(WebSocketDisconnect),
        limited.websocket_connect("ws://localhost/graphql", subprotocols=["graphql-ws"]) as ws,
    ):
        ws.send_json({"type": "connection_init"})
        ws.receive_json()


def test_refused_credentials_count_against_the_address(limited: TestClient) -> None:
    forged = {"X-API-Key": "gw_nobody_" + "0" * 64}
    statuses = [
        limited.post("/graphql", json={"query": MODELS}, headers=forged).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]
    # ... the same address's counter: anonymous requests from it wait too.
    assert limited.post("/graphql", json={"query": MODELS}).status_code == 429


def test_callers_are_counted_by_credential_else_by_address() -> None:
    key = Principal("frontend", frozenset({"predict"}), "api-key")
    assert caller_key(key, "10.0.0.1") == caller_key(key, "10.0.0.2") == "api-key:frontend"
    assert caller_key(ANONYMOUS, "10.0.0.1") == "address:10.0.0.1"
    assert caller_key(ANONYMOUS, None) == "address:unknown"


def test_the_storage_setting_maps_to_the_asynchronous_storages() -> None:
    assert RateLimiter("1/second", "memory://").applies(ANONYMOUS)
    assert not RateLimiter(None, "memory://").applies(ANONYMOUS)
    for url in ("redis://127.0.0.1:6379", "rediss://h:6380/1", "async+redis://h:6379"):
        limiter = RateLimiter("1/second", url)
        shared: Any = limiter._shared  # the limits library's storage, as configured
        assert shared is not None
        assert type(shared.storage).__module__.startswith("limits.aio.storage.redis")
        assert type(shared.storage.bridge).__name__ == "RedispyBridge"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("carrier-pigeon://coop", "expected memory:// or redis://host:port"),
        ("redis://:hunter2@host:port", "expected memory:// or redis://host:port"),
    ],
)
def test_a_storage_setting_it_cannot_use_stops_the_start(url: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimiter("1/second", url)
    message = str(info.value)
    assert message.startswith("rate_limit_storage: cannot use") and expected in message
    assert "hunter2" not in message


def test_redis_storage_without_the_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install 'prediction-gateway\[redis\]'"):
        RateLimiter("1/second", "redis://127.0.0.1:6379")


def test_the_redis_extra_declares_the_client_the_storage_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extra = [Requirement(r) for r in project["optional-dependencies"]["redis"]]
    assert [r.name for r in extra] == ["redis"]
    pins = {
        Requirement(line).name: Requirement(line)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert "redis" in pins and pins["redis"].specifier.contains(metadata.version("redis"))
    # The asynchronous Redis storage of the limits library needs at least this version.
    from limits.aio.storage import RedisStorage

    minimum = RedisStorage.DEPENDENCIES["redis"]
    assert isinstance(minimum, Version) and extra[0].specifier.contains(minimum)


def _post(url: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/graphql", json={"query": MODELS}, headers=headers, timeout=10)


@pytest.mark.e2e
def test_a_rotated_x_forwarded_for_is_not_a_new_caller(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": identity_model()})
    server = start_server(root, tmp_path / "server.log", env={"GATEWAY_RATE_LIMIT": "3/minute"})
    try:
        statuses = [
            _post(server.url, **{"X-Forwarded-For": f"10.9.9.{i}", "X-Real-IP": f"10.8.8.{i}"})
            for i in range(5)
        ]
    finally:
        stop_server(server)
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A redis-server of the test's own on a free port (Debian's package; ./scripts/test
    installs it as root)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server (apt-get install redis-server; ./scripts/test does as root)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.e2e
def test_a_redis_store_holds_the_limit_across_two_gateway_processes(
    tmp_path: Path, redis_url: str
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": identity_model()})
    env = {"GATEWAY_RATE_LIMIT": "4/minute", "GATEWAY_RATE_LIMIT_STORAGE": redis_url}
    servers: list[LiveServer] = []
    try:
        for i in range(2):
            servers.append(start_server(root, tmp_path / f"server{i}.log", env=env))
        # Alternately: either process alone would allow 4 (8 in all) with counters in memory.
        statuses = [_post(servers[i % 2].url).status_code for i in range(6)]
        assert statuses == [200, 200, 200, 200, 429, 429]
        # The counters are Redis's: a key per caller, written by both.
        with socket.create_connection(("127.0.0.1", int(redis_url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(b"KEYS *\r\n")
            assert b"127.0.0.1" in sock.recv(4096)
    finally:
        for server in servers:
            stop_server(server)


@pytest.mark.e2e
def test_a_redis_that_does_not_answer_blocks_nothing(tmp_path: Path) -> None:
    # Accepts connections (the kernel does) and never answers: a hung Redis.
    with socket.socket() as hole:
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        url = f"redis://127.0.0.1:{hole.getsockname()[1]}"
        root = write_repository(tmp_path / "repo", {"m/1": identity_model()})
        server = start_server(
            root,
            tmp_path / "server.log",
            env={"GATEWAY_RATE_LIMIT": "3/minute", "GATEWAY_RATE_LIMIT_STORAGE": url},
        )
        try:
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                started = time.perf_counter()
                first = pool.submit(_post, server.url)
                time.sleep(0.05)  # the request is waiting for Redis now
                health = httpx.get(f"{server.url}/healthz", timeout=5)
                health_s = time.perf_counter() - started
                answer = first.result(timeout=10)
                answer_s = time.perf_counter() - started
            # The event loop kept serving while the request waited for Redis (its 0.5 s
            # time-out); the request was then counted in memory.
            assert health.status_code == 200 and health_s < answer_s
            assert answer.status_code == 200 and answer_s < 3.0
            statuses = [_post(server.url).status_code for _ in range(3)]
            assert statuses == [200, 200, 429]  # the limit holds, in this process's memory
        finally:
            stop_server(server)
    log = (tmp_path / "server.log").read_text()
    assert "cannot be reached" in log and "Traceback" not in log
