"""Whom the gateway trusts (issue 13, finding 5): development privileges need a loopback host,
a loopback peer and an allowed Host; forwarded headers count only from configured proxies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.trust import Trust
from tests.conftest import in_process_client, start_server, stop_server, write_repository
from tests.test_lifecycle import _scaled

INFER = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
PIN = 'mutation { setDefaultVersion(name: "m", version: 1) { name } }'
#: What a DNS-rebinding page sends: its own name in Host and Origin, and any X-Forwarded-For.
REBINDING = {
    "Host": "rebind.attacker.example",
    "Origin": "http://rebind.attacker.example",
    "X-Forwarded-For": "10.9.9.9",
}


def _scope(peer: str | None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http", "client": (peer, 5000) if peer else None, "headers": raw}


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8000", True),
        ("LOCALHOST", True),
        ("localhost.", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("[::1]", True),
        ("gw.internal:443", True),
        ("api.example.com", True),
        ("example.com", False),  # *.example.com is its subdomains
        ("rebind.attacker.example", False),
        ("127.0.0.1.attacker.example", False),
        ("localhost.attacker.example:8000", False),
        ("", False),
    ],
)
def test_host_allow_list_on_a_loopback_host(host: str, allowed: bool) -> None:
    trust = Trust(loopback=True, allowed_hosts=["gw.internal", "*.example.com"])
    assert (trust.refused_host({"host": host}) is None) is allowed


def test_hosts_are_checked_off_loopback_only_once_names_are_configured() -> None:
    assert Trust(loopback=False).refused_host({"host": "anything.example"}) is None
    named = Trust(loopback=False, allowed_hosts=["api.example.com"])
    assert named.refused_host({"host": "api.example.com:443"}) is None
    assert named.refused_host({"host": "localhost:8000"}) is None  # the image's health check
    refusal = named.refused_host({"host": "evil.example"})
    assert refusal is not None and "'evil.example'" in refusal and "allowed_hosts" in refusal
    assert named.refused_host({}) is not None


def test_local_needs_a_loopback_host_a_loopback_peer_and_an_allowed_host() -> None:
    loopback = Trust(loopback=True)
    good = {"host": "127.0.0.1:8000"}
    assert loopback.is_local(_scope("127.0.0.1"), good)
    assert loopback.is_local(_scope("::1"), good)
    assert not loopback.is_local(_scope("10.9.9.9"), good)
    assert not loopback.is_local(_scope("testclient"), good)
    assert not loopback.is_local(_scope(None), good)
    assert not loopback.is_local(_scope("127.0.0.1"), {"host": "rebind.attacker.example"})
    assert not Trust(loopback=False).is_local(_scope("127.0.0.1"), good)
    # Through a proxy on this machine, requests are the proxy's clients', never local.
    proxied = Trust(loopback=True, proxies=["127.0.0.1"])
    assert not proxied.is_local(_scope("127.0.0.1"), good)


def test_forwarded_for_is_believed_from_configured_proxies_only() -> None:
    headers = {"X-Forwarded-For": "10.9.9.9"}
    assert Trust(loopback=True).client_address(_scope("127.0.0.1", headers)) == "127.0.0.1"
    proxied = Trust(loopback=False, proxies=["10.0.0.0/8", "192.0.2.7"])
    # The last hop that is not a proxy: what the client wrote before it is not believed.
    chain = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.1.1"}
    assert proxied.client_address(_scope("192.0.2.7", chain)) == "203.0.113.9"
    assert proxied.client_address(_scope("192.0.2.7", {"X-Forwarded-For": "[2001:db8::5]:443"}))
    assert proxied.client_address(_scope("198.51.100.1", chain)) == "198.51.100.1"
    assert proxied.client_address(_scope("10.2.2.2")) == "10.2.2.2"  # no header: the peer
    everyone = Trust(loopback=False, proxies=["*"])  # every hop a proxy: the first (uvicorn's)
    assert everyone.client_address(_scope("198.51.100.1", chain)) == "6.6.6.6"


def test_bad_trust_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match="forwarded_allow_ips: invalid value 'proxy.local'"):
        Settings.load(environ={"GATEWAY_FORWARDED_ALLOW_IPS": "10.0.0.1,proxy.local"})
    with pytest.raises(ConfigError, match="allowed_hosts: invalid value"):
        Settings.load(environ={"GATEWAY_ALLOWED_HOSTS": "a.example,*bad*"})
    settings = Settings.load(environ={"GATEWAY_FORWARDED_ALLOW_IPS": "10.0.0.0/8, ::1"})
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert not settings.introspection_enabled  # behind a proxy, "auto" is off
    assert Settings.load(environ={}).introspection_enabled


def _client(root: Path, peer: str, **env: str) -> Iterator[TestClient]:
    yield from in_process_client(root, env, peer=peer)


def test_a_non_loopback_peer_gets_no_development_privileges(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    env = {"GATEWAY_ADMIN_API": "true", "GATEWAY_TRACE_VIEWER": "true"}
    for client in _client(root, "127.0.0.1", **env):
        assert "errors" not in client.post("/graphql", json={"query": INFER}).json()
        assert "errors" not in client.post("/graphql", json={"query": PIN}).json()
        assert client.get("/debug/traces/api/traces").status_code == 200
    for client in _client(root, "10.9.9.9", **env):
        for query in (INFER, PIN):
            body = client.post("/graphql", json={"query": query}).json()
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
        assert client.get("/debug/traces/api/traces").status_code == 403


def test_a_foreign_host_is_refused_on_every_path(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    for client in _client(root, "127.0.0.1", GATEWAY_ADMIN_API="true"):
        for method, path in (("POST", "/graphql"), ("GET", "/graphql?query={__typename}")):
            response = client.request(method, path, json={"query": PIN}, headers=REBINDING)
            assert response.status_code == 400, response.text
            (error,) = response.json()["errors"]
            assert error["extensions"]["code"] == "BAD_REQUEST"
            assert "'rebind.attacker.example' is not a name of this server" in error["message"]
        assert client.get("/healthz", headers=REBINDING).status_code == 400
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect(
                "ws://rebind.attacker.example/graphql", subprotocols=["graphql-transport-ws"]
            ),
        ):
            pass
        assert refused.value.code == 1008  # the handshake refused (HTTP 403 from a server)
        pinned = client.app.state.gateway.runtime.entries["m"].pinned  # type: ignore[attr-defined]
        assert pinned is None


@pytest.mark.e2e
def test_dns_rebinding_cannot_use_the_admin_api_of_a_loopback_server(tmp_path: Path) -> None:
    """The finding replayed against a real server: 127.0.0.1, admin_api on, a page of another
    site (Host and Origin its own, X-Forwarded-For made up) pins a version."""
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1), "m/2": _scaled(2)})
    server = start_server(root, tmp_path / "server.log", env={"GATEWAY_ADMIN_API": "true"})
    try:
        pin = 'mutation { setDefaultVersion(name: "m", version: 1) { name defaultVersion } }'
        attack = httpx.post(
            f"{server.url}/graphql", json={"query": pin}, headers=REBINDING, timeout=10
        )
        assert attack.status_code == 400, attack.text
        assert attack.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        version = server.graphql(INFER).json()["data"]["infer"]["version"]
        assert version == 2  # still the highest: nothing was pinned
        # From this machine itself, under its own name, development goes on.
        local = server.graphql(pin).json()
        assert local["data"]["setDefaultVersion"]["defaultVersion"] == 1, local
    finally:
        stop_server(server)


@pytest.mark.e2e
def test_forwarded_for_counts_only_from_configured_proxies(tmp_path: Path) -> None:
    """Rate limits count the peer, whatever X-Forwarded-For says, unless the peer is a
    configured proxy (then the header names the client, and nothing is local)."""
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    limited = {"GATEWAY_RATE_LIMIT": "5/minute", "GATEWAY_ANONYMOUS_SCOPES": "predict"}
    server = start_server(root, tmp_path / "direct.log", env=limited)
    try:
        statuses = [
            httpx.post(
                f"{server.url}/graphql",
                json={"query": INFER},
                headers={"X-Forwarded-For": f"10.9.9.{i}"},
                timeout=10,
            ).status_code
            for i in range(7)
        ]
        assert statuses == [200] * 5 + [429, 429]  # one client, however it names itself
    finally:
        stop_server(server)
    proxied = {**limited, "GATEWAY_FORWARDED_ALLOW_IPS": "127.0.0.1", "GATEWAY_ADMIN_API": "1"}
    server = start_server(root, tmp_path / "proxied.log", env=proxied)
    try:
        for i in range(7):  # seven clients behind the proxy
            response = httpx.post(
                f"{server.url}/graphql",
                json={"query": INFER},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
        body = server.graphql(PIN).json()  # through the proxy: not this machine's developer
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    finally:
        stop_server(server)
