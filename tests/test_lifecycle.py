"""The model lifecycle in-process: versions appear, swap, fail safely, go, obey the policy."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from gateway.config import Settings
from gateway.lifecycle import Lifecycle
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.versions import ModelState, Warmup
from tests.conftest import make_model, tensor_info, write_repository

F = TensorProto.FLOAT


def _scaled(factor: float) -> onnx.ModelProto:
    """y = x * factor: answers tell the loads apart."""
    return make_model(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [tensor_info("x", F, ["N", 2])],
        [tensor_info("y", F, ["N", 2])],
        initializers=[helper.make_tensor("k", F, [], [factor])],
    )


def _rejects_warmup() -> onnx.ModelProto:
    """Loads, but rejects the synthetic warm-up row: its shape input is all zeros there."""
    return make_model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [tensor_info("x", F, ["N", 2]), tensor_info("s", TensorProto.INT64, [1])],
        [tensor_info("y", F, ["M"])],
    )


def _unloadable() -> onnx.ModelProto:
    """A valid ONNX graph that ONNX Runtime cannot load: an operator nobody implements."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"], domain="com.example")],
        "unloadable",
        [tensor_info("x", F, ["N", 2])],
        [tensor_info("y", F, ["N", 2])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def _publish(root: Path, key: str, model: onnx.ModelProto | bytes) -> None:
    """Write then rename, the safe way to publish (see README)."""
    target = root / key / "model.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    os.replace(temporary, target)


def _run(
    root: Path,
    scenario: Callable[[ModelRuntime, Lifecycle], Awaitable[None]],
    *,
    grace: float = 0.05,
    **env: str,
) -> None:
    settings = Settings.load(environ={"GATEWAY_MODELS": str(root), **env})
    gc.freeze()  # as the application does at start
    runtime = ModelRuntime(settings, scan_repository(root))
    runtime.load_all()

    async def main() -> None:
        lifecycle = Lifecycle(runtime, root, grace_seconds=grace)
        try:
            await scenario(runtime, lifecycle)
        finally:
            lifecycle.close()

    try:
        asyncio.run(main())
    finally:
        runtime.close()
        gc.unfreeze()


async def _answer(runtime: ModelRuntime, name: str, version: int | None = None) -> float:
    mv = runtime.resolve(name, version)
    out = await runtime.run(mv, {"x": np.ones((1, 2), np.float32)})
    return float(out["y"][0, 0])


def test_a_new_version_loads_after_a_second_look_and_takes_the_default(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        assert await _answer(runtime, "m") == 1
        _publish(root, "m/2", _scaled(2))
        assert not await lifecycle.reconcile()  # first sighting: maybe still being written
        assert 2 not in runtime.entries["m"].versions
        assert await lifecycle.reconcile()
        assert runtime.entries["m"].default_version == 2 and await _answer(runtime, "m") == 2
        assert await _answer(runtime, "m", 1) == 1  # policy "all": v1 still served
        kinds = [(e.version, e.kind) for e in lifecycle.events]
        assert kinds == [(2, "LOADING"), (2, "READY")]
        assert not await lifecycle.reconcile()  # nothing changed

    _run(root, scenario)


def test_a_rewritten_version_swaps_and_requests_in_flight_finish_on_the_old_load(
    tmp_path: Path,
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        old = runtime.resolve("m")
        old.in_flight += 1  # a request holding the old load
        _publish(root, "m/1", _scaled(3))
        await lifecycle.reconcile(settle=False)
        new = runtime.resolve("m")
        assert new is not old and await _answer(runtime, "m") == 3
        assert old.state is ModelState.UNAVAILABLE
        await asyncio.sleep(0.2)  # past the grace period
        assert old.session is not None  # not released while a request holds it
        old.in_flight -= 1
        await lifecycle.settled()
        assert old.session is None and old.batcher is None

    _run(root, scenario)


def test_bad_files_leave_the_previous_load_serving_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _scaled(1)
    digest = hashlib.sha256(good.SerializeToString()).hexdigest()
    root = write_repository(
        tmp_path / "repo",
        {"m/1": good, "c/1": good},
        {"c": f'[sha256]\n"1" = "{digest}"\n'},
    )
    bad: dict[str, onnx.ModelProto | bytes] = {
        "corrupt": b"\x08\x07 this is not an ONNX model",
        "truncated": good.SerializeToString()[: len(good.SerializeToString()) // 2],
        "unsupported operator": _unloadable(),
    }

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        caplog.set_level(logging.INFO, logger="gateway")
        for what, content in bad.items():
            _publish(root, "m/1", content)
            await lifecycle.reconcile(settle=False)
            mv = runtime.resolve("m")
            assert mv.state is ModelState.READY and await _answer(runtime, "m") == 1, what
            assert mv.load_error is not None and "previous load still serves" in mv.load_error
            # The version serves: the event and its log line say the reload failed, not
            # that the version did.
            assert lifecycle.events[-1].kind == "RELOAD_FAILED" and lifecycle.events[-1].reason
            events = len(lifecycle.events)
            await lifecycle.reconcile(settle=False)
            assert len(lifecycle.events) == events, f"{what}: retried though unchanged"
        # Said once per failed reload, as what it is: the version did not fail, it serves.
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) == len(bad)
        assert all(line.startswith("model m version 1 RELOAD_FAILED: ") for line in said), said
        # A new version that fails: FAILED with the reason, the default stays.
        _publish(root, "m/2", bad["corrupt"])
        await lifecycle.reconcile(settle=False)
        failed = runtime.entries["m"].versions[2]
        assert failed.state is ModelState.FAILED and failed.reason
        assert runtime.entries["m"].default_version == 1
        # A checksum mismatch: the file changed, model.toml did not.
        _publish(root, "c/1", _scaled(5))
        await lifecycle.reconcile(settle=False)
        mv = runtime.resolve("c")
        assert await _answer(runtime, "c") == 1
        assert mv.load_error is not None and "checksum mismatch" in mv.load_error

    _run(root, scenario)


def test_a_version_that_rejects_the_synthetic_warm_up_takes_traffic(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        _publish(root, "m/2", _rejects_warmup())
        with caplog.at_level(logging.INFO, logger="gateway"):
            await lifecycle.reconcile(settle=False)
        mv = runtime.resolve("m")
        assert mv.version == 2 and mv.warmup is Warmup.SKIPPED
        ready = lifecycle.events[-1]
        assert (ready.version, ready.kind) == (2, "READY")
        assert ready.reason == f"warm-up skipped: {mv.warmup_skipped}"
        out = await runtime.run(
            mv, {"x": np.ones((2, 2), np.float32), "s": np.array([-1], np.int64)}
        )
        assert out["y"].tolist() == [1.0, 1.0, 1.0, 1.0]
        # One line per event, each said once: LOADING, then READY with the reason.
        lines = [r.getMessage() for r in caplog.records]
        assert lines == ["model m version 2 LOADING", f"model m version 2 READY: {ready.reason}"]

    _run(root, scenario)


def test_the_schema_follows_an_unload_at_once(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1), "m/2": _scaled(2)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        changes: list[int | None] = []
        lifecycle.on_change = lambda: changes.append(runtime.entries["m"].default_version)
        await lifecycle.unload("m", 2)
        await asyncio.sleep(0.05)  # the grace period is 0.5 s: version 2 is not released yet
        assert runtime.entries["m"].versions[2].session is not None
        # The default changed when version 2 stopped taking requests: the schema, which
        # follows the default's signature, is told then, not after the drain.
        assert changes == [1]
        await lifecycle.settled()

    _run(root, scenario, grace=0.5)


def test_a_version_that_fails_its_samples_does_not_take_traffic(tmp_path: Path) -> None:
    samples = "[[samples]]\ninput = { x = [1.0, 1.0] }\nexpect = { y = [1.0, 1.0] }\n"
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)}, {"m": samples})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        assert runtime.resolve("m").state is ModelState.READY  # passes its sample
        _publish(root, "m/1", _scaled(2))  # a "retrained" model that answers otherwise
        await lifecycle.reconcile(settle=False)
        mv = runtime.resolve("m")
        assert await _answer(runtime, "m") == 1
        assert mv.load_error is not None
        assert "sample 1: expected y = [1.0, 1.0], the model answered [2.0, 2.0]" in mv.load_error

    _run(root, scenario)


def test_the_version_policy_and_removals_drain_and_unload(tmp_path: Path) -> None:
    root = write_repository(
        tmp_path / "repo",
        {"m/1": _scaled(1), "m/2": _scaled(2), "gone/1": _scaled(7)},
        {"m": '[versions]\npolicy = "latest"\nlatest = 1\n'},
    )

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        assert sorted(runtime.entries["m"].versions) == [2]  # the policy applies at start
        _publish(root, "m/3", _scaled(3))
        await lifecycle.reconcile(settle=False)
        assert await _answer(runtime, "m") == 3
        await lifecycle.settled()
        assert sorted(runtime.entries["m"].versions) == [3]
        (root / "gone" / "1" / "model.onnx").unlink()
        (root / "gone" / "1").rmdir()
        (root / "gone").rmdir()
        await lifecycle.reconcile()
        assert "gone" not in runtime.entries
        await lifecycle.settled()
        assert ("gone", 1, "UNLOADED") in [(e.model, e.version, e.kind) for e in lifecycle.events]

    _run(root, scenario)


def test_an_operator_unloads_and_loads_again(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1), "m/2": _scaled(2)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        await lifecycle.unload("m", 2)
        await lifecycle.settled()
        assert sorted(runtime.entries["m"].versions) == [1]
        await lifecycle.reconcile(settle=False)
        assert sorted(runtime.entries["m"].versions) == [1]  # held: not loaded back
        await lifecycle.load("m", 2)
        assert runtime.entries["m"].default_version == 2

    _run(root, scenario)


def test_canary_split_is_sticky_per_caller_and_pinning_is_a_rollback(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1), "m/2": _scaled(2)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        entry = runtime.entries["m"]
        entry.split = ((1, 90.0), (2, 10.0))
        picks = [runtime.resolve("m").version for _ in range(2000)]
        assert 100 < picks.count(2) < 300  # about 10%
        sticky: dict[str, Any] = {}
        for caller in (f"user-{i}" for i in range(200)):
            sticky[caller] = {runtime.resolve("m", caller=caller).version for _ in range(5)}
        assert all(len(v) == 1 for v in sticky.values())
        entry.split = ()
        entry.pinned = 1
        assert runtime.resolve("m").version == 1
        entry.pinned = None
        assert runtime.resolve("m").version == 2

    _run(root, scenario)


def _rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_load_unload_cycles_do_not_grow_memory(tmp_path: Path) -> None:
    weights = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [tensor_info("x", F, ["N", 1024])],
        [tensor_info("y", F, ["N", 1024])],
        initializers=[onnx.numpy_helper.from_array(weights, "w")],
    )
    root = write_repository(tmp_path / "repo", {"big/1": model})
    sizes: list[float] = []

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        for _ in range(200):
            await lifecycle.unload("big", 1)
            await lifecycle.settled()
            await lifecycle.load("big", 1)
            mv = runtime.resolve("big")
            await runtime.run(mv, {"x": np.ones((1, 1024), np.float32)})
            sizes.append(_rss_mib())

    _run(root, scenario, grace=0)
    settled = sizes[19]
    print(
        f"RSS after cycle 20: {settled:.1f} MiB, after 200: {sizes[-1]:.1f} MiB, "
        f"max: {max(sizes[20:]):.1f} MiB"
    )
    assert max(sizes[20:]) <= settled * 1.10
