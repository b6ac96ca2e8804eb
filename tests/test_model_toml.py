"""Editing model.toml while the gateway serves: a changed file reloads the model like a changed
model file; one that does not parse is reported while the last good load serves, with the last
good description and configuration."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from gateway.lifecycle import Lifecycle
from gateway.runtime import ModelRuntime
from gateway.versions import ModelState
from tests.conftest import write_repository
from tests.test_lifecycle import _answer, _run, _scaled

GOOD = 'description = "Doubles."\n'


def _edit(root: Path, name: str, text: str) -> None:
    """Write model.toml the safe way (elsewhere, then renamed into place)."""
    temporary = root / name / ".model.toml.tmp"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, root / name / "model.toml")


async def _poll(lifecycle: Lifecycle, times: int = 2) -> None:
    """Scans as the server polls: a changed file is applied at its second sighting."""
    for _ in range(times):
        await lifecycle.reconcile()


def test_fixing_the_model_toml_of_a_failed_model_loads_it(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(2)}, {"m": "colour = 'red'\n"})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        failed = runtime.entries["m"].versions[1]
        assert failed.state is ModelState.FAILED
        assert failed.reason is not None and "unknown key 'colour'" in failed.reason
        await _poll(lifecycle)
        assert runtime.entries["m"].versions[1].state is ModelState.FAILED  # nothing changed
        _edit(root, "m", GOOD)
        await lifecycle.reconcile()
        assert runtime.entries["m"].versions[1].state is ModelState.FAILED  # first sighting
        await lifecycle.reconcile()
        assert await _answer(runtime, "m") == 2
        assert runtime.entries["m"].spec.config.description == "Doubles."
        assert runtime.entries["m"].versions[1].load_error is None

    _run(root, scenario)


def test_a_bad_model_toml_is_reported_and_the_last_good_one_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(2), "m/2": _scaled(2)}, {"m": GOOD})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        entry = runtime.entries["m"]
        loads = dict(entry.versions)
        _edit(root, "m", GOOD + "colour = 'red'\n")
        with caplog.at_level(logging.INFO, logger="gateway"):
            await _poll(lifecycle, 4)
        assert entry.spec.config.description == "Doubles."  # the last good description
        for version in (1, 2):
            mv = entry.versions[version]
            assert mv is loads[version] and mv.state is ModelState.READY  # not reloaded
            assert mv.load_error is not None
            assert mv.load_error.startswith("m/model.toml: unknown key 'colour'; known keys: ")
            assert mv.load_error.endswith("; the last good model.toml still applies")
        assert await _answer(runtime, "m") == 2
        (event,) = lifecycle.events
        assert (event.version, event.kind) == (None, "RELOAD_FAILED")
        (line,) = [r for r in caplog.records if "colour" in r.getMessage()]
        assert line.levelno == logging.WARNING and "RELOAD_FAILED" in line.getMessage()
        assert str(tmp_path) not in line.getMessage()

        # Fixed, with another description: every version reloads with it.
        _edit(root, "m", 'description = "Doubles, again."\n')
        await _poll(lifecycle)
        assert entry.spec.config.description == "Doubles, again."
        for version in (1, 2):
            mv = entry.versions[version]
            assert mv is not loads[version] and mv.state is ModelState.READY
            assert mv.load_error is None

    _run(root, scenario)


def test_a_changed_model_toml_reloads_the_model_with_it(tmp_path: Path) -> None:
    samples = "[[samples]]\ninput = {{ x = [1.0, 1.0] }}\nexpect = {{ y = [{0}, {0}] }}\n"
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(2)}, {"m": samples.format(2.0)})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        entry = runtime.entries["m"]
        assert entry.versions[1].batcher is not None
        # Batching off: the version is loaded again, without a batcher.
        _edit(root, "m", samples.format(2.0) + "[batching]\nenabled = false\n")
        await _poll(lifecycle)
        assert entry.versions[1].batcher is None and entry.versions[1].load_error is None
        assert [e.kind for e in lifecycle.events] == ["LOADING", "READY"]
        # A sample the model does not answer: the new load fails, the last good one serves.
        _edit(root, "m", 'description = "Triples."\n' + samples.format(3.0))
        await _poll(lifecycle)
        mv = entry.versions[1]
        assert mv.state is ModelState.READY and await _answer(runtime, "m") == 2
        assert mv.load_error is not None and "sample 1: expected y = [3.0, 3.0]" in mv.load_error
        assert entry.spec.config.description is None  # still the last good file's
        assert lifecycle.events[-1].kind == "RELOAD_FAILED"
        events = len(lifecycle.events)
        await _poll(lifecycle)
        assert len(lifecycle.events) == events  # not retried until the file changes again

    _run(root, scenario)


def test_a_model_toml_still_being_written_is_not_applied(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(2)}, {"m": GOOD})

    async def scenario(runtime: ModelRuntime, lifecycle: Lifecycle) -> None:
        config = root / "m" / "model.toml"
        config.write_text('description = "Dou', encoding="utf-8")  # half written
        await lifecycle.reconcile()
        config.write_text('description = "Doubles, new."\n', encoding="utf-8")
        await lifecycle.reconcile()  # it changed since the last look: not yet
        assert not lifecycle.events
        await lifecycle.reconcile()
        assert runtime.entries["m"].spec.config.description == "Doubles, new."
        assert "RELOAD_FAILED" not in [e.kind for e in lifecycle.events]

    _run(root, scenario)
