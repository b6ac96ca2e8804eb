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
JWT is checked with PyJWT: signature (HS256 with a shared secret, or RS256/ES256 with keys from a
JWKS file or URL), expiry, not-before, issuer and audience; its scopes come from the ``scope``
claim (space-separated, OAuth 2) or a ``scopes`` / ``scp`` list.

With no credentials a caller is anonymous, with ``anonymous_scopes`` (by default ``predict`` and
``metadata`` on a loopback host, nothing elsewhere).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import ConfigError, ForbiddenError, UnauthenticatedError

__all__ = [
    "ADMIN",
    "METADATA",
    "PREDICT",
    "ANONYMOUS",
    "Authenticator",
    "Principal",
    "hash_key",
    "new_key",
]

PREDICT = "predict"
METADATA = "metadata"
ADMIN = "admin"
_KEY_PREFIX = "gw_"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: an id (never a secret) and scopes."""

    id: str
    scopes: frozenset[str]
    kind: str  # "anonymous", "api-key" or "jwt"
    #: The caller's own rate limit (an API key's ``rate``), over the server's.
    rate: str | None = None

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
        keys_file: Path | None = None,
        jwt_secret: str | None = None,
        jwt_jwks: str | None = None,
        jwt_issuer: str | None = None,
        jwt_audience: str | None = None,
    ) -> None:
        self.anonymous = Principal("anonymous", frozenset(anonymous_scopes), "anonymous")
        self._keys = _read_keys(keys_file) if keys_file is not None else {}
        self._jwt_secret = jwt_secret
        self._jwks: jwt.PyJWKClient | None = None
        self._jwks_keys: jwt.PyJWKSet | None = None
        if jwt_jwks is not None:
            if jwt_jwks.startswith(("http://", "https://")):
                self._jwks = jwt.PyJWKClient(jwt_jwks, cache_keys=True, lifespan=300)
            else:
                try:
                    self._jwks_keys = jwt.PyJWKSet.from_json(Path(jwt_jwks).read_text())
                except (OSError, jwt.PyJWTError) as exc:
                    raise ConfigError(f"jwt_jwks: cannot read a JWKS from {jwt_jwks}") from exc
        self._issuer = jwt_issuer
        self._audience = jwt_audience
        self._verified: dict[str, Principal] = {}  # API keys seen, by the full key

    @property
    def jwt_enabled(self) -> bool:
        return self._jwt_secret is not None or self._jwks is not None or self._jwks_keys is not None

    def describe(self) -> str:
        """The mode, for the start-up log (no secrets)."""
        parts = [f"{len(self._keys)} API key(s)"]
        if self.jwt_enabled:
            parts.append("JWT " + ("HS256" if self._jwt_secret else "RS256/ES256 (JWKS)"))
        anonymous = ", ".join(sorted(self.anonymous.scopes)) or "nothing"
        return f"authentication: {', '.join(parts)}; anonymous callers may: {anonymous}"

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller of a request with these headers.

        Raises:
            UnauthenticatedError: credentials were sent and are not valid.
        """
        token = headers.get("x-api-key")
        if token is None:
            authorization = headers.get("authorization")
            if authorization is None:
                return self.anonymous
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise UnauthenticatedError("the Authorization header must be 'Bearer <token>'")
            token = token.strip()
        if token.startswith(_KEY_PREFIX):
            return self._api_key(token)
        return self._jwt(token)

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
                options={"require": ["exp"], "verify_aud": self._audience is not None},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthenticatedError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise UnauthenticatedError("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise UnauthenticatedError("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise UnauthenticatedError("the token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise UnauthenticatedError("invalid token") from exc
        return Principal(str(claims.get("sub", "jwt")), _claim_scopes(claims), "jwt")

    def _signing_key(self, token: str) -> Any:
        if self._jwks is not None:
            return self._jwks.get_signing_key_from_jwt(token).key
        assert self._jwks_keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        for candidate in self._jwks_keys.keys:
            if kid is None or candidate.key_id == kid:
                return candidate.key
        raise jwt.InvalidKeyError("no JWKS key for this token")


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
