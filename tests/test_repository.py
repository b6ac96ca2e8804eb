"""Scanning a model repository: layout, names, versions and model.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.repository import parse_model_config, scan_repository


def _touch(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_versions_zero_config_and_what_is_skipped(tmp_path: Path) -> None:
    _touch(tmp_path / "iris" / "1" / "model.onnx")
    _touch(tmp_path / "iris" / "10" / "model.onnx")
    _touch(tmp_path / "iris" / "2" / "model.onnx")
    _touch(tmp_path / "iris" / "latest" / "model.onnx")
    _touch(tmp_path / "iris" / "3" / "weights.bin")
    _touch(tmp_path / "plain.onnx")
    _touch(tmp_path / "9lives.onnx")
    _touch(tmp_path / "empty" / "README")
    _touch(tmp_path / ".hidden" / "1" / "model.onnx")
    _touch(tmp_path / "notes.txt")
    scan = scan_repository(tmp_path)
    models = {m.name: m for m in scan.models}
    assert set(models) == {"iris", "plain"}
    assert list(models["iris"].versions) == [1, 2, 10]
    assert models["plain"].versions == {1: tmp_path / "plain.onnx"}
    warnings = "\n".join(scan.warnings)
    assert "iris/latest: skipped, a version must be a positive integer" in warnings
    assert "iris/3: skipped, no model.onnx" in warnings
    assert "9lives.onnx: skipped, a model name must match" in warnings
    assert "empty: skipped" in warnings


def test_a_directory_wins_over_a_zero_config_file(tmp_path: Path) -> None:
    _touch(tmp_path / "iris" / "1" / "model.onnx")
    _touch(tmp_path / "iris.onnx")
    scan = scan_repository(tmp_path)
    assert [m.name for m in scan.models] == ["iris"]
    assert scan.models[0].versions == {1: tmp_path / "iris" / "1" / "model.onnx"}
    assert any("iris.onnx: skipped" in w for w in scan.warnings)


def test_model_toml_is_read(tmp_path: Path) -> None:
    _touch(tmp_path / "iris" / "1" / "model.onnx")
    _touch(
        tmp_path / "iris" / "model.toml",
        'description = "Iris"\nfeatures = ["a", "b"]\nlabels = ["x", "y"]\n'
        "[session]\nintra_op_threads = 2\n[example]\na = 1.5\n",
    )
    (spec,) = scan_repository(tmp_path).models
    assert spec.problem is None
    assert spec.config.description == "Iris"
    assert spec.config.features == {"": ("a", "b")}
    assert spec.config.labels == ("x", "y")
    assert spec.config.session == {"intra_op_threads": 2}
    assert spec.config.example == {"a": 1.5}


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("descripton = 'typo'", "unknown key 'descripton'"),
        ("labels = 'abc'", "labels: expected a non-empty list of strings"),
        ("features = ['a', 'a']", "features: names must be unique"),
        ("[session]\ngraph_optimization_level = 'max'", "graph_optimization_level"),
        ("[inputs.x]\ncolumns = ['a']", "inputs.x: expected a table with the key 'features'"),
        ("description = ", "Invalid value"),
        ("[versions]\npolicy = 'newest'", "versions.policy: expected one of all, latest, specific"),
        ("[versions]\npolicy = 'specific'", "policy 'specific' needs the versions"),
        ("[versions]\nlatest = 0", "versions.latest: expected an integer >= 1"),
        ("[versions]\ndefault = 'two'", "versions.default: expected a version number"),
        ("[sha256]\n'1' = 'abc'", "sha256.1: expected 64 hexadecimal digits"),
        ("[sha256]\nv1 = '" + "0" * 64 + "'", "sha256.v1: keys are version numbers"),
        ("[[samples]]\nexpect = { label = 'a' }", "samples[1].input: expected a table"),
        ("[[samples]]\ninput = {}\nwant = 1", "samples[1]: unknown key 'want'"),
    ],
)
def test_a_bad_model_toml_becomes_the_model_problem(tmp_path: Path, text: str, phrase: str) -> None:
    _touch(tmp_path / "iris" / "1" / "model.onnx")
    _touch(tmp_path / "iris" / "model.toml", text)
    (spec,) = scan_repository(tmp_path).models
    assert spec.problem is not None and phrase in spec.problem
    assert spec.problem.startswith("iris/model.toml: ")


def test_version_policies_select_versions() -> None:
    config = parse_model_config({"versions": {"policy": "latest", "latest": 2, "default": 1}})
    assert config.versions.select([1, 5, 3]) == {3, 5} and config.versions.default == 1
    specific = parse_model_config({"versions": {"policy": "specific", "specific": [1, 4]}})
    assert specific.versions.select([1, 2, 3]) == {1}
    assert parse_model_config({}).versions.select([1, 2]) == {1, 2}
    digest = "AB" * 32
    assert parse_model_config({"sha256": {"2": digest}}).sha256 == {2: digest.lower()}


def test_per_input_features() -> None:
    config = parse_model_config({"inputs": {"num": {"features": ["a", "b"]}}})
    assert config.features == {"num": ("a", "b")}


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        scan_repository(tmp_path / "missing")
