"""Attacks on a real server bound like a production one (keys and tokens required): each is
refused with its code, while a well-behaved client keeps getting answers within 2x its p99."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import select
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.auth import new_key
from tests.conftest import EXAMPLE_MODELS, LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

SECRET = "attack-suite-shared-secret-0123456789"
ROW = "{sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, petalWidth: 0.2}"
GOOD = f"query Good {{ predict {{ iris(input: {ROW}) {{ label }} }} }}"
SLOW_HEADER_TIMEOUT = 2.0
SLOW_BODY_TIMEOUT = 3.0
FORGED_LOG_LINE = '{"level": "error", "logger": "gateway.auth", "message": "admin key accepted"}'


def _token(**claims: Any) -> str:
    base = {"sub": "attacker", "aud": "gateway", "scope": "predict", "exp": int(time.time()) + 300}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


def _attacks(key: str, metadata_key: str) -> list[tuple[str, dict[str, Any], int, str]]:
    """(name, request, HTTP status, code) for each attack."""
    auth = {"Authorization": f"Bearer {key}"}

    def gql(query: str, **extra: Any) -> dict[str, Any]:
        return {"json": {"query": query, **extra}, "headers": auth}

    aliases = " ".join(f"a{i}: iris(input: {ROW}) {{ label }}" for i in range(500))
    nested = "{ __schema { types { " + "ofType { " * 30 + "name" + " }" * 30 + " } } }"
    rows = ", ".join([ROW] * 10_000)
    directives = "@include(if: true) " * 200
    # Issue 13: each fragment spreads the one before twice (857 bytes, 2**21 fields); a
    # document over max_query_bytes; a string over max_string_bytes used by 30 aliases. The
    # issue's 4 MB and 3.8 MB are replayed in test_caches.py and test_limits.py: here, bodies
    # of megabytes would measure their JSON decoding (milliseconds on the event loop, the same
    # for any request with megabytes of variables: what max_body_bytes bounds).
    fragments = ["fragment F0 on Query { __typename }"]
    fragments += [f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 22)]
    bomb = "{ ...F21 } " + " ".join(fragments)
    uses = " ".join(f"a{i}: datasetTopic(input: {{text: $t}}) {{ label }}" for i in range(30))
    text = ("the length and width of the sepals and petals " * 3000)[:100_000]
    return [
        ("alias overloading", gql(f"{{ predict {{ {aliases} }} }}"), 200, "QUERY_TOO_COMPLEX"),
        (
            "field duplication",
            gql("{ predict { " + ("iris(input: " + ROW + ") { label } ") * 300 + "} }"),
            200,
            "QUERY_TOO_COMPLEX",
        ),
        ("deep introspection", gql(nested), 200, "QUERY_TOO_COMPLEX"),
        (
            "circular fragments",
            gql("query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }"),
            200,
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "directive overloading",
            gql(f"{{ models {directives} {{ name }} }}"),
            200,
            "QUERY_TOO_COMPLEX",
        ),
        ("10 MB document", gql("{ models { name } }" + " " * 10_000_000), 413, "BAD_REQUEST"),
        ("200 KB document", gql("{ models { name } }" + " " * 200_000), 200, "QUERY_TOO_COMPLEX"),
        ("fragment bomb", gql(bomb), 200, "QUERY_TOO_COMPLEX"),
        (
            "100 KB string used by 30 aliases",
            gql(f"query($t: String!) {{ predict {{ {uses} }} }}", variables={"t": text}),
            200,
            "BAD_USER_INPUT",
        ),
        (
            "10,000-row batch",
            gql(f"{{ predict {{ irisBatch(inputs: [{rows}]) {{ label }} }} }}"),
            200,
            "QUERY_TOO_COMPLEX",
        ),
        (
            "1,000 batched operations",
            {"json": [{"query": GOOD}] * 1000, "headers": auth},
            400,
            "BAD_REQUEST",
        ),
        (
            "oversized tensor",
            gql(
                'query($t: [TensorInput!]!) { infer(model: "iris", inputs: $t) { id } }',
                variables={"t": [{"name": "float_input", "shape": [300_000, 4], "b64": "AAAA"}]},
            ),
            200,
            "BAD_USER_INPUT",
        ),
        (
            "5,000-digit literal",
            gql(
                '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], '
                f"data: [1{'0' * 5000}, 1, 1, 1]}}]) {{ id }} }}"
            ),
            200,
            "BAD_USER_INPUT",
        ),
        (
            "1e999 literal",
            gql(GOOD.replace("5.1", "1e999")),
            200,
            "BAD_USER_INPUT",
        ),
        (
            "malformed JSON",
            {
                "content": b'{"query": "{ models',
                "headers": {**auth, "Content-Type": "application/json"},
            },
            400,
            "BAD_REQUEST",
        ),
        (
            "wrong content type",
            {"content": GOOD.encode(), "headers": {**auth, "Content-Type": "text/plain"}},
            415,
            "BAD_REQUEST",
        ),
        (
            "forged token",
            {
                "json": {"query": GOOD},
                "headers": {
                    "Authorization": "Bearer "
                    + jwt.encode({"sub": "x", "exp": 2**40}, "forged-secret-" * 3)
                },
            },
            401,
            "UNAUTHENTICATED",
        ),
        (
            "expired token",
            {
                "json": {"query": GOOD},
                "headers": {"Authorization": "Bearer " + _token(exp=int(time.time()) - 60)},
            },
            401,
            "UNAUTHENTICATED",
        ),
        (
            "wrongly signed token",
            {
                "json": {"query": GOOD},
                "headers": {"Authorization": "Bearer " + _token()[:-4] + "AAAA"},
            },
            401,
            "UNAUTHENTICATED",
        ),
        (
            "another audience",
            {
                "json": {"query": GOOD},
                "headers": {"Authorization": "Bearer " + _token(aud="billing")},
            },
            401,
            "UNAUTHENTICATED",
        ),
        (
            "a key without the model's scope",
            {"json": {"query": GOOD}, "headers": {"X-API-Key": metadata_key}},
            200,
            "FORBIDDEN",
        ),
        ("no credentials", {"json": {"query": GOOD}}, 200, "FORBIDDEN"),
        (
            "forged log line",  # an operation name that would write a record of its own
            gql(GOOD, operationName=f"Good\n{FORGED_LOG_LINE}"),
            400,
            "BAD_REQUEST",
        ),
    ]


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("attacks")
    good_key, good_hash = new_key("good")
    meta_key, meta_hash = new_key("meta")
    (folder / "keys.toml").write_text(
        f'[[keys]]\nid = "good"\nhash = "{good_hash}"\nscopes = ["predict"]\n'
        f'[[keys]]\nid = "meta"\nhash = "{meta_hash}"\nscopes = ["metadata"]\n'
    )
    server = start_server(
        EXAMPLE_MODELS,
        folder / "server.log",
        env={
            # As exposed as a test may be: every scope needs credentials.
            "GATEWAY_ANONYMOUS_SCOPES": "none",
            "GATEWAY_INTROSPECTION": "off",
            "GATEWAY_API_KEYS_FILE": str(folder / "keys.toml"),
            "GATEWAY_JWT_SECRET": SECRET,
            "GATEWAY_JWT_AUDIENCE": "gateway",
            # Short enough for the slow-loris attack to see its connections cut off.
            "GATEWAY_HEADER_TIMEOUT_SECONDS": str(SLOW_HEADER_TIMEOUT),
            "GATEWAY_BODY_TIMEOUT_SECONDS": str(SLOW_BODY_TIMEOUT),
        },
    )
    yield server, good_key, meta_key
    stop_server(server)


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


async def _good_client(server: LiveServer, key: str, count: int) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = await client.post(
                "/graphql", json={"query": GOOD}, headers={"X-API-Key": key}
            )
            latencies.append(time.perf_counter() - started)
            assert response.json()["data"]["predict"]["iris"]["label"] == "setosa"
    return latencies


def _attack_loop(
    url: str, attacks: list[tuple[str, dict[str, Any], int, str]], stop: Any, results: Any
) -> None:
    """Send every attack in turn until ``stop`` (in its own process: the good client's
    latencies must not include the attackers' own work, e.g. encoding 10 MB of JSON)."""
    outcomes: dict[str, tuple[int, str | None]] = {}
    prepared: list[tuple[str, httpx.Request]] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, options, _, _ in attacks:
            prepared.append((name, client.build_request("POST", "/graphql", **options)))
        while not stop.is_set():
            for name, request in prepared:
                # About 100 attacks a second per attacker: bounded, as load tests here are; a
                # flood is for the rate limits to answer, not for this test to measure.
                time.sleep(0.01)
                response = client.send(request)
                try:
                    code = response.json()["errors"][0]["extensions"]["code"]
                except (ValueError, KeyError, IndexError, TypeError):
                    code = None
                outcomes[name] = (response.status_code, code)
    results.put(outcomes)


def test_attacks_are_refused_and_a_good_client_keeps_its_latency(exposed: Any) -> None:
    server, good_key, meta_key = exposed
    attacks = _attacks(good_key, meta_key)
    baseline = asyncio.run(_good_client(server, good_key, 600))
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    attackers = [
        context.Process(target=_attack_loop, args=(server.url, attacks, stop, results))
        for _ in range(2)
    ]
    for process in attackers:
        process.start()
    try:
        time.sleep(1.0)  # the attackers are under way
        under_attack = asyncio.run(_good_client(server, good_key, 600))
    finally:
        stop.set()
        outcomes = [results.get(timeout=60) for _ in attackers]
        for process in attackers:
            process.join(timeout=30)
    for name, _, status, code in attacks:
        for seen in outcomes:
            assert seen.get(name) == (status, code), f"{name}: {seen.get(name)}"
    base, attacked = _p99(baseline), _p99(under_attack)
    print(f"good client p99: {base * 1000:.1f} ms alone, {attacked * 1000:.1f} ms under attack")
    # 2x (measured: 1.3-1.4x), with a 5 ms floor: a p99 of a few ms doubles with any hiccup.
    assert attacked <= max(2 * base, base + 0.005)
    log = (Path(server.log)).read_text()
    assert SECRET not in log and good_key not in log and meta_key not in log
    assert "Traceback" not in log
    records = [json.loads(line) for line in log.splitlines()]  # JSON lines, nothing else
    assert not any(r.get("message") == "admin key accepted" for r in records)


def _slow_clients(url: str, count: int, seconds: float, results: Any) -> None:
    """Slow loris: ``count`` connections that send their headers a byte at a time and
    ``count`` that send their body so, every 0.2 s; puts how many the server cut off (answered
    or closed) within ``seconds``."""
    host, port = url.removeprefix("http://").split(":")
    body_head = (
        b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    slow: list[socket.socket] = []
    for start in [b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\n"] * count + [body_head] * count:
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(start)
        slow.append(sock)
    cut: set[socket.socket] = set()
    deadline = time.monotonic() + seconds
    while len(cut) < len(slow) and time.monotonic() < deadline:
        waiting = [s for s in slow if s not in cut]
        readable, _, _ = select.select(waiting, [], [], 0.2)
        cut.update(readable)  # an answer (408) or the close
        for sock in waiting:
            if sock not in cut:
                try:
                    sock.sendall(b"X")
                except OSError:
                    cut.add(sock)
    results.put(len(cut))
    for sock in slow:
        sock.close()


def test_slow_clients_are_cut_off_and_a_good_client_keeps_its_latency(exposed: Any) -> None:
    server, good_key, _ = exposed
    baseline = asyncio.run(_good_client(server, good_key, 600))
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    count, seconds = 100, SLOW_BODY_TIMEOUT + 6
    slow = context.Process(target=_slow_clients, args=(server.url, count, seconds, results))
    slow.start()
    try:
        time.sleep(0.5)  # its connections are open
        under_attack = asyncio.run(_good_client(server, good_key, 600))
        cut = results.get(timeout=seconds + 30)
    finally:
        slow.join(timeout=30)
    assert cut == 2 * count, f"{2 * count - cut} slow connections still held"
    base, attacked = _p99(baseline), _p99(under_attack)
    print(f"good client p99: {base * 1000:.1f} ms alone, {attacked * 1000:.1f} ms with slow loris")
    assert attacked <= max(2 * base, base + 0.005)
