"""Model versions and their states: what the runtime loads and the API reports."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.batching import Batcher
from gateway.repository import ModelSpec
from gateway.signature import Signature

__all__ = ["ModelEntry", "ModelState", "ModelVersion"]


class ModelState(enum.Enum):
    """Where a model version is in its life."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


@dataclass(slots=True)
class ModelVersion:
    """One version of a model and its session, once loaded."""

    model: str
    version: int
    path: Path
    state: ModelState = ModelState.LOADING
    #: Why the version is FAILED or UNAVAILABLE.
    reason: str | None = None
    signature: Signature | None = None
    load_seconds: float | None = None
    #: The ONNX Runtime session (gateway.runtime's business), once loaded.
    session: Any = field(default=None, repr=False)
    #: Its dynamic batcher, when the version can batch (a free first dimension everywhere).
    batcher: Batcher | None = field(default=None, repr=False)


@dataclass(slots=True)
class ModelEntry:
    """A model of the repository with all its versions."""

    spec: ModelSpec
    versions: dict[int, ModelVersion]

    @property
    def name(self) -> str:
        """The model's name."""
        return self.spec.name

    @property
    def default_version(self) -> int | None:
        """The highest READY version, which serves requests that name none."""
        ready = [v for v, mv in self.versions.items() if mv.state is ModelState.READY]
        return max(ready) if ready else None

    @property
    def schema_version(self) -> ModelVersion | None:
        """The version whose signature the typed API follows: the default, else the highest
        version with a readable signature."""
        default = self.default_version
        if default is not None:
            return self.versions[default]
        readable = [mv for mv in self.versions.values() if mv.signature is not None]
        return max(readable, key=lambda mv: mv.version) if readable else None
