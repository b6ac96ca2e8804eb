"""A variable that does not fit its type is refused with its value quoted as the JSON the client
sent (null, true, {"a": 1}), not as Python (None, True, {'a': 1}): in-process, and over HTTP after
the compiled path has seen the query (it leaves such requests to Strawberry's executor)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gateway.security import quote_as_json
from tests.conftest import InProcessGateway, LiveServer

QUERY = "query Iris($r: IrisInput!) { predict { iris(input: $r) { label } } }"
BATCH = "query Rows($rows: [IrisInput!]!) { predict { irisBatch(inputs: $rows) { label } } }"
TOPIC = "query Topic($t: DatasetTopicInput!) { predict { datasetTopic(input: $t) { label } } }"
ROW = {"sepalLength": 5.1, "sepalWidth": 3.5, "petalLength": 1.4, "petalWidth": 0.2}

#: (operation, variables, the messages expected, in order)
CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        QUERY,
        {"r": None},
        [
            "Variable '$r' has invalid value: Expected value of non-null type 'IrisInput!' "
            "not to be null."
        ],
    ),
    (
        BATCH,
        {"rows": [ROW, None]},
        [
            "Variable '$rows' has invalid value at [1]: Expected value of non-null type "
            "'IrisInput!' not to be null."
        ],
    ),
    (
        QUERY,
        {"r": {**ROW, "sepalLength": True}},
        [
            "Variable '$r' has invalid value at .sepalLength: Float cannot represent non numeric "
            "value: true"
        ],
    ),
    (
        QUERY,
        {"r": {**ROW, "sepalWidth": {"a": [1, "b", None]}, "petalLength": "4"}},
        [
            "Variable '$r' has invalid value at .sepalWidth: Float cannot represent non numeric "
            'value: {"a": [1, "b", null]}',
            "Variable '$r' has invalid value at .petalLength: Float cannot represent non numeric "
            'value: "4"',
        ],
    ),
    (
        TOPIC,
        {"t": {"txt": False}},
        [
            "Variable '$t' has invalid value: Expected value of type 'DatasetTopicInput' to "
            "include required field 'text', found: {\"txt\": false}.",
            "Variable '$t' has invalid value: Expected value of type 'DatasetTopicInput' not to "
            "include unknown field 'txt'. Did you mean 'text'? Found: {\"txt\": false}.",
        ],
    ),
]


def _messages(body: dict[str, Any]) -> list[str]:
    assert body["data"] is None
    assert {e["extensions"]["code"] for e in body["errors"]} == {"BAD_USER_INPUT"}
    return [e["message"] for e in body["errors"]]


@pytest.mark.parametrize(("query", "variables", "expected"), CASES)
def test_strawberry_path_quotes_variable_values_as_json(
    example_gateway: InProcessGateway, query: str, variables: dict[str, Any], expected: list[str]
) -> None:
    assert _messages(example_gateway.execute(query, variables)) == expected


@pytest.mark.e2e
def test_compiled_path_quotes_variable_values_as_json(example_server: LiveServer) -> None:
    url = f"{example_server.url}/graphql"
    valid = {
        QUERY: {"r": ROW},
        BATCH: {"rows": [ROW]},
        TOPIC: {"t": {"text": "The sepals and petals of each flower were measured."}},
    }
    for query, variables, expected in CASES:
        good = httpx.post(url, json={"query": query, "variables": valid[query]})  # compiled
        assert good.status_code == 200 and "errors" not in good.json(), good.text
        bad = httpx.post(url, json={"query": query, "variables": variables})
        assert _messages(bad.json()) == expected


def test_other_messages_are_left_as_they_are() -> None:
    variables = {"r": {"a": 1}}
    for message in (
        "Variable '$r' of required type 'IrisInput!' was not provided.",
        "Variable '$other' has invalid value: Expected value of non-null type 'X!' not to be None.",
        "Variable '$r' has invalid value at .b: Float cannot represent non numeric value: True",
        "Cannot query field 'x' on type 'Query'.",
    ):
        assert quote_as_json(message, variables) == message


def test_a_long_value_is_quoted_short(example_gateway: InProcessGateway) -> None:
    variables = {"r": {**ROW, "sepalLength": "x" * 100_000, "petalWidth": list(range(1000))}}
    first, second = _messages(example_gateway.execute(QUERY, variables))
    assert first.endswith(' value: "' + "x" * 237 + '..."')
    assert second.endswith("value: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...]")
