"""The command line: check, export-schema, configuration errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.conftest import EXAMPLE_MODELS, ROOT, identity_model, write_repository
from tests.test_admin import _classifier
from tests.test_lifecycle import _rejects_warmup


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


def _problems(root: Path) -> Path:
    """A repository with what the server warns of: labels that do not fit, a model that
    rejects the synthetic warm-up, a version that fails."""
    return write_repository(
        root,
        {
            "labelled/1": _classifier(1.0),
            "shaped/1": _rejects_warmup(),
            "good/1": identity_model(),
            "good/2": b"garbage",
        },
        {"labelled": 'labels = ["a", "b", "c"]\n'},
    )


LABELS_WARNING = (
    "model labelled has no typed field: model.toml has 3 labels but the model has 2 classes"
)


def test_check_reports_what_the_server_warns_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _problems(tmp_path)
    assert main(["check", str(root)]) == 1  # good/2 FAILED
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert f"warning: {LABELS_WARNING}" in lines
    shaped = next(line for line in lines if line.startswith("shaped "))
    assert "READY (warm-up skipped: the model rejected the synthetic input" in shaped
    assert "FAILED: not a readable ONNX model" in next(
        line for line in lines if line.startswith("good ") and " 2 " in line
    )
    assert err == ""  # said once, in the table: not again on stderr
    (tmp_path / "good" / "2" / "model.onnx").unlink()
    (tmp_path / "good" / "2").rmdir()
    assert main(["check", str(root)]) == 0  # warnings alone: the models serve
    assert f"warning: {LABELS_WARNING}" in capsys.readouterr().out
    assert main(["check", "--strict", str(root)]) == 1


def test_export_schema_reports_the_same_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _problems(tmp_path)
    assert main(["export-schema", "--models", str(root)]) == 0
    out, err = capsys.readouterr()
    predict = out.split("type Predict {", 1)[1].split("}", 1)[0]  # the SDL, on stdout alone
    assert "shaped(" in predict and "labelled" not in predict
    assert err.splitlines() == [
        "gateway export-schema: warning: model good version 2 FAILED: not a readable ONNX "
        "model (DecodeError)",
        f"gateway export-schema: warning: {LABELS_WARNING}",
    ]
