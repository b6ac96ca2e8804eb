"""Credentials that must be strong and current (issue 13, finding 9 and the keys file): JWTs
need aud and iss, HS256 secrets 32 bytes; the keys file is read again when it changes; secrets
may come from files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient

from gateway.auth import Authenticator, new_key
from gateway.config import Settings
from gateway.errors import ConfigError
from tests.conftest import ROOT, in_process_client, write_repository
from tests.test_lifecycle import _scaled

SECRET = "0123456789abcdef0123456789abcdef-secret"
CLAIMS = {"GATEWAY_JWT_AUDIENCE": "gateway", "GATEWAY_JWT_ISSUER": "https://idp.example"}
INFER = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
PIN = 'mutation { setDefaultVersion(name: "m", version: 1) { name } }'


def _jwks(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**public, "kid": "k1"}]}))
    return private, path


@pytest.mark.parametrize("missing", ["GATEWAY_JWT_AUDIENCE", "GATEWAY_JWT_ISSUER"])
@pytest.mark.parametrize("mode", ["secret", "jwks"])
def test_jwts_need_an_audience_and_an_issuer(tmp_path: Path, missing: str, mode: str) -> None:
    """Before: with a JWKS and no audience, a token the provider made for another service was
    accepted silently."""
    given = {"GATEWAY_JWT_SECRET": SECRET} if mode == "secret" else {}
    if mode == "jwks":
        given["GATEWAY_JWT_JWKS"] = str(_jwks(tmp_path)[1])
    environ = {**given, **CLAIMS}
    del environ[missing]
    key = missing.removeprefix("GATEWAY_").lower()
    with pytest.raises(ConfigError, match=f"^{key}: required when JWTs are on"):
        Settings.load(environ=environ)
    with pytest.raises(ConfigError, match="required when JWTs are on"):
        Authenticator(jwt_secret=SECRET, jwt_issuer="https://idp.example")


@pytest.mark.parametrize("secret", ["abc", "x" * 31])
def test_short_hs256_secrets_are_refused(secret: str) -> None:
    """Before: a 3-byte secret (guessed in a blink) authenticated an admin token."""
    with pytest.raises(ConfigError) as info:
        Settings.load(environ={"GATEWAY_JWT_SECRET": secret, **CLAIMS})
    message = str(info.value)
    assert message.startswith("jwt_secret: ") and "at least 32" in message
    assert secret not in message
    assert Settings.load(environ={"GATEWAY_JWT_SECRET": "x" * 32, **CLAIMS}).jwt_secret


def test_the_server_refuses_to_start_without_them(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_JWT_SECRET": "abc", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "configuration error: jwt_audience: required when JWTs are on" in done.stderr


def test_tokens_without_aud_or_iss_or_for_another_service_are_refused(tmp_path: Path) -> None:
    private, path = _jwks(tmp_path)
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = {"GATEWAY_JWT_JWKS": str(path), "GATEWAY_ANONYMOUS_SCOPES": "none", **CLAIMS}
    for client in in_process_client(root, env):
        base = {"sub": "svc", "scope": "predict", "exp": int(time.time()) + 60}
        good = {**base, "aud": "gateway", "iss": "https://idp.example"}
        assert _status(client, private, good) == (200, "")
        for claims, message in (
            ({**good, "aud": "billing"}, "the token is for another audience"),
            ({**good, "iss": "https://evil.example"}, "the token is from another issuer"),
            (_without(good, "aud"), "invalid token: it has no 'aud' claim"),
            (_without(good, "iss"), "invalid token: it has no 'iss' claim"),
        ):
            assert _status(client, private, claims) == (401, message)


def _without(claims: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in claims.items() if k != name}


def _status(
    client: TestClient, private: rsa.RSAPrivateKey, claims: dict[str, Any]
) -> tuple[int, str]:
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    headers = {"Authorization": f"Bearer {token}"}
    response = client.post("/graphql", json={"query": INFER}, headers=headers)
    body = response.json()
    return response.status_code, body["errors"][0]["message"] if "errors" in body else ""


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text(SECRET + "\n")  # as `echo` and most editors leave it
    environ = {"GATEWAY_JWT_SECRET_FILE": str(tmp_path / "jwt"), **CLAIMS}
    assert Settings.load(environ=environ).jwt_secret == SECRET
    (tmp_path / "gateway.toml").write_text(
        f'jwt_secret_file = "{tmp_path / "jwt"}"\njwt_audience = "gateway"\n'
        f'jwt_issuer = "https://idp.example"\nrate_limit_storage_file = "{tmp_path / "url"}"\n'
    )
    (tmp_path / "url").write_text("memory://")
    settings = Settings.load(environ={"GATEWAY_CONFIG_FILE": str(tmp_path / "gateway.toml")})
    assert settings.jwt_secret == SECRET and settings.rate_limit_storage == "memory://"
    assert "memory://" not in repr(settings)
    with pytest.raises(ConfigError, match="^jwt_secret_file: cannot read .*missing"):
        Settings.load(environ={"GATEWAY_JWT_SECRET_FILE": str(tmp_path / "missing"), **CLAIMS})
    with pytest.raises(ConfigError, match="jwt_secret and jwt_secret_file .environment.: give"):
        Settings.load(environ={**environ, "GATEWAY_JWT_SECRET": SECRET})


def _keys_file(path: Path, **keys: str) -> None:
    """Write ``{key id: hash}`` as a keys file whose keys may predict."""
    path.write_text(
        "".join(
            f'[[keys]]\nid = "{i}"\nhash = "{h}"\nscopes = ["predict"]\n' for i, h in keys.items()
        )
    )


def _wait_for(client: TestClient, key: str, status: int, seconds: float) -> float:
    started = time.monotonic()
    while True:
        response = client.post("/graphql", json={"query": INFER}, headers={"X-API-Key": key})
        if response.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, response.text
        time.sleep(0.05)


def test_the_keys_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    old, old_hash = new_key("old")
    new, new_hash = new_key("new")
    keys = tmp_path / "keys.toml"
    _keys_file(keys, old=old_hash)
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = {
        "GATEWAY_API_KEYS_FILE": str(keys),
        "GATEWAY_ANONYMOUS_SCOPES": "none",
        "GATEWAY_POLL_SECONDS": "0.2",
    }
    for client in in_process_client(root, env):
        _wait_for(client, old, 200, 1)
        _wait_for(client, new, 401, 1)
        _keys_file(keys, new=new_hash)  # a key added, another revoked
        assert _wait_for(client, new, 200, 5) < 1.0  # within poll_seconds, and some
        assert _wait_for(client, old, 401, 1) < 0.1  # its verification is not cached
        keys.write_text("[[keys]]\nbroken")  # an edit half-way: the keys stay as they were
        time.sleep(0.5)
        _wait_for(client, new, 200, 1)
