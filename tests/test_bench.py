"""The benchmark harness (bench/): its pure helpers, and one tiny real run as a smoke test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.load import percentile
from bench.runner import plan_rounds, rotation

ROOT = Path(__file__).resolve().parent.parent


def test_rounds_alternate_the_order_of_servers() -> None:
    assert [rotation(["off", "on"], k) for k in range(3)] == [
        ["off", "on"],
        ["on", "off"],
        ["off", "on"],
    ]
    assert rotation(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_rounds_split_the_duration_into_whole_seconds() -> None:
    assert plan_rounds(10, 5) == (5, 2)
    assert plan_rounds(1, 5) == (1, 1)
    assert plan_rounds(10, 3) == (3, 3)


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 50) == 0.0


@pytest.mark.e2e
def test_one_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "run.py"),
            "--scenario=tracing",
            "--duration=1",
            "--warmup=0",
            "--connections=2",
            "--loadgen=python",
            f"--json={out}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| tracing | gateway tracing=on | 2 |" in done.stdout
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert {"command", "machine", "plan", "scenarios", "failures"} <= report.keys()
    assert report["failures"] == [] and report["plan"]["loadgen"] == "python"
    (scenario,) = report["scenarios"]
    assert scenario["name"] == "tracing" and scenario["baseline"] == "gateway tracing=off"
    assert isinstance(scenario["otlp_sink"], dict)
    for result in scenario["results"]:
        assert {"server", "connections", "rps", "rows_per_s", "p50_ms", "p99_ms", "errors"} <= (
            result.keys()
        )
        assert result["runs"][0]["requests"] > 0 and result["errors"] == 0
        assert result["rps"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
    assert scenario["results"][0]["ratio"] == 1.0
