"""gateway convert and optimize refuse what they cannot do with one clear line and exit 2,
leaving nothing on disk; what they write checks what it says it checks."""

from __future__ import annotations

import contextlib
import io
import tomllib
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn import datasets
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.neighbors import KNeighborsRegressor

from gateway.cli import main
from gateway.samples import matches
from gateway.versions import ModelState
from tests.conftest import load_gateway

IRIS = datasets.load_iris()
DIABETES = datasets.load_diabetes()
IRIS_CSV = "a,b,c,d\n" + "\n".join(",".join(map(str, r)) for r in IRIS.data[::5]) + "\n"


def _run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


def _files(tmp_path: Path) -> None:
    (tmp_path / "iris.csv").write_text(IRIS_CSV, encoding="utf-8")
    (tmp_path / "short.csv").write_text("a,b,c,d\n1,2,3,4\n5,6,7\n", encoding="utf-8")
    x = IRIS.data.astype(np.float32)
    xgboost.XGBClassifier(n_estimators=3).fit(x, IRIS.target).save_model(tmp_path / "x.json")
    booster = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(x, IRIS.target).booster_
    booster.save_model(str(tmp_path / "l.txt"))
    joblib.dump(LinearRegression().fit(x, IRIS.target), tmp_path / "m.joblib")


CONVERT_REFUSALS: dict[str, tuple[list[str], str]] = {
    "a missing model file": (["--sklearn", "nope.joblib"], "--sklearn nope.joblib: does not exist"),
    "a missing TorchScript file": (["--torchscript", "nope.pt"], "nope.pt: does not exist"),
    "a file that is no pickle": (["--sklearn", "iris.csv"], "not a model saved with joblib"),
    "a CSV sample with a short row": (
        ["--sklearn", "m.joblib", "--sample", "short.csv"],
        "short.csv: line 3 has 3 fields, the header has 4",
    ),
    "an XGBoost file given to --lightgbm": (
        ["--lightgbm", "x.json"],
        "x.json is not a LightGBM model file: it looks like an XGBoost model file (use --xgboost)",
    ),
    "a LightGBM file given to --xgboost": (
        ["--xgboost", "l.txt"],
        "l.txt is not an XGBoost model file: it looks like a LightGBM model file (use --lightgbm)",
    ),
    "a name starting with a digit": (["--sklearn", "m.joblib", "--name", "9lives"], "'9lives'"),
    "a name with a dot": (["--sklearn", "m.joblib", "--name", "my.model"], "'my.model'"),
}


@pytest.mark.parametrize("case", list(CONVERT_REFUSALS))
def test_convert_refuses_with_one_line_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _files(tmp_path)
    monkeypatch.chdir(tmp_path)  # the file arguments are relative, as a user types them
    args, says = CONVERT_REFUSALS[case]
    given = dict(zip(args[::2], args[1::2], strict=True))
    given = {"--sample": "iris.csv", "--name": "model", **given}
    flags = [part for pair in given.items() for part in pair]
    status, out, err = _run("convert", *flags, "--repo", "repo")
    last = err.strip().splitlines()[-1]
    assert status == 2, err
    assert last.startswith("gateway convert: ") and says in last, err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


@pytest.fixture
def regressor_repo(tmp_path: Path) -> Path:
    """A repository with a tree regressor "trees" (nothing in it to quantise) at version 1."""
    model = GradientBoostingRegressor(n_estimators=5, random_state=0)
    joblib.dump(model.fit(DIABETES.data, DIABETES.target), tmp_path / "trees.joblib")
    np.save(tmp_path / "diabetes.npy", DIABETES.data[:60])
    (tmp_path / "iris.csv").write_text(IRIS_CSV, encoding="utf-8")
    (tmp_path / "repo" / "empty").mkdir(parents=True)
    status, _, err = _run(
        "convert", "--sklearn", str(tmp_path / "trees.joblib"), "--sample",
        str(tmp_path / "diabetes.npy"), "--name", "trees", "--repo", str(tmp_path / "repo"),
    )  # fmt: skip
    assert status == 0, err
    return tmp_path / "repo"


OPTIMIZE_REFUSALS: dict[str, tuple[list[str], str]] = {
    "a sample of the wrong width": (
        ["--sample", "iris.csv", "--graph"],
        "the sample has 4 columns; the model's input 'input' takes 10",
    ),
    "a model that does not exist": (["--name", "nope", "--graph"], "model 'nope' does not exist"),
    "a model without versions": (["--name", "empty", "--graph"], "'empty' has no versions"),
    "a version that does not exist": (
        ["--version", "7", "--graph"],
        "model 'trees' has no version 7 (its versions: 1)",
    ),
    "int8 with nothing to quantise": (
        ["--int8", "dynamic"],
        "--int8 dynamic: none of this model's weights changed (none of its operators, "
        "TreeEnsembleRegressor, can be quantised); nothing written",
    ),
    "fp16 with nothing in half precision": (["--fp16"], "--fp16: none of this model's weights"),
    "no step": ([], "gateway optimize: ask for --graph and/or one of"),
}


@pytest.mark.parametrize("case", list(OPTIMIZE_REFUSALS))
def test_optimize_refuses_with_one_line_and_writes_nothing(
    case: str, regressor_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(regressor_repo.parent)
    args, says = OPTIMIZE_REFUSALS[case]
    before = sorted(regressor_repo.rglob("*"))
    defaults = ["--name", "trees", "--sample", "diabetes.npy"]
    status, out, err = _run("optimize", *defaults, *args, "--repo", "repo")
    last = err.strip().splitlines()[-1]
    assert status == 2, err
    assert last.startswith("gateway optimize: ") and says in last, err
    assert "optimize: optimize:" not in err and "Traceback" not in err and out == ""
    assert sorted(regressor_repo.rglob("*")) == before


def test_regressors_are_checked_against_the_original_prediction(
    regressor_repo: Path, tmp_path: Path
) -> None:
    model = joblib.load(tmp_path / "trees.joblib")
    card = tomllib.loads((regressor_repo / "trees" / "model.toml").read_text())
    (check,) = card["samples"]
    assert check["expect"] == {"variable": float(model.predict(DIABETES.data[:1])[0])}

    # Several values per row: each is expected.
    targets = np.column_stack([DIABETES.target, DIABETES.data[:, 2]])
    joblib.dump(KNeighborsRegressor().fit(DIABETES.data, targets), tmp_path / "knn.joblib")
    status, _, err = _run(
        "convert", "--sklearn", str(tmp_path / "knn.joblib"), "--sample",
        str(tmp_path / "diabetes.npy"), "--name", "two", "--repo", str(regressor_repo),
    )  # fmt: skip
    assert status == 0, err
    card = tomllib.loads((regressor_repo / "two" / "model.toml").read_text())
    expected = KNeighborsRegressor().fit(DIABETES.data, targets).predict(DIABETES.data[:1])[0]
    assert card["samples"][0]["expect"] == {"variable": pytest.approx(expected.tolist())}

    # The expectation bites: a model that answers otherwise is not loaded.
    toml = regressor_repo / "trees" / "model.toml"
    wrong = check["expect"]["variable"] * 1.01
    toml.write_text(toml.read_text().replace(repr(check["expect"]["variable"]), repr(wrong)))
    gw = load_gateway(regressor_repo)
    try:
        loaded = gw.runtime.entries["trees"].versions[1]
        assert loaded.state is ModelState.FAILED and "expected variable" in (loaded.reason or "")
    finally:
        gw.runtime.close()


@pytest.mark.parametrize(
    ("got", "expected", "same"),
    [
        (152.1, 152.1 * (1 + 5e-5), True),  # within 1e-4 relative
        (152.1, 152.1 * (1 + 5e-4), False),
        (2e-7, -3e-7, True),  # near zero, within 1e-5 absolute
        (0.02, 0.0201, False),
        ([1.0, 2.0], [1.0, 2.00001], True),
        ([1.0, 2.0], [1.0], False),
        ("setosa", "setosa", True),
    ],
)
def test_sample_numbers_match_within_the_tolerances(
    got: object, expected: object, same: bool
) -> None:
    assert matches(got, expected) is same
