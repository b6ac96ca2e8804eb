"""The compiled path answers exactly as Strawberry's executor: differential tests on generated
and hand-written operations (data, nulls, errors and codes), and persisted queries."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import graphql
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import queries

from gateway.api import GatewayContext
from gateway.api.fastpath import FastPath, PersistedQueries
from gateway.api.plan import compile_operation
from tests.conftest import InProcessGateway, LiveServer

_ERROR_ID = re.compile(r"[0-9a-f]{16}")


def comparable(response: dict[str, Any]) -> dict[str, Any]:
    """Comparable: no trace id, error ids masked, errors in path order."""
    out = {"data": response.get("data")}
    errors = []
    for error in response.get("errors") or []:
        error = dict(error)
        error["message"] = _ERROR_ID.sub("<id>", error["message"])
        extensions = dict(error.get("extensions") or {})
        if "errorId" in extensions:
            extensions["errorId"] = "<id>"
        error["extensions"] = extensions
        errors.append(error)
    if errors:
        out["errors"] = sorted(errors, key=lambda e: (str(e.get("path")), e["message"]))
    return out


def both_paths(
    gw: InProcessGateway, query: str, variables: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The same operation through Strawberry and through the compiled path (None: not
    compiled)."""
    slow = gw.execute(query, variables)
    fast_path = FastPath(gw.built, PersistedQueries(8), 8)
    context = GatewayContext(gw.runtime, gw.settings, gw.built.typed)
    answer = asyncio.run(fast_path.handle({"query": query, "variables": variables}, context))
    if answer is None:
        return slow, None
    return slow, orjson.loads(orjson.dumps(answer.body))  # as the HTTP response carries it


ROW = "{sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, petalWidth: 0.2}"
HAND_WRITTEN = [
    f"{{ predict {{ iris(input: {ROW}) {{ label probabilities {{ label probability }} }} }} }}",
    f"query Q {{ predict {{ a: iris(input: {ROW}, version: 1) {{ label modelVersion }} "
    f"b: irisBatch(inputs: [{ROW}, {ROW}]) {{ label __typename }} }} }}",
    f"{{ predict {{ ok: iris(input: {ROW}) {{ label }} gone: iris(input: {ROW}, version: 9) "
    "{ label } } }",  # a failed nullable field beside a good one
    '{ infer(model: "iris", inputs: []) { id } }',  # a non-null root field fails: data null
    '{ infer(model: "iris", id: "x", inputs: [{name: "float_input", shape: [1, 4], '
    "data: [1, 2, 3, 4]}]) { id model version outputs { name datatype shape data b64 } } }",
    "{ models { name defaultVersion typedField versions { version state inputs { name shape } "
    '} } nope: model(name: "nope") { name } }',
    "query F { ...P } fragment P on Query { predict { ... on Predict { digitsBatch(inputs: []) "
    "{ label } } } }",
    '{ predict { datasetTopic(input: {text: "iris petals"}) { label probabilities '
    "{ probability } } diabetes(input: {age: 0, sex: 0, bmi: 0, bp: 0, s1: 0, s2: 0, s3: 0, "
    "s4: 0, s5: 0, s6: 0}) { variable } } }",
]


@pytest.mark.parametrize("query", HAND_WRITTEN)
def test_hand_written_operations_answer_the_same(
    example_gateway: InProcessGateway, query: str
) -> None:
    slow, fast = both_paths(example_gateway, query)
    assert fast is not None, "expected the compiled path to take it"
    assert comparable(fast) == comparable(slow)


def test_variables_and_their_errors(example_gateway: InProcessGateway) -> None:
    query = (
        "query V($r: IrisInput!, $v: Int) { predict { iris(input: $r, version: $v) { label } } }"
    )
    row = {"sepalLength": 6.3, "sepalWidth": 3.3, "petalLength": 6.0, "petalWidth": 2.5}
    slow, fast = both_paths(example_gateway, query, {"r": row, "v": 1})
    assert fast is not None and comparable(fast) == comparable(slow)
    assert fast["data"]["predict"]["iris"]["label"] == "virginica"
    # Variables that do not fit: the normal path words the error.
    slow, fast = both_paths(example_gateway, query, {"r": {"sepalLength": "x"}})
    assert fast is None and slow["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_arguments_with_variables_are_filled_into_a_template(
    example_gateway: InProcessGateway,
) -> None:
    query = (
        "query T($a: Float = 1.5, $b: Float!) { predict { iris(input: {sepalLength: $a, "
        "sepalWidth: $b, petalLength: $b, petalWidth: 0.2}) { label } } }"
    )
    schema = example_gateway.built.schema._schema
    plan = compile_operation(schema, graphql.parse(query), None)
    (predict,) = plan.fields
    assert predict.children is not None
    template = predict.children[0].arg_template
    assert template is not None and template.nullable == {"a"}
    row = {"sepalLength": 1.0, "sepalWidth": 2.0, "petalLength": 2.0, "petalWidth": 0.2}
    given: dict[str, Any] = {"a": 1.0, "b": 2.0}
    first, second = template.fill(given), template.fill(given)
    assert first == {"input": row, "version": None}
    assert second is not None and second["input"] is not first["input"]  # nothing shared
    null: dict[str, Any] = {"a": None, "b": 2.0}
    assert template.fill(null) is None  # graphql-core coerces it (and words any error)
    slow, fast = both_paths(example_gateway, query, null)
    assert fast is not None and comparable(fast) == comparable(slow)
    # A float feature takes null (a missing value): answered.
    assert "errors" not in slow and slow["data"]["predict"]["iris"]["label"]
    # A null in a non-null position: graphql-core's error, the same on both paths.
    text = 'query S($t: String = "x") { predict { datasetTopic(input: {text: $t}) { label } } }'
    slow, fast = both_paths(example_gateway, text, {"t": None})
    assert fast is not None and comparable(fast) == comparable(slow)
    assert slow["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


_TYPED_LITERAL = (
    "{ predict { iris(input: {sepalLength: %s, sepalWidth: 3.5, petalLength: 1.4, "
    "petalWidth: 0.2}) { label } } }"
)
_INFER_LITERAL = (
    '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], '
    "data: [%s, 3.5, 1.4, 0.2]}]) { id } }"
)
_TYPED_VARIABLE = "query($d: Float) { predict { iris(input: {sepalLength: $d}) { label } } }"
_INFER_VARIABLE = (
    'query($d: JSON) { infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], '
    "data: $d}]) { id } }"
)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" + "0" * 5000, "-1" + "0" * 5000])
def test_out_of_range_literals_are_refused_on_both_paths(
    example_gateway: InProcessGateway, number: str
) -> None:
    for query, where in [
        (_TYPED_LITERAL, "sepalLength: "),
        (_INFER_LITERAL, 'input "float_input"'),
    ]:
        slow, fast = both_paths(example_gateway, query % number)
        assert fast is not None, "expected the compiled path to take it"
        assert comparable(fast) == comparable(slow)
        (error,) = slow["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"].startswith(where) and "out of range for FP32" in error["message"]
        assert "3.4028235e+38" in error["message"]  # the accepted range


def test_out_of_range_variables_are_refused_on_both_paths(
    example_gateway: InProcessGateway,
) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        (_TYPED_VARIABLE, {"d": 1e300}, "sepalLength: value out of range for FP32"),
        (_INFER_VARIABLE, {"d": [1e300, 1, 1, 1]}, "data[0] = 1e+300 is out of range for FP32"),
    ]
    for query, variables, message in cases:
        slow, fast = both_paths(example_gateway, query, variables)
        assert fast is not None and comparable(fast) == comparable(slow)
        (error,) = slow["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and message in error["message"]


@pytest.mark.parametrize(
    "query",
    [
        "{ __schema { queryType { name } } }",
        f"{{ predict {{ iris(input: {ROW}) @include(if: true) {{ label }} }} }}",
        f"{{ predict {{ iris(input: {ROW}) {{ label }} iris(input: {ROW}) {{ modelVersion }} }} }}",
        "{ predict ",
    ],
)
def test_what_a_plan_does_not_cover_goes_to_strawberry(
    example_gateway: InProcessGateway, query: str
) -> None:
    _, fast = both_paths(example_gateway, query)
    assert fast is None


@pytest.mark.parametrize(
    "query",
    [
        "{ nope }",
        "mutation { x }",
        "{ predict { nothing } }",
        "query Q { ...A } fragment A on Query { ...B } fragment B on Query { ...A }",
        '{ infer(model: "iris") { id } }',
    ],
)
def test_invalid_documents_are_answered_as_strawberry_answers_them(
    example_gateway: InProcessGateway, query: str
) -> None:
    # Answered on the compiled path (and its answer kept: repeating one is a lookup).
    slow, fast = both_paths(example_gateway, query)
    assert fast is not None and comparable(fast) == comparable(slow)
    assert slow["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_queries_answer_the_same(
    example_gateway: InProcessGateway, data: st.DataObject
) -> None:
    schema = example_gateway.sdl
    query = data.draw(queries(schema))
    graphql.parse(query)
    slow, fast = both_paths(example_gateway, query)
    if fast is not None:
        assert comparable(fast) == comparable(slow), query


def test_persisted_queries_over_http(example_server: LiveServer) -> None:
    query = f"query Persisted {{ predict {{ iris(input: {ROW}) {{ label }} }} }}"
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    url = f"{example_server.url}/graphql"
    first = httpx.post(url, json={"extensions": extensions}).json()
    assert first["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    second = httpx.post(url, json={"query": query, "extensions": extensions}).json()
    assert second["data"]["predict"]["iris"]["label"] == "setosa"
    third = httpx.post(url, json={"extensions": extensions}).json()
    assert third["data"] == second["data"]
    wrong = httpx.post(url, json={"query": "{ models { name } }", "extensions": extensions})
    assert wrong.status_code == 400
    assert wrong.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    # A persisted query the plan does not cover still runs (through Strawberry).
    introspection = "{ __typename __schema { queryType { name } } }"
    ext = {
        "persistedQuery": {
            "version": 1,
            "sha256Hash": hashlib.sha256(introspection.encode()).hexdigest(),
        }
    }
    httpx.post(url, json={"query": introspection, "extensions": ext})
    again = httpx.post(url, json={"extensions": ext}).json()
    assert again["data"]["__schema"]["queryType"]["name"] == "Query"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_NUMBER = st.floats(-10, 10, allow_nan=False) | st.integers(-3, 20)
_IRIS_ROW = st.fixed_dictionaries(
    {k: _NUMBER for k in ("sepalLength", "sepalWidth", "petalLength", "petalWidth")}
)
_VARIABLE_CASES: list[tuple[str, st.SearchStrategy[dict[str, Any]]]] = [
    (
        # Variables inside literals (argument templates): nullable ones in non-null positions,
        # one variable used twice, variables beside constants in a list.
        "query T($a: Float = 1, $b: Float!, $row: IrisInput!) { predict { one: iris(input: "
        "{sepalLength: $a, sepalWidth: $b, petalLength: $b, petalWidth: 0.2}) { label } "
        "many: irisBatch(inputs: [$row, {sepalLength: $b, sepalWidth: 1, petalLength: 2, "
        "petalWidth: 3}]) { label } } }",
        st.fixed_dictionaries(
            {"b": _NUMBER, "row": _IRIS_ROW},
            optional={"a": _NUMBER | st.none() | st.just("x")},
        ),
    ),
    (
        "query B($rows: [IrisInput!]!, $v: Int) { predict { irisBatch(inputs: $rows, "
        "version: $v) { label probabilities { probability } } } }",
        st.fixed_dictionaries(
            {"rows": st.lists(_IRIS_ROW, max_size=5) | _JSON},
            optional={"v": st.sampled_from([1, 2, 3, None, "2"])},
        ),
    ),
    (
        "query D($img: [[[Float!]!]!]!) { predict { digits(input: {image: $img}) { label } } }",
        st.fixed_dictionaries(
            {
                "img": st.lists(
                    st.lists(st.lists(_NUMBER, min_size=8, max_size=8), min_size=8, max_size=8),
                    min_size=1,
                    max_size=1,
                )
                | _JSON
            }
        ),
    ),
    (
        'query I($t: [TensorInput!]!) { infer(model: "iris", inputs: $t) { outputs { name '
        "data } } }",
        st.fixed_dictionaries(
            {
                "t": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.sampled_from(["float_input", "x"]),
                            "shape": st.sampled_from([[1, 4], [2, 2], [1]]),
                        },
                        optional={
                            "datatype": st.sampled_from(["FP32", "FP64", "NOPE"]),
                            "data": st.lists(_NUMBER, max_size=5) | _JSON,
                        },
                    ),
                    max_size=2,
                )
                | _JSON
            }
        ),
    ),
]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_variables_answer_the_same(
    example_gateway: InProcessGateway, data: st.DataObject
) -> None:
    query, strategy = data.draw(st.sampled_from(_VARIABLE_CASES))
    variables = data.draw(strategy)
    slow, fast = both_paths(example_gateway, query, variables)
    if fast is not None:
        assert comparable(fast) == comparable(slow), (query, variables)


def _digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def test_persisted_query_protocol_in_process(example_gateway: InProcessGateway) -> None:
    store = PersistedQueries(capacity=2)
    fast_path = FastPath(example_gateway.built, store, 8)
    query = "{ models { name } }"
    ext = {"persistedQuery": {"version": 1, "sha256Hash": _digest(query)}}

    unknown = fast_path.resolve_persisted({"extensions": dict(ext)})
    assert unknown is not None
    assert unknown.body["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    assert fast_path.resolve_persisted({"query": query, "extensions": dict(ext)}) is None
    payload: dict[str, Any] = {"extensions": dict(ext)}
    assert fast_path.resolve_persisted(payload) is None and payload["query"] == query

    mismatch = fast_path.resolve_persisted({"query": "{ nope }", "extensions": dict(ext)})
    assert mismatch is not None and mismatch.status == 400
    bad = fast_path.resolve_persisted({"extensions": {"persistedQuery": {"version": 2}}})
    assert bad is not None and bad.body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert fast_path.resolve_persisted({"query": query}) is None  # not a persisted query

    for other in ("{ a }", "{ b }"):  # the store keeps the newest two
        store.put(_digest(other), other)
    assert store.get(_digest(query)) is None and store.get(_digest("{ b }")) == "{ b }"


@pytest.mark.parametrize(
    "payload",
    [
        {"query": 3},
        {"query": "{ models { name } }", "operationName": 5},
        {"query": "{ models { name } }", "variables": [1]},
        {"query": "query A { models { name } } query B { models { name } }"},
        {"query": "query A { models { name } }", "operationName": "B"},
        {"query": 'mutation { unloadModel(name: "iris") { name } }'},
    ],
)
def test_payloads_the_compiled_path_leaves_to_strawberry(
    example_gateway: InProcessGateway, payload: dict[str, Any]
) -> None:
    fast_path = FastPath(example_gateway.built, PersistedQueries(8), 8)
    context = GatewayContext(
        example_gateway.runtime, example_gateway.settings, example_gateway.built.typed
    )
    assert asyncio.run(fast_path.handle(payload, context)) is None


def test_the_plan_cache_is_bounded(example_gateway: InProcessGateway) -> None:
    fast_path = FastPath(example_gateway.built, PersistedQueries(8), 2)
    context = GatewayContext(
        example_gateway.runtime, example_gateway.settings, example_gateway.built.typed
    )
    for name in ("A", "B", "C", "A"):
        answer = asyncio.run(
            fast_path.handle({"query": f"query {name} {{ models {{ name }} }}"}, context)
        )
        assert answer is not None and answer.body["data"]["models"]
