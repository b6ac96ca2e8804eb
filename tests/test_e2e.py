"""End to end over real HTTP: ``gateway serve`` on 127.0.0.1, every example model through the
typed and the generic API, every error code, health and readiness."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from onnx import TensorProto, helper
from sklearn.datasets import load_diabetes, load_digits, load_iris

from tests.conftest import (
    EXAMPLE_MODELS,
    LiveServer,
    identity_model,
    make_model,
    start_server,
    stop_server,
    tensor_info,
    write_repository,
)

pytestmark = pytest.mark.e2e

IRIS_ROW = {"sepalLength": 5.1, "sepalWidth": 3.5, "petalLength": 1.4, "petalWidth": 0.2}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return dict(body["data"])


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("errors"), body
    error: dict[str, Any] = body["errors"][0]
    assert "Traceback" not in error["message"] and "/" not in error["message"].split(" ")[0]
    return error


def test_health_and_readiness(example_server: LiveServer) -> None:
    assert httpx.get(f"{example_server.url}/healthz").status_code == 200
    ready = httpx.get(f"{example_server.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


def test_typed_iris_single_and_batch(example_server: LiveServer) -> None:
    data = _ok(
        example_server.graphql(
            "query($r: IrisInput!) { predict { iris(input: $r) { label probabilities { label "
            "probability } modelVersion } } }",
            {"r": IRIS_ROW},
        )
    )
    iris = data["predict"]["iris"]
    assert iris["label"] == "setosa" and iris["modelVersion"] == 2
    assert [p["label"] for p in iris["probabilities"]] == ["setosa", "versicolor", "virginica"]
    assert sum(p["probability"] for p in iris["probabilities"]) == pytest.approx(1.0, abs=1e-5)

    x, y = load_iris(return_X_y=True)
    rows = [dict(zip(IRIS_ROW, map(float, r), strict=True)) for r in x]
    data = _ok(
        example_server.graphql(
            "query($rows: [IrisInput!]!) { predict { irisBatch(inputs: $rows, version: 1) "
            "{ label modelVersion } } }",
            {"rows": rows},
        )
    )
    names = load_iris().target_names
    labels = [row["label"] for row in data["predict"]["irisBatch"]]
    assert len(labels) == 150
    assert np.mean([label == names[t] for label, t in zip(labels, y, strict=True)]) > 0.95


def test_typed_regressor_image_and_text_models(example_server: LiveServer) -> None:
    diabetes = load_diabetes()
    features = dict(zip(diabetes.feature_names, map(float, diabetes.data[0]), strict=True))
    digits = load_digits()
    data = _ok(
        example_server.graphql(
            "query($d: DiabetesInput!, $img: [[[Float!]!]!]!) { predict { "
            "diabetes(input: $d) { variable } "
            "digits(input: {image: $img}) { label probabilities { label probability } } "
            'datasetTopic(input: {text: "sepal and petal measurements of iris flowers"}) { label } '
            "} }",
            {"d": features, "img": [digits.images[1].tolist()]},
        )
    )
    assert 25 < data["predict"]["diabetes"]["variable"] < 346  # the target's range
    assert data["predict"]["digits"]["label"] == str(digits.target[1])
    assert len(data["predict"]["digits"]["probabilities"]) == 10
    assert data["predict"]["datasetTopic"]["label"] == "iris"


def test_generic_infer_for_every_example_model(example_server: LiveServer) -> None:
    digits = load_digits().images[:2].astype("<f4")
    image = base64.b64encode(digits.tobytes()).decode()
    cases: list[tuple[str, str]] = [
        ('"iris"', '{name: "float_input", shape: [1, 4], data: [5.1, 3.5, 1.4, 0.2]}'),
        ('"diabetes"', '{name: "float_input", shape: [1, 10], data: [0,0,0,0,0,0,0,0,0,0]}'),
        (
            '"digits"',
            '{name: "image", shape: [2, 1, 8, 8], b64: "' + image + '"}',
        ),
        ('"dataset-topic"', '{name: "text", shape: [1, 1], data: ["digits of handwriting"]}'),
    ]
    for model, tensor in cases:
        data = _ok(
            example_server.graphql(
                f'{{ infer(model: {model}, inputs: [{tensor}], id: "t") '
                "{ model version id outputs { name datatype shape data b64 } } }"
            )
        )
        result = data["infer"]
        assert result["model"] == json.loads(model) and result["id"] == "t"
        assert result["outputs"], model
        for out in result["outputs"]:
            count = int(np.prod(out["shape"]))
            assert len(out["data"]) == count
            if out["datatype"] == "BYTES":
                assert out["b64"] is None
            else:
                assert len(base64.b64decode(out["b64"])) % max(count, 1) == 0
    labels = _ok(
        example_server.graphql(
            '{ infer(model: "digits", inputs: [{name: "image", shape: [2, 1, 8, 8], b64: "'
            + image
            + '"}], outputs: ["label"]) { outputs { name data } } }'
        )
    )["infer"]["outputs"]
    assert labels == [{"name": "label", "data": [0, 1]}]


@pytest.mark.parametrize(
    ("query", "code", "phrase"),
    [
        ("{ predict { iris(input: {}) ", "GRAPHQL_PARSE_FAILED", "Syntax Error"),
        ("{ predict { rose { label } } }", "GRAPHQL_VALIDATION_FAILED", "rose"),
        ('{ infer(model: "rose", inputs: []) { id } }', "MODEL_NOT_FOUND", "no model named"),
        (
            '{ infer(model: "iris", version: 9, inputs: []) { id } }',
            "MODEL_NOT_FOUND",
            "no version 9",
        ),
        (
            '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 3], '
            "data: [1, 2, 3]}]) { id } }",
            "BAD_USER_INPUT",
            "does not match",
        ),
        (
            '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], '
            'b64: "@@"}]) { id } }',
            "BAD_USER_INPUT",
            "base64",
        ),
        ('{ infer(model: "iris", inputs: []) { id } }', "BAD_USER_INPUT", "missing input"),
    ],
)
def test_errors_over_http(example_server: LiveServer, query: str, code: str, phrase: str) -> None:
    error = _error(example_server.graphql(query))
    assert error["extensions"]["code"] == code
    assert phrase in error["message"]


def test_bad_requests_do_not_disturb_good_ones(example_server: LiveServer) -> None:
    good = (
        "{ predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, "
        "petalWidth: 0.2}) { label } } }"
    )
    bad = (
        '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], data: ["x", 1, '
        "2, 3]}]) { id } }"
    )

    def send(i: int) -> tuple[bool, httpx.Response]:
        is_good = i % 2 == 0
        return is_good, example_server.graphql(good if is_good else bad)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(80)))
    for is_good, response in results:
        if is_good:
            assert _ok(response)["predict"]["iris"]["label"] == "setosa"
        else:
            assert _error(response)["extensions"]["code"] == "BAD_USER_INPUT"
    assert httpx.get(f"{example_server.url}/healthz").status_code == 200


def test_graphiql_is_served_with_its_assets(example_server: LiveServer) -> None:
    page = httpx.get(f"{example_server.url}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text and "http://" not in page.text
    assert "PredictIris" in page.text  # the example operations are at hand
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "boot.js"):
        response = httpx.get(f"{example_server.url}/graphiql/static/{asset}")
        assert response.status_code == 200 and len(response.content) > 100, asset


def _broadcast_model() -> Any:
    """a + b: valid for any lengths, but ONNX Runtime fails unless they broadcast."""
    return make_model(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        [tensor_info("a", TensorProto.FLOAT, ["N"]), tensor_info("b", TensorProto.FLOAT, ["M"])],
        [tensor_info("sum", TensorProto.FLOAT, ["K"])],
    )


@pytest.fixture
def broken_server(tmp_path: Path) -> Any:
    """A repository with a corrupt model, a corrupt version, a model that fails at run time and
    two models whose GraphQL names clash."""
    root = write_repository(
        tmp_path / "repo",
        {
            "good/1": identity_model(),
            "broken/1": b"not an onnx file",
            "broken-too/1": identity_model(),
            "broken-too/2": b"\x08\x07garbage",
            "adder/1": _broadcast_model(),
            "a-b/1": identity_model(),
            "a_b/1": identity_model(),
        },
    )
    server = start_server(root, tmp_path / "server.log", wait_ready=False)
    yield server
    stop_server(server)


def test_a_failed_model_is_reported_and_the_rest_serve(broken_server: LiveServer) -> None:
    url = broken_server.url
    ready = httpx.get(f"{url}/readyz")
    deadline = time.monotonic() + 30  # the initial load runs in the background
    while ready.json().get("status") == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
        ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not ready" and set(body["models"]) == {"broken"}
    assert body["models"]["broken"]["1"]["state"] == "FAILED"
    assert str(broken_server.log.parent) not in json.dumps(body)

    data = _ok(
        broken_server.graphql(
            "{ predict { good(input: {x: [1, 2, 3, 4]}) { y } } "
            "models { name defaultVersion versions { version state stateReason } } }"
        )
    )
    assert data["predict"]["good"]["y"] == [1.0, 2.0, 3.0, 4.0]
    states = {m["name"]: m for m in data["models"]}
    assert states["broken"]["defaultVersion"] is None
    assert states["broken-too"]["defaultVersion"] == 1
    assert "not a readable ONNX model" in states["broken-too"]["versions"][1]["stateReason"]
    error = _error(
        broken_server.graphql('{ infer(model: "broken-too", version: 2, inputs: []) { id } }')
    )
    assert error["extensions"]["code"] == "MODEL_NOT_READY" and "FAILED" in error["message"]
    error = _error(broken_server.graphql('{ infer(model: "broken", inputs: []) { id } }'))
    assert error["extensions"]["code"] == "MODEL_NOT_READY"


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    server = start_server(
        EXAMPLE_MODELS, tmp_path / "server.log", env={"GATEWAY_MAX_TENSOR_ELEMENTS": "3"}
    )
    try:
        error = _error(
            server.graphql(
                '{ infer(model: "iris", inputs: [{name: "float_input", shape: [1, 4], '
                "data: [1, 2, 3, 4]}]) { id } }"
            )
        )
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and "3" in error["message"]
    finally:
        stop_server(server)


def test_internal_errors_are_masked_and_logged_with_an_id(broken_server: LiveServer) -> None:
    ok = _ok(
        broken_server.graphql(
            '{ infer(model: "adder", inputs: [{name: "a", shape: [2], data: [1, 2]}, '
            '{name: "b", shape: [1], data: [10]}]) { outputs { data } } }'
        )
    )
    assert ok["infer"]["outputs"] == [{"data": [11.0, 12.0]}]
    error = _error(
        broken_server.graphql(
            '{ infer(model: "adder", inputs: [{name: "a", shape: [2], data: [1, 2]}, '
            '{name: "b", shape: [3], data: [1, 2, 3]}]) { outputs { data } } }'
        )
    )
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    error_id = error["extensions"]["errorId"]
    assert error["message"] == f"Internal error (error id {error_id})"
    time.sleep(0.2)
    log = broken_server.log.read_text()
    assert f"internal error {error_id}" in log and "Traceback" in log
    # and the server goes on serving
    again = _ok(broken_server.graphql("{ predict { good(input: {x: [1, 2, 3, 4]}) { y } } }"))
    assert again["predict"]["good"]["y"] == [1.0, 2.0, 3.0, 4.0]


def test_a_name_clash_is_reported_and_served_generically(broken_server: LiveServer) -> None:
    data = _ok(
        broken_server.graphql(
            "{ models { name typedField typedFieldError } "
            'infer(model: "a-b", inputs: [{name: "x", shape: [1, 4], data: [1, 2, 3, 4]}]) '
            "{ outputs { data } } }"
        )
    )
    models = {m["name"]: m for m in data["models"]}
    assert models["a-b"]["typedField"] is None
    assert "clashes with model(s) 'a_b'" in models["a-b"]["typedFieldError"]
    assert data["infer"]["outputs"] == [{"data": [1.0, 2.0, 3.0, 4.0]}]
    assert "model a-b has no typed field" in broken_server.log.read_text()


@pytest.mark.parametrize(
    ("content", "content_type", "phrase"),
    [
        (b'{"query": ', "application/json", "Unable to parse request body as JSON"),
        (b'{"variables": {}}', "application/json", "No GraphQL query found"),
    ],
)
def test_requests_that_are_not_graphql_get_a_coded_error(
    example_server: LiveServer, content: bytes, content_type: str, phrase: str
) -> None:
    response = httpx.post(
        f"{example_server.url}/graphql", content=content, headers={"content-type": content_type}
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["extensions"]["code"] == "BAD_REQUEST" and phrase in error["message"]


def test_workers_share_the_port(tmp_path: Path) -> None:
    server = start_server(EXAMPLE_MODELS, tmp_path / "server.log", args=["--workers", "2"])
    try:
        pids = set()
        for _ in range(60):
            with httpx.Client() as client:  # a new connection each time
                pids.add(client.get(f"{server.url}/healthz").json()["pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2
        data = _ok(server.graphql("{ models { name } }"))
        assert {m["name"] for m in data["models"]} == {
            "iris",
            "diabetes",
            "digits",
            "dataset-topic",
        }
    finally:
        stop_server(server)


def test_persisted_queries_over_get(example_server: LiveServer) -> None:
    # A query this server has not seen (the comment), persisted by GET alone.
    query = "query GetIris($r: IrisInput!) { predict { iris(input: $r) { label } } } # get"
    variables = json.dumps({"r": IRIS_ROW})
    url = f"{example_server.url}/graphql"
    digest = hashlib.sha256(query.encode()).hexdigest()
    extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})

    unknown = httpx.get(url, params={"extensions": extensions, "variables": variables})
    assert unknown.status_code == 200
    assert _error(unknown)["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"

    # The query with its hash, once: it runs and is remembered; then the hash alone runs it.
    for params in (
        {"extensions": extensions, "variables": variables, "query": query},
        {"extensions": extensions, "variables": variables, "operationName": "GetIris"},
        {"extensions": extensions, "variables": variables},
    ):
        known = httpx.get(url, params=params, headers={"Accept": "*/*"})  # curl's Accept
        assert _ok(known)["predict"]["iris"]["label"] == "setosa", params

    wrong = httpx.get(url, params={"extensions": extensions, "query": "{ models { name } }"})
    assert wrong.status_code == 400 and _error(wrong)["extensions"]["code"] == "BAD_REQUEST"


def test_persisted_mutations_are_refused_over_get(tmp_path: Path) -> None:
    server = start_server(
        EXAMPLE_MODELS, tmp_path / "server.log", env={"GATEWAY_ADMIN_API": "true"}
    )
    try:
        mutation = 'mutation Unload { unloadModel(name: "iris", version: 1) { name } }'
        digest = hashlib.sha256(mutation.encode()).hexdigest()
        extensions = json.dumps({"persistedQuery": {"version": 1, "sha256Hash": digest}})
        url = f"{server.url}/graphql"
        for params in ({"extensions": extensions, "query": mutation}, {"extensions": extensions}):
            refused = httpx.get(url, params=params)  # registered by the first, refused by both
            assert refused.status_code == 400, refused.text
            error = _error(refused)
            assert error["extensions"]["code"] == "BAD_REQUEST" and "GET" in error["message"]
        models = _ok(server.graphql('{ model(name: "iris") { versions { version state } } }'))
        assert {v["state"] for v in models["model"]["versions"]} == {"READY"}
    finally:
        stop_server(server)
