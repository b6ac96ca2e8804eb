"""gateway convert --torch / --torchscript: a CNN trained here on scikit-learn's digits becomes a
repository version (dynamic batch) that the gateway serves with the module's answers."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import tomllib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from sklearn import datasets

from gateway.cli import main
from tests.conftest import load_gateway

torch = pytest.importorskip("torch")

CNN_MODULE = """
import torch


class DigitsCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))
"""


def _convert(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["convert", *args])
    return status, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small CNN trained on 8x8 digits, saved as a state dict and as TorchScript."""
    root = tmp_path_factory.mktemp("torch")
    (root / "digits_cnn.py").write_text(CNN_MODULE, encoding="utf-8")
    sys.path.insert(0, str(root))
    try:
        digits_cnn = importlib.import_module("digits_cnn")
    finally:
        sys.path.remove(str(root))
    digits = datasets.load_digits()
    images = (digits.data / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    torch.manual_seed(0)
    net = digits_cnn.DigitsCNN()
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    x, y = torch.from_numpy(images[:1400]), torch.from_numpy(digits.target[:1400])
    for _ in range(60):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        held_out = net(torch.from_numpy(images[1400:])).argmax(1).numpy()
    assert np.mean(held_out == digits.target[1400:]) > 0.85  # a real model, not noise
    torch.save(net.state_dict(), root / "weights.pt")
    with warnings.catch_warnings():  # TorchScript is deprecated; its files are still around
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(root / "scripted.pt"))
    np.save(root / "sample.npy", images[1400:1600])
    return {"root": root, "net": net, "images": images}


def _scores(net: Any, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(torch.softmax(net(torch.from_numpy(images)), dim=1).numpy())


def test_a_module_and_its_torchscript_convert_and_serve_typed_and_generic(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    root: Path = trained["root"]
    monkeypatch.chdir(root)  # module:factory is found beside the caller, as with python -m
    repo = root / "repo"
    names = "zero,one,two,three,four,five,six,seven,eight,nine"
    common = ["--sample", "sample.npy", "--classifier", "logits", "--labels", names]
    status, out = _convert(
        "--torch", "digits_cnn:DigitsCNN", "--weights", "weights.pt", *common,
        "--name", "digits", "--repo", str(repo), "--json",
    )  # fmt: skip
    assert status == 0, out
    report = json.loads(out)
    assert report["parity"]["label_agreement"] == 1.0
    assert report["parity"]["probabilities_max_abs_error"] < 1e-5
    status, out = _convert(
        "--torchscript", "scripted.pt", *common, "--name", "digits", "--repo", str(repo), "--json"
    )
    assert status == 0, out
    assert json.loads(out)["version"] == 2
    config = tomllib.loads((repo / "digits" / "model.toml").read_text())
    assert config["conversion"]["framework"] == "pytorch"
    assert "TorchScript" in config["conversion"]["converter_version"]
    assert config["baseline"]["features"]["input"]["shape"] == [1, 8, 8]
    for version in (1, 2):  # a free batch dimension, whichever exporter
        session = ort.InferenceSession(str(repo / "digits" / str(version) / "model.onnx"))
        assert session.get_inputs()[0].shape[0] not in (1, 2)
        assert isinstance(session.get_inputs()[0].shape[0], str)

    net, images = trained["net"], trained["images"]
    rows = images[[3, 500, 1700]]
    expected = _scores(net, rows)
    gw = load_gateway(repo)
    typed = "query($i: DigitsInput!, $v: Int) { predict { digits(input: $i, version: $v) { label probabilities { label probability } modelVersion } } }"  # noqa: E501
    generic = 'query($x: JSON!, $v: Int) { infer(model: "digits", version: $v, inputs: [{name: "input", shape: [3, 1, 8, 8], data: $x}]) { outputs { name shape data } } }'  # noqa: E501
    for version in (1, 2):
        for row, scores in zip(rows, expected, strict=True):
            answer = gw.execute(typed, {"i": {"input": row.tolist()}, "v": version})
            assert "errors" not in answer, answer
            prediction = answer["data"]["predict"]["digits"]
            assert prediction["label"] == names.split(",")[int(scores.argmax())], answer
            served = [p["probability"] for p in prediction["probabilities"]]
            assert np.allclose(served, scores, atol=1e-5)
            assert prediction["modelVersion"] == version
        answer = gw.execute(generic, {"x": rows.reshape(-1).tolist(), "v": version})
        assert "errors" not in answer, answer
        outputs = {o["name"]: o for o in answer["data"]["infer"]["outputs"]}
        assert outputs["label"]["data"] == expected.argmax(1).tolist()
        assert outputs["probabilities"]["shape"] == [3, 10]
        assert np.allclose(outputs["probabilities"]["data"], expected.reshape(-1), atol=1e-5)


def test_raw_outputs_and_refusals(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    root: Path = trained["root"]
    monkeypatch.chdir(root)
    repo = root / "raw-repo"
    base = ["--sample", "sample.npy", "--repo", str(repo)]
    status, out = _convert(
        "--torch", "digits_cnn:DigitsCNN", "--weights", "weights.pt", *base, "--name", "scores",
        "--json",
    )  # fmt: skip
    assert status == 0, out
    parity = json.loads(out)["parity"]  # no --classifier: the module's output as it is
    assert parity["output_max_abs_error"] < 1e-4 and "label_agreement" not in parity
    capsys.readouterr()

    torch.save(torch.nn.Linear(2, 2).state_dict(), root / "other.pt")
    refusals = {
        "no such factory": ["--torch", "digits_cnn:Missing"],
        "not a state dict": ["--torch", "digits_cnn:DigitsCNN", "--weights", "sample.npy"],
        "weights of another module": ["--torch", "digits_cnn:DigitsCNN", "--weights", "other.pt"],
        "labels that do not fit": [
            "--torch", "digits_cnn:DigitsCNN", "--classifier", "logits", "--labels", "a,b",
        ],
    }  # fmt: skip
    for what, args in refusals.items():
        status, _ = _convert(*args, *base, "--name", "refused")
        message = capsys.readouterr().err
        assert status == 2, what
        last = message.splitlines()[-1]  # after the progress lines: the reason
        assert last.startswith("gateway convert:") and "Traceback" not in message, message
    assert not (repo / "refused").exists()
