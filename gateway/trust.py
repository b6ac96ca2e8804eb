"""Who is on the other end of a connection: the client's address, whether the request comes
from this machine, and whether its ``Host`` header names this server.

Development privileges (anonymous predict and metadata with ``anonymous_scopes=auto``,
``admin_api``, the trace viewer without a key) go to *local* requests only: a loopback host,
a loopback peer that is not a configured proxy, and an allowed ``Host``. The ``Host`` check
is what stops DNS rebinding: a page of ``rebind.attacker.example`` whose name now resolves to
127.0.0.1 reaches a loopback server with its own name in ``Host``, and gets HTTP 400.

Forwarded headers (``X-Forwarded-For``) are believed only from ``forwarded_allow_ips``, by the
rule uvicorn applies with the same setting (``gateway serve`` passes it on): the client is the
last address in the header that is not a trusted proxy. ``client_address`` applies it again,
so the application gets the same answer under any server (tests, other ASGI servers) and the
rate limits count the real client, not whatever a caller writes in the header.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, MutableMapping
from typing import Any

from gateway.config import Settings

__all__ = ["LOOPBACK_NAMES", "Trust"]

#: Host names that reach a loopback server from its own machine, always allowed.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
#: How much of a refused Host header a message repeats.
_SHOWN = 80

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)
def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # not an address (a unix socket, a test client's name)
        return False


class Trust:
    """The trust rules of one server (see the module docstring)."""

    def __init__(
        self, *, loopback: bool, allowed_hosts: Iterable[str] = (), proxies: Iterable[str] = ()
    ) -> None:
        self.loopback = loopback
        names = [h.lower().rstrip(".") for h in allowed_hosts]
        self._exact = frozenset(LOOPBACK_NAMES) | {n for n in names if not n.startswith("*.")}
        self._suffixes = tuple(n[1:] for n in names if n.startswith("*."))  # ".example.com"
        # A loopback host checks Host always; another only once names are configured.
        self.checks_host = loopback or bool(names)
        proxies = tuple(proxies)
        self._any_proxy = "*" in proxies
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in proxies if p != "*"
        )
        self._proxy_cache: dict[str, bool] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Trust:
        return cls(
            loopback=settings.loopback,
            allowed_hosts=settings.allowed_hosts,
            proxies=settings.forwarded_allow_ips,
        )

    @property
    def has_proxies(self) -> bool:
        return self._any_proxy or bool(self._networks)

    def refused_host(self, headers: dict[str, str]) -> str | None:
        """Why this request's ``Host`` is not allowed here, or None when it is."""
        if not self.checks_host:
            return None
        host = headers.get("host")
        if host is None:
            return "the request has no Host header: expected this server's name"
        if self._host_allowed(host):
            return None
        shown = host if len(host) <= _SHOWN else host[:_SHOWN] + "..."
        names = ", ".join(LOOPBACK_NAMES)
        return (
            f"Host {shown!r} is not a name of this server: expected {names} or a name in "
            "allowed_hosts (GATEWAY_ALLOWED_HOSTS)"
        )

    def _host_allowed(self, host: str) -> bool:
        name = host.lower()
        if name.startswith("["):  # [::1]:8000
            name = name[: name.find("]") + 1]
        elif ":" in name:  # localhost:8000
            name = name.rpartition(":")[0]
        name = name.rstrip(".")
        return name in self._exact or any(name.endswith(s) for s in self._suffixes)

    def is_proxy(self, address: str | None) -> bool:
        """Whether ``address`` is one of ``forwarded_allow_ips``."""
        if address is None:
            return False
        if self._any_proxy:
            return True
        if not self._networks:
            return False
        known = self._proxy_cache.get(address)
        if known is None:
            try:
                ip = ipaddress.ip_address(address)
                known = any(ip in net for net in self._networks)
            except ValueError:
                known = False
            if len(self._proxy_cache) < 4096:  # addresses are few; a flood of them is not cached
                self._proxy_cache[address] = known
        return known

    def client_address(self, scope: MutableMapping[str, Any]) -> str | None:
        """The client's address: the peer, or, when the peer is a trusted proxy, the last
        address of ``X-Forwarded-For`` that is not one (uvicorn's rule)."""
        cached: str | None = scope.get("gateway.client")
        if cached is not None:
            return cached
        client = scope.get("client")
        address: str | None = client[0] if client else None
        if self.has_proxies and self.is_proxy(address):
            forwarded = [
                v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"
            ]
            hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
            if hops:
                untrusted = [h for h in hops if not self.is_proxy(_strip_port(h))]
                address = _strip_port(untrusted[-1] if untrusted else hops[0])
        if address is not None:
            scope["gateway.client"] = address
        return address

    def is_local(self, scope: MutableMapping[str, Any], headers: dict[str, str]) -> bool:
        """Whether the request comes from this machine, directly: a loopback host, a loopback
        peer that is not a configured proxy (a proxy's requests are its clients'), an allowed
        Host."""
        if not self.loopback:
            return False
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if peer is None or not _is_loopback(peer) or self.is_proxy(peer):
            return False
        return self.refused_host(headers) is None


def _strip_port(hop: str) -> str:
    if hop.startswith("["):  # [2001:db8::1]:443
        return hop[1 : hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:  # 203.0.113.9:443
        return hop.partition(":")[0]
    return hop
