"""The benchmark harness (bench/): its pure helpers, and one tiny real run as a smoke test."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from starlette.applications import Starlette

from bench.baselines import bare
from bench.dense import DENSE_LAYERS, build_dense_model, write_dense_repository
from bench.load import LoadResult, percentile
from bench.runner import evaluate_goal, plan_rounds, rotation
from bench.scenarios import Goal, build_scenarios, iris_batch_rows
from bench.swap import Swapper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


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


def _run(rps: float, p50: float, p99: float) -> LoadResult:
    return LoadResult(int(rps), 1.0, 0, p50, p99, 0)


def test_goals_pair_each_round_with_the_same_round_of_the_reference() -> None:
    target = [_run(100, 1.0, 4.0), _run(300, 1.2, 5.0), _run(50, 2.0, 9.0)]
    reference = [_run(50, 0.9, 2.0), _run(100, 1.0, 2.0), _run(50, 1.5, 2.0)]
    ratio = evaluate_goal(Goal("g", "rps_ratio", 2.0), target, reference)
    assert ratio.per_round == [2.0, 3.0, 1.0] and ratio.value == 2.0 and ratio.met
    p99 = evaluate_goal(Goal("g", "p99_ratio", 2.0), target, reference)
    assert p99.per_round == [2.0, 2.5, 4.5] and p99.value == 2.5 and not p99.met
    p50 = evaluate_goal(Goal("g", "p50_diff_ms", 0.3), target, reference)
    assert p50.value == pytest.approx(0.2) and p50.met
    assert not evaluate_goal(Goal("g", "p50_diff_ms", 0.3), [], []).met


def test_scenarios_name_their_servers_consistently(tmp_path: Path) -> None:
    scenarios = build_scenarios(MODELS, tmp_path)
    assert list(scenarios) == [
        "tracing",
        "iris-typed",
        "iris-persisted",
        "iris-256",
        "dense",
        "infer-b64",
        "latency",
        "swap",
    ]
    for scenario in scenarios.values():
        names = [t.name for t in scenario.targets]
        assert len(set(names)) == len(names) and scenario.baseline in names
        for goal in scenario.goals:
            assert goal.target in names and (goal.reference or scenario.baseline) in names
    assert list(tmp_path.iterdir()) == []  # repositories are written only when a scenario runs
    assert scenarios["latency"].connections == 1 and scenarios["latency"].probe is not None
    persisted = scenarios["iris-persisted"].targets[1]
    assert persisted.prime is not None and b'"query"' not in persisted.body


def test_the_dense_model_is_the_specified_mlp_and_runs_on_any_batch_size() -> None:
    model = build_dense_model()
    gemms = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert [n.op_type for n in model.graph.node].count("Relu") == len(DENSE_LAYERS) - 2
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    assert [weights[g.input[1]] for g in gemms] == list(
        zip(DENSE_LAYERS[:-1], DENSE_LAYERS[1:], strict=True)
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (x,), (y,) = session.get_inputs(), session.get_outputs()
    assert (x.name, x.shape[1], y.name, y.shape[1]) == ("x", 512, "y", 10)
    for rows in (1, 5):
        batch = np.random.default_rng(rows).standard_normal((rows, 512)).astype(np.float32)
        (out,) = session.run(None, {"x": batch})
        assert out.shape == (rows, 10) and np.isfinite(out).all()
        assert 0.01 < float(np.abs(out).mean()) < 10  # ~1/sqrt(fan_in) keeps it of order one
    again = build_dense_model()
    assert again.graph.initializer[0].raw_data == model.graph.initializer[0].raw_data


def test_bare_runs_any_models_rows_as_one_session_run(tmp_path: Path) -> None:
    path = write_dense_repository(tmp_path, (4, 8, 3), seed=1)
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 0.0]]
    (want,) = ort.InferenceSession(str(path)).run(None, {"x": np.asarray(rows, np.float32)})
    answer, short, unknown, no_iris = _post(
        bare.create_app(tmp_path),
        ("/run/dense", {"inputs": rows}),
        ("/run/dense", {"inputs": [[1.0, 2.0]]}),
        ("/run/nothing", {"inputs": rows}),
        ("/predict", {"inputs": [[5.1, 3.5, 1.4, 0.2]]}),
    )
    assert answer.status_code == 200
    assert np.allclose(answer.json()["outputs"]["y"], want, rtol=1e-5)
    assert (short.status_code, unknown.status_code, no_iris.status_code) == (400, 404, 404)


def test_the_256_row_checks_accept_right_answers_and_reject_wrong_ones(tmp_path: Path) -> None:
    scenario = build_scenarios(MODELS, tmp_path)["iris-256"]
    targets = {t.name: t for t in scenario.targets}
    rows = iris_batch_rows(256)
    (answer,) = _post(bare.create_app(MODELS), ("/predict", {"inputs": rows}))
    assert targets["bare"].check(answer.content) is None
    predictions = answer.json()["predictions"]
    labels = ["setosa", "versicolor", "virginica"]
    indices = [labels.index(p["label"]) for p in predictions]
    probabilities = [[c["probability"] for c in p["probabilities"]] for p in predictions]

    def infer(label_indices: list[int]) -> bytes:
        outputs = [
            {"name": "output_label", "b64": _b64(label_indices, "<i8")},
            {"name": "output_probability", "b64": _b64(probabilities, "<f4")},
        ]
        return json.dumps({"data": {"infer": {"outputs": outputs}}}).encode()

    check = targets["gateway infer b64"].check
    assert check(infer(indices)) is None
    assert check(infer([(indices[0] + 1) % 3, *indices[1:]])) == "labels differ from ONNX Runtime's"
    batch = {"data": {"predict": {"irisBatch": predictions[:-1]}}}
    assert "255 irisBatch" in str(targets["gateway irisBatch"].check(json.dumps(batch).encode()))


def _post(app: Starlette, *requests: tuple[str, Any]) -> list[httpx.Response]:
    """POST each (path, JSON body) to ``app`` in process, inside its lifespan."""

    async def send() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                return [await client.post(path, json=body) for path, body in requests]

    return asyncio.run(send())


def _b64(values: Any, dtype: str) -> str:
    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


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


def test_the_swapper_republishes_the_same_bytes_as_a_new_file(tmp_path: Path) -> None:
    swap = build_scenarios(MODELS, tmp_path)["swap"]
    assert swap.prepare is not None
    swap.prepare()
    (swapping,) = [t for t in swap.targets if t.during is not None]
    published = swapping.server.models / "iris" / "2" / "model.onnx"
    stamp = published.stat()
    before = (stamp.st_ino, stamp.st_mtime_ns), published.read_bytes()
    swapper = Swapper(published, 0.01)
    with swapper:
        time.sleep(0.2)
    assert swapper.publishes >= 3
    after = published.stat()
    # A new file (the inode number may be recycled; the modification time is new).
    assert (after.st_ino, after.st_mtime_ns) != before[0] and published.read_bytes() == before[1]
    assert [p.name for p in published.parent.iterdir()] == ["model.onnx"]  # no leftovers
