"""ONNX Runtime sessions: load, warm up, run; the only module that imports onnxruntime.

ONNX Runtime errors are translated here: a run that ORT rejects as an invalid argument, or in
which a categorical encoder meets a value it does not know (``gateway.categories``), is the
caller's fault (``InvalidInputError``); anything else is ours (``InferenceError``).

A run nobody waits for any more (its caller timed out or went away) is stopped: every run
gets ``RunOptions`` whose ``terminate`` flag its ``Cancellation`` sets, and ONNX Runtime checks
it between two operators.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import ctypes.util
import gc
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from gateway.batching import Batcher, BatchPolicy
from gateway.cancellation import Cancellation
from gateway.categories import unknown_category
from gateway.config import SessionOptions, Settings
from gateway.errors import (
    ConfigError,
    GatewayError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestTimeoutError,
)
from gateway.observability import MODEL_ATTRIBUTE, VERSION_ATTRIBUTE, Observer
from gateway.repository import ModelSpec, RepositoryScan
from gateway.samples import check_samples
from gateway.shadow import Shadow, outputs_agree
from gateway.signature import IOKind, IOSpec, read_signature
from gateway.tensors import DataType, numpy_dtype
from gateway.versions import ModelEntry, ModelState, ModelVersion, Warmup

__all__ = ["ModelRuntime", "file_stamp", "release_memory", "synthetic_inputs"]

logger = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelRuntime:
    """Owns the sessions of every model version and runs them on worker threads."""

    def __init__(
        self, settings: Settings, scan: RepositoryScan, *, observer: Observer | None = None
    ) -> None:
        self._settings = settings
        self._root = settings.models
        self._executor = ThreadPoolExecutor(
            max_workers=settings.inference_threads, thread_name_prefix="onnxruntime"
        )
        self.entries: dict[str, ModelEntry] = {
            spec.name: ModelEntry(
                spec,
                {
                    v: ModelVersion(spec.name, v, path)
                    for v, path in spec.versions.items()
                    if v in spec.config.versions.select(spec.versions)
                },
            )
            for spec in scan.models
        }
        self.initial_load_done = False
        self._waiting = 0  # runs submitted to the pool and not started yet
        self._waiting_lock = threading.Lock()
        self._mirrors: set[asyncio.Task[None]] = set()  # shadow runs in the background
        self.observer = Observer()
        self.attach(observer or self.observer)

    def attach(self, observer: Observer) -> None:
        """Record traces and metrics through ``observer`` from now on."""
        self.observer = observer
        observer.meter.create_observable_gauge(
            "gateway.inference.queue_depth",
            callbacks=[self._observe_queue],
            unit="{item}",
            description="Runs waiting for a worker thread (gateway.queue=worker) and rows "
            "waiting to join a batch, per model version (gateway.queue=batch).",
        )
        observer.meter.create_observable_gauge(
            "gateway.model.state",
            callbacks=[self._observe_states],
            description="1 for the state each model version is in, 0 for the others.",
        )

    def _observe_queue(self, options: CallbackOptions) -> Iterable[Observation]:
        yield Observation(self._waiting, {"gateway.queue": "worker"})
        for entry in list(self.entries.values()):
            for mv in list(entry.versions.values()):
                if mv.batcher is not None:
                    yield Observation(
                        mv.batcher.queued_rows,
                        {
                            "gateway.queue": "batch",
                            MODEL_ATTRIBUTE: mv.model,
                            VERSION_ATTRIBUTE: mv.version,
                        },
                    )

    def _observe_states(self, options: CallbackOptions) -> Iterable[Observation]:
        for entry in list(self.entries.values()):
            for mv in list(entry.versions.values()):
                for state in ModelState:
                    yield Observation(
                        1 if mv.state is state else 0,
                        {
                            MODEL_ATTRIBUTE: mv.model,
                            VERSION_ATTRIBUTE: mv.version,
                            "gateway.model.state": state.value,
                        },
                    )

    def load_all(self, *, sessions: bool = True) -> None:
        """Read every version's signature and, with ``sessions``, load and warm it up.

        One bad version is marked FAILED with the reason; it never stops the others.
        """
        for entry in self.entries.values():
            for mv in entry.versions.values():
                self._load_version(entry.spec, mv, sessions=sessions)
                if sessions or mv.state is ModelState.FAILED:
                    # Said here, once: later loads are the lifecycle's events, logged there.
                    level = logging.WARNING if mv.state is ModelState.FAILED else logging.INFO
                    extra = {"model": mv.model, "version": mv.version}
                    logger.log(level, "%s", mv.describe(), extra=extra)
        self.initial_load_done = True

    async def load_all_async(self) -> None:
        """``load_all`` on a worker thread, so the server answers health checks meanwhile."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load_all)

    def close(self) -> None:
        """Release every session and stop the worker threads."""
        for entry in self.entries.values():
            for mv in entry.versions.values():
                if mv.batcher is not None:
                    mv.batcher.close()
                    mv.batcher = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        for entry in self.entries.values():
            for mv in entry.versions.values():
                mv.session = None
                if mv.state is ModelState.READY:
                    mv.state = ModelState.UNAVAILABLE
                    mv.reason = "the server is shutting down"

    def resolve(
        self,
        name: str,
        version: int | None = None,
        *,
        caller: str | None = None,
        accept: Callable[[ModelVersion], bool] | None = None,
    ) -> ModelVersion:
        """The version that serves a request for ``name`` (and ``version``, if given; else
        the model's canary split, sticky per ``caller``, or its default; with ``accept``, only
        among the versions it accepts, when there are any).

        Raises:
            ModelNotFoundError: no such model, or no such version of it.
            ModelNotReadyError: the version exists but is not READY.
        """
        entry = self.entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self.entries)) or "none"
            raise ModelNotFoundError(f"no model named {name!r}; models served: {known}")
        if version is None:
            version = None if accept is None else entry.pick(caller, accept=accept)
            if version is None:
                version = entry.pick(caller)
            if version is None:
                states = ", ".join(
                    f"{v}: {mv.state.value}" for v, mv in sorted(entry.versions.items())
                )
                raise ModelNotReadyError(f"model {name!r} has no READY version ({states})")
        mv = entry.versions.get(version)
        if mv is None:
            known = ", ".join(str(v) for v in sorted(entry.versions))
            raise ModelNotFoundError(f"model {name!r} has no version {version}; versions: {known}")
        if mv.state is not ModelState.READY or mv.session is None:
            why = f": {mv.reason}" if mv.reason else ""
            raise ModelNotReadyError(f"model {name!r} version {version} is {mv.state.value}{why}")
        return mv

    async def run(
        self,
        mv: ModelVersion,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``mv`` on validated ``feeds`` in a worker thread; returns dense arrays by name.

        Through the version's batcher when it has one. Traced as ``gateway.queue`` (the wait)
        and ``gateway.run`` (the run itself), children of the caller's current span.

        Raises:
            OverloadedError: the version's batch queue is full.
        """
        mv.in_flight += 1  # a version is released only once its runs have finished
        try:
            result = await self._run(mv, feeds, outputs)
        finally:
            mv.in_flight -= 1
        entry = self.entries.get(mv.model)
        shadow = entry.shadow if entry is not None else None
        if shadow is not None and shadow.version != mv.version and random.random() < shadow.share:
            task = asyncio.get_running_loop().create_task(
                self._mirror(entry, shadow, feeds, outputs, result)  # type: ignore[arg-type]
            )
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        return result

    async def _mirror(
        self,
        entry: ModelEntry,
        shadow: Shadow,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        served: Mapping[str, np.ndarray],
    ) -> None:
        """Run the shadow version on the same inputs and compare; the answer is discarded."""
        started = time.perf_counter()
        labels: dict[str, AttributeValue] = {
            MODEL_ATTRIBUTE: entry.name,
            VERSION_ATTRIBUTE: shadow.version,
        }
        try:
            mv = self.resolve(entry.name, shadow.version)
            mv.in_flight += 1
            try:
                answer = await self._run(mv, feeds, outputs)
            finally:
                mv.in_flight -= 1
        except Exception as exc:  # counted, never raised: nobody waits for a shadow
            shadow.record(agreed=None, seconds=0.0)
            self.observer.instruments.shadow_requests.add(1, {**labels, "gateway.outcome": "error"})
            logger.debug("shadow run of %s failed: %s", entry.name, exc)
            return
        seconds = time.perf_counter() - started
        agreed = outputs_agree(served, answer, label_output=shadow.label_output)
        shadow.record(agreed=agreed, seconds=seconds)
        outcome = "agreed" if agreed else "disagreed"
        self.observer.instruments.shadow_requests.add(1, {**labels, "gateway.outcome": outcome})
        self.observer.instruments.shadow_duration.record(seconds, labels)

    async def _run(
        self,
        mv: ModelVersion,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
    ) -> dict[str, np.ndarray]:
        if mv.batcher is not None:
            return await mv.batcher.submit(feeds, outputs)
        if mv.session is None:
            raise ModelNotReadyError(f"model {mv.model!r} version {mv.version} was unloaded; retry")
        loop = asyncio.get_running_loop()
        submitted = time.time_ns()
        with self._waiting_lock:
            self._waiting += 1
        # run_in_executor does not carry context variables: the worker gets the caller's, so
        # that its spans have the right parent.
        context = contextvars.copy_context()
        cancellation = Cancellation()
        try:
            return await loop.run_in_executor(
                self._executor,
                context.run,
                self._traced_run,
                mv,
                feeds,
                outputs,
                submitted,
                cancellation,
            )
        except asyncio.CancelledError:  # the caller went away: so does the run
            cancellation.cancel()
            raise

    def _traced_run(
        self,
        mv: ModelVersion,
        feeds: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None,
        submitted: int,
        cancellation: Cancellation,
    ) -> dict[str, np.ndarray]:
        started = time.time_ns()
        with self._waiting_lock:
            self._waiting -= 1
        observer, instruments = self.observer, self.observer.instruments
        model: dict[str, AttributeValue] = {MODEL_ATTRIBUTE: mv.model}
        labels: dict[str, AttributeValue] = {
            MODEL_ATTRIBUTE: mv.model,
            VERSION_ATTRIBUTE: mv.version,
        }
        observer.tracer.start_span("gateway.queue", attributes=model, start_time=submitted).end(
            end_time=started
        )
        instruments.queue_wait.record((started - submitted) / 1e9, model)
        rows = _rows(feeds)
        with observer.span(
            "gateway.run",
            {**labels, "gateway.batch.size": rows, "gateway.batch.requests": 1},
        ):
            result = _run_cancellable(mv, feeds, outputs, cancellation)
        instruments.inference_duration.record((time.time_ns() - started) / 1e9, labels)
        instruments.batch_size.record(rows, labels)
        return result

    def load_version(self, spec: ModelSpec, mv: ModelVersion) -> None:
        """Load and warm up ``mv`` (blocking: call it on a worker thread); it ends READY or
        FAILED with the reason."""
        self._load_version(spec, mv, sessions=True)

    def _load_version(self, spec: ModelSpec, mv: ModelVersion, *, sessions: bool) -> None:
        labels: dict[str, AttributeValue] = {
            MODEL_ATTRIBUTE: mv.model,
            VERSION_ATTRIBUTE: mv.version,
        }
        with self.observer.span("gateway.load", labels) as span:
            self._load(spec, mv, sessions=sessions)
            if mv.state is ModelState.FAILED:
                span.set_status(Status(StatusCode.ERROR, "MODEL_LOAD_FAILED"))
        if sessions:
            self.observer.instruments.load_duration.record(
                mv.load_seconds or 0.0, {**labels, "gateway.model.state": mv.state.value}
            )

    def _load(self, spec: ModelSpec, mv: ModelVersion, *, sessions: bool) -> None:
        started = time.perf_counter()
        mv.state = ModelState.LOADING
        try:
            mv.stamp = file_stamp(mv.path)  # also for a bad model.toml: the file was seen
            if spec.problem is not None:
                raise ModelLoadError(spec.problem)
            expected = spec.config.sha256.get(mv.version)
            if expected is not None and sessions:
                _check_digest(mv.path, expected)
            mv.signature = read_signature(mv.path)
            if sessions:
                options = self._settings.session.merged(spec.config.session, where="session")
                mv.session = _create_session(mv.path, options)
                self._warm_up(spec, mv)
                check_samples(
                    mv.model,
                    mv.signature,
                    spec.config,
                    lambda feeds, outputs: _run_session(mv, feeds, outputs),
                )
                mv.batcher = self._batcher(spec, mv)
        except (GatewayError, OSError) as exc:
            mv.session = None
            mv.load_seconds = time.perf_counter() - started
            mv.state = ModelState.FAILED
            mv.reason = self._public_reason(exc)
            return
        mv.load_seconds = time.perf_counter() - started
        mv.state = ModelState.READY if sessions else ModelState.UNAVAILABLE
        mv.reason = None if sessions else "signature read only"

    def _warm_up(self, spec: ModelSpec, mv: ModelVersion) -> None:
        """One run before the version takes traffic, so that the first request does not pay
        for ONNX Runtime's first-run allocations.

        Samples, when model.toml has them, are the warm-up (``check_samples`` runs them): real
        rows, where synthetic zeros and empty strings can trip a categorical encoder. A model
        that rejects the synthetic row is not broken: its inputs may be parameters (a target
        shape, split sizes, indices) that zeros do not fit. It serves unwarmed, and says why.
        """
        if spec.config.samples:
            mv.warmup = Warmup.SAMPLES  # they run whatever the setting: they gate the load
            return
        if not self._settings.warmup:
            mv.warmup = Warmup.OFF
            return
        assert mv.signature is not None and mv.session is not None
        try:
            # Quiet: ONNX Runtime would log a rejection as an error of its own, on stderr.
            mv.session.run(None, synthetic_inputs(mv.signature.inputs), _QUIET_RUN)
        except Exception as exc:  # ORT raises InvalidArgument, Fail, RuntimeException...
            mv.warmup = Warmup.SKIPPED
            mv.warmup_skipped = self._public_reason(
                f"the model rejected the synthetic input ({_SYNTHETIC}): {_ort_message(exc)}"
            )
            return
        mv.warmup = Warmup.SYNTHETIC

    def _batcher(self, spec: ModelSpec, mv: ModelVersion) -> Batcher | None:
        """A batcher for ``mv`` if batching is on and its rows can be stacked and split
        (``Signature.stackable``)."""
        settings, table = self._settings, spec.config.batching
        signature = mv.signature
        assert signature is not None
        if not table.get("enabled", settings.batching):
            return None
        if not signature.stackable:
            return None
        policy = BatchPolicy(
            max_batch_size=table.get("max_batch_size", settings.max_batch_size),
            max_delay_us=table.get("max_delay_us", settings.max_delay_us),
            max_queue=table.get("max_queue", settings.max_queue),
        )
        return Batcher(
            model=mv.model,
            version=mv.version,
            run=lambda feeds, outputs, cancellation: _run_cancellable(
                mv, feeds, outputs, cancellation
            ),
            executor=self._executor,
            policy=policy,
            observer=lambda: self.observer,
            max_in_flight=settings.inference_threads,
        )

    def _public_reason(self, exc: BaseException | str) -> str:
        # Reasons are shown to clients; keep repository paths, and the source locations ONNX
        # Runtime puts in some messages, out of them.
        text = exc.message if isinstance(exc, GatewayError) else str(exc)
        text = _SOURCE_LOCATION.sub("", text)
        return text.replace(str(self._root.resolve()), "<models>").replace(
            str(self._root), "<models>"
        )


_QUIET_RUN = ort.RunOptions()
_QUIET_RUN.log_severity_level = 4  # fatal only
#: What the synthetic warm-up row is, as its skip reason says.
_SYNTHETIC = "zeros and empty strings, dynamic dimensions 1"
#: "/onnxruntime_src/.../reshape_helper.h:91 onnxruntime::ReshapeHelper::ReshapeHelper(...) "
#: before ORT's message proper.
_SOURCE_LOCATION = re.compile(r"/\S+\.(?:h|hpp|cc|cpp):\d+ (?:[\w:~<>]+\([^)]*\) )?")


def release_memory() -> None:
    """Give freed memory back to the system. glibc keeps what a released session freed in its
    arenas, fragmented: without this, resident memory grows by a fraction of a model with
    every load/unload cycle (measured: +50 MiB over 200 cycles of a 4 MiB model)."""
    gc.collect()  # cheap once startup objects are frozen (gc.freeze, after the initial load)
    if _malloc_trim is not None:
        _malloc_trim(0)


def _libc_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None
    return trim


_malloc_trim = _libc_malloc_trim()


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(size, mtime_ns, inode) of ``path``: it changes when the file is rewritten or replaced."""
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ino


def _check_digest(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ModelLoadError(
            f"checksum mismatch: model.toml's sha256 is {expected[:12]}..., the file's is "
            f"{digest.hexdigest()[:12]}...; not loaded"
        )


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    """Rows in a run: the first dimension of its inputs (1 for scalars)."""
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def synthetic_inputs(inputs: Iterable[IOSpec]) -> dict[str, np.ndarray]:
    """One synthetic row per input (dynamic dimensions as 1, zeros or empty strings)."""
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = tuple(1 if d < 0 else d for d in spec.shape)
        if spec.datatype is DataType.BYTES:
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
    return feeds


def _create_session(path: Path, options: SessionOptions) -> ort.InferenceSession:
    available = set(ort.get_available_providers())
    missing = [p for p in options.execution_providers if p not in available]
    if missing:
        raise ConfigError(
            f"execution provider {missing[0]} is not available; available: "
            + ", ".join(sorted(available))
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.graph_optimization_level = _OPT_LEVELS[options.graph_optimization_level]
    # Fatal only: ONNX Runtime writes its log lines to stderr itself, coloured and outside the
    # log format (JSON lines). Every error it would log also reaches us as the exception of
    # the load or run, which is translated and logged (with the model) here.
    so.log_severity_level = 4
    try:
        return ort.InferenceSession(
            str(path), sess_options=so, providers=list(options.execution_providers)
        )
    except Exception as exc:  # ORT raises Fail, InvalidGraph, NotImplemented, RuntimeException...
        raise ModelLoadError(f"ONNX Runtime cannot load the model: {_ort_message(exc)}") from exc


def _run_cancellable(
    mv: ModelVersion,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None,
    cancellation: Cancellation,
) -> dict[str, np.ndarray]:
    """``_run_session`` that stops once ``cancellation`` is cancelled."""
    options = ort.RunOptions()
    cancellation.on_cancel(lambda: _terminate(options))
    if cancellation.cancelled:  # before it started: nothing to stop
        raise _stopped()
    try:
        return _run_session(mv, feeds, outputs, options)
    except InferenceError as exc:  # ORT fails a terminated run as its generic FAIL
        if options.terminate:
            raise _stopped() from exc
        raise


def _run_session(
    mv: ModelVersion,
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str] | None,
    options: ort.RunOptions | None = None,
) -> dict[str, np.ndarray]:
    session, signature = mv.session, mv.signature
    if session is None or signature is None:
        raise ModelNotReadyError(f"model {mv.model!r} version {mv.version} is not loaded")
    names = list(outputs) if outputs is not None else [o.name for o in signature.outputs]
    try:
        values: list[Any] = session.run(names, dict(feeds), options)
    except ort.capi.onnxruntime_pybind11_state.InvalidArgument as exc:
        raise InvalidInputError(f"the model rejected the input: {_ort_message(exc)}") from exc
    except Exception as exc:
        # A categorical encoder refusing a value fails the run as ORT's generic FAIL.
        refused = unknown_category(signature.categories, str(exc), feeds)
        if refused is not None:
            raise refused from exc
        raise InferenceError(f"ONNX Runtime failed: {_ort_message(exc)}") from exc
    result: dict[str, np.ndarray] = {}
    for name, value in zip(names, values, strict=True):
        spec = signature.output(name)
        assert spec is not None  # names come from the signature or were validated against it
        result[name] = _densify(value, spec)
    return result


def _stopped() -> RequestTimeoutError:
    # Nobody reads it (every caller is gone): it ends the run quietly, not as our failure.
    return RequestTimeoutError("the run was stopped: every request waiting for it had gone")


def _terminate(options: ort.RunOptions) -> None:
    # ONNX Runtime reads the flag between operators, from the thread running the session.
    options.terminate = True


def _densify(value: Any, spec: IOSpec) -> np.ndarray:
    """Turn ORT's Python value for an output into the array the signature promises."""
    if spec.kind is IOKind.TENSOR:
        return np.asarray(value)
    rows: list[Mapping[Any, Any]] = [value] if spec.kind is IOKind.MAP else list(value)
    keys = list(spec.keys) if spec.keys else sorted(rows[0]) if rows else []
    dense = np.array([[row[k] for k in keys] for row in rows], dtype=numpy_dtype(spec.datatype))
    if not rows:
        dense = dense.reshape(0, len(keys))
    return dense[0] if spec.kind is IOKind.MAP else dense


def _ort_message(exc: BaseException) -> str:
    # ORT messages start with "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : "; keep the rest.
    text = str(exc)
    return text.rsplit(" : ", 1)[-1].strip() if text.startswith("[ONNXRuntimeError]") else text
