"""Converted models take and answer rows: a free batch dimension on every input and output,
whatever the converter declared, checked before a version is written."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn import datasets
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.linear_model import RidgeClassifier

from gateway.cli import main
from gateway.convert import Sample, Source, sklearn_source, write_version
from gateway.errors import ConfigError
from tests.conftest import make_model, start_server, stop_server, tensor_info

IRIS = datasets.load_iris()
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _free_everywhere(path: Path) -> None:
    graph = onnx.load(str(path)).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims and not dims[0].HasField("dim_value"), (path, value.name, dims)


def _iris_csv(path: Path, rows: slice = slice(None, None, 2)) -> Path:
    lines = [",".join(FEATURES)] + [",".join(map(str, r)) for r in IRIS.data[rows]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _convert(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["convert", *args]) == 0


def test_boosted_trees_declare_a_free_batch_dimension(tmp_path: Path) -> None:
    import lightgbm
    import xgboost

    x, y = IRIS.data.astype(np.float32), IRIS.target
    # onnxmltools declares a LightGBM classifier's label INT64[1].
    lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y).booster_.save_model(
        str(tmp_path / "lgb.txt")
    )
    lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y == 0).booster_.save_model(
        str(tmp_path / "lgbbinary.txt")
    )
    lightgbm.LGBMRegressor(n_estimators=5, verbose=-1).fit(x, y).booster_.save_model(
        str(tmp_path / "lgbreg.txt")
    )
    xgboost.XGBClassifier(n_estimators=5).fit(x, y).save_model(tmp_path / "xgb.json")
    xgboost.XGBRegressor(n_estimators=5).fit(x, y).save_model(tmp_path / "xgbreg.json")
    sample = _iris_csv(tmp_path / "sample.csv")
    repo = tmp_path / "repo"
    for path in sorted([*tmp_path.glob("*.txt"), *tmp_path.glob("*.json")]):
        flag, name = ("--lightgbm" if path.suffix == ".txt" else "--xgboost"), path.stem
        _convert(flag, str(path), "--sample", str(sample), "--name", name, "--repo", str(repo))
        _free_everywhere(repo / name / "1" / "model.onnx")


def test_scikit_learn_converters_that_fix_the_batch_dimension_are_repaired(
    tmp_path: Path,
) -> None:
    # skl2onnx declares QuadraticDiscriminantAnalysis's label [1, N] (and answers that shape),
    # and a binary RidgeClassifier's scores [N, 2] (answering [N, 1]).
    sample = Sample({f: IRIS.data[::3, i] for i, f in enumerate(FEATURES)})
    repo = tmp_path / "repo"
    for name, estimator, target in (
        ("qda", QuadraticDiscriminantAnalysis(), IRIS.target),
        ("ridge", RidgeClassifier(), (IRIS.target == 0).astype(int)),
    ):
        estimator.fit(IRIS.data, target)
        done = write_version(sklearn_source(estimator, sample), sample, repo, name, 1e-4, None)
        assert done.parity["label_agreement"] == 1.0
        _free_everywhere(done.path)
        outputs = {o.name: o for o in onnx.load(str(done.path)).graph.output}
        assert len(outputs["label"].type.tensor_type.shape.dim) == 1  # one label per row
        if name == "ridge":
            assert outputs["probabilities"].type.tensor_type.shape.dim[1].dim_value == 1


def _reduced(tmp_path: Path) -> tuple[Source, Sample]:
    """A model that answers one row whatever it is given (a mean over the rows)."""
    model = make_model(
        [helper.make_node("ReduceMean", ["input"], ["variable"], axes=[0], keepdims=1)],
        [tensor_info("input", TensorProto.FLOAT, [None, 2])],
        [tensor_info("variable", TensorProto.FLOAT, [None, 2])],
        opset=17,
    )
    sample = Sample({"a": np.arange(4.0), "b": np.arange(4.0)})
    original = {"label": np.full((4, 2), 1.5)}
    provenance = dict.fromkeys(("framework", "framework_version", "estimator"), "test")
    provenance.update(converter="test", converter_version="0")
    return Source(model, ["input"], original, [], provenance), sample


def test_a_model_that_does_not_answer_row_by_row_is_refused(tmp_path: Path) -> None:
    source, sample = _reduced(tmp_path)
    with pytest.raises(ConfigError, match="answers shape \\[1, 2\\] for 4 rows"):
        write_version(source, sample, tmp_path / "repo", "mean", 1e-4, None)
    assert not (tmp_path / "repo").exists()


def _metric(text: str, name: str, model: str) -> float:
    pattern = rf'^{name}{{[^}}]*gateway_model_name="{model}"[^}}]*}} (\S+)$'
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
    assert len(values) == 1, (name, model, values)
    return values[0]


@pytest.mark.e2e
def test_a_served_lightgbm_classifier_batches_rows_without_warnings(tmp_path: Path) -> None:
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1)
    model.fit(IRIS.data.astype(np.float32), IRIS.target)
    model.booster_.save_model(str(tmp_path / "lgb.txt"))
    repo = tmp_path / "repo"
    labels = ",".join(IRIS.target_names)
    _convert(
        "--lightgbm", str(tmp_path / "lgb.txt"), "--sample", str(_iris_csv(tmp_path / "s.csv")),
        "--labels", labels, "--name", "lgb", "--repo", str(repo),
    )  # fmt: skip
    rows = IRIS.data[1::2][:51]
    inputs: list[dict[str, Any]] = [
        dict(
            zip(
                ("sepalLength", "sepalWidth", "petalLength", "petalWidth"),
                map(float, r),
                strict=True,
            )
        )
        for r in rows
    ]
    server = start_server(repo, tmp_path / "server.log")
    try:
        answer = server.graphql(
            "query($r: [LgbInput!]!) { predict { lgbBatch(inputs: $r) { label } } }",
            {"r": inputs},
        ).json()
        infer = server.graphql(
            'query($x: JSON!) { infer(model: "lgb", inputs: [{name: "input", shape: [51, 4], '
            "data: $x}]) { outputs { name shape } } }",
            {"x": rows.astype(np.float32).reshape(-1).tolist()},
        ).json()
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        stop_server(server)
    expected = IRIS.target_names[model.predict(rows.astype(np.float32))].tolist()
    assert [p["label"] for p in answer["data"]["predict"]["lgbBatch"]] == expected, answer
    shapes = {o["name"]: o["shape"] for o in infer["data"]["infer"]["outputs"]}
    assert shapes == {"label": [51], "probabilities": [51, 3]}, infer
    # Two requests of 51 rows: two runs (a fixed label dimension made each row a run).
    assert _metric(metrics, "gateway_inference_batch_size_count", "lgb") == 2
    assert _metric(metrics, "gateway_inference_batch_size_sum", "lgb") == 102
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "VerifyOutputSizes" not in log and "Expected shape" not in log, log
