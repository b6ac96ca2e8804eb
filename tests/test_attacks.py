"""Attacks on a real server bound like a production one (keys and tokens required): each is
refused with its code, while a well-behaved client keeps getting answers within 2x its p99.

Tokens are RS256 ones checked with the keys of a JWKS URL, served on 127.0.0.1 by a key server
that turns slow (5 s an answer) once the gateway has its keys: tokens with unknown kids then
ask the gateway to fetch again while the good client is measured."""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import select
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from gateway.auth import new_key
from gateway.telemetry.store import DEFAULT_MAX_SPANS
from tests.conftest import EXAMPLE_MODELS, LiveServer, start_server, stop_server
from tests.test_jwks import KeyServer

pytestmark = pytest.mark.e2e

ISSUER = "https://idp.example"
ROW = "{sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, petalWidth: 0.2}"
GOOD = f"query Good {{ predict {{ iris(input: {ROW}) {{ label }} }} }}"
SLOW_HEADER_TIMEOUT = 2.0
SLOW_BODY_TIMEOUT = 3.0
FORGED_LOG_LINE = '{"level": "error", "logger": "gateway.auth", "message": "admin key accepted"}'
#: A websocket attack's "status" while the socket is open (HTTP 101, Switching Protocols).
OPEN = 101
EVENTS = "subscription { modelEvents { model } }"
FORGED_NAME = "Forged" + "x" * 20_000
LONG_NAMED = GOOD.replace("query Good", "query Long" + "n" * 10_000)
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def _token(signer: rsa.RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    base = {"sub": "attacker", "aud": "gateway", "iss": ISSUER, "scope": "predict"}
    payload = {**base, "exp": int(time.time()) + 300, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}  # None: no such claim
    return jwt.encode(payload, signer, algorithm="RS256", headers={"kid": kid})


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    # For the attackers' processes, which sign a short-lived token when they start.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _attacks(
    key: str, metadata_key: str, signer: rsa.RSAPrivateKey
) -> list[tuple[str, dict[str, Any], int, str | None]]:
    """(name, request, HTTP status, code) for each attack; a request with a "websocket" entry
    is one of _WEBSOCKET_ATTACKS."""
    auth = {"Authorization": f"Bearer {key}"}
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

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
        *(
            (name, {"json": {"query": GOOD}, "headers": {"Authorization": f"Bearer {token}"}})
            + (401, "UNAUTHENTICATED")
            for name, token in (
                ("expired token", _token(signer, exp=int(time.time()) - 60)),
                ("wrongly signed token", _token(signer)[:-4] + "AAAA"),
                ("another audience", _token(signer, aud="billing")),
                ("a token without an audience", _token(signer, aud=None)),
                ("a token without an issuer", _token(signer, iss=None)),
                ("another issuer", _token(signer, iss="https://evil.example")),
                ("a token signed with another key", _token(forger)),
                ("unknown kids (a slow key server)", _token(forger, kid="rotated-in-maybe")),
            )
        ),
        (
            "DNS rebinding: another Host, Origin, X-Forwarded-For",
            {
                "json": {
                    "query": 'mutation { setDefaultVersion(name: "iris", version: 1) { name } }'
                },
                "headers": {
                    "Host": "rebind.attacker.example",
                    "Origin": "http://rebind.attacker.example",
                    "X-Forwarded-For": "10.9.9.9",
                },
            },
            400,
            "BAD_REQUEST",
        ),
        (
            "one socket holding 100 operations, asking for more",
            {"websocket": "subscriptions"},
            OPEN,
            "BAD_REQUEST",
        ),
        (
            "a socket outliving its token",
            {"websocket": "expiry", "signer": _pem(signer)},
            4403,
            "",
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
        # What the telemetry keeps: names that are no operation's, long names, one trace id.
        ("20 KB unknown operationName", gql(GOOD, operationName=FORGED_NAME), 400, "BAD_REQUEST"),
        ("10 KB operation name", gql(LONG_NAMED), 200, None),
        (
            "1,000s of requests in one trace",
            {"json": {"query": GOOD}, "headers": {**auth, "traceparent": TRACEPARENT}},
            200,
            None,
        ),
    ]


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("attacks")
    key_server = KeyServer()
    signer = key_server.keys["k1"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_server.thread.start()
    good_key, good_hash = new_key("good")
    meta_key, meta_hash = new_key("meta")
    admin_key, admin_hash = new_key("admin")
    (folder / "keys.toml").write_text(
        f'[[keys]]\nid = "good"\nhash = "{good_hash}"\nscopes = ["predict"]\n'
        f'[[keys]]\nid = "meta"\nhash = "{meta_hash}"\nscopes = ["metadata"]\n'
        f'[[keys]]\nid = "admin"\nhash = "{admin_hash}"\nscopes = ["admin"]\n'
    )
    server = start_server(
        EXAMPLE_MODELS,
        folder / "server.log",
        env={
            # As exposed as a test may be: every scope needs credentials.
            "GATEWAY_ANONYMOUS_SCOPES": "none",
            "GATEWAY_INTROSPECTION": "off",
            "GATEWAY_API_KEYS_FILE": str(folder / "keys.toml"),
            "GATEWAY_JWT_JWKS": key_server.url,
            "GATEWAY_JWT_AUDIENCE": "gateway",
            # Short enough for the slow-loris attack to see its connections cut off.
            "GATEWAY_HEADER_TIMEOUT_SECONDS": str(SLOW_HEADER_TIMEOUT),
            "GATEWAY_BODY_TIMEOUT_SECONDS": str(SLOW_BODY_TIMEOUT),
            "GATEWAY_JWT_ISSUER": ISSUER,
            # The trace store is what one trace id shared by many requests would grow.
            "GATEWAY_TRACE_VIEWER": "true",
        },
    )
    good = {"Authorization": f"Bearer {_token(signer)}"}
    deadline = time.monotonic() + 10
    while (
        httpx.post(f"{server.url}/graphql", json={"query": GOOD}, headers=good).status_code != 200
    ):
        assert time.monotonic() < deadline, "the gateway never fetched the JWKS"
        time.sleep(0.1)
    key_server.delay = 5.0  # from now on, each fetch of the keys takes 5 s
    try:
        yield server, good_key, meta_key, signer, admin_key
    finally:
        key_server.delay = 0.0
        stop_server(server)
        key_server.http.shutdown()
        key_server.http.server_close()


def _as_another_machine() -> None:
    """Run an attacker process at the lowest CPU priority. Attackers would be on machines of
    their own; here they share two cores with the server and the good client, and what is
    measured is what the attacks cost the server, not the attackers' own Python (building and
    sending thousands of requests a second)."""
    os.nice(19)


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


async def _good_client(server: LiveServer, key: str, count: int) -> list[float]:
    latencies = []
    # The test process's own garbage collection (pytest's heap is large) pauses for
    # milliseconds: the good client's p99 would measure it, not the server.
    gc.collect()
    gc.disable()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            for _ in range(count):
                started = time.perf_counter()
                response = await client.post(
                    "/graphql", json={"query": GOOD}, headers={"X-API-Key": key}
                )
                latencies.append(time.perf_counter() - started)
                assert response.json()["data"]["predict"]["iris"]["label"] == "setosa"
    finally:
        gc.enable()
    return latencies


def _socket(url: str, headers: dict[str, str]) -> ClientConnection:
    """A graphql-transport-ws socket, acknowledged."""
    ws = connect(
        "ws" + url.removeprefix("http") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=10,
    )
    ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    return ws


def _subscribe(ws: ClientConnection, op_id: str) -> None:
    ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": EVENTS}}))


def _crowd(url: str, key: str) -> ClientConnection:
    """A socket holding max_subscriptions (100) subscriptions."""
    ws = _socket(url, {"X-API-Key": key})
    for i in range(100):
        _subscribe(ws, f"held-{i}")
    return ws


def _one_more(ws: ClientConnection, op_id: str) -> tuple[int, str | None]:
    """Another subscription on a full socket: the code it is refused with."""
    _subscribe(ws, op_id)
    message = json.loads(ws.recv(timeout=30))
    error = message["payload"][0] if message["type"] == "error" else {}
    return OPEN, error.get("extensions", {}).get("code", message["type"])


def _closed(ws: ClientConnection) -> tuple[int, str | None] | None:
    """The close code of a socket the server closed, or None while it is open."""
    try:
        ws.recv(timeout=0)
    except TimeoutError:
        return None
    except ConnectionClosed as closed:
        return (closed.rcvd.code if closed.rcvd else 1006), ""
    return None


def _attack_loop(
    url: str,
    attacks: list[tuple[str, dict[str, Any], int, str | None]],
    metadata_key: str,
    stop: Any,
    ready: Any,
    results: Any,
) -> None:
    """Send every attack in turn until ``stop`` (in its own process: the good client's
    latencies must not include the attackers' own work, e.g. encoding 10 MB of JSON)."""
    _as_another_machine()
    outcomes: dict[str, tuple[int, str | None]] = {}
    prepared: list[tuple[str, httpx.Request | ClientConnection]] = []
    expiring: tuple[str, ClientConnection] | None = None
    with httpx.Client(base_url=url, timeout=60) as client:
        for name, options, _, _ in attacks:
            if options.get("websocket") == "expiry":
                # Opened now, with a token that expires in two seconds: the socket must not
                # outlive it (HTTP refuses the token from exp + 5 s of clock-skew leeway).
                signer = serialization.load_pem_private_key(options["signer"], password=None)
                assert isinstance(signer, rsa.RSAPrivateKey)
                token = _token(signer, scope="metadata", exp=int(time.time()) + 2)
                ws = _socket(url, {"Authorization": f"Bearer {token}"})
                _subscribe(ws, "events")
                expiring = (name, ws)
                outcomes[name] = (OPEN, "open")
            elif "websocket" in options:
                # Filled before the good client is measured; each round then asks for more.
                prepared.append((name, _crowd(url, metadata_key)))
            else:
                prepared.append((name, client.build_request("POST", "/graphql", **options)))
        ready.put(True)
        give_up = time.monotonic() + 60
        rounds = 0
        while not stop.is_set() or (expiring is not None and time.monotonic() < give_up):
            rounds += 1
            for name, request in prepared:
                # About 100 attacks a second per attacker: bounded, as load tests here are; a
                # flood is for the rate limits to answer, not for this test to measure.
                time.sleep(0.01)
                if expiring is not None and (closed := _closed(expiring[1])) is not None:
                    outcomes[expiring[0]] = closed
                    expiring = None
                if isinstance(request, ClientConnection):
                    outcomes[name] = _one_more(request, f"more-{rounds}")
                    continue
                response = client.send(request)
                try:
                    code = response.json()["errors"][0]["extensions"]["code"]
                except (ValueError, KeyError, IndexError, TypeError):
                    code = None
                outcomes[name] = (response.status_code, code)
    results.put(outcomes)


def test_attacks_are_refused_and_a_good_client_keeps_its_latency(exposed: Any) -> None:
    server, good_key, meta_key, signer, admin_key = exposed
    baseline = asyncio.run(_good_client(server, good_key, 600))
    attacks = _attacks(good_key, meta_key, signer)
    context = multiprocessing.get_context("spawn")
    stop, ready, results = context.Event(), context.Queue(), context.Queue()
    attackers = [
        context.Process(
            target=_attack_loop, args=(server.url, attacks, meta_key, stop, ready, results)
        )
        for _ in range(2)
    ]
    for process in attackers:
        process.start()
    try:
        for _ in attackers:  # their sockets are open (a crowded one, an expiring one)
            ready.get(timeout=120)
        time.sleep(1.0)  # the attackers are under way
        under_attack = asyncio.run(_good_client(server, good_key, 600))
    finally:
        stop.set()
        outcomes = [results.get(timeout=90) for _ in attackers]
        for process in attackers:
            process.join(timeout=30)
    for name, _, status, code in attacks:
        for seen in outcomes:
            assert seen.get(name) == (status, code), f"{name}: {seen.get(name)}"
    base, attacked = _p99(baseline), _p99(under_attack)
    print(f"good client p99: {base * 1000:.1f} ms alone, {attacked * 1000:.1f} ms under attack")
    # 2x (measured: 1.3-1.4x), with a 5 ms floor: a p99 of a few ms doubles with any hiccup.
    assert attacked <= max(2 * base, base + 0.005)
    # What the attacks left in the telemetry stays small (a 20 KB operationName sent 400
    # times made /metrics grow by megabytes; one trace id, a trace of thousands of spans: here
    # fewer are sent, test_telemetry_bounds.py sends enough to reach the caps).
    # The shared trace, as its requests left it (the newest traces are kept: a few more).
    for _ in range(3):
        httpx.post(
            f"{server.url}/graphql",
            json={"query": GOOD},
            headers={"X-API-Key": good_key, "traceparent": TRACEPARENT},
        )
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert "Forged" not in metrics and "n" * 101 not in metrics and len(metrics) < 200_000
    shared = httpx.get(
        f"{server.url}/debug/traces/api/traces/{TRACE_ID}",
        headers={"X-API-Key": admin_key},
        timeout=30,
    ).json()
    assert shared["spanCount"] + shared["droppedSpans"] > 1, shared  # the requests shared it
    assert shared["spanCount"] <= DEFAULT_MAX_SPANS
    log = (Path(server.log)).read_text()
    tokens = [
        options.get("headers", {}).get("Authorization", "").removeprefix("Bearer ")
        for _, options, _, _ in attacks
    ]
    assert good_key not in log and meta_key not in log and admin_key not in log
    assert not [token for token in tokens if token and token in log]
    assert "Traceback" not in log
    records = [json.loads(line) for line in log.splitlines()]  # JSON lines, nothing else
    assert not any(r.get("message") == "admin key accepted" for r in records)


def _slow_clients(url: str, count: int, seconds: float, ready: Any, results: Any) -> None:
    """Slow loris: ``count`` connections that send their headers a byte at a time and
    ``count`` that send their body so, every 0.2 s; puts how many the server cut off (answered
    or closed) within ``seconds``."""
    _as_another_machine()
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
    ready.put(True)
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
    server, good_key, *_ = exposed
    baseline = asyncio.run(_good_client(server, good_key, 600))
    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    count, seconds = 100, SLOW_BODY_TIMEOUT + 6
    slow = context.Process(target=_slow_clients, args=(server.url, count, seconds, ready, results))
    slow.start()
    try:
        ready.get(timeout=60)  # its connections are open
        under_attack = asyncio.run(_good_client(server, good_key, 600))
        cut = results.get(timeout=seconds + 30)
    finally:
        slow.join(timeout=30)
    assert cut == 2 * count, f"{2 * count - cut} slow connections still held"
    base, attacked = _p99(baseline), _p99(under_attack)
    print(f"good client p99: {base * 1000:.1f} ms alone, {attacked * 1000:.1f} ms with slow loris")
    assert attacked <= max(2 * base, base + 0.005)


def _under_attack(
    server: LiveServer, good_key: str, loop: Callable[..., None], *args: Any
) -> tuple[list[float], list[float], list[Any]]:
    """The good client's latencies alone and while two processes run ``loop(server.url,
    *args, stop, ready, results)`` (each puts to ``ready`` once it is set up); and what each
    attacker put in ``results``."""
    baseline = asyncio.run(_good_client(server, good_key, 600))
    context = multiprocessing.get_context("spawn")
    stop, ready, results = context.Event(), context.Queue(), context.Queue()
    attackers = [
        context.Process(target=loop, args=(server.url, *args, stop, ready, results))
        for _ in range(2)
    ]
    for process in attackers:
        process.start()
    try:
        # Started and connected: a new process importing its modules is a second of CPU on
        # this machine, which would otherwise be measured as the attack's.
        for _ in attackers:
            ready.get(timeout=120)
        time.sleep(0.5)  # the attackers are under way
        under_attack = asyncio.run(_good_client(server, good_key, 600))
    finally:
        stop.set()
        outcomes = [results.get(timeout=60) for _ in attackers]
        for process in attackers:
            process.join(timeout=30)
    return baseline, under_attack, outcomes


#: Anonymous callers of the rate-limited server, counted by address: 127.0.0.1 for them all.
ANONYMOUS_RATE = 20
GET_HTML = "GET with a query, accepting HTML"
FORWARDED = "rotating X-Forwarded-For"
WEBSOCKET = "websocket operations"


@pytest.fixture(scope="module")
def rate_limited(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Anonymous callers may predict, ANONYMOUS_RATE requests a second per address; the good
    client's key has a rate of its own, far above what it sends."""
    folder = tmp_path_factory.mktemp("bypass")
    good_key, good_hash = new_key("good")
    (folder / "keys.toml").write_text(
        f'[[keys]]\nid = "good"\nhash = "{good_hash}"\nscopes = ["predict"]\n'
        'rate = "100000/second"\n'
    )
    server = start_server(
        EXAMPLE_MODELS,
        folder / "server.log",
        env={
            "GATEWAY_ANONYMOUS_SCOPES": "predict",
            "GATEWAY_API_KEYS_FILE": str(folder / "keys.toml"),
            "GATEWAY_RATE_LIMIT": f"{ANONYMOUS_RATE}/second",
        },
    )
    yield server, good_key
    stop_server(server)


def _bypass_loop(url: str, ways: tuple[str, ...], stop: Any, ready: Any, results: Any) -> None:
    """The ``ways`` around a rate limit, in turn until ``stop``: a GET with a query that accepts
    HTML, a POST with a new X-Forwarded-For each time, an operation over a websocket. Puts each
    way's outcomes (HTTP status or websocket message type, code) with their counts, and the
    seconds it went on."""
    _as_another_machine()
    from websockets.sync.client import connect

    outcomes: dict[str, dict[tuple[Any, str | None], int]] = {}

    def seen(name: str, outcome: tuple[Any, str | None]) -> None:
        counts = outcomes.setdefault(name, {})
        counts[outcome] = counts.get(outcome, 0) + 1

    def code_of(body: Any) -> str | None:
        errors = body.get("payload") if body.get("type") == "error" else body.get("errors")
        try:
            return str(errors[0]["extensions"]["code"])
        except (KeyError, IndexError, TypeError):
            return None

    sent, started = 0, time.monotonic()
    ws_url = url.replace("http://", "ws://") + "/graphql"
    with (
        httpx.Client(base_url=url, timeout=60) as client,
        connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws,  # type: ignore[list-item]
    ):
        # Prepared once, as the other attack loop does: the attackers' own work must not be
        # what slows the good client down (they share the machine's two cores with it).
        page = client.build_request(
            "GET", "/graphql", params={"query": GOOD}, headers={"Accept": "text/html"}
        )
        forwarded = [
            client.build_request(
                "POST", "/graphql", json={"query": GOOD}, headers={"X-Forwarded-For": f"10.0.{i}.7"}
            )
            for i in range(250)
        ]
        # One id at a time: an operation's id is free again once it is answered.
        operation = json.dumps({"id": "op", "type": "subscribe", "payload": {"query": GOOD}})
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
        ready.put(True)
        while not stop.is_set():
            sent += 1
            # About 45 requests a second per attacker, the two together over four times the
            # address's rate: the point is what gets through, and each attacker is a process on
            # the machine's two cores beside the server and the good client.
            time.sleep(0.02)
            if GET_HTML in ways:
                response = client.send(page)
                seen(GET_HTML, (response.status_code, code_of(response.json())))
                time.sleep(0.02)
            if FORWARDED in ways:
                response = client.send(forwarded[sent % len(forwarded)])
                seen(FORWARDED, (response.status_code, code_of(response.json())))
                time.sleep(0.02)
            if WEBSOCKET not in ways:
                continue
            ws.send(operation)
            message = json.loads(ws.recv(timeout=30))
            if message["type"] == "next":
                assert json.loads(ws.recv(timeout=30))["type"] == "complete"
                seen(WEBSOCKET, ("next", code_of(message["payload"])))
            else:  # an error message's payload is the list of errors
                seen(WEBSOCKET, (message["type"], code_of(message)))
    results.put((outcomes, time.monotonic() - started))


def _assert_admitted_at_the_rate(results: list[Any], ways: tuple[str, ...]) -> None:
    admitted, seconds = 0, max(elapsed for _, elapsed in results)
    for seen, _ in results:
        assert set(seen) == set(ways)
        for name, counts in seen.items():
            refused = ("error", "RATE_LIMITED") if name == WEBSOCKET else (429, "RATE_LIMITED")
            ok = ("next", None) if name == WEBSOCKET else (200, None)
            assert set(counts) <= {ok, refused}, f"{name}: {counts}"
            assert counts.get(refused, 0) > 0, f"{name}: {counts}"
            admitted += counts.get(ok, 0)
    # Every way counts against the one address: together they got through at its rate.
    assert admitted <= ANONYMOUS_RATE * (seconds + 1), (admitted, seconds)


def test_rate_limit_bypasses_are_counted_while_a_good_client_is_served(
    rate_limited: Any,
) -> None:
    server, good_key = rate_limited
    ways = (GET_HTML, FORWARDED, WEBSOCKET)
    baseline, under_attack, results = _under_attack(server, good_key, _bypass_loop, ways)
    _assert_admitted_at_the_rate(results, ways)
    assert len(under_attack) == len(baseline)  # every good request answered (checked inside)
    base, attacked = _p99(baseline), _p99(under_attack)
    print(f"good client p99: {base * 1000:.1f} ms alone, {attacked * 1000:.1f} ms under attack")
    assert attacked <= max(2 * base, base + 0.005)  # as for the other attacks
    assert "Traceback" not in Path(server.log).read_text()
