"""The contract as an artefact: schema/schema.graphql, schema/operations/, ../shared/API.md."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import graphql
import pytest

from gateway.cli import main
from tests.conftest import ROOT, InProcessGateway

SDL_FILE = ROOT / "schema" / "schema.graphql"
OPERATIONS = sorted((ROOT / "schema" / "operations").glob("*.graphql"))
API_MD = ROOT.parent / "shared" / "API.md"


def _variables(operation: Path) -> dict[str, Any] | None:
    path = operation.with_suffix(".variables.json")
    return dict(json.loads(path.read_text())) if path.exists() else None


def test_exported_sdl_matches_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-schema", "--models", str(ROOT / "models")]) == 0
    exported = capsys.readouterr().out
    assert exported == SDL_FILE.read_text(), (
        "schema/schema.graphql drifted: run `gateway export-schema --output "
        "schema/schema.graphql` and review the diff"
    )


def test_committed_sdl_is_what_the_server_serves(example_gateway: InProcessGateway) -> None:
    assert example_gateway.sdl == SDL_FILE.read_text()


def test_there_are_example_operations() -> None:
    names = {p.stem for p in OPERATIONS}
    assert {"predict_iris", "predict_iris_batch", "infer_iris", "models"} <= names


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.stem)
def test_operation_validates_against_the_sdl(operation: Path) -> None:
    schema = graphql.build_schema(SDL_FILE.read_text())
    errors = graphql.validate(schema, graphql.parse(operation.read_text()))
    assert errors == []


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda p: p.stem)
def test_operation_runs_against_the_example_models(
    operation: Path, example_gateway: InProcessGateway
) -> None:
    response = example_gateway.execute(operation.read_text(), _variables(operation))
    assert "errors" not in response
    assert response["data"]


def test_example_operations_answer_what_the_models_predict(
    example_gateway: InProcessGateway,
) -> None:
    def run(stem: str) -> Any:
        path = ROOT / "schema" / "operations" / f"{stem}.graphql"
        return example_gateway.execute(path.read_text(), _variables(path))["data"]

    assert run("predict_iris")["predict"]["iris"]["label"] == "setosa"
    batch = run("predict_iris_batch")["predict"]["irisBatch"]
    assert [row["label"] for row in batch] == ["setosa", "versicolor", "virginica"]
    assert {row["modelVersion"] for row in batch} == {1}
    assert run("predict_digits")["predict"]["digits"]["label"] == "0"
    assert run("predict_dataset_topic")["predict"]["datasetTopic"]["label"] == "iris"
    assert run("predict_diabetes")["predict"]["diabetes"]["variable"] > 0
    infer = run("infer_iris")["infer"]
    assert infer["id"] == "request-1" and infer["version"] == 2
    probabilities = next(o for o in infer["outputs"] if o["name"] == "output_probability")
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [2, 3]
    b64 = run("infer_iris_b64")["infer"]["outputs"]
    assert [o["name"] for o in b64] == ["output_label"] and b64[0]["data"] == [0]


def _contract_sdl() -> str:
    text = API_MD.read_text()
    blocks = re.findall(r"```graphql\n(.*?)```", text, flags=re.S)
    assert blocks, "no graphql block in API.md"
    return "scalar JSON\n" + "\n".join(blocks)


@pytest.mark.skipif(not API_MD.exists(), reason="../shared/API.md is not beside the checkout")
def test_schema_honours_every_type_field_and_argument_of_the_contract() -> None:
    contract = graphql.build_schema(_contract_sdl())
    ours = graphql.build_schema(SDL_FILE.read_text())
    for name, ctype in contract.type_map.items():
        if name.startswith("__") or name in graphql.specified_scalar_types:
            continue
        otype = ours.type_map.get(name)
        assert otype is not None, f"type {name} missing"
        assert type(otype) is type(ctype), name
        if isinstance(ctype, graphql.GraphQLEnumType):
            assert isinstance(otype, graphql.GraphQLEnumType)
            assert set(ctype.values) == set(otype.values), name
        if isinstance(ctype, graphql.GraphQLObjectType | graphql.GraphQLInputObjectType):
            assert isinstance(otype, graphql.GraphQLObjectType | graphql.GraphQLInputObjectType)
            for fname, cfield in ctype.fields.items():
                ofield = otype.fields.get(fname)
                assert ofield is not None, f"{name}.{fname} missing"
                assert str(ofield.type) == str(cfield.type), f"{name}.{fname}"
                for aname, carg in getattr(cfield, "args", {}).items():
                    oarg = ofield.args.get(aname)
                    assert oarg is not None, f"{name}.{fname}({aname}) missing"
                    assert str(oarg.type) == str(carg.type), f"{name}.{fname}({aname})"
