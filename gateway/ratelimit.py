"""Per-caller rate limits, with the ``limits`` library: a moving window per caller, kept in
memory or in storage replicas share (``rate_limit_storage``, e.g. ``redis://host:6379``).

The caller is the API key's id or the token's subject, else the client's address (the socket
peer: a forwarded header is not the caller's to choose). A key may carry its own rate in the keys
file (``rate = "10/second"``), over ``rate_limit``. Every request is counted here once, whichever
path it takes: each HTTP request to ``/graphql`` (POST, GET, the explorer page) and each operation
sent over a websocket.

Shared storage is asynchronous (``limits.aio``): a round trip to Redis never blocks the event
loop. While it cannot be reached, the limits hold per process, in memory, and the log says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any
from urllib.parse import urlsplit

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter as SharedLimiter
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from gateway.auth import Principal
from gateway.errors import ConfigError

__all__ = ["RateLimiter", "caller_key"]

logger = logging.getLogger(__name__)

#: Longest wait for the shared storage before the request is counted in memory instead.
_SHARED_TIMEOUT_S = 0.5
#: After a failure, the shared storage is left alone this long (each request would wait).
_SHARED_RETRY_S = 5.0
#: ``rate_limit_storage`` schemes with an asynchronous client, and the scheme ``limits`` knows
#: them by. Redis is reached with redis-py (the ``redis`` extra).
_REDIS_SCHEMES = {
    "redis": "async+redis",
    "rediss": "async+rediss",
    "redis+unix": "async+redis+unix",
}


def caller_key(principal: Principal, client: str | None) -> str:
    """Whose counter a request goes to: the credential's id, else the client's address."""
    if principal.kind == "anonymous":
        return f"address:{client or 'unknown'}"
    return f"{principal.kind}:{principal.id}"


class RateLimiter:
    """Decides whether one more request of a caller fits its rate."""

    def __init__(self, rate: str | None, storage: str = "memory://") -> None:
        self._default = _parse(rate, "rate_limit") if rate else None
        self._items: dict[str, RateLimitItem] = {}
        # In memory: the synchronous storage (no I/O, so nothing to await; the asynchronous one
        # hops to a thread per key to expire entries). Also the fallback while Redis is down.
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: SharedLimiter | None = None
        self._shared_down_until = 0.0
        self._storage = storage
        scheme = urlsplit(storage).scheme
        if scheme == "memory":
            return
        self._shared = SharedLimiter(_shared_storage(storage, scheme))

    def applies(self, principal: Principal) -> bool:
        """Whether ``principal``'s requests are counted at all (cheap: no storage)."""
        return self._default is not None or principal.rate is not None

    async def retry_after(self, principal: Principal, client: str | None) -> int | None:
        """None when the request may go on; else the seconds until the caller may retry."""
        item = self._item(principal.rate) if principal.rate else self._default
        if item is None:
            return None
        key = caller_key(principal, client)
        shared = self._shared
        if shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                async with asyncio.timeout(_SHARED_TIMEOUT_S):
                    if await shared.hit(item, key):
                        return None
                    reset = (await shared.get_window_stats(item, key)).reset_time
                return max(1, math.ceil(reset - time.time()))
            except (StorageError, TimeoutError) as exc:
                self._shared_down_until = time.monotonic() + _SHARED_RETRY_S
                logger.warning(
                    "rate limits: %s cannot be reached (%s); counting in this process's "
                    "memory for %g s",
                    self._shared_name,
                    type(exc.__cause__ or exc).__name__,
                    _SHARED_RETRY_S,
                )
        if self._local.hit(item, key):
            return None
        reset = self._local.get_window_stats(item, key).reset_time
        return max(1, math.ceil(reset - time.time()))

    async def check(self) -> bool:
        """Whether the storage answers (memory always does); logged when it does not."""
        if self._shared is None:
            return True
        try:
            async with asyncio.timeout(_SHARED_TIMEOUT_S * 4):
                if await self._shared.storage.check():
                    return True
        except (StorageError, TimeoutError):
            pass
        logger.warning(
            "rate limits: %s cannot be reached; counting in this process's memory until it can",
            self._shared_name,
        )
        return False

    async def aclose(self) -> None:
        """Close the shared storage's connections."""
        if self._shared is not None:
            client: Any = getattr(getattr(self._shared.storage, "bridge", None), "storage", None)
            close = getattr(client, "aclose", None)
            if close is not None:
                await close()

    @property
    def _shared_name(self) -> str:
        # The address only: a URL may carry a password.
        parts = urlsplit(self._storage)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = _parse(rate, "rate")
        return item


def _shared_storage(storage: str, scheme: str) -> Any:
    """The asynchronous ``limits`` storage for a ``rate_limit_storage`` URL."""
    options: dict[str, float | str | bool] = {}
    if scheme in _REDIS_SCHEMES or scheme.startswith("async+redis"):
        try:  # the client limits.aio's Redis storage drives: the redis extra
            import redis.asyncio  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                f"rate_limit_storage: {_without_password(storage)!r} needs the Redis client: "
                "pip install 'prediction-gateway[redis]'"
            ) from exc
        uri = _REDIS_SCHEMES.get(scheme, scheme) + storage[len(scheme) :]
        # redis-py, with short time-outs: a request waits for Redis at most _SHARED_TIMEOUT_S.
        options = {
            "implementation": "redispy",
            "socket_connect_timeout": _SHARED_TIMEOUT_S,
            "socket_timeout": _SHARED_TIMEOUT_S,
        }
    elif scheme.startswith("async+"):
        uri = storage
    else:
        uri = f"async+{storage}"
    try:
        return storage_from_string(uri, wrap_exceptions=True, **options)
    except Exception as exc:  # the library's and the client's errors for a bad or unusable URL
        shown = _without_password(storage)
        reason = str(exc).replace(uri, shown).replace(storage, shown)
        if not isinstance(exc, ConfigurationError) or "parse" in reason or "scheme" in reason:
            reason += "; expected memory:// or redis://host:port"
        raise ConfigError(f"rate_limit_storage: cannot use {shown!r}: {reason}") from exc


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _parse(rate: str, key: str) -> RateLimitItem:
    try:
        return parse(rate)
    except ValueError as exc:
        raise ConfigError(f"{key}: invalid value {rate!r}: expected e.g. 100/second") from exc
