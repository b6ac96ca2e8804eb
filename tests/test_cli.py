"""The command line: check, export-schema, configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import EXAMPLE_MODELS, ROOT, identity_model, write_repository


def test_check_prints_a_table_of_the_example_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE_MODELS)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "INPUTS", "OUTPUTS", "LOAD", "MS", "STATE"]
    rows = [line.split()[:2] for line in lines[1:]]
    assert rows == [
        ["dataset-topic", "1"],
        ["diabetes", "1"],
        ["digits", "1"],
        ["iris", "1"],
        ["iris", "2"],
    ]
    assert all(line.endswith("READY") for line in lines[1:])
    assert "image:FP32[-1, 1, 8, 8]" in "\n".join(lines)


def test_check_fails_and_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_repository(
        tmp_path, {"good/1": identity_model(), "bad/1": b"garbage", "1bad.onnx": b""}
    )
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    bad = next(line for line in out.splitlines() if line.startswith("bad "))
    assert "FAILED: not a readable ONNX model" in bad
    good = next(line for line in out.splitlines() if line.startswith("good "))
    assert good.endswith("READY")
    assert "skipped: 1bad.onnx" in out
    assert str(tmp_path) not in bad


def test_export_schema_to_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schema.graphql"
    assert main(["export-schema", "--models", str(EXAMPLE_MODELS), "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert out.read_text() == (ROOT / "schema" / "schema.graphql").read_text()


def test_configuration_errors_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_MODELS", "/nonexistent/models")
    assert main(["export-schema"]) == 2
    assert "models: /nonexistent/models is not a directory" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("gateway 0.")
