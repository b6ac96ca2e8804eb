"""Authentication and authorization through the application, on every execution path: the
compiled path, Strawberry's, persisted queries, the generic API, metadata, admin mutations and
subscriptions."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.auth import new_key
from gateway.config import Settings
from gateway.errors import ConfigError
from tests.conftest import write_repository
from tests.test_lifecycle import _scaled

SECRET = "a-shared-secret-of-at-least-32-bytes!!"
TYPED = "query T { predict { m(input: {x: [1, 1]}) { y } } }"
INFER = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
PRIVATE = '{ infer(model: "p", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
MODELS = "{ models { name } }"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """API keys of several scopes, and their keys file."""
    folder = tmp_path_factory.mktemp("keys")
    made: dict[str, Any] = {}
    lines = []
    for key_id, scopes in {
        "all": ["predict", "metadata", "admin"],
        "onlym": ["predict:m"],
        "meta": ["metadata"],
        "team": ["predict", "team-p"],
    }.items():
        key, hashed = new_key(key_id)
        made[key_id] = key
        lines.append(
            f'[[keys]]\nid = "{key_id}"\nhash = "{hashed}"\nscopes = {json.dumps(scopes)}\n'
        )
    path = folder / "keys.toml"
    path.write_text("\n".join(lines))
    made["file"] = path
    return made


def _app(root: Path, **env: str) -> Iterator[TestClient]:
    settings = Settings.load(environ={"GATEWAY_MODELS": str(root), **env})
    # As a browser on this machine: a loopback peer naming localhost (development privileges).
    local = TestClient(create_app(settings), base_url="http://localhost", client=("127.0.0.1", 1))
    with local as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        while client.app.state.gateway.lifecycle is None:  # type: ignore[attr-defined]
            time.sleep(0.01)
        yield client


@pytest.fixture
def exposed(tmp_path: Path, keys: dict[str, Any]) -> Iterator[TestClient]:
    """A gateway bound to every interface: no anonymous access, keys and HS256 tokens."""
    root = write_repository(
        tmp_path / "repo",
        {"m/1": _scaled(1), "p/1": _scaled(3)},
        {"p": '[access]\nscopes = ["team-p"]\n'},
    )
    yield from _app(
        root,
        GATEWAY_HOST="0.0.0.0",
        GATEWAY_API_KEYS_FILE=str(keys["file"]),
        GATEWAY_JWT_SECRET=SECRET,
        GATEWAY_JWT_AUDIENCE="gateway",
        GATEWAY_JWT_ISSUER="https://idp.example",
    )


def _post(
    client: TestClient, query: str, token: str | None = None, **extra: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post("/graphql", json={"query": query, **extra}, headers=headers)
    body: dict[str, Any] = response.json()
    return response.status_code, body


def _code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors")
    return errors[0]["extensions"]["code"] if errors else None


def _token(**claims: Any) -> str:
    now = int(time.time())
    # An hour: parametrised tokens are made at collection, long before some tests run.
    base = {"sub": "alice", "aud": "gateway", "iss": "https://idp.example", "exp": now + 3600}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


@pytest.mark.parametrize("query", [TYPED, INFER, MODELS])
def test_anonymous_callers_of_an_exposed_gateway_may_do_nothing(
    exposed: TestClient, query: str
) -> None:
    status, body = _post(exposed, query)
    assert status == 200 and _code(body) == "FORBIDDEN", body
    assert "anonymous" in body["errors"][0]["message"]


def test_api_keys_and_their_scopes_on_every_path(exposed: TestClient, keys: dict[str, Any]) -> None:
    for _ in range(3):  # the first run takes Strawberry's path; later ones the compiled one
        status, body = _post(exposed, TYPED, keys["onlym"])
        assert status == 200 and body["data"]["predict"]["m"]["y"] == [1.0, 1.0]
    assert _code(_post(exposed, INFER, keys["onlym"])[1]) is None
    assert _code(_post(exposed, PRIVATE, keys["onlym"])[1]) == "FORBIDDEN"  # another model
    assert _code(_post(exposed, MODELS, keys["onlym"])[1]) == "FORBIDDEN"  # no metadata
    assert _code(_post(exposed, MODELS, keys["meta"])[1]) is None
    assert _code(_post(exposed, TYPED, keys["meta"])[1]) == "FORBIDDEN"
    # model.toml [access]: predict is not enough for p, team-p is needed as well.
    assert _code(_post(exposed, PRIVATE, keys["all"])[1]) == "FORBIDDEN"
    assert _code(_post(exposed, PRIVATE, keys["team"])[1]) is None
    # X-API-Key works as well as the Authorization header.
    response = exposed.post("/graphql", json={"query": INFER}, headers={"X-API-Key": keys["onlym"]})
    assert _code(response.json()) is None
    # A persisted query is checked like any other.
    digest = hashlib.sha256(TYPED.encode()).hexdigest()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    assert _code(_post(exposed, TYPED, keys["onlym"], extensions=apq)[1]) is None
    response = exposed.post(
        "/graphql", json={"extensions": apq}, headers={"X-API-Key": keys["meta"]}
    )
    assert _code(response.json()) == "FORBIDDEN"


@pytest.mark.parametrize(
    ("token", "phrase"),
    [
        ("gw_all_" + "0" * 64, "invalid API key"),
        ("gw_nobody_" + "0" * 64, "invalid API key"),
        ("not-a-token", "invalid token"),
        (_token(exp=int(time.time()) - 60), "expired"),
        (_token(nbf=int(time.time()) + 600), "not valid yet"),
        (_token(aud="another-service"), "another audience"),
        (_token(iss="https://evil.example"), "another issuer"),
        (jwt.encode({"sub": "x", "aud": "gateway", "exp": 2**40}, "wrong-secret-" * 4), "invalid"),
        (jwt.encode({"sub": "x", "aud": "gateway"}, SECRET, algorithm="HS256"), "invalid"),
    ],
)
def test_bad_credentials_are_401(exposed: TestClient, token: str, phrase: str) -> None:
    for query in (TYPED, MODELS):
        status, body = _post(exposed, query, token)
        assert status == 401 and _code(body) == "UNAUTHENTICATED"
        assert phrase in body["errors"][0]["message"]
        assert SECRET not in json.dumps(body) and token not in json.dumps(body)


def test_jwt_scopes_admin_and_the_subscription(exposed: TestClient) -> None:
    reader = _token(scope="predict metadata")
    assert _code(_post(exposed, TYPED, reader)[1]) is None
    mutation = 'mutation { setDefaultVersion(name: "m", version: 1) { name } }'
    assert _code(_post(exposed, mutation, reader)[1]) == "FORBIDDEN"
    assert _code(_post(exposed, mutation, _token(scopes=["admin"]))[1]) is None
    for token, expected in ((None, "FORBIDDEN"), ("forged", "UNAUTHENTICATED")):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with exposed.websocket_connect(
            "/graphql", subprotocols=["graphql-transport-ws"], headers=headers
        ) as ws:
            ws.send_json({"type": "connection_init"})
            assert ws.receive_json()["type"] == "connection_ack"
            query = "subscription { modelEvents { model } }"
            ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
            message = ws.receive_json()
            assert message["type"] == "next", message
            (error,) = message["payload"]["errors"]
            assert error["extensions"]["code"] == expected


def test_introspection_and_suggestions_are_off_when_exposed(
    exposed: TestClient, keys: dict[str, Any]
) -> None:
    status, body = _post(exposed, "{ __schema { types { name } } }", keys["all"])
    assert _code(body) == "GRAPHQL_VALIDATION_FAILED"
    _, body = _post(exposed, "{ modls { name } }", keys["all"])
    assert "Did you mean" not in body["errors"][0]["message"]


def test_rs256_tokens_from_a_jwks_file(tmp_path: Path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in _app(
        root,
        GATEWAY_HOST="0.0.0.0",
        GATEWAY_JWT_JWKS=str(tmp_path / "jwks.json"),
        GATEWAY_JWT_AUDIENCE="gateway",
        GATEWAY_JWT_ISSUER="https://idp.example",
    ):
        claims = {
            "sub": "svc",
            "scope": "predict",
            "exp": int(time.time()) + 60,
            "aud": "gateway",
            "iss": "https://idp.example",
        }
        good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
        assert _code(_post(client, INFER, good)[1]) is None
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        assert _post(client, INFER, forged)[0] == 401
        hs = jwt.encode(claims, "x" * 32, algorithm="HS256")  # algorithm confusion
        assert _post(client, INFER, hs)[0] == 401


def test_secrets_stay_out_of_settings_repr_and_config_errors() -> None:
    claims = {"GATEWAY_JWT_AUDIENCE": "gateway", "GATEWAY_JWT_ISSUER": "https://idp.example"}
    settings = Settings.load(environ={"GATEWAY_JWT_SECRET": SECRET, **claims})
    assert SECRET not in repr(settings)
    with pytest.raises(ConfigError) as info:
        Settings.load(
            environ={"GATEWAY_JWT_SECRET": SECRET, "GATEWAY_JWT_JWKS": "x.json", **claims}
        )
    assert SECRET not in str(info.value)


def test_rate_limits_per_key_and_per_client(tmp_path: Path) -> None:
    key, hashed = new_key("slow")
    (tmp_path / "keys.toml").write_text(
        f'[[keys]]\nid = "slow"\nhash = "{hashed}"\nscopes = ["predict"]\nrate = "3/minute"\n'
    )
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in _app(
        root, GATEWAY_API_KEYS_FILE=str(tmp_path / "keys.toml"), GATEWAY_RATE_LIMIT="5/minute"
    ):
        statuses = [_post(client, INFER, key)[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # the key's own rate
        response = client.post("/graphql", json={"query": INFER}, headers={"X-API-Key": key})
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert _code(response.json()) == "RATE_LIMITED"
        anonymous = [_post(client, INFER)[0] for _ in range(6)]  # the server's, by address
        assert anonymous == [200] * 5 + [429]


def test_cors_allow_list_page_headers_and_websocket_origins(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in _app(root, GATEWAY_CORS_ORIGINS="https://app.example"):
        allowed = {"Origin": "https://app.example"}
        preflight = client.options(
            "/graphql",
            headers={
                **allowed,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        answer = client.post("/graphql", json={"query": INFER}, headers=allowed)  # fast lane
        assert answer.headers["access-control-allow-origin"] == "https://app.example"
        other = client.post(
            "/graphql", json={"query": INFER}, headers={"Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        page = client.get("/graphql", headers={"Accept": "text/html"})
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["x-content-type-options"] == "nosniff"
        for origin, accepted in (("https://app.example", True), ("https://evil.example", False)):
            try:
                with client.websocket_connect(
                    "ws://localhost/graphql",
                    subprotocols=["graphql-transport-ws"],
                    headers={"Origin": origin},
                ) as ws:
                    ws.send_json({"type": "connection_init"})
                    assert ws.receive_json()["type"] == "connection_ack"
                opened = True
            except Exception:  # the handshake refused
                opened = False
            assert opened is accepted, origin


def test_tls_settings_come_in_pairs() -> None:
    with pytest.raises(ConfigError, match="tls_certfile and tls_keyfile"):
        Settings.load(environ={"GATEWAY_TLS_CERTFILE": "cert.pem"})


def test_the_trace_viewer_data_needs_the_admin_scope_off_loopback(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    api = "/debug/traces/api/traces"
    for client in _app(
        root,
        GATEWAY_HOST="0.0.0.0",
        GATEWAY_TRACE_VIEWER="true",
        GATEWAY_API_KEYS_FILE=str(keys["file"]),
    ):
        assert client.get("/debug/traces").status_code == 200  # the page: no data
        assert client.get(api).status_code == 403
        assert client.get(api, headers={"X-API-Key": keys["meta"]}).status_code == 403
        assert client.get(api, headers={"X-API-Key": "gw_all_" + "0" * 64}).status_code == 403
        assert client.get(api, headers={"X-API-Key": keys["all"]}).status_code == 200
    for client in _app(root, GATEWAY_TRACE_VIEWER="true"):  # loopback: development
        assert client.get(api).status_code == 200
