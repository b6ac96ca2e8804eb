"""Scan a model repository into ModelSpec values: the filesystem only, no ONNX Runtime.

Layout (../shared/API.md)::

    PATH/<model>/<version>/model.onnx     version = positive integer
    PATH/<model>/model.toml               optional
    PATH/<model>.onnx                     zero-config: served as version 1
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import SessionOptions
from gateway.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "MODEL_NAME_PATTERN",
    "ModelConfig",
    "ModelSpec",
    "RepositoryScan",
    "Sample",
    "VersionPolicy",
    "parse_model_config",
    "scan_repository",
]

MODEL_FILE = "model.onnx"
CONFIG_FILE = "model.toml"
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_VERSION_PATTERN = re.compile(r"[1-9][0-9]*")
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What a ``model.toml`` says about a model."""

    description: str | None = None
    #: Names of the columns of each 2-D input, keyed by input tensor name. The top-level
    #: ``features`` key names the columns of a model's single input (key ``""`` here).
    features: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: Class labels in the order of the model's integer class indices.
    labels: tuple[str, ...] | None = None
    #: ONNX Runtime session options for this model (over the global ones).
    session: Mapping[str, Any] = field(default_factory=dict)
    #: An example row, keyed by feature name, for the explorer's example operations.
    example: Mapping[str, Any] = field(default_factory=dict)
    #: Dynamic batching for this model: ``enabled``, ``max_batch_size``, ``max_delay_us``,
    #: ``max_queue`` (over the global settings).
    batching: Mapping[str, Any] = field(default_factory=dict)
    #: Which versions are served, and which one by default (``[versions]``).
    versions: VersionPolicy = field(default_factory=lambda: VersionPolicy())
    #: Expected sha256 digests of ``model.onnx`` by version (``[sha256]``), checked before load.
    sha256: Mapping[int, str] = field(default_factory=dict)
    #: Rows with expected predictions (``[[samples]]``), checked before a version is READY.
    samples: tuple[Sample, ...] = ()
    #: ``[access] scopes``: a caller needs one of these (besides predict) to run the model.
    access: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Sample:
    """One ``[[samples]]`` entry: an input row and the prediction fields expected for it."""

    input: Mapping[str, Any]
    expect: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """``[versions]``: ``policy`` = "all" (default), "latest" (the ``latest`` = N highest) or
    "specific" (the versions listed in ``specific``); ``default`` pins the version that serves
    requests naming none (else the highest READY one)."""

    policy: str = "all"
    latest: int = 1
    specific: tuple[int, ...] = ()
    default: int | None = None

    def select(self, available: Iterable[int]) -> set[int]:
        """The versions to serve among those on disk."""
        found = sorted(available)
        if self.policy == "latest":
            return set(found[-self.latest :])
        if self.policy == "specific":
            return set(found) & set(self.specific)
        return set(found)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model found in the repository."""

    name: str
    versions: Mapping[int, Path]
    config: ModelConfig = field(default_factory=ModelConfig)
    #: Why the model cannot be served as configured (a bad model.toml), or None.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryScan:
    """The models of a repository, and what was skipped and why."""

    models: tuple[ModelSpec, ...]
    warnings: tuple[str, ...] = ()


def scan_repository(root: Path) -> RepositoryScan:
    """Find every model and version under ``root``.

    Raises:
        ConfigError: ``root`` is not a directory.
    """
    if not root.is_dir():
        raise ConfigError(f"models: {root} is not a directory")
    warnings: list[str] = []
    found: dict[str, ModelSpec] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            name = entry.name
        elif entry.suffix == ".onnx" and entry.is_file():
            name = entry.stem
        else:
            continue
        if not MODEL_NAME_PATTERN.fullmatch(name):
            warnings.append(
                f"{entry.name}: skipped, a model name must match {MODEL_NAME_PATTERN.pattern}"
            )
            continue
        if name in found:
            warnings.append(f"{entry.name}: skipped, {name}/ already defines model {name!r}")
            continue
        spec = _scan_dir(entry, warnings) if entry.is_dir() else ModelSpec(name, {1: entry})
        if spec is not None:
            found[name] = spec
    return RepositoryScan(tuple(found.values()), tuple(warnings))


def _scan_dir(directory: Path, warnings: list[str]) -> ModelSpec | None:
    name = directory.name
    versions: dict[int, Path] = {}
    for child in sorted(directory.iterdir()):
        if not child.is_dir():
            continue
        if not _VERSION_PATTERN.fullmatch(child.name):
            warnings.append(f"{name}/{child.name}: skipped, a version must be a positive integer")
            continue
        model_file = child / MODEL_FILE
        if not model_file.is_file():
            warnings.append(f"{name}/{child.name}: skipped, no {MODEL_FILE}")
            continue
        versions[int(child.name)] = model_file
    if not versions:
        warnings.append(f"{name}: skipped, no <version>/{MODEL_FILE} inside")
        return None
    ordered = dict(sorted(versions.items()))
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        return ModelSpec(name, ordered)
    try:
        with config_path.open("rb") as fh:
            raw = tomllib.load(fh)
        config = parse_model_config(raw)
    except (OSError, tomllib.TOMLDecodeError, ConfigError) as exc:
        return ModelSpec(name, ordered, problem=f"{name}/{CONFIG_FILE}: {exc}")
    return ModelSpec(name, ordered, config)


def parse_model_config(raw: Mapping[str, Any]) -> ModelConfig:
    """Validate a parsed ``model.toml``; errors name the key.

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    known = {
        "description",
        "features",
        "labels",
        "inputs",
        "session",
        "example",
        "batching",
        "versions",
        "sha256",
        "samples",
        "access",
        "conversion",
        "baseline",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError("description: expected a string")
    features: dict[str, tuple[str, ...]] = {}
    if "features" in raw:
        features[""] = _strings(raw["features"], "features")
    inputs = raw.get("inputs", {})
    if not isinstance(inputs, Mapping):
        raise ConfigError("inputs: expected a table of [inputs.<tensor name>] tables")
    for tensor, table in inputs.items():
        if not isinstance(table, Mapping) or set(table) - {"features"}:
            raise ConfigError(f"inputs.{tensor}: expected a table with the key 'features'")
        if "features" in table:
            features[tensor] = _strings(table["features"], f"inputs.{tensor}.features")
    for table in ("conversion", "baseline"):  # written by gateway convert: kept, not used here
        if table in raw and not isinstance(raw[table], Mapping):
            raise ConfigError(f"{table}: expected a table")
    labels = _strings(raw["labels"], "labels") if "labels" in raw else None
    session = raw.get("session", {})
    if not isinstance(session, Mapping):
        raise ConfigError("session: expected a table")
    SessionOptions().merged(session, where="session")  # validate now, apply at load time
    example = raw.get("example", {})
    if not isinstance(example, Mapping) or not all(
        isinstance(v, (*_SCALAR, list)) for v in example.values()
    ):
        raise ConfigError("example: expected a table of feature = value")
    return ModelConfig(
        description,
        features,
        labels,
        dict(session),
        dict(example),
        _batching(raw),
        _version_policy(raw.get("versions", {})),
        _digests(raw.get("sha256", {})),
        _samples(raw.get("samples", [])),
        _access(raw.get("access", {})),
    )


def _access(table: Any) -> tuple[str, ...]:
    if not isinstance(table, Mapping) or set(table) - {"scopes"}:
        raise ConfigError("access: expected a table with the key 'scopes'")
    return _strings(table["scopes"], "access.scopes") if "scopes" in table else ()


def _samples(raw: Any) -> tuple[Sample, ...]:
    if not isinstance(raw, list) or not all(isinstance(t, Mapping) for t in raw):
        raise ConfigError("samples: expected [[samples]] tables")
    samples = []
    for number, table in enumerate(raw, start=1):
        unknown = sorted(set(table) - {"input", "expect"})
        if unknown:
            raise ConfigError(
                f"samples[{number}]: unknown key {unknown[0]!r}; known: input, expect"
            )
        if not isinstance(table.get("input"), Mapping):
            raise ConfigError(f"samples[{number}].input: expected a table of feature = value")
        expect = table.get("expect", {})
        if not isinstance(expect, Mapping):
            raise ConfigError(f"samples[{number}].expect: expected a table of field = value")
        samples.append(Sample(dict(table["input"]), dict(expect)))
    return tuple(samples)


_POLICIES = ("all", "latest", "specific")


def _version_policy(table: Any) -> VersionPolicy:
    if not isinstance(table, Mapping):
        raise ConfigError("versions: expected a table")
    unknown = sorted(set(table) - {"policy", "latest", "specific", "default"})
    if unknown:
        raise ConfigError(
            f"versions: unknown key {unknown[0]!r}; known keys: policy, latest, specific, default"
        )
    policy = table.get("policy", "all")
    if policy not in _POLICIES:
        raise ConfigError(f"versions.policy: expected one of {', '.join(_POLICIES)}")
    latest = table.get("latest", 1)
    if not _positive(latest):
        raise ConfigError("versions.latest: expected an integer >= 1")
    specific = table.get("specific", [])
    if not isinstance(specific, list) or not all(_positive(v) for v in specific):
        raise ConfigError("versions.specific: expected a list of version numbers")
    if policy == "specific" and not specific:
        raise ConfigError("versions.specific: policy 'specific' needs the versions to serve")
    default = table.get("default")
    if default is not None and not _positive(default):
        raise ConfigError("versions.default: expected a version number")
    return VersionPolicy(policy, latest, tuple(specific), default)


def _digests(table: Any) -> dict[int, str]:
    if not isinstance(table, Mapping):
        raise ConfigError('sha256: expected a table of "<version>" = "<hex digest>"')
    digests: dict[int, str] = {}
    for key, value in table.items():
        if not _VERSION_PATTERN.fullmatch(str(key)):
            raise ConfigError(f"sha256.{key}: keys are version numbers")
        if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ConfigError(f"sha256.{key}: expected 64 hexadecimal digits")
        digests[int(key)] = value.lower()
    return digests


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_BATCHING_LIMITS = {"max_batch_size": 1, "max_delay_us": 0, "max_queue": 1}


def _batching(raw: Mapping[str, Any]) -> dict[str, Any]:
    table = raw.get("batching", {})
    if not isinstance(table, Mapping):
        raise ConfigError("batching: expected a table")
    unknown = sorted(set(table) - {"enabled", *_BATCHING_LIMITS})
    if unknown:
        raise ConfigError(
            f"batching: unknown key {unknown[0]!r}; known keys: enabled, "
            + ", ".join(_BATCHING_LIMITS)
        )
    if "enabled" in table and not isinstance(table["enabled"], bool):
        raise ConfigError("batching.enabled: expected true or false")
    for key, low in _BATCHING_LIMITS.items():
        value = table.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"batching.{key}: expected an integer >= {low}")
    return dict(table)


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a non-empty list of strings")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key}: names must be unique")
    return tuple(value)
