"""Who is calling, and what they may do: API keys, JWT bearer tokens, scopes.

Scopes: ``predict`` (every model), ``predict:<model>`` (one model), ``metadata`` (``models``,
``model``, the model-events subscription) and ``admin`` (the admin mutations). A model's
``[access] scopes`` in ``model.toml`` narrows who may run it further: the caller needs one of them
as well. A model the caller may not run is not hidden (names and signatures are in the schema for
everyone); running it answers ``FORBIDDEN``.

Credentials, in this order: ``Authorization: Bearer <token>`` (an API key or a JWT) or
``X-API-Key: <key>``. API keys look like ``gw_<id>_<secret>``; the keys file holds, per id, a
salted SHA-256 of the secret (``gateway new-key`` makes both) and the key's scopes. Secrets are
256 random bits, so a fast hash is safe, and it keeps verification off the request's budget. A
JWT is checked with PyJWT: signature (HS256 with a shared secret of 32 bytes or more, or
RS256/ES256 with keys from a JWKS file or URL, fetched in the background: ``gateway.jwks``),
expiry, not-before, and the issuer and audience, which every token must carry; its scopes come
from the ``scope`` claim (space-separated, OAuth 2) or a ``scopes`` / ``scp`` list. The keys file
is read again when it changes (``maintain``), so a new key works and a removed one is refused
within ``poll_seconds``.

With no credentials a caller is anonymous, with ``anonymous_scopes``; a local caller (this
machine, see ``gateway.trust``) with ``local_scopes``: by default ``predict`` and ``metadata`` on
a loopback host, nothing elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import ConfigError, ForbiddenError, UnauthenticatedError
from gateway.jwks import RemoteKeys, find_key

__all__ = [
    "ADMIN",
    "METADATA",
    "PREDICT",
    "ANONYMOUS",
    "JWT_LEEWAY_SECONDS",
    "Authenticator",
    "Principal",
    "hash_key",
    "new_key",
]

PREDICT = "predict"
METADATA = "metadata"
ADMIN = "admin"
_KEY_PREFIX = "gw_"
#: Clock skew allowed between the token's issuer and this server, on exp and nbf.
JWT_LEEWAY_SECONDS = 5

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: an id (never a secret) and scopes."""

    id: str
    scopes: frozenset[str]
    kind: str  # "anonymous", "api-key" or "jwt"
    #: The caller's own rate limit (an API key's ``rate``), over the server's.
    rate: str | None = None
    #: When the credentials expire (a JWT's ``exp``, Unix time); None: they do not.
    expires: float | None = None

    def may_predict(self, model: str, required: Iterable[str] = ()) -> bool:
        """Whether the caller may run ``model`` (whose model.toml requires one of ``required``)."""
        scopes = self.scopes
        if PREDICT not in scopes and f"{PREDICT}:{model}" not in scopes:
            return False
        required = tuple(required)
        return not required or any(s in scopes for s in required)

    def check_predict(self, model: str, required: Iterable[str] = ()) -> None:
        """Raises ForbiddenError unless the caller may run ``model``."""
        if not self.may_predict(model, required):
            raise ForbiddenError(f"{self._who} may not run model {model!r}")

    def check(self, scope: str) -> None:
        """Raises ForbiddenError unless the caller has ``scope``."""
        if scope not in self.scopes:
            raise ForbiddenError(f"{self._who} lacks the {scope!r} scope")

    @property
    def _who(self) -> str:
        return "an anonymous caller" if self.kind == "anonymous" else f"{self.kind} {self.id!r}"


ANONYMOUS = Principal("anonymous", frozenset(), "anonymous")


@dataclass(frozen=True, slots=True)
class _Key:
    id: str
    salt: bytes
    digest: bytes
    scopes: frozenset[str]
    rate: str | None = None


def hash_key(secret: str, salt: bytes | None = None) -> str:
    """The keys file's ``hash`` of a key's secret: ``sha256:<salt hex>:<digest hex>``."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"sha256:{salt.hex()}:{digest}"


def new_key(key_id: str) -> tuple[str, str]:
    """A new API key for ``key_id`` and the hash to put in the keys file."""
    if not key_id.isidentifier():
        raise ConfigError(f"key id {key_id!r}: use letters, digits and underscores")
    secret = secrets.token_hex(32)  # hex: no "_", so the id is what comes before the last one
    return f"{_KEY_PREFIX}{key_id}_{secret}", hash_key(secret)


class Authenticator:
    """Turns a request's headers into a Principal (see the module docstring)."""

    def __init__(
        self,
        *,
        anonymous_scopes: Iterable[str] = (),
        local_scopes: Iterable[str] | None = None,
        keys_file: Path | None = None,
        jwt_secret: str | None = None,
        jwt_jwks: str | None = None,
        jwt_issuer: str | None = None,
        jwt_audience: str | None = None,
        jwks_timeout: float = 3.0,
        jwks_refresh_seconds: float = 300.0,
    ) -> None:
        self.anonymous = Principal("anonymous", frozenset(anonymous_scopes), "anonymous")
        local = self.anonymous.scopes if local_scopes is None else frozenset(local_scopes)
        self.local = Principal("anonymous", local, "anonymous")
        self._keys_file = keys_file
        self._keys_seen: tuple[int, int, int] | None = None  # the file's mtime, size, inode
        self._keys: dict[str, _Key] = {}
        self._verified: dict[str, Principal] = {}  # API keys seen, by the full key
        if keys_file is not None:
            self._keys = _read_keys(keys_file)  # a file that cannot be read: ConfigError
            self._keys_seen = _file_state(keys_file)
        self._jwt_secret = jwt_secret
        self._remote: RemoteKeys | None = None
        self._jwks_keys: tuple[jwt.PyJWK, ...] = ()
        if jwt_jwks is not None:
            if jwt_jwks.startswith(("http://", "https://")):
                self._remote = RemoteKeys(
                    jwt_jwks, timeout=jwks_timeout, refresh_seconds=jwks_refresh_seconds
                )
            else:
                try:
                    self._jwks_keys = tuple(jwt.PyJWKSet.from_json(Path(jwt_jwks).read_text()).keys)
                except (OSError, jwt.PyJWTError) as exc:
                    raise ConfigError(f"jwt_jwks: cannot read a JWKS from {jwt_jwks}") from exc
        if self.jwt_enabled and not (jwt_issuer and jwt_audience):
            raise ConfigError("jwt_issuer and jwt_audience: required when JWTs are on")
        self._issuer = jwt_issuer
        self._audience = jwt_audience

    @property
    def jwt_enabled(self) -> bool:
        return self._jwt_secret is not None or self._remote is not None or bool(self._jwks_keys)

    @property
    def remote_keys(self) -> RemoteKeys | None:
        """The JWKS URL's keys, when tokens are checked with them."""
        return self._remote

    def describe(self) -> str:
        """The mode, for the start-up log (no secrets)."""
        parts = [f"{len(self._keys)} API key(s)"]
        if self.jwt_enabled:
            parts.append("JWT " + ("HS256" if self._jwt_secret else "RS256/ES256 (JWKS)"))
        anonymous = ", ".join(sorted(self.anonymous.scopes)) or "nothing"
        local = ", ".join(sorted(self.local.scopes)) or "nothing"
        return (
            f"authentication: {', '.join(parts)}; anonymous callers may: {anonymous}; "
            f"on this machine: {local}"
        )

    def authenticate(self, headers: Mapping[str, str], *, local: bool = False) -> Principal:
        """The caller of a request with these headers (``local``: from this machine).

        Raises:
            UnauthenticatedError: credentials were sent and are not valid.
        """
        token = headers.get("x-api-key")
        if token is None:
            authorization = headers.get("authorization")
            if authorization is None:
                return self.local if local else self.anonymous
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
            token = token.strip()
        if token.startswith(_KEY_PREFIX):
            return self._api_key(token)
        return self._jwt(token)

    async def maintain(self, poll_seconds: float) -> None:
        """Keep the credentials current until cancelled: the JWKS URL's keys, and the keys
        file, checked for changes every ``poll_seconds`` (0: never)."""
        async with asyncio.TaskGroup() as group:
            if self._remote is not None:
                group.create_task(self._remote.run())
            if self._keys_file is not None and poll_seconds > 0:
                group.create_task(self._watch_keys(poll_seconds))

    async def _watch_keys(self, poll_seconds: float) -> None:
        while True:
            await asyncio.sleep(poll_seconds)
            self.reload_keys()

    def reload_keys(self) -> bool:
        """Read the keys file again if it changed; True if the keys were replaced. A file that
        cannot be read or parsed leaves the keys as they were (and is logged once)."""
        path = self._keys_file
        if path is None:
            return False
        try:
            state = _file_state(path)
        except OSError:
            state = None
        if state == self._keys_seen:
            return False
        self._keys_seen = state
        try:
            keys = _read_keys(path)
        except ConfigError as exc:
            logger.warning("%s; keeping the %d key(s) read before", exc.message, len(self._keys))
            return False
        self._keys = keys
        self._verified = {}  # a removed key must not live on in the cache
        logger.info("api_keys_file: read %d key(s) from %s", len(keys), path)
        return True

    def _api_key(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            return known
        key_id, _, secret = token[len(_KEY_PREFIX) :].rpartition("_")
        key = self._keys.get(key_id)
        digest = hashlib.sha256((key.salt if key else b"") + secret.encode()).digest()
        if key is None or not hmac.compare_digest(digest, key.digest):
            raise UnauthenticatedError("invalid API key")
        principal = Principal(key.id, key.scopes, "api-key", key.rate)
        if len(self._verified) < 10_000:  # a bound: keys are few, forged ones are not cached
            self._verified[token] = principal
        return principal

    def _jwt(self, token: str) -> Principal:
        if not self.jwt_enabled:
            raise UnauthenticatedError("invalid API key (JWTs are not accepted here)")
        try:
            if self._jwt_secret is not None:
                key: Any = self._jwt_secret
                algorithms = ["HS256"]
            else:
                key = self._signing_key(token)
                algorithms = ["RS256", "ES256"]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "aud", "iss"]},
                leeway=JWT_LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise UnauthenticatedError("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise UnauthenticatedError("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise UnauthenticatedError("the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise UnauthenticatedError(f"invalid token: it has no {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError("invalid token") from exc
        subject = str(claims.get("sub", "jwt"))
        return Principal(subject, _claim_scopes(claims), "jwt", expires=float(claims["exp"]))

    def _signing_key(self, token: str) -> Any:
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is not None and not isinstance(kid, str):
            raise jwt.InvalidKeyError("the token's kid is not a string")
        if self._remote is not None:
            key = self._remote.lookup(kid)
            if key is None:
                raise UnauthenticatedError(
                    "invalid token: no key for its kid among the JWKS keys fetched so far "
                    "(they are refreshed in the background)"
                )
        else:
            key = find_key(self._jwks_keys, kid)
            if key is None:
                raise jwt.InvalidKeyError("no JWKS key for this token")
        return key.key


def _claim_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    for name in ("scopes", "scp"):
        value = claims.get(name)
        if isinstance(value, list):
            return frozenset(str(v) for v in value)
        if isinstance(value, str):
            return frozenset(value.split())
    return frozenset()


def _file_state(path: Path) -> tuple[int, int, int]:
    # mtime, size and inode: an edit in place or a new file moved over it (as Kubernetes
    # does with a mounted secret) changes at least one.
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _read_keys(path: Path) -> dict[str, _Key]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"api_keys_file: cannot read {path}: {exc}") from exc
    keys: dict[str, _Key] = {}
    for number, table in enumerate(raw.get("keys", []), start=1):
        where = f"api_keys_file: keys[{number}]"
        if not isinstance(table, Mapping) or not {"id", "hash"} <= set(table):
            raise ConfigError(f"{where}: each [[keys]] needs id and hash")
        algorithm, _, rest = str(table["hash"]).partition(":")
        salt, _, digest = rest.partition(":")
        try:
            salt_bytes, digest_bytes = bytes.fromhex(salt), bytes.fromhex(digest)
        except ValueError as exc:
            raise ConfigError(f"{where}: hash must be sha256:<salt hex>:<digest hex>") from exc
        if algorithm != "sha256" or len(digest_bytes) != 32:
            raise ConfigError(f"{where}: hash must be sha256:<salt hex>:<digest hex>")
        scopes = table.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where}: scopes must be a list of strings")
        rate = table.get("rate")
        if rate is not None and not isinstance(rate, str):
            raise ConfigError(f"{where}: rate must be a string like 10/second")
        key_id = str(table["id"])
        keys[key_id] = _Key(key_id, salt_bytes, digest_bytes, frozenset(scopes), rate)
    return keys
