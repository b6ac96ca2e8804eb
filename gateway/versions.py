"""Model versions and their states: what the runtime loads and the API reports."""

from __future__ import annotations

import enum
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.batching import Batcher
from gateway.repository import ModelSpec
from gateway.shadow import Shadow
from gateway.signature import Signature

__all__ = ["ModelEntry", "ModelState", "ModelVersion", "Warmup"]


class ModelState(enum.Enum):
    """Where a model version is in its life."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


class Warmup(enum.Enum):
    """How a loaded version was warmed up before it took traffic."""

    #: One run on a synthetic row (zeros, empty strings, dynamic dimensions 1).
    SYNTHETIC = "SYNTHETIC"
    #: model.toml's ``[[samples]]`` were run (and checked) instead.
    SAMPLES = "SAMPLES"
    #: The model rejected the synthetic row (its inputs are parameters: a shape, split sizes,
    #: indices...): not a load failure, the version serves without a warm-up.
    SKIPPED = "SKIPPED"
    #: The ``warmup`` setting is off (and model.toml has no samples).
    OFF = "OFF"


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
    #: Runs of this version not finished yet (a version is released only at zero).
    in_flight: int = 0
    #: (size, mtime_ns, inode) of the file it was loaded from: a change means a new load.
    stamp: tuple[int, int, int] | None = None
    #: Why the last attempt to load a changed file failed while this load kept serving.
    load_error: str | None = None
    #: How the load was warmed up (None until it is loaded).
    warmup: Warmup | None = None
    #: Why the synthetic warm-up was skipped (with ``Warmup.SKIPPED``).
    warmup_skipped: str | None = None

    def describe(self) -> str:
        """The outcome of its load in one line, as the log and ``gateway check`` say it."""
        what = f"model {self.model} version {self.version} {self.state.value}"
        if self.state is ModelState.FAILED:
            return f"{what}: {self.reason}"
        if self.load_seconds is not None:
            what += f" in {self.load_seconds * 1000:.1f} ms"
        if self.warmup is Warmup.SKIPPED:
            what += f" (warm-up skipped: {self.warmup_skipped})"
        return what


@dataclass(slots=True)
class ModelEntry:
    """A model of the repository with all its versions."""

    spec: ModelSpec
    versions: dict[int, ModelVersion]
    #: The default set by an operator (``setDefaultVersion``: a rollback), over model.toml's.
    pinned: int | None = None
    #: A canary: (version, weight) pairs sharing the requests that name no version.
    split: tuple[tuple[int, float], ...] = ()
    #: A version that a share of the requests also runs on, for comparison only.
    shadow: Shadow | None = None

    @property
    def name(self) -> str:
        """The model's name."""
        return self.spec.name

    def ready(self, version: int | None) -> bool:
        """Whether ``version`` exists and is READY."""
        mv = self.versions.get(version) if version is not None else None
        return mv is not None and mv.state is ModelState.READY

    @property
    def default_version(self) -> int | None:
        """The version serving requests that name none (and no canary split applies): the
        pinned one, else model.toml's ``versions.default``, else the highest READY one; a
        pinned or configured default that is not READY is passed over."""
        for chosen in (self.pinned, self.spec.config.versions.default):
            if self.ready(chosen):
                return chosen
        ready = [v for v, mv in self.versions.items() if mv.state is ModelState.READY]
        return max(ready) if ready else None

    def pick(
        self,
        caller: str | None = None,
        *,
        accept: Callable[[ModelVersion], bool] | None = None,
    ) -> int | None:
        """The version for a request that names none: by the canary split when one is set
        (sticky per ``caller`` when given), else the default.

        With ``accept``, only versions it accepts are picked (the split among them, else the
        default, else the highest READY one); None when it accepts none.
        """
        if not self.split and accept is None:  # no canary: the common case, on every request
            return self.default_version
        shares = [
            (v, w)
            for v, w in self.split
            if w > 0 and self.ready(v) and (accept is None or accept(self.versions[v]))
        ]
        if not shares:
            default = self.default_version
            if accept is None or (default is not None and accept(self.versions[default])):
                return default
            accepted = [
                v for v, mv in self.versions.items() if mv.state is ModelState.READY and accept(mv)
            ]
            return max(accepted, default=None)
        total = sum(w for _, w in shares)
        if caller is None:
            point = random.random() * total
        else:  # the same caller lands on the same version while the split stays
            point = zlib.crc32(f"{self.name}/{caller}".encode()) / 2**32 * total
        for version, weight in shares:
            point -= weight
            if point < 0:
                return version
        return shares[-1][0]

    @property
    def schema_version(self) -> ModelVersion | None:
        """The version whose signature the typed API follows: the default, else the highest
        version with a readable signature."""
        default = self.default_version
        if default is not None:
            return self.versions[default]
        readable = [mv for mv in self.versions.values() if mv.signature is not None]
        return max(readable, key=lambda mv: mv.version) if readable else None
