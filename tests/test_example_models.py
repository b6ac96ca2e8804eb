"""The example models in models/: rebuilt byte for byte, and runnable without an en_US locale."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

MODELS = Path(__file__).resolve().parent.parent / "models"
BUILD = MODELS / "build.py"
MODEL_FILES = sorted(MODELS.glob("*/*/model.onnx"))

# Runs in a child process so that onnxruntime starts under the locale the test chooses.
RUN_ONE_ROW = """
import json, sys
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
feeds = json.loads(sys.argv[2])
arrays = {
    i.name: np.array(feeds[i.name], dtype=object if i.type == "tensor(string)" else np.float32)
    for i in session.get_inputs()
}
outputs = zip(session.get_outputs(), session.run(None, arrays))
print(json.dumps({o.name: v.tolist() if hasattr(v, "tolist") else v for o, v in outputs}))
"""


def _repository_files(root: Path) -> dict[str, bytes]:
    paths = [*root.glob("*/model.toml"), *root.glob("*/*/model.onnx")]
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in paths}


def _toolchain(root: Path) -> str:
    model = onnx.load(str(next(iter(sorted(root.glob("*/*/model.onnx"))))))
    return str(next(p.value for p in model.metadata_props if p.key == "toolchain"))


def _card(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "model.toml"
    return tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _one_row(model_file: Path) -> dict[str, Any]:
    """A batch of one row: the model.toml example if it has one, else zeros (or "x")."""
    (graph_input,) = onnx.load(str(model_file)).graph.input
    card = _card(model_file.parent.parent)
    if "example" in card and "features" in card:
        return {graph_input.name: [[card["example"][f] for f in card["features"]]]}
    tensor = graph_input.type.tensor_type
    shape = [dim.dim_value or 1 for dim in tensor.shape.dim]
    fill: object = "x" if tensor.elem_type == onnx.TensorProto.STRING else 0.0
    return {graph_input.name: np.full(shape, fill, dtype=object).tolist()}


def test_models_directory_has_the_examples() -> None:
    names = {path.relative_to(MODELS).parent.as_posix() for path in MODEL_FILES}
    assert names == {"iris/1", "iris/2", "diabetes/1", "digits/1", "dataset-topic/1"}


def test_build_reproduces_committed_models(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    built, committed = _repository_files(tmp_path), _repository_files(MODELS)
    assert sorted(built) == sorted(committed)
    changed = sorted(name for name, data in committed.items() if built[name] != data)
    if changed and _toolchain(tmp_path) != _toolchain(MODELS):
        # Other library versions may train or convert differently; only the same toolchain
        # promises identical bytes.
        pytest.skip(f"models/ was built with {_toolchain(MODELS)}, not {_toolchain(tmp_path)}")
    assert not changed, f"{changed} drifted from models/build.py: run python models/build.py"


@pytest.mark.parametrize(
    "model_file", MODEL_FILES, ids=[p.parent.relative_to(MODELS).as_posix() for p in MODEL_FILES]
)
def test_model_runs_one_row_in_the_c_locale(model_file: Path) -> None:
    env = {**os.environ, "LANG": "C", "LC_ALL": "C"}
    feeds = json.dumps(_one_row(model_file))
    result = subprocess.run(
        [sys.executable, "-c", RUN_ONE_ROW, str(model_file), feeds],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr

    outputs: dict[str, Any] = json.loads(result.stdout)
    assert outputs
    assert all(len(value) == 1 for value in outputs.values())
    labels = _card(model_file.parent.parent).get("labels")
    if labels is not None:
        (label,) = next(iter(outputs.values()))
        # A class index into labels, or (string classes) the class itself.
        assert label in labels if isinstance(label, str) else 0 <= label < len(labels)
