"""gateway convert: scikit-learn models trained here become repository versions that the
gateway serves with the original's answers."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from gateway.cli import main
from tests.conftest import load_gateway

IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def _csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _convert(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        status = main(["convert", *args])
    return status, out.getvalue()


def test_a_numeric_pipeline_converts_serves_and_versions(tmp_path: Path) -> None:
    iris = datasets.load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(iris.data, iris.target_names[iris.target])
    joblib.dump(model, tmp_path / "iris.joblib")
    sample = _csv(tmp_path / "sample.csv", IRIS_FEATURES, iris.data[::3].tolist())
    repo = tmp_path / "repo"
    args = ["--sklearn", str(tmp_path / "iris.joblib"), "--sample", str(sample)]
    status, out = _convert(*args, "--name", "flowers", "--repo", str(repo), "--json")
    assert status == 0, out
    report = json.loads(out)
    assert report["version"] == 1 and report["labels"] == ["setosa", "versicolor", "virginica"]
    assert report["parity"]["label_agreement"] == 1.0
    assert report["parity"]["probabilities_max_abs_error"] < 1e-4
    config = tomllib.loads((repo / "flowers" / "model.toml").read_text())
    assert config["features"] == IRIS_FEATURES
    assert config["conversion"]["framework"] == "scikit-learn"
    assert config["conversion"]["parity"]["label_agreement"] == 1.0
    baseline = config["baseline"]
    assert baseline["rows"] == 50 and set(baseline["classes"]) == set(report["labels"])
    petal = baseline["features"]["petal_length"]
    assert petal["count"] == 50 and len(petal["quantiles"]) == 5
    assert sum(petal["histogram_counts"]) == 50

    gw = load_gateway(repo)
    rows = iris.data[[0, 60, 120]]
    for row, expected in zip(rows, model.predict(rows), strict=True):
        values = ", ".join(
            f"{f.replace('_l', 'L').replace('_w', 'W')}: {v}"
            for f, v in zip(IRIS_FEATURES, row, strict=True)
        )
        answer = gw.execute(f"{{ predict {{ flowers(input: {{{values}}}) {{ label }} }} }}")
        assert answer["data"]["predict"]["flowers"]["label"] == expected, answer

    status, out = _convert(*args, "--name", "flowers", "--repo", str(repo))
    assert status == 0 and "version 2" in out  # the next version, ready to serve
    assert (repo / "flowers" / "2" / "model.onnx").is_file()


def test_mixed_columns_become_typed_inputs(tmp_path: Path) -> None:
    iris = datasets.load_iris()
    frame = pd.DataFrame(iris.data, columns=IRIS_FEATURES)
    frame["size"] = np.where(frame["petal_length"] > 3.5, "large", "small")
    frame = frame.drop(columns=["petal_width"])
    numeric = ["sepal_length", "sepal_width", "petal_length"]
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), ["size"])]),
        LogisticRegression(max_iter=1000),
    )
    model.fit(frame, iris.target_names[iris.target])
    joblib.dump(model, tmp_path / "mixed.joblib")
    sample = _csv(tmp_path / "sample.csv", list(frame.columns), frame.iloc[::2].values.tolist())
    repo = tmp_path / "repo"
    status, out = _convert(
        "--sklearn", str(tmp_path / "mixed.joblib"), "--sample", str(sample),
        "--name", "mixed", "--repo", str(repo), "--json",
    )  # fmt: skip
    assert status == 0, out
    assert json.loads(out)["inputs"] == [*numeric, "size"]
    config = tomllib.loads((repo / "mixed" / "model.toml").read_text())
    shares = frame.iloc[::2]["size"].value_counts(normalize=True).round(6).to_dict()
    assert config["baseline"]["features"]["size"]["categories"] == shares

    gw = load_gateway(repo)
    sdl = gw.sdl
    assert "size: String!" in sdl and "sepalLength: Float!" in sdl
    query = "query($i: MixedInput!) { predict { mixed(input: $i) { label } } }"
    for index in (0, 75, 140):
        row = frame.iloc[index]
        given = {
            "sepalLength": row.sepal_length,
            "sepalWidth": row.sepal_width,
            "petalLength": row.petal_length,
            "size": row["size"],
        }
        answer = gw.execute(query, {"i": given})
        expected = model.predict(frame.iloc[[index]])[0]
        assert answer["data"]["predict"]["mixed"]["label"] == expected, answer


def test_regression_parity_and_a_tolerance_too_tight(tmp_path: Path, capsys: Any) -> None:
    data = datasets.load_diabetes()
    model = GradientBoostingRegressor(n_estimators=50, random_state=0).fit(data.data, data.target)
    joblib.dump(model, tmp_path / "gbr.joblib")
    np.save(tmp_path / "sample.npy", data.data[:100])
    repo = tmp_path / "repo"
    common = ["--sklearn", str(tmp_path / "gbr.joblib"), "--sample", str(tmp_path / "sample.npy")]
    status, out = _convert(*common, "--name", "gbr", "--repo", str(repo), "--json")
    assert status == 0, out
    parity = json.loads(out)["parity"]
    assert parity["max_rel_error"] < 1e-4
    status, _ = _convert(*common, "--name", "tight", "--repo", str(repo), "--tolerance", "1e-15")
    assert status == 1
    assert "does not answer like the original" in capsys.readouterr().err
    assert not (repo / "tight").exists()  # nothing written when parity fails


def test_int8_quantisation_shrinks_the_model_within_its_reported_bound(tmp_path: Path) -> None:
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = datasets.load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.3, random_state=0
    )
    model = MLPClassifier(hidden_layer_sizes=(256, 128), max_iter=300, random_state=0)
    model.fit(x_train, y_train)
    joblib.dump(model, tmp_path / "mlp.joblib")
    np.save(tmp_path / "sample.npy", x_train[:300])
    np.save(tmp_path / "held-out.npy", x_test)
    repo = tmp_path / "repo"
    common = ["--sample", str(tmp_path / "sample.npy"), "--name", "digits", "--repo", str(repo)]
    assert _convert("--sklearn", str(tmp_path / "mlp.joblib"), *common)[0] == 0
    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        status = main(["optimize", *common, "--graph", "--int8", "dynamic", "--json"])
    assert status == 0, out.getvalue()
    report = json.loads(out.getvalue())
    assert report["version"] == 2 and report["source_version"] == 1
    sizes = report["size_bytes"]
    assert sizes["result"] < sizes["source"] * 0.5  # int8 weights: about a quarter
    assert report["rows_per_second"]["result"] > 0
    agreement = report["parity"]["label_agreement"]
    assert agreement >= 0.95
    print(f"int8: {sizes}, {report['rows_per_second']}, {report['parity']}")
    # On data the sample did not contain, the accuracy moves within the reported bound.
    import onnxruntime as ort

    def accuracy(version: int) -> float:
        session = ort.InferenceSession(str(repo / "digits" / str(version) / "model.onnx"))
        labels = session.run(["label"], {"input": x_test.astype(np.float32)})[0]
        return float(np.mean(labels == y_test))

    assert abs(accuracy(2) - accuracy(1)) <= max(1 - agreement, 0.01) + 0.01
    # A bound too tight writes nothing.
    with contextlib.redirect_stdout(io.StringIO()):
        tight = ["--version", "1", "--int8", "dynamic", "--tolerance", "0"]
        assert main(["optimize", *common, *tight]) == 1
    assert not (repo / "digits" / "3").exists()


def test_xgboost_and_lightgbm_model_files_convert_and_serve(tmp_path: Path) -> None:
    import lightgbm
    import xgboost

    iris = datasets.load_iris()
    x = iris.data.astype(np.float32)
    xgb_model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, iris.target)
    xgb_model.save_model(tmp_path / "xgb.json")
    lgb_model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, iris.target)
    lgb_model.booster_.save_model(str(tmp_path / "lgb.txt"))
    regressor = xgboost.XGBRegressor(n_estimators=30).fit(x[:, 1:], x[:, 0])
    regressor.save_model(tmp_path / "reg.json")
    sample = _csv(tmp_path / "sample.csv", IRIS_FEATURES, iris.data[::2].tolist())
    repo = tmp_path / "repo"
    names = ",".join(iris.target_names)
    for flag, file, model in (("--xgboost", "xgb.json", "xgb"), ("--lightgbm", "lgb.txt", "lgb")):
        status, out = _convert(
            flag, str(tmp_path / file), "--sample", str(sample), "--labels", names,
            "--name", model, "--repo", str(repo), "--json",
        )  # fmt: skip
        assert status == 0, out
        parity = json.loads(out)["parity"]
        assert parity["label_agreement"] == 1.0 and parity["probabilities_max_abs_error"] < 1e-4
    regression_sample = _csv(tmp_path / "reg.csv", IRIS_FEATURES[1:], iris.data[::2, 1:].tolist())
    status, out = _convert(
        "--xgboost", str(tmp_path / "reg.json"), "--sample", str(regression_sample),
        "--name", "reg", "--repo", str(repo), "--json",
    )  # fmt: skip
    assert status == 0 and json.loads(out)["parity"]["max_rel_error"] < 1e-4

    gw = load_gateway(repo)
    row = iris.data[100]
    values = {
        "sepalLength": row[0],
        "sepalWidth": row[1],
        "petalLength": row[2],
        "petalWidth": row[3],
    }
    for model, original in (("xgb", xgb_model), ("lgb", lgb_model)):
        kind = f"{model.capitalize()}Input!"
        query = f"query($i: {kind}) {{ predict {{ {model}(input: $i) {{ label }} }} }}"
        answer = gw.execute(query, {"i": values})
        expected = iris.target_names[original.predict(x[[100]])[0]]
        assert answer["data"]["predict"][model]["label"] == expected, answer
