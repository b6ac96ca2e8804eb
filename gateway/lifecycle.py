"""Keeping the served versions in line with the repository, without dropping a request.

``Lifecycle.reconcile`` scans the repository and applies the difference:

* A version that appears (or whose ``model.onnx`` changes) is loaded on the loader thread,
  warmed up, and only then takes traffic: the new ``ModelVersion`` replaces the old one in a
  single assignment; requests that already hold the old one finish on it, and it is released
  once they have (``in_flight`` at zero, after a grace period for requests that resolved it
  and have not started their run yet).
* A changed ``model.toml`` reloads every served version of its model the same way. One that
  does not parse (an unknown key, a wrong type) loads nothing: the versions serving keep the
  last good file's configuration (description, labels...), each with a ``load_error`` saying
  why; with nothing serving, the versions are FAILED with the reason.
* A file still being written is not loaded: a new or changed file (``model.onnx`` or
  ``model.toml``) must look the same (size, modification time, inode) in two consecutive
  scans. Publishing by writing elsewhere and renaming into place is safe in any case.
* A load that fails leaves the previous load of that version serving (its ``load_error`` says
  why), or the version FAILED with the reason; it is retried only when its files change.
* A version that goes (deleted, or out of the ``[versions]`` policy, or unloaded by an
  operator) stops taking new requests at once (the schema follows at once too), is drained the
  same way and dropped; a model whose directory goes, likewise.

Every change is an event (``ModelEvent``), kept for the API and logged once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from gateway.repository import CONFIG_FILE, ModelSpec, scan_repository
from gateway.runtime import ModelRuntime, file_stamp, release_memory
from gateway.versions import ModelEntry, ModelState, ModelVersion

__all__ = ["Lifecycle", "ModelEvent"]

logger = logging.getLogger(__name__)

Stamp = tuple[int, int, int]
_EVENTS_KEPT = 256
#: Events that say something went wrong: logged as warnings.
_WARNINGS = frozenset({ModelState.FAILED.value, "RELOAD_FAILED"})
_UNSEEN = (-1, -1, -1)  # a stamp no file has: "not looked at yet"


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """Something that happened to a model version: LOADING, READY, FAILED (a version that
    does not serve), RELOAD_FAILED (a changed file or model.toml did not load; the previous
    load still serves), UNLOADED, or a change of the default version, traffic split or shadow
    (DEFAULT_CHANGED, TRAFFIC_CHANGED, SHADOW_CHANGED)."""

    model: str
    version: int | None
    kind: str
    reason: str | None = None
    at: float = field(default_factory=time.time)


class Lifecycle:
    """Loads, swaps and unloads versions of ``runtime``'s models as the repository changes."""

    def __init__(
        self,
        runtime: ModelRuntime,
        root: Path,
        *,
        grace_seconds: float = 0.5,
        drain_seconds: float = 30.0,
        on_event: Callable[[ModelEvent], None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._root = root
        self._grace = grace_seconds
        self._drain = drain_seconds
        self._on_event = on_event
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._lock = asyncio.Lock()
        #: The stamp a new or changed file had at the last scan (loaded when it is the same).
        self._seen: dict[tuple[str, int], Stamp] = {}
        #: Stamps of files whose load failed: not retried until they change.
        self._failed: dict[tuple[str, int], Stamp] = {}
        #: The stamp of each model's model.toml as last applied (None: no file).
        self._configs: dict[str, Stamp | None] = {
            name: _config_stamp(root, name) for name in runtime.entries
        }
        #: The stamp a changed model.toml had at the last scan (applied when it is the same).
        self._configs_seen: dict[str, Stamp | None] = {}
        #: Versions an operator unloaded (version None: the whole model): left alone.
        self.held: set[tuple[str, int | None]] = set()
        self.events: deque[ModelEvent] = deque(maxlen=_EVENTS_KEPT)
        self._releasing: set[asyncio.Task[None]] = set()
        #: Bumped on every change of what is served (the schema follows it).
        self.generation = 0
        #: Called (soon, once per burst of events) after anything changed: the app rebuilds
        #: the schema there if the change shows in it.
        self.on_change: Callable[[], None] | None = None
        self._change_pending = False
        self._listeners: set[asyncio.Queue[ModelEvent]] = set()

    def close(self) -> None:
        for task in self._releasing:
            task.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def reconcile(self, *, settle: bool = True) -> bool:
        """Apply the repository's current state; True when anything changed.

        ``settle=False`` loads new files at once instead of after a second look (for an
        operator's explicit reload, who knows the files are complete).
        """
        async with self._lock:
            before = self.generation
            loop = asyncio.get_running_loop()
            scan = await loop.run_in_executor(self._loader, scan_repository, self._root)
            found = {spec.name: spec for spec in scan.models}
            for name in [n for n in self._runtime.entries if n not in found]:
                await self._remove_model(name, "its files were removed from the repository")
            for spec in found.values():
                await self._reconcile_model(spec, settle=settle)
            return self.generation != before

    async def unload(self, name: str, version: int | None) -> None:
        """Drain and unload a version (or every version) and keep it unloaded."""
        async with self._lock:
            entry = self._runtime.entries.get(name)
            if entry is None:
                return
            self.held.add((name, version))
            for v in [version] if version is not None else sorted(entry.versions):
                if v in entry.versions:
                    await self._retire(entry, v, "unloaded by an operator")

    async def load(self, name: str, version: int | None) -> None:
        """Undo ``unload`` and load what the repository has (at once, no second look)."""
        self.held.discard((name, version))
        self.held.discard((name, None))
        if version is None:
            self.held = {h for h in self.held if h[0] != name}
        key = (name, version) if version is not None else None
        if key is not None:
            self._failed.pop(key, None)
        else:
            self._failed = {k: s for k, s in self._failed.items() if k[0] != name}
        await self.reconcile(settle=False)

    def emit(self, event: ModelEvent) -> None:
        """Record ``event`` (and tell the listener)."""
        self.events.append(event)
        logger.log(
            logging.WARNING if event.kind in _WARNINGS else logging.INFO,
            "model %s version %s %s%s",
            event.model,
            event.version if event.version is not None else "-",
            event.kind,
            f": {event.reason}" if event.reason else "",
            extra={"model": event.model, "version": event.version, "event": event.kind},
        )
        if self._on_event is not None:
            self._on_event(event)
        for queue in self._listeners:
            if queue.full():  # a listener that does not keep up loses the oldest
                queue.get_nowait()
            queue.put_nowait(event)
        self._touch()

    def _touch(self) -> None:
        """What is served changed: bump the generation and let the app follow (soon, once
        per burst of changes)."""
        self.generation += 1
        if self.on_change is not None and not self._change_pending:
            self._change_pending = True
            asyncio.get_running_loop().call_soon(self._changed)

    def _changed(self) -> None:
        self._change_pending = False
        if self.on_change is not None:
            self.on_change()

    def listen(self) -> asyncio.Queue[ModelEvent]:
        """A queue that receives every event from now on (``unlisten`` it when done)."""
        queue: asyncio.Queue[ModelEvent] = asyncio.Queue(maxsize=_EVENTS_KEPT)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[ModelEvent]) -> None:
        self._listeners.discard(queue)

    async def _reconcile_model(self, spec: ModelSpec, *, settle: bool) -> None:
        name = spec.name
        entry = self._runtime.entries.get(name)
        config = _config_stamp(self._root, name)
        if entry is None:
            self._configs[name] = config
            entry = ModelEntry(spec, {})
            self._runtime.entries[name] = entry
        elif config != self._configs.get(name):
            if settle and self._configs_seen.get(name, _UNSEEN) != config:
                self._configs_seen[name] = config  # maybe still being written: look again
                return
            self._configs_seen.pop(name, None)
            self._configs[name] = config
            await self._reconfigure(entry, spec)
            return
        await self._reconcile_versions(entry, spec, settle=settle, reconfigured=False)

    async def _reconfigure(self, entry: ModelEntry, spec: ModelSpec) -> None:
        """Apply a changed model.toml: reload the model's versions with it, or, when it does
        not parse, keep what serves on the last good one and say why."""
        serving = [mv for _, mv in sorted(entry.versions.items()) if mv.state is ModelState.READY]
        if spec.problem is not None and serving:
            for mv in serving:
                mv.load_error = f"{spec.problem}; the last good model.toml still applies"
            self.emit(ModelEvent(entry.name, None, "RELOAD_FAILED", serving[0].load_error))
            return
        if spec.problem is not None:
            entry.spec = spec  # nothing serves: the model's metadata says what is wrong
        await self._reconcile_versions(entry, spec, settle=False, reconfigured=True)

    async def _reconcile_versions(
        self, entry: ModelEntry, spec: ModelSpec, *, settle: bool, reconfigured: bool
    ) -> None:
        name = spec.name
        if (name, None) in self.held:
            return
        # A model.toml that does not parse says nothing of the versions to serve: the last
        # good one decides.
        policy = entry.spec.config.versions if spec.problem is not None else spec.config.versions
        wanted = policy.select(spec.versions)
        wanted -= {v for (n, v) in self.held if n == name and v is not None}
        for version in sorted(set(entry.versions) - wanted):
            await self._retire(entry, version, "no longer in the repository or its policy")
        for version in sorted(wanted):
            await self._reconcile_version(entry, spec, version, settle, reconfigured)

    async def _reconcile_version(
        self, entry: ModelEntry, spec: ModelSpec, version: int, settle: bool, reconfigured: bool
    ) -> None:
        key = (spec.name, version)
        path = spec.versions[version]
        try:
            stamp = file_stamp(path)
        except OSError:  # gone since the scan
            return
        current = entry.versions.get(version)
        if current is not None and current.state is ModelState.UNAVAILABLE:
            current = None  # on its way out (an operator's unload): load it anew
        # Loaded as it is, or failed as it is (then: wait for its files to change).
        known = (current is not None and current.stamp == stamp) or self._failed.get(key) == stamp
        if known and not reconfigured:
            return
        if not known and settle and self._seen.get(key) != stamp:
            self._seen[key] = stamp  # new or still changing: look again next time
            return
        self._seen.pop(key, None)
        await self._load(entry, spec, version, path, stamp)

    async def _load(
        self, entry: ModelEntry, spec: ModelSpec, version: int, path: Path, stamp: Stamp
    ) -> None:
        fresh = ModelVersion(spec.name, version, path)
        current = entry.versions.get(version)
        if current is None:
            entry.versions[version] = fresh  # visible as LOADING meanwhile
        self.emit(ModelEvent(spec.name, version, ModelState.LOADING.value))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._loader, self._runtime.load_version, spec, fresh)
        if fresh.state is ModelState.READY:
            self._failed.pop((spec.name, version), None)
            entry.spec = spec  # the model's configuration is that of its latest good load
            entry.versions[version] = fresh  # the swap: new requests get the new load
            note = f"warm-up skipped: {fresh.warmup_skipped}" if fresh.warmup_skipped else None
            self.emit(ModelEvent(spec.name, version, ModelState.READY.value, note))
            if current is not None and current.state is not ModelState.UNAVAILABLE:
                self._release_later(current, "replaced by a new load of this version")
            return
        self._failed[(spec.name, version)] = stamp
        reason = fresh.reason or "load failed"
        if current is not None and current.state is ModelState.READY:
            current.load_error = f"a new load failed ({reason}); the previous load still serves"
            self.emit(ModelEvent(spec.name, version, "RELOAD_FAILED", current.load_error))
            return
        entry.versions[version] = fresh
        self.emit(ModelEvent(spec.name, version, ModelState.FAILED.value, reason))

    async def _retire(self, entry: ModelEntry, version: int, reason: str) -> None:
        mv = entry.versions.get(version)
        if mv is None or mv.state is ModelState.UNAVAILABLE:
            return  # gone, or already on its way out

        def gone() -> None:
            if entry.versions.get(version) is mv:
                del entry.versions[version]
            self.emit(ModelEvent(entry.name, version, "UNLOADED", reason))

        self._release_later(mv, reason, then=gone)

    async def _remove_model(self, name: str, reason: str) -> None:
        entry = self._runtime.entries.pop(name)  # no new requests find it
        self._configs.pop(name, None)
        self._configs_seen.pop(name, None)
        for version, mv in sorted(entry.versions.items()):
            event = ModelEvent(name, version, "UNLOADED", reason)
            self._release_later(mv, reason, then=functools.partial(self.emit, event))

    async def settled(self) -> None:
        """Wait until every version on its way out has been released."""
        while self._releasing:
            await asyncio.gather(*self._releasing)

    def _release_later(
        self, mv: ModelVersion, reason: str, *, then: Callable[[], None] | None = None
    ) -> None:
        """Stop new requests on ``mv`` now; free it in the background once drained."""
        was_ready = mv.state is ModelState.READY
        mv.state = ModelState.UNAVAILABLE
        mv.reason = reason
        # The default version may have changed, and with it the signature the typed schema
        # follows: rebuild it now, not once the version is released (after the grace period
        # and the drain), or the typed fields keep the old one meanwhile.
        self._touch()
        task = asyncio.get_running_loop().create_task(self._release(mv, was_ready, then))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(
        self, mv: ModelVersion, was_ready: bool, then: Callable[[], None] | None
    ) -> None:
        """Let the requests holding ``mv`` finish, then free its session."""
        if was_ready:
            await asyncio.sleep(self._grace)  # requests that resolved it reach their run
            deadline = time.monotonic() + self._drain
            while mv.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
        if mv.batcher is not None:
            mv.batcher.close()
            mv.batcher = None
        session, mv.session = mv.session, None
        del session
        # Freeing the session's memory (and giving it back to the system) on the loader
        # thread: it can take milliseconds.
        await asyncio.get_running_loop().run_in_executor(self._loader, release_memory)
        if then is not None:
            then()


def _config_stamp(root: Path, name: str) -> Stamp | None:
    try:
        return file_stamp(root / name / CONFIG_FILE)
    except OSError:
        return None
