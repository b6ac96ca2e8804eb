"""The caches of operations (issue 13, finding 3): bounded in entries and bytes, keyed by digest,
refusals and documents over ``max_query_bytes`` never kept, on the compiled path, Strawberry's
and persisted queries; and the replay of the attack against a real server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from graphql import DocumentNode, parse

from gateway.api import GatewayContext, build_schema
from gateway.api.caches import BoundedCache, DocumentCache, digest, document_size
from gateway.api.fastpath import FastPath, PersistedQueries
from gateway.api.limits import QueryLimits
from gateway.auth import Principal
from gateway.security import ErrorCodes
from tests.conftest import InProcessGateway, start_server, stop_server, write_repository
from tests.test_auth import _app, _code
from tests.test_lifecycle import _scaled

TYPED = "{ predict { m(input: {x: [1, 1]}) { y } } }"


def _caller(*scopes: str) -> Principal:
    return Principal("caller", frozenset(scopes), "api-key")


def _context(gw: InProcessGateway, principal: Principal) -> GatewayContext:
    return GatewayContext(gw.runtime, gw.settings, gw.built.typed, caller_principal=principal)


def test_the_least_recently_used_go_first_past_either_bound() -> None:
    cache: BoundedCache[str] = BoundedCache(max_entries=3, max_bytes=100)
    for key in (b"a", b"b", b"c"):
        cache.put(key, key.decode(), 10)
    assert cache.get(b"a") == "a"  # now the most recently used
    cache.put(b"d", "d", 10)  # four entries: b goes
    assert cache.get(b"b") is None and len(cache) == 3 and cache.size == 30
    cache.put(b"e", "e", 85)  # four entries, then 105 bytes: c and then a go
    assert [cache.get(k) for k in (b"a", b"c", b"d", b"e")] == [None, None, "d", "e"]
    assert cache.size == 95
    cache.put(b"f", "f", 101)  # larger than the whole cache: not kept, nothing evicted
    assert cache.get(b"f") is None and len(cache) == 2


def test_keys_are_digests_and_sizes_count_tokens() -> None:
    assert len(digest("{ a }")) == 32 and digest("{ a }") != digest("{ a }", "A")
    small, large = parse("{ a }"), parse("{ " + "a " * 1000 + "}")
    assert 450 < document_size(small) < 5000
    assert document_size(large) > 1000 * 450  # a parsed document costs far more than its text


def test_the_compiled_path_keeps_no_refusal(gateway_factory: Any) -> None:
    gw = gateway_factory({"m/1": _scaled(1)})
    plans: BoundedCache[object] = BoundedCache(max_entries=8, max_bytes=1 << 20)
    fast = FastPath(
        gw.built, PersistedQueries(8), 8, plans=plans, limits=QueryLimits(max_aliases=1)
    )

    def answer(query: str, *scopes: str) -> dict[str, Any] | None:
        response = asyncio.run(fast.handle({"query": query}, _context(gw, _caller(*scopes))))
        return None if response is None else response.body

    assert _code(answer(TYPED) or {}) == "FORBIDDEN"  # the caller may not: nothing kept
    aliases = "{ predict { a: m(input: {x: [1, 1]}) { y } b: m(input: {x: [1, 1]}) { y } } }"
    refusal = answer(aliases, "predict")
    assert _code(refusal or {}) == "QUERY_TOO_COMPLEX"
    assert answer(aliases, "predict") == refusal  # its answer is kept apart, not the document
    assert len(plans) == 0
    # Invalid: its errors, like a refusal's, are kept apart, not the document.
    invalid = answer("{ predict { nothing } }", "predict")
    assert _code(invalid or {}) == "GRAPHQL_VALIDATION_FAILED"
    assert answer("{ predict { nothing } }", "predict") == invalid and len(plans) == 0
    assert answer(TYPED, "predict") == {"data": {"predict": {"m": {"y": [1.0, 1.0]}}}}
    assert len(plans) == 1 and plans.size > document_size(parse(TYPED))
    assert answer(TYPED) is not None and len(plans) == 1  # a kept plan still checks scopes


def test_strawberrys_path_keeps_no_refusal_and_no_large_document(gateway_factory: Any) -> None:
    gw = gateway_factory({"m/1": _scaled(1)})
    documents: BoundedCache[DocumentNode] = BoundedCache(max_entries=8, max_bytes=1 << 20)
    built = build_schema(
        list(gw.runtime.entries.values()),
        extensions=[
            ErrorCodes,
            lambda: DocumentCache(documents, limits=QueryLimits(max_query_bytes=200)),
        ],
    )

    def answer(query: str, *scopes: str) -> dict[str, Any]:
        context = _context(gw, _caller(*scopes))
        result = asyncio.run(built.schema.execute(query, context_value=context))
        errors = [e.formatted for e in result.errors or ()]
        return {"data": result.data, **({"errors": errors} if errors else {})}

    assert _code(answer(TYPED)) == "FORBIDDEN"
    assert _code(answer("{ predict { nothing } }", "predict")) == "GRAPHQL_VALIDATION_FAILED"
    assert _code(answer("{ predict {", "predict")) == "GRAPHQL_PARSE_FAILED"
    large = answer(TYPED + " " * 200, "predict")
    assert _code(large) == "QUERY_TOO_COMPLEX" and "at most 200 (max_query_bytes)" in str(large)
    assert len(documents) == 0
    for _ in range(2):  # parsed and validated once, then taken from the cache
        assert answer(TYPED, "predict") == {"data": {"predict": {"m": {"y": [1.0, 1.0]}}}}
        assert len(documents) == 1


@pytest.fixture
def capped(tmp_path: Path) -> Any:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    yield from _app(root, GATEWAY_MAX_QUERY_BYTES="1000")


def test_a_document_over_max_query_bytes_is_refused_on_every_path(capped: Any) -> None:
    large = TYPED + " " * 1000
    expected = "the document is 1043 bytes long; at most 1000 (max_query_bytes)"
    for body in (
        capped.post("/graphql", json={"query": large}).json(),
        capped.get("/graphql", params={"query": large}).json(),
    ):
        assert _code(body) == "QUERY_TOO_COMPLEX" and expected in str(body)
    multibyte = TYPED + " # " + "é" * 480  # 960 bytes of comment in 480 characters
    assert _code(capped.post("/graphql", json={"query": multibyte}).json()) == "QUERY_TOO_COMPLEX"
    # A persisted query over the cap is not kept: its hash alone is not found afterwards.
    apq = {
        "persistedQuery": {"version": 1, "sha256Hash": hashlib.sha256(large.encode()).hexdigest()}
    }
    body = capped.post("/graphql", json={"query": large, "extensions": apq}).json()
    assert _code(body) == "QUERY_TOO_COMPLEX"
    body = capped.post("/graphql", json={"extensions": apq}).json()
    assert _code(body) == "PERSISTED_QUERY_NOT_FOUND"
    with capped.websocket_connect(
        "ws://localhost/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json({"type": "connection_init"})
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": large}})
        message = ws.receive_json()
        assert message["type"] == "error", message
        (error,) = message["payload"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert _code(capped.post("/graphql", json={"query": TYPED}).json()) is None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.e2e
def test_replay_fifty_anonymous_four_megabyte_documents(tmp_path: Path) -> None:
    # Issue 13, finding 3: refused as FORBIDDEN, each was kept by three caches (+210-388 MB).
    server = start_server(
        write_repository(tmp_path / "repo", {"m/1": _scaled(1)}),
        tmp_path / "server.log",
        env={"GATEWAY_ANONYMOUS_SCOPES": "none"},
    )
    try:
        before = _rss_mb(server.process.pid)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(50):
                query = f"{{ models {{ name }} }} # {i}\n" + " " * (4 * 1024 * 1024)
                body = client.post("/graphql", json={"query": query}).json()
                assert _code(body) == "QUERY_TOO_COMPLEX", body
            grown = _rss_mb(server.process.pid) - before
            assert grown < 40, f"resident memory grew by {grown:.0f} MB"
            assert _code(client.post("/graphql", json={"query": "{ models { name } }"}).json()) == (
                "FORBIDDEN"
            )
    finally:
        stop_server(server)
