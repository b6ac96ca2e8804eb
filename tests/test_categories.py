"""Unknown categories: a OneHotEncoder fitted without ``handle_unknown`` refuses a value it was
not fitted on; the caller gets BAD_USER_INPUT naming the field (or tensor, row and column) and
the value, on both paths, and in a batched run only the request holding it fails.

Real pipelines from scikit-learn, converted with skl2onnx as ``gateway convert`` converts them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from onnx import ModelProto
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder

from gateway.api import GatewayContext
from gateway.categories import CategoryCheck, read_category_checks, unknown_category
from gateway.errors import UnknownCategoryError
from gateway.observability import Observer
from tests.conftest import (
    InProcessGateway,
    collecting_provider,
    load_gateway,
    start_server,
    stop_server,
    write_repository,
)
from tests.test_api_generic import INFER, ok, run, tensors
from tests.test_fastpath import both_paths, comparable

COLORS = ["red", "green", "blue", "red", "green"] * 6


def _mixed() -> tuple[Pipeline, ModelProto]:
    """A ColumnTransformer over a table of a text and a number column: one input per column."""
    frame = pd.DataFrame({"color": COLORS, "size": np.arange(30, dtype=np.float32) % 7})
    labels = [int(c == "red") for c in COLORS]
    encode = ColumnTransformer([("c", OneHotEncoder(), ["color"])], remainder="passthrough")
    pipeline = Pipeline([("encode", encode), ("fit", LogisticRegression())]).fit(frame, labels)
    types = [("color", StringTensorType([None, 1])), ("size", FloatTensorType([None, 1]))]
    return pipeline, convert_sklearn(pipeline, initial_types=types, options={"zipmap": False})


def _matrix() -> ModelProto:
    """One [N, 2] text input, a OneHotEncoder over both columns (skl2onnx Gathers each)."""
    table = np.array([["x", "p"], ["y", "q"], ["x", "r"], ["y", "p"]] * 3, dtype=object)
    pipeline = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(table, [0, 1, 1, 0] * 3)
    types = [("input", StringTensorType([None, 2]))]
    model: ModelProto = convert_sklearn(pipeline, initial_types=types, options={"zipmap": False})
    return model


# Samples stand in for the synthetic warm-up (an empty string is no category either), as
# `gateway convert` writes them.
MIXED_TOML = '[[samples]]\ninput = { color = "red", size = 1.0 }\n'
MATRIX_TOML = 'features = ["shape", "shade"]\n[[samples]]\ninput = { shape = "x", shade = "p" }\n'


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, mixed = _mixed()
    return write_repository(
        tmp_path_factory.mktemp("categories"),
        {"mixed/1": mixed, "matrix/1": _matrix()},
        {"mixed": MIXED_TOML, "matrix": MATRIX_TOML},
    )


@pytest.fixture(scope="module")
def gw(repo: Path) -> Iterator[InProcessGateway]:
    # A wait for more rows, so that the aliases of one document surely share a run.
    gateway = load_gateway(repo, max_delay_us=50_000)
    yield gateway
    gateway.runtime.close()


KNOWN = 'it knows "blue", "green", "red"'


def test_the_encoders_and_what_they_read_are_found() -> None:
    _, mixed = _mixed()
    (mixed_check,) = read_category_checks(mixed.graph).values()
    assert mixed_check == CategoryCheck("color", 0, ("blue", "green", "red"))
    checks = sorted(read_category_checks(_matrix().graph).values(), key=lambda c: c.column or 0)
    assert checks == [
        CategoryCheck("input", 0, ("x", "y")),
        CategoryCheck("input", 1, ("p", "q", "r")),
    ]


def test_infer_names_the_tensor_row_column_and_value(gw: InProcessGateway) -> None:
    inputs = [
        {"name": "color", "shape": [3, 1], "data": ["red", "purple", "mauve"]},
        {"name": "size", "shape": [3, 1], "data": [1, 2, 3]},
    ]
    (error,) = run(gw, INFER, {"model": "mixed", "inputs": inputs})["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"] == (
        f'input "color", row 1: "purple" is not a category the model knows; {KNOWN}'
    )
    table = {"name": "input", "shape": [2, 2], "data": ["x", "p", "y", "zz"]}
    (error,) = run(gw, INFER, {"model": "matrix", "inputs": [table]})["errors"]
    assert error["message"] == (
        'input "input", row 1, column 1: "zz" is not a category the model knows; '
        'it knows "p", "q", "r"'
    )
    # Known values answer.
    inputs[0]["data"] = ["red", "blue", "green"]
    assert tensors(run(gw, INFER, {"model": "mixed", "inputs": inputs}))["label"]["shape"] == [3]


def test_typed_fields_name_the_field_and_the_row(gw: InProcessGateway) -> None:
    cases = [
        (
            '{ predict { mixed(input: {color: "purple", size: 1}) { label } } }',
            f'color: "purple" is not a category the model knows; {KNOWN}',
        ),
        (
            '{ predict { mixedBatch(inputs: [{color: "red", size: 1}, {color: "blue", size: 2}, '
            '{color: "teal", size: 3}]) { label } } }',
            f'inputs[2].color: "teal" is not a category the model knows; {KNOWN}',
        ),
        (
            '{ predict { matrixBatch(inputs: [{shape: "x", shade: "p"}, {shape: "w", '
            'shade: "q"}]) { label } } }',
            'inputs[1].shape: "w" is not a category the model knows; it knows "x", "y"',
        ),
    ]
    for query, message in cases:
        slow, fast = both_paths(gw, query)
        assert fast is not None and comparable(fast) == comparable(slow)
        (error,) = slow["errors"]
        assert error["extensions"] == {"code": "BAD_USER_INPUT"}
        assert error["message"] == message


def test_in_a_batched_run_only_the_request_with_the_value_fails(gw: InProcessGateway) -> None:
    provider, collector = collecting_provider()
    gw.runtime.attach(Observer(provider))
    query = (
        '{ predict { a: mixed(input: {color: "red", size: 1}) { label } '
        'b: mixed(input: {color: "purple", size: 2}) { label } '
        'c: mixed(input: {color: "blue", size: 3}) { label } } }'
    )
    context = GatewayContext(gw.runtime, gw.settings, gw.built.typed)
    result = asyncio.run(gw.built.schema.execute(query, context_value=context))
    assert result.data is not None and result.errors is not None
    answers = result.data["predict"]
    assert answers["a"] is not None and answers["c"] is not None and answers["b"] is None
    (error,) = result.errors
    assert error.path == ["predict", "b"]
    assert error.message == f'color: "purple" is not a category the model knows; {KNOWN}'
    # One run of the three requests failed; each was then run alone.
    runs = [s.attributes or {} for s in collector.spans if s.name == "gateway.run"]
    assert [r["gateway.batch.requests"] for r in runs] == [3, 1, 1, 1]
    gw.runtime.attach(Observer())


def test_the_known_categories_are_quoted_up_to_ten() -> None:
    check = CategoryCheck("code", None, tuple(range(12)))
    message = (
        "Non-zero status code returned while running OneHotEncoder node. Name:'enc' "
        "Status Message: Unknown Category and zeros = 0."
    )
    feeds: dict[str, Any] = {"code": np.array([[3], [12]], dtype=np.int64)}
    error = unknown_category({"enc": check}, message, feeds)
    assert isinstance(error, UnknownCategoryError) and (error.row, error.value) == (1, 12)
    assert error.message == (
        'input "code", row 1: 12 is not a category the model knows; '
        "it knows 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more"
    )
    assert unknown_category({"enc": check}, "another failure", feeds) is None
    assert unknown_category({"other": check}, message, feeds) is None


def test_the_typed_answer_matches_the_original_for_known_values(gw: InProcessGateway) -> None:
    pipeline, _ = _mixed()
    frame = pd.DataFrame({"color": ["green", "red"], "size": [4.0, 2.0]})
    expected = pipeline.predict(frame).tolist()
    answer = ok(
        run(
            gw,
            '{ predict { mixedBatch(inputs: [{color: "green", size: 4}, {color: "red", '
            "size: 2}]) { label } } }",
        )
    )
    assert [int(a["label"]) for a in answer["predict"]["mixedBatch"]] == expected


@pytest.mark.e2e
def test_over_http_concurrent_requests_fail_only_where_the_value_is(
    repo: Path, tmp_path: Path
) -> None:
    server = start_server(repo, tmp_path / "server.log", env={"GATEWAY_MAX_DELAY_US": "50000"})
    colors = ["red", "purple", "blue", "green", "teal", "red"]

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/graphql",
                        json={
                            "query": "query($r: MixedInput!) { predict { mixed(input: $r) "
                            "{ label } } }",
                            "variables": {"r": {"color": color, "size": 1.0}},
                        },
                    )
                    for color in colors
                )
            )

    try:
        responses = asyncio.run(send())
    finally:
        stop_server(server)
    for color, response in zip(colors, responses, strict=True):
        assert response.status_code == 200
        body = response.json()
        if color in ("purple", "teal"):
            (error,) = body["errors"]
            assert error["extensions"] == {"code": "BAD_USER_INPUT"}
            assert error["message"] == (
                f'color: "{color}" is not a category the model knows; {KNOWN}'
            )
        else:
            assert "errors" not in body and body["data"]["predict"]["mixed"]["label"] in ("0", "1")
