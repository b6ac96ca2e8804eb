"""The public keys of a JWKS URL, fetched and refreshed in the background.

Verifying a token never waits for the network: it uses the keys fetched so far. ``run`` (a task
of the application's lifespan) fetches the set at start and every ``refresh_seconds``, each
fetch bounded by ``timeout`` and done in a thread, so a slow or dead key server slows nothing
but the fetch. A token whose ``kid`` is not in the set is refused, and asks for an early
refresh (a key rotated in); those requests are honoured at most once per ``cooldown`` seconds,
so forged tokens with made-up ``kid``s cannot turn the gateway against the key server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence

import jwt

__all__ = ["RemoteKeys", "find_key"]

logger = logging.getLogger("gateway.auth")

#: Largest JWKS document read (a key set is a few KB).
MAX_JWKS_BYTES = 1024 * 1024
#: Seconds before a failed fetch is tried again.
RETRY_SECONDS = 10.0


def find_key(keys: Sequence[jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
    """The key of ``kid`` (a token without one: the set's first key)."""
    for key in keys:
        if kid is None or key.key_id == kid:
            return key
    return None


class RemoteKeys:
    """The keys of one JWKS URL (see the module docstring)."""

    def __init__(
        self, url: str, *, timeout: float, refresh_seconds: float, cooldown: float = 30.0
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.refresh_seconds = refresh_seconds
        # Never sooner than the regular refresh would come anyway.
        self.cooldown = min(cooldown, refresh_seconds)
        self.keys: tuple[jwt.PyJWK, ...] = ()
        #: Fetches tried so far (whatever their outcome).
        self.fetches = 0
        self._last_fetch = -float("inf")  # monotonic time of the last fetch's start
        self._wake: asyncio.Event | None = None

    def lookup(self, kid: str | None) -> jwt.PyJWK | None:
        """The key of ``kid`` among the keys fetched so far; an unknown one asks for an early
        refresh (rate-limited)."""
        key = find_key(self.keys, kid)
        if key is None:
            self.request_refresh()
        return key

    def request_refresh(self) -> None:
        """Fetch again as soon as ``cooldown`` seconds have passed since the last fetch."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Fetch now, then every ``refresh_seconds`` or on request, until cancelled."""
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            ok = await self.fetch()
            try:
                wait = self.refresh_seconds if ok else min(RETRY_SECONDS, self.refresh_seconds)
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
                # Woken by an unknown kid: no sooner than the cooldown after the last fetch.
                await asyncio.sleep(max(0.0, self._last_fetch + self.cooldown - time.monotonic()))
            except TimeoutError:
                pass

    async def fetch(self) -> bool:
        """Fetch the set once; keep the keys there were if that fails. True if it worked."""
        self._last_fetch = time.monotonic()
        self.fetches += 1
        where = _without_query(self.url)
        try:
            # The thread ends by itself within about two time-outs (see _download); the
            # application stops waiting for it after a little more than one.
            body = await asyncio.wait_for(
                asyncio.to_thread(_download, self.url, self.timeout), timeout=self.timeout + 0.5
            )
            keys = tuple(jwt.PyJWKSet.from_dict(json.loads(body)).keys)
        except TimeoutError:
            logger.warning(
                "JWKS %s: no answer within %g s; keeping %d key(s)",
                where,
                self.timeout,
                len(self.keys),
            )
            return False
        except Exception as exc:  # whatever another server answers: keep the keys there are
            logger.warning(
                "JWKS %s: cannot fetch the keys (%s); keeping %d key(s)",
                where,
                type(exc).__name__,
                len(self.keys),
            )
            return False
        if [k.key_id for k in keys] != [k.key_id for k in self.keys]:
            logger.info("JWKS %s: %d key(s)", where, len(keys))
        self.keys = keys
        return True


def _download(url: str, timeout: float) -> bytes:
    """The body at ``url``, read for at most about ``timeout`` seconds (each socket operation
    is bounded by it too) and ``MAX_JWKS_BYTES``."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(request, timeout=timeout) as response:
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = response.read(16384)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_JWKS_BYTES:
                raise ValueError(f"more than {MAX_JWKS_BYTES} bytes")
            chunks.append(chunk)


def _without_query(url: str) -> str:
    # A URL's query may carry a token: the log gets the rest.
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
