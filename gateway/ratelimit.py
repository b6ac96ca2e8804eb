"""Per-caller rate limits, with the ``limits`` library: a moving window per caller, kept in
memory or in storage replicas share (``rate_limit_storage``, e.g. ``redis://host:6379``).

The caller is the API key's id or the token's subject, else the client's address. A key may
carry its own rate in the keys file (``rate = "10/second"``), over ``rate_limit``.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from gateway.auth import Principal
from gateway.errors import ConfigError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Decides whether one more request of a caller fits its rate."""

    def __init__(self, rate: str | None, storage: str = "memory://") -> None:
        self._default = _parse(rate, "rate_limit") if rate else None
        try:
            self._limiter = MovingWindowRateLimiter(storage_from_string(storage))
        except Exception as exc:  # the library's errors for a bad or unreachable URI
            raise ConfigError(f"rate_limit_storage: cannot use {storage!r}: {exc}") from exc
        self._items: dict[str, RateLimitItem] = {}

    @property
    def enabled(self) -> bool:
        return self._default is not None

    def retry_after(self, principal: Principal, client: str | None) -> int | None:
        """None when the request may go on; else the seconds until the caller may retry."""
        item = self._item(principal.rate) if principal.rate else self._default
        if item is None:
            return None
        who = f"{principal.kind}:{principal.id}" if principal.kind != "anonymous" else client
        key = who or "unknown"
        if self._limiter.hit(item, key):
            return None
        reset = self._limiter.get_window_stats(item, key).reset_time
        return max(1, math.ceil(reset - time.time()))

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = _parse(rate, "rate")
        return item


def _parse(rate: str, key: str) -> RateLimitItem:
    try:
        return parse(rate)
    except ValueError as exc:
        raise ConfigError(f"{key}: invalid value {rate!r}: expected e.g. 100/second") from exc
