"""Query limits and the request time-out on each path: the compiled POST path, Strawberry's
(GraphQL over GET), persisted queries and rows that arrive in variables."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import graphql
import numpy as np
import onnx.numpy_helper
import pytest
from onnx import TensorProto, helper

from gateway.api.limits import RowBudget, too_many_tokens
from gateway.api.plan import compile_operation
from gateway.errors import InvalidInputError, QueryTooComplexError
from tests.conftest import (
    InProcessGateway,
    LiveServer,
    make_model,
    tensor_info,
    write_repository,
)
from tests.test_auth import _app, _code
from tests.test_lifecycle import _scaled

ROW = "{x: [1, 1]}"


def _aliases(count: int) -> str:
    return (
        "{ predict { " + " ".join(f"a{i}: m(input: {ROW}) {{ y }}" for i in range(count)) + " } }"
    )


def _fragment_bomb(levels: int, leaf: str = "__typename") -> str:
    """Issue 13, finding 1: each fragment spreads the one before twice, so the operation
    expands to 2**levels copies of ``leaf`` (21 levels: 857 bytes)."""
    fragments = [f"fragment F0 on Query {{ {leaf} }}"]
    fragments += [
        f"fragment F{i} on Query {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)
    ]
    return f"{{ ...F{levels} }} " + " ".join(fragments)


def _echo() -> onnx.ModelProto:
    """y = x, strings."""
    shape: list[int | str | None] = ["N", 1]
    return make_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [tensor_info("x", TensorProto.STRING, shape)],
        [tensor_info("y", TensorProto.STRING, shape)],
    )


def _matmuls(count: int, width: int) -> onnx.ModelProto:
    """``count`` products by a ``width`` x ``width`` matrix in a row, an operator each."""
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, name = [], "x"
    for i in range(count):
        nodes.append(helper.make_node("MatMul", [name, "w"], [f"h{i}"]))
        name = f"h{i}"
    nodes.append(helper.make_node("Identity", [name], ["y"]))
    return make_model(
        nodes,
        [tensor_info("x", TensorProto.FLOAT, ["N", width])],
        [tensor_info("y", TensorProto.FLOAT, ["N", width])],
        initializers=[onnx.numpy_helper.from_array(weights, "w")],
    )


def _slow() -> onnx.ModelProto:
    """Twenty 2048x2048 matrix products per run: tens of milliseconds."""
    return _matmuls(20, 2048)


def _long() -> onnx.ModelProto:
    """Two hundred 1024x1024 matrix products: seconds for 256 rows, an operator at a time."""
    return _matmuls(200, 1024)


@pytest.fixture
def limited(tmp_path: Path) -> Any:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    yield from _app(root, GATEWAY_MAX_ALIASES="5", GATEWAY_MAX_COST="8", GATEWAY_MAX_DEPTH="4")


def test_limits_hold_on_post_get_and_persisted_queries(limited: Any) -> None:
    query = _aliases(6)
    for _ in range(2):  # refusals are not kept: the second is refused afresh, as cheaply
        body = limited.post("/graphql", json={"query": query}).json()
        assert _code(body) == "QUERY_TOO_COMPLEX" and "6 aliases; at most 5" in str(body)
    body = limited.get("/graphql", params={"query": query}).json()
    assert _code(body) == "QUERY_TOO_COMPLEX"
    digest = hashlib.sha256(query.encode()).hexdigest()
    apq = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    body = limited.post("/graphql", json={"query": query, "extensions": apq}).json()
    assert _code(body) == "QUERY_TOO_COMPLEX"
    deep = "{ models { versions { inputs { name } } } }"  # depth 4: allowed
    assert _code(limited.post("/graphql", json={"query": deep}).json()) is None
    too_deep = "{ __schema { types { fields { type { name } } } } }"
    assert _code(limited.post("/graphql", json={"query": too_deep}).json()) == "QUERY_TOO_COMPLEX"


def test_rows_in_literals_and_in_variables_count_against_the_cost(limited: Any) -> None:
    literal = "{ predict { mBatch(inputs: [" + ", ".join([ROW] * 9) + "]) { y } } }"
    assert _code(limited.post("/graphql", json={"query": literal}).json()) == "QUERY_TOO_COMPLEX"
    query = "query($rows: [MInput!]!) { predict { mBatch(inputs: $rows) { y } } }"
    for count, expected in ((8, None), (9, "QUERY_TOO_COMPLEX")):
        rows = [{"x": [1.0, 1.0]}] * count
        for _ in range(2):  # Strawberry's path, then the compiled one
            body = limited.post("/graphql", json={"query": query, "variables": {"rows": rows}})
            assert _code(body.json()) == expected, body.json()
    infer = (
        'query($d: JSON) { infer(model: "m", inputs: [{name: "x", shape: [9, 2], data: $d}]) '
        "{ version } }"
    )
    body = limited.post("/graphql", json={"query": infer, "variables": {"d": [1.0] * 18}})
    assert _code(body.json()) == "QUERY_TOO_COMPLEX"


def test_a_request_past_its_time_out_is_504_and_the_server_serves_on(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"slow/1": _slow(), "m/1": _scaled(1)})
    query = (
        'query($d: JSON) { infer(model: "slow", inputs: [{name: "x", shape: [64, 2048], '
        "data: $d}]) { version } }"
    )
    for client in _app(root, GATEWAY_REQUEST_TIMEOUT_SECONDS="0.02"):
        started = time.monotonic()
        response = client.post(
            "/graphql", json={"query": query, "variables": {"d": [0.5] * (64 * 2048)}}
        )
        assert response.status_code == 504 and _code(response.json()) == "TIMEOUT"
        assert time.monotonic() - started < 5
        quick = (
            '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
        )
        deadline = time.monotonic() + 30
        while True:  # once the abandoned run has finished, quick requests answer again
            response = client.post("/graphql", json={"query": quick})
            if response.status_code == 200:
                break
            assert time.monotonic() < deadline


@pytest.mark.parametrize("batching", ["true", "false"])
def test_a_request_past_its_time_out_stops_its_run(tmp_path: Path, batching: str) -> None:
    # Issue 13, finding 4: the client got its 504 at 2 s, the server computed until 9 s.
    root = write_repository(tmp_path / "repo", {"long/1": _long(), "m/1": _scaled(1)})
    rows = base64.b64encode(np.ones((256, 1024), dtype=np.float32).tobytes()).decode()
    query = (
        'query($b: String) { infer(model: "long", inputs: [{name: "x", shape: [256, 1024], '
        "b64: $b}]) { version } }"
    )
    quick = '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) { version } }'
    for client in _app(
        root,
        GATEWAY_REQUEST_TIMEOUT_SECONDS="1",
        GATEWAY_INFERENCE_THREADS="1",  # the run holds the only worker thread
        GATEWAY_BATCHING=batching,
    ):
        started = time.monotonic()
        response = client.post("/graphql", json={"query": query, "variables": {"b": rows}})
        assert response.status_code == 504 and _code(response.json()) == "TIMEOUT"
        # The next request needs that thread: it answers once the abandoned run has stopped,
        # an operator later, not seconds later (its own time-out is 1 s too).
        response = client.post("/graphql", json={"query": quick})
        assert response.status_code == 200, response.json()
        assert time.monotonic() - started < 2


def test_the_token_estimate_stops_at_the_limit() -> None:
    assert not too_many_tokens("{ a }", 3)
    assert too_many_tokens("{ a b c d }", 3)
    assert not too_many_tokens('{ a(s: "many words in one string") }', 8)  # a string: one
    huge = "{ " + "a " * 5_000_000 + "}"
    started = time.perf_counter()
    assert too_many_tokens(huge, 2000)
    assert time.perf_counter() - started < 0.5  # stops at the limit, not at the end


def test_a_fragment_bomb_is_refused_in_milliseconds(limited: Any) -> None:
    bomb = _fragment_bomb(21)
    assert len(bomb) < 900
    # POST takes the compiled path's rules, GET Strawberry's.
    for method, options in (
        ("POST", {"json": {"query": bomb}}),
        ("GET", {"params": {"query": bomb}}),
    ):
        started = time.perf_counter()
        body = limited.request(method, "/graphql", **options).json()
        assert time.perf_counter() - started < 0.5  # it was 12 s, the event loop blocked
        assert _code(body) == "QUERY_TOO_COMPLEX"
        assert "selects 2097152 fields, fragments expanded; at most 5000" in str(body)


def test_a_fragment_spread_twice_runs_once_on_both_paths(limited: Any) -> None:
    query = _fragment_bomb(3, leaf="models { name }")
    compiled = limited.post("/graphql", json={"query": query}).json()
    normal = limited.get("/graphql", params={"query": query}).json()
    assert compiled["data"] == normal["data"] == {"models": [{"name": "m"}]}


def test_compiling_a_fragment_bomb_takes_one_walk(example_gateway: InProcessGateway) -> None:
    # What the limits let through is compiled; a fragment spread again in the same selection
    # set is collected once, as graphql-core's executor does (the plan expanded each spread).
    schema = example_gateway.built.schema._schema
    started = time.perf_counter()
    plan = compile_operation(schema, graphql.parse(_fragment_bomb(24)), None)
    assert time.perf_counter() - started < 0.5
    assert [f.key for f in plan.fields] == ["__typename"]


def test_a_budget_counts_the_utf8_bytes_of_every_kind_of_string() -> None:
    budget = RowBudget(10, max_string_bytes=4, string_bytes=10)
    # 2 + 2 bytes; numbers do not count
    budget.spend_strings({"a": np.array([["é", "ab"]], dtype=object), "n": np.zeros(3)})
    budget.spend_strings({"u": np.array(["abc"]), "b": np.array([b"ab"])})  # 5 more: 9
    with pytest.raises(InvalidInputError, match="a string of 5 bytes; at most 4"):
        budget.spend_strings({"a": np.array(["abcde"], dtype=object)})
    with pytest.raises(QueryTooComplexError, match="more than 10 bytes of strings"):
        budget.spend_strings({"a": np.array(["ab"], dtype=object)})
    budget.spend_strings({"a": np.array(["a"], dtype=object)})  # what a refusal left: 1


@pytest.fixture
def strings(tmp_path: Path) -> Any:
    root = write_repository(tmp_path / "repo", {"s/1": _echo()})
    yield from _app(
        root, GATEWAY_MAX_STRING_BYTES="1000", GATEWAY_MAX_OPERATION_STRING_BYTES="3000"
    )


def test_string_bytes_are_budgeted_at_each_use_of_a_variable(strings: Any) -> None:
    fields = " ".join(f"a{i}: s(input: {{x: $t}}) {{ y }}" for i in range(5))
    query = f"query($t: String!) {{ predict {{ {fields} }} }}"
    variables = {"t": "a" * 800}  # five uses of 800 bytes: 4000, over the 3000 of the budget
    compiled = strings.post("/graphql", json={"query": query, "variables": variables}).json()
    params = {"query": query, "variables": json.dumps(variables)}
    normal = strings.get("/graphql", params=params).json()
    for body in (compiled, normal):
        # Refused whole, before any field runs: the variables are known before execution.
        assert body["data"] is None, body
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        assert "sends 4000 bytes of strings" in error["message"]
        assert "max_operation_string_bytes" in error["message"]
    # Three uses (2400 bytes) are within the budget, and every field answers.
    three = query.replace(" a3: s(input: {x: $t}) { y } a4: s(input: {x: $t}) { y }", "")
    body = strings.post("/graphql", json={"query": three, "variables": variables}).json()
    assert "errors" not in body and len(body["data"]["predict"]) == 3
    # One string over max_string_bytes (600 characters, 1200 bytes) runs nowhere.
    for body in (
        strings.post("/graphql", json={"query": query, "variables": {"t": "é" * 600}}).json(),
        strings.get(
            "/graphql", params={**params, "variables": '{"t": "' + "é" * 600 + '"}'}
        ).json(),
    ):
        assert body["data"] is None and _code(body) == "BAD_USER_INPUT"
        assert "$t holds a string of 1200 bytes; at most 1000 (max_string_bytes)" in str(body)
    infer = (
        'query($d: JSON) { infer(model: "s", inputs: [{name: "x", shape: [4, 1], data: $d}]) '
        "{ version } }"
    )
    body = strings.post("/graphql", json={"query": infer, "variables": {"d": ["a" * 900] * 4}})
    assert _code(body.json()) == "QUERY_TOO_COMPLEX"
    body = strings.post("/graphql", json={"query": infer, "variables": {"d": ["a" * 700] * 4}})
    assert _code(body.json()) is None
    # A whole list of tensors in one variable: their data counts, not their names or shapes.
    listed = 'query($i: [TensorInput!]!) { infer(model: "s", inputs: $i) { version } }'
    tensors = [{"name": "x", "shape": [4, 1], "data": ["a" * 900] * 4}]
    body = strings.post("/graphql", json={"query": listed, "variables": {"i": tensors}})
    assert _code(body.json()) == "QUERY_TOO_COMPLEX" and "sends 3600 bytes" in body.text


def test_rows_in_variables_are_counted_at_each_use_before_any_field_runs(
    tmp_path: Path,
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    query = (
        "query($r: [MInput!]!) { predict { a: mBatch(inputs: $r) { y } "
        "b: mBatch(inputs: $r) { y } } }"
    )
    for client in _app(root, GATEWAY_MAX_COST="100"):
        rows = [{"x": [1.0, 2.0]}] * 60  # twice: 120 rows, over 100
        for body in (
            client.post("/graphql", json={"query": query, "variables": {"r": rows}}).json(),
            client.get(
                "/graphql", params={"query": query, "variables": json.dumps({"r": rows})}
            ).json(),
        ):
            assert body["data"] is None and _code(body) == "QUERY_TOO_COMPLEX", body
            assert "asks for 120 model rows in its variables" in str(body)
        ran = "gateway_inference_batch_size_count"
        assert ran not in client.get("/metrics").text  # neither field ran
        body = client.post("/graphql", json={"query": query, "variables": {"r": rows[:50]}})
        assert "errors" not in body.json()
        assert ran in client.get("/metrics").text


@pytest.mark.e2e
def test_replay_one_large_string_used_by_thirty_aliases(example_server: LiveServer) -> None:
    # Issue 13, finding 4: a 3.8 MB variable at 30 uses ran for 12 s and peaked at 2.8 GB.
    fields = " ".join(f"a{i}: datasetTopic(input: {{text: $t}}) {{ label }}" for i in range(30))
    query = f"query($t: String!) {{ predict {{ {fields} }} }}"
    text = ("the length and width of the sepals and petals " * 90_000)[:3_800_000]
    started = time.perf_counter()
    response = example_server.graphql(query, {"t": text})
    assert time.perf_counter() - started < 2
    body = response.json()
    assert body["data"] is None  # refused whole: no field built its 3.8 MB input
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}
