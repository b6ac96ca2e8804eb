"""Missing values end to end: a float feature takes null (or is left out), and the model gets
NaN, as a scikit-learn pipeline with an imputer expects. Built from a real skl2onnx pipeline
(SimpleImputer + classifier) trained on iris with missing values; compared with the original."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphql
import httpx
import numpy as np
import pytest
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from gateway.examples import example_operations
from gateway.repository import ModelConfig
from gateway.typed import TypedModel
from tests.conftest import (
    InProcessGateway,
    load_gateway,
    start_server,
    stop_server,
    write_repository,
)
from tests.test_api_generic import ok, run, tensors
from tests.test_fastpath import both_paths, comparable

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
FIELDS = ["sepalLengthCm", "sepalWidthCm", "petalLengthCm", "petalWidthCm"]
CLASSES = ["setosa", "versicolor", "virginica"]
SELECT = "label probabilities { label probability }"
TOML = f"""
features = {FEATURES!r}
labels = {CLASSES!r}
[example]
"sepal length (cm)" = 5.1
"sepal width (cm)" = nan
"petal length (cm)" = 1.4
"petal width (cm)" = 0.2
"""


def _trained() -> tuple[Pipeline, np.ndarray]:
    """An imputing classifier trained on iris with a tenth of its values missing, and the data
    (with its missing values)."""
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    rng = np.random.default_rng(0)
    x[rng.random(x.shape) < 0.1] = np.nan
    pipeline = make_pipeline(SimpleImputer(strategy="median"), LogisticRegression(max_iter=500))
    return pipeline.fit(x, y), x


@pytest.fixture(scope="module")
def imputer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    pipeline, _ = _trained()
    onnx_model = convert_sklearn(
        pipeline,
        initial_types=[("float_input", FloatTensorType([None, 4]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    root = write_repository(
        tmp_path_factory.mktemp("missing"), {"flowers/1": onnx_model}, {"flowers": TOML}
    )
    yield pipeline, root


@pytest.fixture(scope="module")
def gw(imputer: tuple[Pipeline, Path]) -> Iterator[InProcessGateway]:
    gateway = load_gateway(imputer[1])
    yield gateway
    gateway.runtime.close()


def _literal(row: list[float]) -> str:
    return (
        "{"
        + ", ".join(
            f"{f}: {'null' if math.isnan(v) else v}" for f, v in zip(FIELDS, row, strict=True)
        )
        + "}"
    )


def _expected(pipeline: Pipeline, rows: np.ndarray) -> list[tuple[str, list[float]]]:
    probabilities = pipeline.predict_proba(rows)
    return [(CLASSES[int(np.argmax(p))], p.tolist()) for p in probabilities]


def _check(answers: list[dict[str, Any]], expected: list[tuple[str, list[float]]]) -> None:
    assert len(answers) == len(expected)
    for answer, (label, probabilities) in zip(answers, expected, strict=True):
        assert answer["label"] == label
        got = [p["probability"] for p in answer["probabilities"]]
        assert got == pytest.approx(probabilities, abs=1e-5)


def test_float_features_are_nullable_and_say_so(gw: InProcessGateway) -> None:
    found = graphql.build_schema(gw.sdl).get_type("FlowersInput")
    assert isinstance(found, graphql.GraphQLInputObjectType)
    for name in FIELDS:
        field = found.fields[name]
        assert field.ast_node is not None
        assert graphql.print_ast(field.ast_node).endswith(f"\n{name}: Float = null")
        assert field.description is not None
        assert "missing value, sent to the model as NaN" in field.description


def test_a_null_answers_like_the_original_on_nan(
    gw: InProcessGateway, imputer: tuple[Pipeline, Path]
) -> None:
    pipeline, _ = imputer
    row = [5.9, math.nan, 5.1, math.nan]
    query = f"{{ predict {{ flowers(input: {_literal(row)}) {{ {SELECT} }} }} }}"
    slow, fast = both_paths(gw, query)
    assert fast is not None, "expected the compiled path to take it"
    assert comparable(fast) == comparable(slow)
    expected = _expected(pipeline, np.array([row], np.float32))
    _check([ok(slow)["predict"]["flowers"]], expected)
    # The same row as variables, and with the missing fields left out.
    variables = {"r": {"sepalLengthCm": 5.9, "sepalWidthCm": None, "petalLengthCm": 5.1}}
    query = f"query($r: FlowersInput!) {{ predict {{ flowers(input: $r) {{ {SELECT} }} }} }}"
    slow, fast = both_paths(gw, query, variables)
    assert fast is not None and comparable(fast) == comparable(slow)
    _check([ok(slow)["predict"]["flowers"]], expected)
    # infer takes "NaN" for the same thing.
    data = [5.9, "NaN", 5.1, "NaN"]
    out = tensors(
        run(gw, _INFER, {"inputs": [{"name": "float_input", "shape": [1, 4], "data": data}]})
    )
    assert out["probabilities"]["data"] == pytest.approx(expected[0][1], abs=1e-5)


_INFER = (
    'query($inputs: [TensorInput!]!) { infer(model: "flowers", inputs: $inputs) '
    "{ outputs { name data } } }"
)


@pytest.mark.parametrize("size", [3, 150])  # a few values (checked in Python), and many
def test_a_batch_with_nulls(
    gw: InProcessGateway, imputer: tuple[Pipeline, Path], size: int
) -> None:
    pipeline, _ = imputer
    _, data = _trained()
    rows = data[:size]
    assert np.isnan(rows).any()
    variables = {
        "rows": [
            {f: None if math.isnan(v) else float(v) for f, v in zip(FIELDS, row, strict=True)}
            for row in rows.tolist()
        ]
    }
    query = (
        "query($rows: [FlowersInput!]!) { predict { flowersBatch(inputs: $rows) "
        f"{{ {SELECT} }} }} }}"
    )
    slow, fast = both_paths(gw, query, variables)
    assert fast is not None and comparable(fast) == comparable(slow)
    _check(ok(slow)["predict"]["flowersBatch"], _expected(pipeline, rows))
    literal = ", ".join(_literal(row) for row in rows.tolist()[:3])
    slow, fast = both_paths(
        gw, f"{{ predict {{ flowersBatch(inputs: [{literal}]) {{ label }} }} }}"
    )
    assert fast is not None and comparable(fast) == comparable(slow)
    labels = [label for label, _ in _expected(pipeline, rows[:3])]
    assert [a["label"] for a in ok(slow)["predict"]["flowersBatch"]] == labels


def test_example_operations_spell_a_missing_value_validly(gw: InProcessGateway) -> None:
    typed = {n: t for n, t in gw.built.typed.items() if isinstance(t, TypedModel)}
    config = gw.runtime.entries["flowers"].spec.config
    assert isinstance(config, ModelConfig) and math.isnan(config.example["sepal width (cm)"])
    operations = example_operations(typed, {"flowers": config})
    typed_op = next(o for o in operations if "PredictFlowers" in o)
    infer_op = next(o for o in operations if "query Infer" in o)
    assert "sepalWidthCm: null" in typed_op and '"NaN"' in infer_op
    schema = graphql.build_schema(gw.sdl)
    for operation in operations:
        assert graphql.validate(schema, graphql.parse(operation)) == [], operation
        ok(run(gw, operation))


@pytest.mark.e2e
def test_nulls_over_http(imputer: tuple[Pipeline, Path], tmp_path: Path) -> None:
    pipeline, root = imputer
    server = start_server(root, tmp_path / "server.log")
    try:
        row = [6.3, 3.3, math.nan, 2.5]
        query = f"{{ predict {{ flowers(input: {_literal(row)}) {{ {SELECT} }} }} }}"
        expected = _expected(pipeline, np.array([row], np.float32))
        for _ in range(2):  # the second time from the compiled plan
            response = httpx.post(f"{server.url}/graphql", json={"query": query}, timeout=30)
            assert response.status_code == 200, response.text
            _check([response.json()["data"]["predict"]["flowers"]], expected)
    finally:
        stop_server(server)
