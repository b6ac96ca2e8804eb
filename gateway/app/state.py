"""The live parts of one application: settings, runtime, telemetry and the current schema."""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from graphql import DocumentNode
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    DisableIntrospection,
    MaxTokensLimiter,
    SchemaExtension,
)

from gateway.api import GatewaySchema, build_schema
from gateway.api.caches import BoundedCache, DocumentCache
from gateway.api.context import header_map
from gateway.api.fastpath import FastPath, PersistedQueries
from gateway.api.limits import QueryLimits
from gateway.api.observe import OperationObserver
from gateway.api.schema import typed_field_warnings
from gateway.auth import Authenticator, Principal
from gateway.config import Settings
from gateway.lifecycle import Lifecycle
from gateway.ratelimit import RateLimiter
from gateway.runtime import ModelRuntime
from gateway.security import ErrorCodes
from gateway.telemetry import Telemetry
from gateway.trust import Trust

__all__ = ["Gateway", "schema_extensions"]

logger = logging.getLogger("gateway.app")


def schema_extensions(settings: Settings) -> Sequence[Callable[[], SchemaExtension]]:
    """The schema extensions, outermost first: the observer sees errors after ErrorCodes coded
    them; parsing and validation are cached per distinct document, for the schema these
    extensions are made for (a cache of its own: a rebuilt schema starts afresh)."""
    limits = QueryLimits.from_settings(settings)
    cache: BoundedCache[DocumentNode] = BoundedCache(
        max_entries=settings.query_cache_size, max_bytes=settings.query_cache_bytes
    )
    extensions: list[Callable[[], SchemaExtension]] = [
        OperationObserver,
        ErrorCodes,
        lambda: MaxTokensLimiter(max_token_count=limits.max_tokens),
        lambda: DocumentCache(cache, limits=limits),
    ]
    if not settings.introspection_enabled:
        extensions.append(DisableIntrospection)
    return tuple(extensions)


class Gateway:
    """What the routes of one application share."""

    def __init__(self, settings: Settings, runtime: ModelRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.telemetry: Telemetry | None = None
        #: HTTP requests in flight by (method, route), for the active-requests gauge.
        self.http_in_flight: dict[tuple[str, str | int], int] = {}
        self.trust = Trust.from_settings(settings)
        self.auth = Authenticator(
            anonymous_scopes=settings.anonymous,
            local_scopes=settings.anonymous_local,
            keys_file=settings.api_keys_file,
            jwt_secret=settings.jwt_secret,
            jwt_jwks=settings.jwt_jwks,
            jwt_issuer=settings.jwt_issuer,
            jwt_audience=settings.jwt_audience,
            jwks_timeout=settings.jwt_jwks_timeout_seconds,
            jwks_refresh_seconds=settings.jwt_jwks_refresh_seconds,
        )
        self.rate = RateLimiter(settings.rate_limit, settings.rate_limit_storage)
        logger.info(
            "%s; rate limit: %s; introspection: %s",
            self.auth.describe(),
            settings.rate_limit or "none",
            "on" if settings.introspection_enabled else "off",
        )
        self.persisted = PersistedQueries(
            settings.query_cache_size, max_bytes=settings.query_cache_bytes
        )
        self.lifecycle: Lifecycle | None = None
        #: The typed-field warnings logged so far, by model: each is said once, not again
        #: at every rebuild.
        self._warned: dict[str, str] = {}
        #: The initial load is done and the schema built from it (what /readyz waits for).
        self.loaded = False
        self._built_from = self._schema_key()
        self.current: GatewaySchema = self._build()
        self.fast = self._fast_path()

    def authenticate(self, scope: MutableMapping[str, Any]) -> Principal:
        """The caller of a request or websocket; anonymous callers on this machine get the
        development scopes (``gateway.trust``)."""
        headers = header_map(scope)
        return self.auth.authenticate(headers, local=self.trust.is_local(scope, headers))

    def _fast_path(self) -> FastPath:
        settings = self.settings
        return FastPath(
            self.current,
            self.persisted,
            settings.query_cache_size,
            max_bytes=settings.query_cache_bytes,
            limits=QueryLimits.from_settings(settings),
            rules=() if settings.introspection_enabled else (NoSchemaIntrospectionCustomRule,),
        )

    def _build(self) -> GatewaySchema:
        return build_schema(
            list(self.runtime.entries.values()),
            extensions=schema_extensions(self.settings),
            suggestions=self.settings.introspection_enabled,
        )

    def _schema_key(self) -> list[tuple[object, ...]]:
        """What the typed schema is made from: each model's config and the signature of the
        version it follows."""
        key: list[tuple[object, ...]] = []
        for name, entry in sorted(self.runtime.entries.items()):
            mv = entry.schema_version
            key.append((name, entry.spec.config, mv.signature if mv is not None else None))
        return key

    def refresh(self) -> None:
        """Rebuild the schema if what it is made from changed (a model came or went, or the
        version a typed field follows has another signature or config)."""
        if self._schema_key() != self._built_from:
            self.rebuild()

    def rebuild(self) -> None:
        """Swap in a schema made from the versions' signatures as they are now. Operations in
        flight finish on the schema they started with."""
        self._built_from = self._schema_key()
        self.current = self._build()
        self.fast = self._fast_path()
        warnings = typed_field_warnings(self.runtime.entries.values(), self.current.typed)
        for name, warning in sorted(warnings.items()):
            if self._warned.get(name) != warning:
                logger.warning("%s", warning, extra={"model": name})
        for name in sorted(set(self._warned) - set(warnings)):
            typed = self.current.typed.get(name)
            if typed is not None and not isinstance(typed, str):
                logger.info(
                    "model %s has its typed field %s again",
                    name,
                    typed.field,
                    extra={"model": name},
                )
        self._warned = warnings
