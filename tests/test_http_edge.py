"""The HTTP edge of a real server: what it reads of a request and how long it waits for it.

An over-limit body is answered 413 to urllib, httpx and a raw socket (their whole body read
and thrown away, the server's memory flat), not with a connection reset; headers and bodies
trickled byte by byte (slow loris) are cut off with 408 at their deadlines; headers beyond
max_header_bytes get 431; idle connections are closed.
"""

from __future__ import annotations

import json
import select
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import EXAMPLE_MODELS, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

MB = 1_000_000
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
KEEP_ALIVE = 1.0
QUERY = b'{"query": "{ models { name } }"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    log = tmp_path_factory.mktemp("edge") / "server.log"
    live = start_server(
        EXAMPLE_MODELS,
        log,
        env={
            "GATEWAY_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "GATEWAY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
            "GATEWAY_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        },
    )
    yield live
    stop_server(live)


def _connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _trickle(sock: socket.socket, data: bytes, *, every: float, seconds: float) -> bytes:
    """Send ``data`` every ``every`` seconds until the server answers, at most for ``seconds``;
    what it answered before closing (b"" if it only closed, or did neither)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([sock], [], [], every)[0]:
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            return answer
        sock.sendall(data)
    return b""


def _head(path: str = "/graphql", **headers: str | int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, dict[str, object] | None]:
    """The status and JSON body of the answer on ``sock`` (read until the server closes)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else None


def _memory(server: LiveServer) -> dict[str, int]:
    """The server's VmRSS and VmHWM (peak since the last reset), in bytes."""
    fields = {}
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def _code(body: dict[str, object] | None) -> object:
    assert body is not None
    errors = body["errors"]
    assert isinstance(errors, list)
    return errors[0]["extensions"]["code"]


def test_an_over_limit_body_is_answered_413_and_memory_stays_flat(server: LiveServer) -> None:
    before = _memory(server)["VmRSS"]
    Path(f"/proc/{server.process.pid}/clear_refs").write_text("5")  # peak := current
    url = f"{server.url}/graphql"
    for size in (10 * MB, 50 * MB):
        body = b'{"query": "' + b" " * size + b'"}'
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(
                urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            )
        assert refused.value.code == 413
        assert json.loads(refused.value.read())["errors"][0]["extensions"]["code"] == "BAD_REQUEST"

        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "max_body_bytes" in response.text

        with _connect(server) as sock:  # declared length
            sock.sendall(_head(Content_Length=len(body)) + body)
            status, answer = _answer(sock)
        assert status == 413 and _code(answer) == "BAD_REQUEST"

        with _connect(server) as sock:  # chunked: the length shows only while reading
            sock.sendall(_head(Transfer_Encoding="chunked"))
            for start in range(0, len(body), MB):
                chunk = body[start : start + MB]
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            status, answer = _answer(sock)
        assert status == 413 and _code(answer) == "BAD_REQUEST"
    memory = _memory(server)
    # Each body was read and dropped as it came: the peak stays far below one body's size.
    assert memory["VmHWM"] - before < 20 * MB, (before, memory)
    assert server.graphql("{ models { name } }").status_code == 200


def test_a_body_nobody_waits_for_is_refused_without_reading(server: LiveServer) -> None:
    # Beyond max_drain_bytes (64 MiB): answered at once; the client has sent only headers.
    with _connect(server) as sock:
        sock.sendall(_head(Content_Length=200 * MB))
        status, answer = _answer(sock)
    assert status == 413 and _code(answer) == "BAD_REQUEST"
    # A client that waits for "100 Continue" before sending gets the 413 instead.
    with _connect(server) as sock:
        sock.sendall(_head(Content_Length=10 * MB, Expect="100-continue"))
        status, _ = _answer(sock)
    assert status == 413


def test_trickled_headers_are_cut_off_at_their_deadline(server: LiveServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data = _trickle(sock, b"X", every=0.1, seconds=10)  # a header, byte by byte
    elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"header_timeout_seconds" in data
    assert HEADER_TIMEOUT - 0.1 <= elapsed < HEADER_TIMEOUT + 2


def test_a_connection_that_sends_nothing_is_closed(server: LiveServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        assert sock.recv(100) == b""
    assert HEADER_TIMEOUT - 0.1 <= time.monotonic() - started < HEADER_TIMEOUT + 2


def test_a_trickled_body_is_cut_off_at_its_deadline(server: LiveServer) -> None:
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_head(Content_Length=len(QUERY) * 10))
        # 2 bytes every 0.1 s: the whole body would take 16 s.
        data = _trickle(sock, QUERY[:2], every=0.1, seconds=20)
    elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"body_timeout_seconds" in data and b"BAD_REQUEST" in data
    assert BODY_TIMEOUT - 0.1 <= elapsed < BODY_TIMEOUT + 2


def test_a_body_sent_after_its_answer_cannot_hold_the_connection(server: LiveServer) -> None:
    # A route that answers without reading the body (405): the rest of it trickles in vain.
    with _connect(server) as sock:
        started = time.monotonic()
        sock.sendall(_head("/healthz", Content_Length=1000))
        assert sock.recv(65536).startswith(b"HTTP/1.1 405 ")
        _trickle(sock, b"x", every=0.1, seconds=20)  # until the server closes
    assert time.monotonic() - started < BODY_TIMEOUT + 3


def test_headers_over_the_limit_get_431(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # 8 KB headers for as long as the server takes them (it held 16 MB of them before).
        data = _trickle(sock, b"X-Pad: " + b"a" * 8000 + b"\r\n", every=0.001, seconds=5)
    assert data.startswith(b"HTTP/1.1 431 ") and b"max_header_bytes" in data


def test_idle_kept_alive_connections_close_and_normal_requests_pass(server: LiveServer) -> None:
    with _connect(server) as sock:
        sock.sendall(_head(Content_Length=len(QUERY)) + QUERY)
        reply = b""
        while b'"models"' not in reply and (chunk := sock.recv(65536)):
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ") and b'"models"' in reply
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server once idle
    assert KEEP_ALIVE - 0.1 <= time.monotonic() - started < KEEP_ALIVE + 2


def test_a_websocket_outlives_the_request_deadlines(server: LiveServer) -> None:
    url = server.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        time.sleep(BODY_TIMEOUT + 2)
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"
