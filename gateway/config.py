"""Settings: read once, at the edge, into a frozen object.

Sources, strongest first: command-line flags, ``GATEWAY_*`` environment variables, the TOML file
named by ``--config`` / ``GATEWAY_CONFIG_FILE``, then the defaults below. Nothing else in the
package reads the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import ConfigError

__all__ = [
    "DEFAULT_MODELS",
    "ENV_PREFIX",
    "GRAPH_OPTIMIZATION_LEVELS",
    "LOG_LEVELS",
    "SessionOptions",
    "Settings",
    "describe_settings",
    "unknown_variables",
]

ENV_PREFIX = "GATEWAY_"
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("json", "human")
OTEL_PREFIX = "OTEL_"
#: Hosts that only this machine can reach.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: Shortest HS256 secret accepted, in bytes (RFC 7518 3.2: at least the hash's 256 bits).
MIN_JWT_SECRET_BYTES = 32
#: Settings that may come from a file instead (``GATEWAY_<KEY>_FILE`` or ``<key>_file`` in the
#: settings file), as Docker and Kubernetes mount secrets.
SECRET_FILE_KEYS = ("jwt_secret", "rate_limit_storage")


def _bundled_models() -> Path:
    # In a source checkout (editable install) the example repository sits beside the package;
    # from an installed wheel, fall back to ./models of the working directory.
    beside = Path(__file__).resolve().parent.parent / "models"
    return beside if beside.is_dir() else Path("models")


DEFAULT_MODELS = _bundled_models()

_T = TypeVar("_T")


def _usable_cores() -> int:
    # The cores this process may run on (taskset, cgroups), not the machine's.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """ONNX Runtime session options; global in Settings, overridable per model in model.toml."""

    intra_op_threads: int = field(
        default=1,
        metadata=_doc("Threads ONNX Runtime uses inside one operator (0 = one per core)."),
    )
    inter_op_threads: int = field(
        default=1, metadata=_doc("Threads ONNX Runtime uses across independent operators.")
    )
    graph_optimization_level: str = field(
        default="all", metadata=_doc("ONNX Runtime graph optimisation: disable|basic|extended|all.")
    )
    execution_providers: tuple[str, ...] = field(
        default=("CPUExecutionProvider",),
        metadata=_doc("ONNX Runtime execution providers, in order of preference."),
    )

    def __post_init__(self) -> None:
        _check_min("intra_op_threads", self.intra_op_threads, 0)
        _check_min("inter_op_threads", self.inter_op_threads, 0)
        _check_choice(
            "graph_optimization_level", self.graph_optimization_level, GRAPH_OPTIMIZATION_LEVELS
        )
        if not self.execution_providers:
            raise ConfigError("execution_providers: give at least one execution provider")

    def merged(self, overrides: Mapping[str, Any], *, where: str) -> SessionOptions:
        """These options with ``overrides`` (from a model.toml ``[session]`` table) applied."""
        return _build(SessionOptions, overrides, base=self, where=where)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway is configured with."""

    models: Path = field(default=DEFAULT_MODELS, metadata=_doc("The model repository to serve."))
    host: str = field(default="127.0.0.1", metadata=_doc("Address to bind."))
    port: int = field(default=8000, metadata=_doc("TCP port to bind."))
    workers: int = field(
        default=1,
        metadata=_doc(
            "Server processes sharing the port, each with its own models (flag --workers)."
        ),
    )
    log_level: str = field(default="info", metadata=_doc("Log level: debug|info|warning|error."))
    log_format: str = field(
        default="json", metadata=_doc("Log format: json (one object per line) or human.")
    )
    access_log: bool = field(
        default=True, metadata=_doc("Log one line per GraphQL operation (name, models, outcome).")
    )
    session: SessionOptions = field(
        default_factory=SessionOptions,
        metadata=_doc(
            "ONNX Runtime session options (TOML table [session]; env GATEWAY_SESSION_*)."
        ),
    )
    inference_threads: int = field(
        default_factory=lambda: _usable_cores(),
        metadata=_doc(
            "Worker threads that run ONNX Runtime, shared by all models (default: cores)."
        ),
    )
    max_tensor_elements: int = field(
        default=16_777_216,
        metadata=_doc("Largest input tensor accepted, in elements, per input of a request."),
    )
    max_body_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_doc("Largest request body accepted, in bytes; beyond, HTTP 413."),
    )
    max_drain_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_doc(
            "Bytes of a body over max_body_bytes read and discarded, so that its client can "
            "read the 413; a bigger body is cut off (the client may see a connection reset)."
        ),
    )
    max_header_bytes: int = field(
        default=64 * 1024,
        metadata=_doc("Largest request line and headers, in bytes; beyond, HTTP 431."),
    )
    header_timeout_seconds: float = field(
        default=10.0,
        metadata=_doc(
            "Longest a client may take to send a request's line and headers; beyond, HTTP 408."
        ),
    )
    body_timeout_seconds: float = field(
        default=30.0,
        metadata=_doc(
            "Longest a client may take to send a request body, after its headers; beyond, HTTP 408."
        ),
    )
    keep_alive_seconds: float = field(
        default=5.0,
        metadata=_doc("Seconds an idle connection is kept open for the client's next request."),
    )
    max_depth: int = field(default=15, metadata=_doc("Deepest field nesting of an operation."))
    max_aliases: int = field(default=30, metadata=_doc("Most aliases in an operation."))
    max_directives: int = field(default=20, metadata=_doc("Most directives in an operation."))
    max_fields: int = field(
        default=5000,
        metadata=_doc("Most fields in an operation, fragments expanded (each spread counts)."),
    )
    max_query_bytes: int = field(
        default=102_400,
        metadata=_doc(
            "Longest GraphQL document accepted, in bytes (send big inputs as variables)."
        ),
    )
    max_tokens: int = field(
        default=2000,
        metadata=_doc("Most tokens in a GraphQL document (send big inputs as variables)."),
    )
    max_cost: int = field(
        default=4096,
        metadata=_doc(
            "Most model rows one operation may run (prediction fields, batch rows, infer rows)."
        ),
    )
    max_batch_rows: int = field(
        default=4096, metadata=_doc("Most rows one typed batch field may carry.")
    )
    max_string_bytes: int = field(
        default=65_536,
        metadata=_doc("Longest string accepted as a model input (a feature, a BYTES element)."),
    )
    max_operation_string_bytes: int = field(
        default=1_048_576,
        metadata=_doc(
            "Most bytes of strings one operation may send to models; a variable counts at each use."
        ),
    )
    query_cache_size: int = field(
        default=1024,
        metadata=_doc("Distinct operations whose parsed and validated document is kept."),
    )
    query_cache_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=_doc(
            "Memory each query cache (documents, compiled plans, persisted queries) may hold, "
            "in bytes (estimated); the least recently used go first."
        ),
    )
    batching: bool = field(
        default=True,
        metadata=_doc("Coalesce concurrent requests to a model into one run (dynamic batching)."),
    )
    max_batch_size: int = field(
        default=64, metadata=_doc("Most rows in one batched run (a bigger request runs alone).")
    )
    max_delay_us: int = field(
        default=0,
        metadata=_doc("Microseconds a batch may wait for more rows (0: take what is queued)."),
    )
    max_queue: int = field(
        default=2048,
        metadata=_doc("Rows that may wait per model version; beyond, requests get OVERLOADED."),
    )
    warmup: bool = field(
        default=True,
        metadata=_doc(
            "Run each model once on a synthetic input before it is READY (one that rejects "
            "it serves unwarmed, saying why)."
        ),
    )
    poll_seconds: float = field(
        default=2.0,
        metadata=_doc(
            "Seconds between scans of the model repository for new, changed or removed "
            "versions (0: load once at start)."
        ),
    )
    admin_api: bool = field(
        default=False,
        metadata=_doc(
            "Let anonymous callers on this machine use the admin mutations (development; "
            "loopback host only). Callers with the admin scope always may."
        ),
    )
    anonymous_scopes: str = field(
        default="auto",
        metadata=_doc(
            "Scopes of callers without credentials, comma-separated; auto: predict,metadata "
            "for those on this machine of a loopback host, none elsewhere; none: nothing."
        ),
    )
    api_keys_file: Path | None = field(
        default=None,
        metadata=_doc("TOML file of API keys: [[keys]] id, hash, scopes (gateway new-key)."),
    )
    jwt_secret: str | None = field(
        default=None,
        repr=False,
        metadata=_doc(
            "Shared secret of HS256 JWT bearer tokens, at least 32 bytes (or "
            "GATEWAY_JWT_SECRET_FILE: a file holding it)."
        ),
    )
    jwt_jwks: str | None = field(
        default=None,
        metadata=_doc("JWKS file or URL of RS256/ES256 JWT bearer tokens' public keys."),
    )
    jwt_issuer: str | None = field(
        default=None, metadata=_doc("The iss claim tokens must carry (required with JWTs on).")
    )
    jwt_audience: str | None = field(
        default=None, metadata=_doc("The aud claim tokens must carry (required with JWTs on).")
    )
    jwt_jwks_timeout_seconds: float = field(
        default=3.0,
        metadata=_doc("Longest a fetch of the JWKS URL may take (in the background)."),
    )
    jwt_jwks_refresh_seconds: float = field(
        default=300.0,
        metadata=_doc(
            "Seconds between fetches of the JWKS URL (a token with an unknown kid asks for one "
            "sooner, at most every 30 s)."
        ),
    )
    request_timeout_seconds: float = field(
        default=30.0,
        metadata=_doc("Longest a GraphQL request may run; beyond, TIMEOUT (HTTP 504)."),
    )
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Host names clients may use besides localhost, 127.0.0.1 and [::1], comma-separated "
            "(*.example.com: any subdomain); others get HTTP 400 on a loopback host, and "
            "elsewhere once this is set."
        ),
    )
    forwarded_allow_ips: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Proxies (addresses or networks, comma-separated; *: any) whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed. Default: none, the peer is the client."
        ),
    )
    max_subscriptions: int = field(
        default=100,
        metadata=_doc("Most operations open at once on one websocket; beyond, BAD_REQUEST."),
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Origins whose pages may call the API from a browser (CORS) and open "
            "subscriptions, comma-separated, e.g. https://app.example.com. Default: none."
        ),
    )
    tls_certfile: Path | None = field(
        default=None, metadata=_doc("Serve HTTPS with this certificate (PEM).")
    )
    tls_keyfile: Path | None = field(
        default=None, metadata=_doc("The private key of tls_certfile (PEM).")
    )
    rate_limit: str | None = field(
        default=None,
        metadata=_doc(
            "Requests per caller (API key, token subject, else client address), e.g. "
            "100/second, counting each websocket operation; beyond, RATE_LIMITED (HTTP 429). "
            "Default: none."
        ),
    )
    rate_limit_storage: str = field(
        default="memory://",
        repr=False,  # a Redis URL may hold a password
        metadata=_doc(
            "Where rate-limit counters live: memory://, or redis://host:port shared by "
            "replicas (the redis extra: pip install 'prediction-gateway[redis]'); or "
            "GATEWAY_RATE_LIMIT_STORAGE_FILE, a file holding it."
        ),
    )
    metrics_auth: bool = field(
        default=False,
        metadata=_doc(
            "/metrics needs a key or token with the metrics or admin scope (default: open to "
            "whoever can reach it, as Prometheus scrapes)."
        ),
    )
    metrics_port: int = field(
        default=0,
        metadata=_doc(
            "Serve /metrics on this port of the same host instead of the API's (0: the API's)."
        ),
    )
    metrics_operation_names: int = field(
        default=100,
        metadata=_doc(
            "Distinct GraphQL operation names that get a metric label of their own; later "
            "ones are counted under other."
        ),
    )
    introspection: str = field(
        default="auto",
        metadata=_doc(
            "GraphQL introspection and field suggestions: on, off, or auto (on only on a "
            "loopback host with no forwarded_allow_ips)."
        ),
    )
    trace_viewer: bool = field(
        default=False, metadata=_doc("Serve the built-in trace viewer at /debug/traces.")
    )
    trace_viewer_size: int = field(
        default=200, metadata=_doc("How many recent traces the trace viewer keeps in memory.")
    )
    trace_viewer_spans: int = field(
        default=512,
        metadata=_doc(
            "Most spans the trace viewer keeps per trace (the rest are counted, not kept)."
        ),
    )
    trace_document: bool = field(
        default=False,
        metadata=_doc("Record the GraphQL document in the operation span (graphql.document)."),
    )
    trace_min_step_us: int = field(
        default=100,
        metadata=_doc(
            "Input decoding or output encoding faster than this (µs) is an attribute of its "
            "resolver's span (e.g. gateway.decode.duration_us), not a span; 0: always a span."
        ),
    )
    #: The OpenTelemetry variables (``OTEL_*``) of the environment, read with the rest and used
    #: by gateway.telemetry; documented in the README, not a setting of their own.
    otel: Mapping[str, str] = field(default_factory=dict, repr=False, metadata=_doc(""))
    config_file: Path | None = field(
        default=None, metadata=_doc("TOML file with any of these settings (flag --config).")
    )

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the server (the bind address is loopback)."""
        return _is_loopback(self.host)

    @property
    def anonymous(self) -> frozenset[str]:
        """The scopes of every caller without credentials (``anonymous_scopes`` as given; auto
        gives them nothing: its scopes are ``anonymous_local``'s)."""
        text = self.anonymous_scopes.strip().lower()
        if text in ("auto", "", "none"):
            return frozenset()
        return frozenset(s.strip() for s in self.anonymous_scopes.split(",") if s.strip())

    @property
    def anonymous_local(self) -> frozenset[str]:
        """The scopes of a caller without credentials on this machine (a loopback peer of a
        loopback host, not through a proxy): development. ``auto`` gives it predict and
        metadata, ``admin_api`` the admin scope."""
        scopes = set(self.anonymous)
        if self.anonymous_scopes.strip().lower() == "auto" and self.loopback:
            scopes |= {"predict", "metadata"}
        if self.admin_api:
            scopes.add("admin")
        return frozenset(scopes)

    @property
    def introspection_enabled(self) -> bool:
        """Whether introspection (and field suggestions) are on. ``auto``: on a loopback host
        that no proxy fronts, where every caller that passes the Host check is on this machine
        (the schema is built once, not per caller)."""
        if self.introspection != "auto":
            return self.introspection == "on"
        return self.loopback and not self.forwarded_allow_ips

    @property
    def jwt_enabled(self) -> bool:
        """Whether bearer JWTs are accepted."""
        return self.jwt_secret is not None or self.jwt_jwks is not None

    def __post_init__(self) -> None:
        _check_min("port", self.port, 0, 65535)
        _check_min("workers", self.workers, 1)
        _check_choice("log_level", self.log_level, LOG_LEVELS)
        _check_choice("log_format", self.log_format, LOG_FORMATS)
        _check_min("trace_viewer_size", self.trace_viewer_size, 1)
        _check_min("trace_min_step_us", self.trace_min_step_us, 0)
        _check_min("trace_viewer_spans", self.trace_viewer_spans, 1)
        _check_min("metrics_port", self.metrics_port, 0, 65535)
        _check_min("metrics_operation_names", self.metrics_operation_names, 0)
        if self.metrics_port and self.metrics_port == self.port:
            raise ConfigError(
                f"metrics_port: invalid value {self.metrics_port}: it is the API's port; "
                "give another one, or 0 to serve /metrics on the API's port"
            )
        if not self.request_timeout_seconds > 0:
            raise ConfigError(
                f"request_timeout_seconds: invalid value {self.request_timeout_seconds!r}: "
                "expected > 0"
            )
        for key in ("header_timeout_seconds", "body_timeout_seconds", "keep_alive_seconds"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key}: invalid value {getattr(self, key)!r}: expected > 0")
        _check_min("max_drain_bytes", self.max_drain_bytes, 0)
        _check_min("max_header_bytes", self.max_header_bytes, 1024)
        if not self.poll_seconds >= 0:
            raise ConfigError(f"poll_seconds: invalid value {self.poll_seconds!r}: expected >= 0")
        if self.admin_api and not self.loopback:
            raise ConfigError(
                f"admin_api: anonymous admin needs a loopback host ({', '.join(LOOPBACK_HOSTS)}); "
                f"host is {self.host!r}: give an API key or token the admin scope instead"
            )
        _check_choice("introspection", self.introspection, ("on", "off", "auto"))
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ConfigError("tls_certfile and tls_keyfile: give both or neither")
        self._check_jwt()
        self._check_trust()
        _check_min("max_subscriptions", self.max_subscriptions, 1)
        _check_min("inference_threads", self.inference_threads, 1)
        _check_min("max_tensor_elements", self.max_tensor_elements, 1)
        _check_min("max_batch_rows", self.max_batch_rows, 1)
        for key in (
            "max_body_bytes",
            "max_depth",
            "max_aliases",
            "max_fields",
            "max_query_bytes",
            "max_string_bytes",
            "max_operation_string_bytes",
            "max_tokens",
            "max_cost",
        ):
            _check_min(key, getattr(self, key), 1)
        _check_min("max_directives", self.max_directives, 0)
        _check_min("max_batch_size", self.max_batch_size, 1)
        _check_min("query_cache_size", self.query_cache_size, 1)
        _check_min("query_cache_bytes", self.query_cache_bytes, 1)
        _check_min("max_delay_us", self.max_delay_us, 0)
        _check_min("max_queue", self.max_queue, 1)

    def _check_jwt(self) -> None:
        if self.jwt_secret is not None and self.jwt_jwks is not None:
            raise ConfigError("jwt_secret and jwt_jwks: configure one of them")
        if not self.jwt_enabled:
            return
        # A token is only ours if it names us and our identity provider: without these, a
        # token the same provider issued to another service would be accepted.
        for key, claim in (("jwt_audience", "aud"), ("jwt_issuer", "iss")):
            if not getattr(self, key):
                raise ConfigError(
                    f"{key}: required when JWTs are on (jwt_secret or jwt_jwks): the {claim} "
                    "claim every token must carry"
                )
        if self.jwt_secret is not None:
            size = len(self.jwt_secret.encode())
            if size < MIN_JWT_SECRET_BYTES:
                raise ConfigError(
                    f"jwt_secret: {size} bytes is too short to sign tokens: expected at least "
                    f"{MIN_JWT_SECRET_BYTES} random bytes (e.g. openssl rand -hex 32)"
                )
        for key in ("jwt_jwks_timeout_seconds", "jwt_jwks_refresh_seconds"):
            value = getattr(self, key)
            if not value > 0:
                raise ConfigError(f"{key}: invalid value {value!r}: expected > 0")

    def _check_trust(self) -> None:
        for entry in self.forwarded_allow_ips:
            if entry == "*":
                continue
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(
                    f"forwarded_allow_ips: invalid value {entry!r}: expected an address "
                    "(10.0.0.7), a network (10.0.0.0/8) or *"
                ) from exc
        for name in self.allowed_hosts:
            if not name or "/" in name or " " in name or "*" in name.removeprefix("*."):
                raise ConfigError(
                    f"allowed_hosts: invalid value {name!r}: expected a host name "
                    "(api.example.com), an address, or *.example.com"
                )

    @classmethod
    def load(
        cls,
        *,
        environ: Mapping[str, str],
        flags: Mapping[str, Any] | None = None,
    ) -> Settings:
        """Settings from flags, then ``GATEWAY_*`` variables, then the config file, then defaults.

        Args:
            environ: the process environment (tests pass a dict).
            flags: values given on the command line, keyed by field name; None values are unset.
        """
        given = _read_secret_files(
            {k: v for k, v in (flags or {}).items() if v is not None}, "flag"
        )
        from_env = _read_secret_files(_from_env(environ), "environment")
        from_env["otel"] = {k: v for k, v in environ.items() if k.startswith(OTEL_PREFIX)}
        config_file = given.get("config_file", from_env.get("config_file"))
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(_read_secret_files(_read_toml(Path(config_file)), "config_file"))
        for source in (from_env, given):
            for key, value in source.items():
                if key == "session" and isinstance(values.get("session"), dict):
                    values["session"] = {**values["session"], **value}
                else:
                    values[key] = value
        return _build(cls, values, where="settings")


def describe_settings() -> list[tuple[str, str, str, str]]:
    """Rows of (TOML key, environment variable, default, description) for the README's table."""
    rows: list[tuple[str, str, str, str]] = []
    for f in dataclasses.fields(Settings):
        if f.name == "otel":
            continue
        if f.name == "session":
            for sf in dataclasses.fields(SessionOptions):
                key = f"session.{sf.name}"
                env = f"{ENV_PREFIX}SESSION_{sf.name.upper()}"
                rows.append((key, env, _default_text(sf), sf.metadata["doc"]))
            continue
        env = f"{ENV_PREFIX}{f.name.upper()}"
        default = "cores" if f.name == "inference_threads" else _default_text(f)
        if f.name == "models":
            default = "models/"
        rows.append((f.name, env, default, f.metadata["doc"]))
    return rows


def _default_text(f: dataclasses.Field[Any]) -> str:
    value = f.default
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _variables() -> dict[str, tuple[str, ...]]:
    """Each ``GATEWAY_*`` variable a setting is read from: its key (``("port",)``, or
    ``("session", "intra_op_threads")`` for a session option)."""
    names: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(Settings):
        if f.name == "otel":
            continue
        if f.name == "session":
            for sf in dataclasses.fields(SessionOptions):
                names[f"{ENV_PREFIX}SESSION_{sf.name.upper()}"] = ("session", sf.name)
            continue
        names[f"{ENV_PREFIX}{f.name.upper()}"] = (f.name,)
        if f.name in SECRET_FILE_KEYS:  # a file the secret is read from (Docker, Kubernetes)
            names[f"{ENV_PREFIX}{f.name.upper()}_FILE"] = (f"{f.name}_file",)
    return names


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in _variables().items():
        if name in environ:
            table = out.setdefault(key[0], {}) if len(key) == 2 else out
            table[key[-1]] = environ[name]
    return out


#: GATEWAY_* variables that are no setting but are read elsewhere (scripts/test: the venv).
_OTHER_VARIABLES = ("GATEWAY_VENV",)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``GATEWAY_*`` variable of ``environ`` that names no setting (a typo
    is otherwise silently ignored), with the closest known name."""
    known = [*_variables(), *_OTHER_VARIABLES]
    # Compared without the prefix they all share, which would make any two names look alike.
    suffixes = [k.removeprefix(ENV_PREFIX) for k in known]
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
            warnings.append(f"{name} is not a setting and is ignored{hint}")
    return warnings


def _read_secret_files(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` with each ``<key>_file`` replaced by ``<key>``: the file's text, read now."""
    for key in SECRET_FILE_KEYS:
        path = values.pop(f"{key}_file", None)
        if path is None:
            continue
        if values.get(key) is not None:
            raise ConfigError(f"{key} and {key}_file ({where}): give one of them")
        try:
            # Mounted secrets often end with a newline that is not part of the secret.
            values[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{key}_file: cannot read {path}: {reason}") from exc
    return values


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config_file: cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config_file: {path} is not valid TOML: {exc}") from exc


def _build(cls: type[_T], values: Mapping[str, Any], *, where: str, base: _T | None = None) -> _T:
    """Coerce ``values`` into ``cls``'s fields, naming the key of any bad value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    if base is not None:
        kwargs = {name: getattr(base, name) for name in fields}
    for name, raw in values.items():
        kwargs[name] = _coerce(name, fields[name], raw, where=where)
    return cls(**kwargs)


def _coerce(name: str, f: dataclasses.Field[Any], raw: Any, *, where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    key = f"{where}.{name}" if where != "settings" else name
    try:
        if kind == "SessionOptions":
            if isinstance(raw, SessionOptions):
                return raw
            if not isinstance(raw, Mapping):
                raise ValueError("expected a table of session options")
            return SessionOptions().merged(raw, where="session")
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("expected an integer")
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return float(raw)
        if kind == "bool":
            return _to_bool(raw)
        if kind == "str":
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw.lower() if name in _LOWERCASE else raw
        if kind == "Path":
            return Path(raw)
        if kind == "Path | None":
            return None if raw in ("", None) else Path(raw)
        if kind == "str | None":
            if raw is not None and not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw or None
        if kind == "Mapping[str, str]":
            if not isinstance(raw, Mapping):
                raise ValueError("expected a table of strings")
            return {str(k): str(v) for k, v in raw.items()}
        if kind == "tuple[str, ...]":
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(i).strip() for i in items if str(i).strip())
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: invalid value {raw!r}: {exc}") from exc
    raise AssertionError(f"no coercion for field type {kind}")  # an internal invariant


_LOWERCASE = ("log_level", "log_format", "graph_optimization_level", "introspection")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _check_min(key: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{key}: invalid value {value!r}: expected an integer {bound}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: invalid value {value!r}: expected one of {', '.join(choices)}")
