"""read_body: what it reads of a request body, and what it answers, fed by a scripted ASGI
receive channel (tests/test_http_edge.py does the same over real sockets)."""

from __future__ import annotations

import asyncio
import json

from starlette.responses import Response
from starlette.types import Message

from gateway.app.body import read_body


class Client:
    """An ASGI receive channel that hands out ``chunks`` (then a disconnect), counting reads;
    one that ``leaves`` says more is coming after its last chunk."""

    def __init__(self, chunks: list[bytes], *, delay: float = 0.0, leaves: bool = False) -> None:
        self.chunks = chunks
        self.delay = delay
        self.leaves = leaves
        self.reads = 0

    async def __call__(self) -> Message:
        self.reads += 1
        await asyncio.sleep(self.delay)
        if not self.chunks:
            return {"type": "http.disconnect"}
        chunk = self.chunks.pop(0)
        more = bool(self.chunks) or self.leaves
        return {"type": "http.request", "body": chunk, "more_body": more}


def _read(
    client: Client, *headers: tuple[bytes, bytes], limit: int = 10, drain: int = 100
) -> bytes | Response | None:
    scope = {"type": "http", "headers": list(headers)}
    return asyncio.run(read_body(scope, client, limit=limit, drain=drain, timeout=1.0))


def _refusal(answer: bytes | Response | None) -> tuple[int, str]:
    assert isinstance(answer, Response)
    assert answer.headers["connection"] == "close"
    error = json.loads(bytes(answer.body))["errors"][0]
    assert error["extensions"]["code"] == "BAD_REQUEST"
    return answer.status_code, error["message"]


def test_a_body_within_the_limit_is_read_whole() -> None:
    assert _read(Client([b"12345", b"67890"])) == b"1234567890"
    assert _read(Client([b""])) == b""


def test_an_over_limit_body_is_read_to_its_end_then_refused() -> None:
    client = Client([b"x" * 8] * 5)  # 40 bytes, in chunks, no declared length
    status, message = _refusal(_read(client))
    assert status == 413 and "larger than 10 bytes (max_body_bytes)" in message
    assert not client.chunks  # all of it read (and dropped): the client can read the answer
    declared = Client([b"x" * 8] * 5)
    assert _refusal(_read(declared, (b"content-length", b"40")))[0] == 413
    assert not declared.chunks


def test_beyond_the_drain_bound_the_answer_goes_at_once() -> None:
    declared = Client([b"x" * 50] * 10)
    assert _refusal(_read(declared, (b"content-length", b"500")))[0] == 413
    assert declared.reads == 0
    streamed = Client([b"x" * 50] * 10)
    assert _refusal(_read(streamed))[0] == 413
    assert 0 < len(streamed.chunks) < 10  # stopped past the bound


def test_a_client_waiting_for_100_continue_is_refused_before_it_sends() -> None:
    client = Client([b"x" * 40])
    headers = ((b"content-length", b"40"), (b"expect", b"100-continue"))
    assert _refusal(_read(client, *headers))[0] == 413
    assert client.reads == 0  # uvicorn sends "100 Continue" on the first read only


def test_a_client_that_leaves_gets_nothing() -> None:
    assert _read(Client([])) is None
    assert _read(Client([b"12345"], leaves=True)) is None
    assert _read(Client([b"x" * 8] * 2, leaves=True)) is None  # while its over-limit body drains


def test_a_slow_body_is_refused_at_the_deadline() -> None:
    status, message = _refusal(_read(Client([b"x"] * 5, delay=0.3)))
    assert status == 408 and "within 1 s (body_timeout_seconds)" in message
