"""JWKS keys fetched in the background (issue 13, finding 8): a slow key server slows nothing
else, forged tokens with unknown kids cannot make the gateway hammer it, and a key rotated in is
picked up."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from tests.conftest import in_process_client, start_server, stop_server, write_repository
from tests.test_lifecycle import _scaled

INFER = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
AUDIENCE, ISSUER = "gateway", "https://idp.example"


def _private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _token(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    base = {"sub": "svc", "scope": "predict", "aud": AUDIENCE, "iss": ISSUER}
    payload = {**base, "exp": int(time.time()) + 300, **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


class KeyServer:
    """A JWKS endpoint on 127.0.0.1 that answers after ``delay`` seconds and counts requests."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.hits = 0
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                time.sleep(server.delay)
                jwks = {"keys": [server.jwk(kid) for kid in server.keys]}
                body = json.dumps(jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the gateway gave up waiting
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def jwk(self, kid: str) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


@pytest.fixture
def key_server() -> Iterator[KeyServer]:
    server = KeyServer()
    server.keys["k1"] = _private()
    server.thread.start()
    yield server
    server.http.shutdown()
    server.http.server_close()


def _env(url: str, **extra: str) -> dict[str, str]:
    return {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_ANONYMOUS_SCOPES": "none",
        "GATEWAY_JWT_JWKS": url,
        "GATEWAY_JWT_AUDIENCE": AUDIENCE,
        "GATEWAY_JWT_ISSUER": ISSUER,
        **extra,
    }


def _post(url: str, token: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/graphql", json={"query": INFER}, headers=headers, timeout=30)


@pytest.mark.e2e
def test_a_slow_key_server_stalls_nothing(tmp_path: Path, key_server: KeyServer) -> None:
    """The finding replayed: a key server that answers in 5 s, tokens (good ones, and forged
    ones with unknown kids) arriving meanwhile; /healthz must not wait for it."""
    key_server.delay = 5.0
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = _env(key_server.url, GATEWAY_JWT_JWKS_REFRESH_SECONDS="1")
    server = start_server(root, tmp_path / "server.log", env=env)
    try:
        good = _token(key_server.keys["k1"], "k1")
        forged = [_token(_private(), f"made-up-{i}") for i in range(3)]
        answers: list[tuple[float, int]] = []

        def tokens() -> None:
            for token in [good, *forged, good]:
                started = time.perf_counter()
                status = _post(server.url, token).status_code
                answers.append((time.perf_counter() - started, status))

        sender = threading.Thread(target=tokens)
        sender.start()
        probes = []
        deadline = time.monotonic() + 6
        with httpx.Client(base_url=server.url, timeout=30) as prober:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                assert prober.get("/healthz").status_code == 200
                probes.append(time.perf_counter() - started)
                time.sleep(0.05)
        sender.join(timeout=30)
        print(f"/healthz: {len(probes)} probes, slowest {max(probes) * 1000:.0f} ms")
        assert max(probes) < 1.0, probes  # before: 4.8 s, the fetch ran on the event loop
        # No keys yet: every token is refused at once (401), none waits for the key server.
        assert [status for _, status in answers] == [401] * 5
        assert max(seconds for seconds, _ in answers) < 1.0, answers
        # The key server recovers: the keys arrive in the background, and good tokens work.
        key_server.delay = 0.0
        deadline = time.monotonic() + 20
        while _post(server.url, good).status_code != 200:
            assert time.monotonic() < deadline, "the keys never arrived"
            time.sleep(0.2)
        # Slow again: the gateway keeps the keys it has while it fetches.
        key_server.delay = 5.0
        for _ in range(10):
            started = time.perf_counter()
            assert _post(server.url, good).status_code == 200
            assert time.perf_counter() - started < 1.0
            time.sleep(0.1)
        log = Path(server.log).read_text()
        assert "no answer within 3 s; keeping" in log and "Traceback" not in log
    finally:
        key_server.delay = 0.0
        stop_server(server)


def _answer(client: TestClient, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return client.post("/graphql", json={"query": INFER}, headers=headers).status_code


def test_unknown_kids_cannot_hammer_the_key_server(tmp_path: Path, key_server: KeyServer) -> None:
    """Forged tokens with made-up kids ask for at most one fetch per cooldown (a guard: PyJWT's
    client, used before, had a cooldown too, but fetched on the event loop when it ended)."""
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in in_process_client(root, _env(key_server.url)):
        good = _token(key_server.keys["k1"], "k1")
        deadline = time.monotonic() + 10
        while _answer(client, good) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        fetched = key_server.hits
        forger = _private()
        for i in range(50):
            assert _answer(client, _token(forger, f"kid-{i}")) == 401
        time.sleep(0.5)  # room for a fetch, were one to start
        assert key_server.hits == fetched  # the next one waits out the 30 s cooldown
        assert _answer(client, good) == 200


def test_a_key_rotated_in_is_picked_up(tmp_path: Path, key_server: KeyServer) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = _env(key_server.url, GATEWAY_JWT_JWKS_REFRESH_SECONDS="600")
    for client in in_process_client(root, env):
        deadline = time.monotonic() + 10
        while _answer(client, _token(key_server.keys["k1"], "k1")) != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        gateway = client.app.state.gateway
        remote = gateway.auth.remote_keys
        assert remote is not None
        remote.cooldown = 0.2  # the 30 s of production, shortened for the test
        key_server.keys["k2"] = _private()
        rotated = _token(key_server.keys["k2"], "k2")
        assert _answer(client, rotated) == 401  # unknown yet: asks for a refresh
        deadline = time.monotonic() + 10
        while _answer(client, rotated) != 200:
            assert time.monotonic() < deadline, "the new key was never fetched"
            time.sleep(0.1)
        # A key server that answers an empty set: the keys there were stay in use.
        key_server.keys.clear()
        fetched = remote.fetches
        assert _answer(client, _token(_private(), "unknown")) == 401  # asks for a fetch
        while remote.fetches == fetched:
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        time.sleep(0.2)
        assert _answer(client, rotated) == 200
