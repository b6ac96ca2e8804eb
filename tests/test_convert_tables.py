"""gateway convert on models trained the way people train them: on pandas DataFrames (numeric,
mixed, with column names as data sets ship them), with missing values, and on text."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import shutil
import tomllib
import warnings
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import onnx
import pandas as pd
import pytest
from sklearn import datasets
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils import all_estimators

from gateway.cli import main
from gateway.convert import Sample, read_sample, sklearn_source, write_version
from gateway.errors import GatewayError
from tests.conftest import load_gateway

CANCER = datasets.load_breast_cancer(as_frame=True)
FRAME: pd.DataFrame = CANCER.frame.drop(columns=["target"])
TARGET = CANCER.target.to_numpy()
TEXTS = [
    "the cat sat on the mat", "dogs bark at night", "a cat chases the mouse",
    "the dog fetches a stick", "cats purr when happy", "a dog guards the house",
] * 5  # fmt: skip
TOPICS = np.array(["cat", "dog"] * 15)


def _convert(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["convert", *args])
    return status, out.getvalue(), err.getvalue()


def _sklearn(model: Any, sample: Path, repo: Path, name: str, tmp: Path) -> dict[str, Any]:
    joblib.dump(model, tmp / f"{name}.joblib")
    status, out, err = _convert(
        "--sklearn", str(tmp / f"{name}.joblib"), "--sample", str(sample),
        "--name", name, "--repo", str(repo), "--json",
    )  # fmt: skip
    assert status == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def _card(repo: Path, name: str) -> dict[str, Any]:
    return tomllib.loads((repo / name / "model.toml").read_text(encoding="utf-8"))


def test_numeric_dataframes_become_one_input_named_by_their_columns(tmp_path: Path) -> None:
    columns = list(FRAME.columns)
    models = {
        "linear": LogisticRegression(solver="newton-cholesky").fit(FRAME, TARGET),
        "forest": make_pipeline(
            StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0)
        ).fit(FRAME, TARGET),
        # Columns picked by name ("mean radius") become positions in the one input.
        "picked": make_pipeline(
            ColumnTransformer([("scaled", StandardScaler(), columns[:5])]),
            LogisticRegression(max_iter=1000),
        ).fit(FRAME, TARGET),
    }
    # The sample's columns in another order, and one the models do not read: taken by name.
    shuffled = FRAME.iloc[::4, ::-1].assign(note=1.0)
    shuffled.to_csv(tmp_path / "sample.csv", index=False)
    repo = tmp_path / "repo"
    for name, model in models.items():
        report = _sklearn(model, tmp_path / "sample.csv", repo, name, tmp_path)
        assert report["inputs"] == ["input"], name
        assert report["parity"]["label_agreement"] == 1.0, name
        card = _card(repo, name)
        assert card["features"] == columns, name
        assert card["example"]["mean radius"] == float(str(np.float32(FRAME["mean radius"][0])))
        graph = onnx.load(str(repo / name / "1" / "model.onnx")).graph
        assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [0, 30]

    gw = load_gateway(repo)
    try:
        rows = FRAME.iloc[[3, 100, 400]]
        inputs = [{_camel(c): float(v) for c, v in row.items()} for _, row in rows.iterrows()]
        for name, model in models.items():
            query = f"query($r: [{name.capitalize()}Input!]!) {{ predict {{ {name}Batch(inputs: $r) {{ label }} }} }}"  # noqa: E501
            answer = gw.execute(query, {"r": inputs})
            labels = [p["label"] for p in answer["data"]["predict"][f"{name}Batch"]]
            assert labels == [str(v) for v in model.predict(rows)], (name, answer)
    finally:
        gw.runtime.close()


def _camel(column: str) -> str:
    first, *rest = column.split()
    return first + "".join(w.capitalize() for w in rest)


def test_boosted_trees_fitted_on_dataframes_convert(tmp_path: Path) -> None:
    import lightgbm
    import xgboost

    xgb = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(FRAME, TARGET)
    xgb.save_model(tmp_path / "xgb.json")
    lgb = lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(FRAME, TARGET)
    lgb.booster_.save_model(str(tmp_path / "lgb.txt"))  # names written as "mean_radius"
    FRAME.iloc[::5, ::-1].to_csv(tmp_path / "sample.csv", index=False)
    repo = tmp_path / "repo"
    for flag, file, name in (("--xgboost", "xgb.json", "xgb"), ("--lightgbm", "lgb.txt", "lgb")):
        status, out, err = _convert(
            flag, str(tmp_path / file), "--sample", str(tmp_path / "sample.csv"),
            "--name", name, "--repo", str(repo), "--json",
        )  # fmt: skip
        assert status == 0 and "Traceback" not in err, err
        parity = json.loads(out)["parity"]
        assert parity["label_agreement"] == 1.0 and parity["probabilities_max_abs_error"] < 1e-4
        assert _card(repo, name)["features"] == list(FRAME.columns), name


def test_missing_values_are_nan_and_an_imputer_pipeline_converts(tmp_path: Path) -> None:
    iris = datasets.load_iris()
    x = iris.data.copy()
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    x[0, 2] = np.nan  # the first row is not complete: the sample check takes a complete one
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000))
    model.fit(x, iris.target)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(x[::3], columns=features)
    frame.to_csv(tmp_path / "sample.csv", index=False)  # NaN written as empty cells
    assert ",," in (tmp_path / "sample.csv").read_text()
    frame.to_parquet(tmp_path / "sample.parquet")
    np.save(tmp_path / "sample.npy", x[::3])
    missing = [int(frame[c].isna().sum()) for c in features]
    complete = next(row for row in x[::3] if not np.isnan(row).any())

    repo = tmp_path / "repo"
    for suffix in ("csv", "parquet", "npy"):
        sample = read_sample(tmp_path / f"sample.{suffix}")
        assert all(c.dtype == np.float64 for c in sample.columns.values()), suffix
        report = _sklearn(model, tmp_path / f"sample.{suffix}", repo, suffix, tmp_path)
        assert report["parity"]["label_agreement"] == 1.0, suffix
        card = _card(repo, suffix)
        counted = [f["missing"] for f in card["baseline"]["features"].values()]
        assert counted == missing, suffix
        petal = next(iter(card["baseline"]["features"].values()))
        assert np.isfinite(petal["mean"]) and sum(petal["histogram_counts"]) == 50 - missing[0]
        (check,) = card["samples"]
        assert list(check["input"].values()) == [float(str(np.float32(v))) for v in complete]
        assert check["expect"] == {"label": str(model.predict(complete[np.newaxis])[0])}

    # A column with a missing value in its first row reads as numbers all the same.
    (tmp_path / "gaps.csv").write_text("a,b\n,x\n2.5,y\n,\n", encoding="utf-8")
    gaps = read_sample(tmp_path / "gaps.csv")
    assert np.isnan(gaps.columns["a"][[0, 2]]).all() and gaps.columns["a"][1] == 2.5
    assert gaps.columns["b"].tolist() == ["x", "y", ""]

    gw = load_gateway(repo)
    try:
        rows = x[[3, 60, 120]].astype(np.float32)
        answer = gw.execute(  # the generic API spells a missing value "NaN"
            'query($x: JSON!) { infer(model: "csv", inputs: [{name: "input", shape: [3, 4], '
            "data: $x}]) { outputs { name data } } }",
            {"x": ["NaN" if np.isnan(v) else float(v) for v in rows.reshape(-1)]},
        )
        assert "errors" not in answer, answer
        outputs = {o["name"]: o["data"] for o in answer["data"]["infer"]["outputs"]}
        assert outputs["label"] == model.predict(x[[3, 60, 120]]).tolist()
    finally:
        gw.runtime.close()


def test_xgboost_reads_empty_csv_cells_as_missing(tmp_path: Path) -> None:
    import xgboost

    iris = datasets.load_iris()
    x = iris.data.copy()
    x[::7, 1] = np.nan
    xgboost.XGBClassifier(n_estimators=10).fit(x, iris.target).save_model(tmp_path / "x.json")
    pd.DataFrame(x[::2], columns=list("abcd")).to_csv(tmp_path / "sample.csv", index=False)
    status, out, err = _convert(
        "--xgboost", str(tmp_path / "x.json"), "--sample", str(tmp_path / "sample.csv"),
        "--name", "gaps", "--repo", str(tmp_path / "repo"), "--json",
    )  # fmt: skip
    assert status == 0, err
    assert json.loads(out)["parity"]["label_agreement"] == 1.0


def test_text_pipelines_convert_and_run_without_an_en_us_locale(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pd.DataFrame({"text": TEXTS}).to_csv(tmp_path / "text.csv", index=False)
    plain = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(TEXTS, TOPICS)
    report = _sklearn(plain, tmp_path / "text.csv", repo, "topic", tmp_path)
    assert report["inputs"] == ["text"] and report["parity"]["label_agreement"] == 1.0

    table = pd.DataFrame({"text": TEXTS, "length": [float(len(t)) for t in TEXTS]})
    table.to_csv(tmp_path / "table.csv", index=False)
    mixed = make_pipeline(
        ColumnTransformer(
            [("words", TfidfVectorizer(), "text"), ("size", StandardScaler(), ["length"])]
        ),
        LogisticRegression(),
    ).fit(table, TOPICS)
    report = _sklearn(mixed, tmp_path / "table.csv", repo, "mixed", tmp_path)
    assert report["inputs"] == ["text", "length"]
    for name in ("topic", "mixed"):
        graph = onnx.load(str(repo / name / "1" / "model.onnx")).graph
        locales = [
            a.s.decode() for n in graph.node if n.op_type == "StringNormalizer" for a in n.attribute
            if a.name == "locale"
        ]  # fmt: skip
        assert locales == ["C"], name  # this machine may have en_US.UTF-8; the image has not

    gw = load_gateway(repo)
    try:
        answer = gw.execute('{ predict { topic(input: {text: "a cat naps"}) { label } } }')
        assert answer["data"]["predict"]["topic"]["label"] == "cat", answer
        answer = gw.execute(
            '{ predict { mixed(input: {text: "the dog barks", length: 13.0}) { label } } }'
        )
        assert answer["data"]["predict"]["mixed"]["label"] == "dog", answer
    finally:
        gw.runtime.close()


def test_one_hot_encoders_without_handle_unknown_convert(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"colour": ["red", "blue", "green"] * 10, "code": [1.0, 2.0, 3.0, 4.0, 5.0] * 6}
    )
    target = np.array([0, 1] * 15)
    table.to_csv(tmp_path / "table.csv", index=False)
    table[["colour"]].to_csv(tmp_path / "colour.csv", index=False)
    encoded = ColumnTransformer([("c", OneHotEncoder(), ["colour", "code"])])
    models = {
        "table": (make_pipeline(encoded, LogisticRegression()).fit(table, target), "table.csv"),
        # Fitted on an array of strings, not a DataFrame: a string input all the same.
        "strings": (
            make_pipeline(OneHotEncoder(), LogisticRegression()).fit(
                table[["colour"]].to_numpy(), target
            ),
            "colour.csv",
        ),
    }
    repo = tmp_path / "repo"
    for name, (model, sample) in models.items():
        report = _sklearn(model, tmp_path / sample, repo, name, tmp_path)
        assert report["parity"]["label_agreement"] == 1.0, name
    assert _card(repo, "strings")["samples"][0]["input"] == {"colour": "red"}


def _supported() -> list[Any]:
    """scikit-learn's classifiers and regressors that skl2onnx has a converter for (those made
    without arguments: not the meta-estimators that wrap others)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    return [
        pytest.param(kind, id=name)
        for role in ("classifier", "regressor")
        for name, kind in all_estimators(type_filter=role)
        if kind in sklearn_operator_name_map
        and all(
            p.default is not p.empty or p.kind is p.VAR_KEYWORD
            for p in inspect.signature(kind).parameters.values()
        )
    ]


def _fit_and_convert(model: Any, sample: Sample, data: Any, target: Any, repo: Path) -> str:
    """ "ok", or why the model did not convert (nothing is left in ``repo`` either way)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and the like: not what is tested
            model.fit(data, target)
    except ValueError as exc:  # an estimator for other data (CategoricalNB: no negatives)
        return f"does not fit the data: {exc}"
    try:
        write_version(sklearn_source(model, sample), sample, repo, "m", 0.05, None)
    except GatewayError as exc:  # ConfigError, ParityError
        return exc.message
    finally:
        shutil.rmtree(repo / "m", ignore_errors=True)
    return "ok"


def _new(kind: Any) -> Any:
    """A small, reproducible instance (ensembles of 5, 20 iterations)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated estimators still convert
        estimator = kind()
    fixed = {"random_state": 0, "n_estimators": 5, "max_iter": 20}
    params = estimator.get_params()
    estimator.set_params(**{k: v for k, v in fixed.items() if k in params})
    return estimator


@pytest.mark.parametrize("kind", _supported())
def test_every_estimator_that_converts_on_an_array_converts_on_a_mixed_table(
    kind: Any, tmp_path: Path
) -> None:
    """A mixed table takes one input per column; whatever skl2onnx converts behind one input
    (an array) it converts behind a ColumnTransformer of those inputs. Tree ensembles compare
    float32 inputs with float64 thresholds: the tolerance is loose (0.05)."""
    table = FRAME.iloc[:, :4].assign(size=np.where(FRAME["mean area"] > 600, "large", "small"))
    target = TARGET if is_classifier(_new(kind)) else FRAME["mean radius"].to_numpy()
    rows = table.iloc[::10]
    mixed = Sample({c: rows[c].to_numpy(dtype=np.float64) for c in table.columns[:4]})
    mixed.columns["size"] = rows["size"].to_numpy(dtype=object)
    # One indicator column for "size", as in the array: the same features, the same fits.
    encoder = OneHotEncoder(drop="if_binary")
    steps = [("n", StandardScaler(), list(table.columns[:4])), ("c", encoder, ["size"])]
    model = make_pipeline(ColumnTransformer(steps), _new(kind))
    on_table = _fit_and_convert(model, mixed, table, target, tmp_path)
    if on_table == "ok":
        return
    array = np.column_stack([table.iloc[:, :4], table["size"] == "large"]).astype(np.float64)
    plain = Sample({f"f{i}": array[::10, i] for i in range(5)})
    model = make_pipeline(StandardScaler(), _new(kind))
    on_array = _fit_and_convert(model, plain, array, target, tmp_path)
    # skl2onnx's own limits (no converter for a step, an operator ONNX Runtime lacks) fail both.
    assert on_array != "ok", f"converts on an array but not on a table: {on_table}"


def test_boolean_classes_are_compared_and_served_by_name(tmp_path: Path) -> None:
    # skl2onnx answers class indices (0, 1) for classes False and True: compared by index the
    # labels agreed on no row, and a wrong model would have passed just as well.
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(FRAME, TARGET == 1)
    FRAME.iloc[::10].to_csv(tmp_path / "sample.csv", index=False)
    repo = tmp_path / "repo"
    report = _sklearn(model, tmp_path / "sample.csv", repo, "benign", tmp_path)
    assert report["parity"]["label_agreement"] == 1.0
    assert _card(repo, "benign")["labels"] == ["False", "True"]
    gw = load_gateway(repo)
    try:
        row = {_camel(c): float(v) for c, v in FRAME.iloc[0].items()}
        answer = gw.execute(
            "query($r: BenignInput!) { predict { benign(input: $r) { label } } }", {"r": row}
        )
        assert answer["data"]["predict"]["benign"]["label"] == str(model.predict(FRAME[:1])[0])
    finally:
        gw.runtime.close()


def test_a_model_predicting_other_classes_fails_parity() -> None:
    from gateway.convert_check import ParityError, parity

    probabilities = np.tile([[0.9, 0.1]], (10, 1)).astype(np.float32)
    original: dict[str, np.ndarray] = {
        "label": np.zeros(10, dtype=np.int64),
        "probabilities": probabilities,
    }
    converted: dict[str, Any] = {
        "label": np.ones(10, dtype=np.int64),
        "probabilities": probabilities,
    }
    with pytest.raises(ParityError, match=r"agrees on 0\.0% of the sample rows"):
        parity(original, converted, 1e-4, labels=["a", "b"])
    assert parity(original, dict(original), 1e-4)["label_agreement"] == 1.0
