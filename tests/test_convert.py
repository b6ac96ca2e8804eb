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


def _infer(gw: Any, model: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The generic API's answer: output name -> flat data."""
    tensors = [
        {"name": name, "shape": list(array.shape), "data": array.reshape(-1).tolist()}
        for name, array in inputs.items()
    ]
    query = (
        "query($m: String!, $t: [TensorInput!]!) { infer(model: $m, inputs: $t) "
        "{ outputs { name data } } }"
    )
    answer = gw.execute(query, {"m": model, "t": tensors})
    assert "errors" not in answer, answer
    return {o["name"]: o["data"] for o in answer["data"]["infer"]["outputs"]}


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

    # Classes that are numbers but not indices (3, 4, 5) stay themselves in model.toml.
    numbered = LogisticRegression(max_iter=1000).fit(iris.data, iris.target + 3)
    joblib.dump(numbered, tmp_path / "numbered.joblib")
    status, out = _convert(
        "--sklearn", str(tmp_path / "numbered.joblib"), "--sample", str(sample),
        "--name", "numbered", "--repo", str(repo),
    )  # fmt: skip
    assert status == 0, out
    config = tomllib.loads((repo / "numbered" / "model.toml").read_text())
    assert config["samples"][0]["expect"] == {"label": "3"}
    assert set(config["baseline"]["classes"]) == {"3", "4", "5"}
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

    # A category the encoder never saw: a clear refusal, not a traceback.
    unseen = frame.iloc[:3].copy()
    unseen["size"] = "huge"
    _csv(tmp_path / "unseen.csv", list(unseen.columns), unseen.values.tolist())
    status, _ = _convert(
        "--sklearn", str(tmp_path / "mixed.joblib"), "--sample", str(tmp_path / "unseen.csv"),
        "--name", "unseen", "--repo", str(repo),
    )  # fmt: skip
    assert status == 2 and not (repo / "unseen").exists()

    gw = load_gateway(repo)
    sdl = gw.sdl
    assert "size: String!" in sdl and "sepalLength: Float = null" in sdl
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
    rows = frame.iloc[[0, 75, 140]]
    columns = {c: rows[[c]].to_numpy().astype(np.float32) for c in numeric}
    outputs = _infer(gw, "mixed", {**columns, "size": rows[["size"]].to_numpy().astype(object)})
    assert outputs["label"] == model.predict(rows).tolist()
    assert np.allclose(outputs["probabilities"], model.predict_proba(rows).reshape(-1), atol=1e-5)


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
    gw = load_gateway(repo)
    rows = data.data[[5, 50, 200]].astype(np.float32)
    expected = model.predict(rows)
    answer = gw.execute(
        "query($i: GbrInput!) { predict { gbr(input: $i) { variable } } }",
        {"i": {f"f{i}": float(v) for i, v in enumerate(rows[0])}},
    )
    assert abs(answer["data"]["predict"]["gbr"]["variable"] - expected[0]) < 1e-3, answer
    assert np.allclose(_infer(gw, "gbr", {"input": rows})["variable"], expected, rtol=1e-5)
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
    # fp16: half the bytes; probabilities move by about fp16's precision.
    half = io.StringIO()
    with contextlib.redirect_stdout(half):
        assert main(["optimize", *common, "--version", "1", "--fp16", "--json"]) == 0
    report = json.loads(half.getvalue())
    assert report["version"] == 3 and report["steps"] == ["fp16 conversion"]
    assert report["size_bytes"]["result"] < report["size_bytes"]["source"] * 0.6
    assert report["parity"]["probabilities_max_abs_error"] < 0.01
    assert abs(accuracy(3) - accuracy(1)) <= max(1 - report["parity"]["label_agreement"], 0.01)


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
        rows = x[[0, 60, 120]]
        outputs = _infer(gw, model, {"input": rows})
        assert outputs["label"] == np.asarray(original.predict(rows)).tolist()
        expected_p = np.asarray(original.predict_proba(rows)).reshape(-1)
        assert np.allclose(outputs["probabilities"], expected_p, atol=1e-5)


def test_samples_read_from_parquet_npz_and_npy(tmp_path: Path) -> None:
    from gateway.convert import read_sample
    from gateway.errors import ConfigError

    frame = pd.DataFrame({"x": [1.5, 2.5], "colour": ["red", "blue"], "n": [1, 2]})
    frame.to_parquet(tmp_path / "s.parquet")
    sample = read_sample(tmp_path / "s.parquet")
    assert sample.columns["x"].tolist() == [1.5, 2.5] and sample.columns["n"].dtype == np.float64
    assert sample.columns["colour"].tolist() == ["red", "blue"] and sample.tabular
    np.savez(tmp_path / "s.npz", image=np.zeros((3, 1, 4, 4), np.float32), ids=np.arange(3))
    tensors = read_sample(tmp_path / "s.npz")
    assert tensors.rows == 3 and not tensors.tabular
    assert tensors.columns["ids"].dtype == np.int64
    np.save(tmp_path / "images.npy", np.ones((5, 2, 2), np.float32))
    assert list(read_sample(tmp_path / "images.npy").columns) == ["input"]

    np.savez(tmp_path / "ragged.npz", a=np.zeros(3), b=np.zeros(4))
    np.save(tmp_path / "flat.npy", np.zeros(3))
    (tmp_path / "s.xlsx").write_bytes(b"")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    for name, says in (
        ("ragged.npz", "same number of rows"),
        ("flat.npy", "expected rows"),
        ("s.xlsx", "unknown sample format"),
        ("bad.parquet", "cannot read the sample"),
        ("missing.csv", "cannot read the sample"),
    ):
        try:
            read_sample(tmp_path / name)
        except ConfigError as exc:
            assert says in exc.message, (name, exc.message)
        else:
            raise AssertionError(f"{name} was read")


def test_a_new_version_keeps_model_toml_edits_and_must_pass_its_samples(
    tmp_path: Path, capsys: Any
) -> None:
    import hashlib

    iris = datasets.load_iris()
    model = LogisticRegression(max_iter=1000).fit(iris.data, iris.target_names[iris.target])
    joblib.dump(model, tmp_path / "iris.joblib")
    pd.DataFrame(iris.data[::3], columns=IRIS_FEATURES).to_parquet(tmp_path / "sample.parquet")
    repo = tmp_path / "repo"
    args = [
        "--sklearn",
        str(tmp_path / "iris.joblib"),
        "--sample",
        str(tmp_path / "sample.parquet"),
    ]
    args += ["--name", "iris", "--repo", str(repo)]
    assert _convert(*args)[0] == 0
    toml = repo / "iris" / "model.toml"
    digest = hashlib.sha256((repo / "iris" / "1" / "model.onnx").read_bytes()).hexdigest()
    edited = toml.read_text().replace(
        'description = "LogisticRegression converted with skl2onnx"',
        'description = "Iris species, written by hand"',
    )
    toml.write_text(edited + f'\n[access]\nscopes = ["team-a"]\n\n[sha256]\n1 = "{digest}"\n')

    assert _convert(*args)[0] == 0
    config = tomllib.loads(toml.read_text())
    assert config["description"] == "Iris species, written by hand"
    assert config["access"] == {"scopes": ["team-a"]}
    new_digest = hashlib.sha256((repo / "iris" / "2" / "model.onnx").read_bytes()).hexdigest()
    assert config["sha256"] == {"1": digest, "2": new_digest}
    assert config["conversion"]["version"] == 2
    assert not list((repo / "iris").rglob(".*"))  # no temporary file left behind

    # A sample the new version gets wrong: nothing is written, model.toml is as it was.
    wrong = toml.read_text().replace('expect = { label = "setosa" }', 'expect = { label = "x" }')
    toml.write_text(wrong)
    capsys.readouterr()
    status, _ = _convert(*args)
    message = capsys.readouterr().err
    assert status == 2 and "expected label = 'x'" in message and "[[samples]]" in message
    assert not (repo / "iris" / "3").exists() and toml.read_text() == wrong

    served = wrong.replace('label = "x"', 'label = "setosa"')
    toml.write_text(served.replace('[access]\nscopes = ["team-a"]', ""))  # open to all
    gw = load_gateway(repo)
    rows = iris.data[[10, 70, 140]].astype(np.float32)
    query = (
        'query($x: JSON!) { infer(model: "iris", inputs: [{name: "input", shape: [3, 4], '
        "data: $x}]) { version outputs { name data } } }"
    )
    answer = gw.execute(query, {"x": rows.reshape(-1).tolist()})
    assert "errors" not in answer, answer
    assert answer["data"]["infer"]["version"] == 2
    outputs = {o["name"]: o["data"] for o in answer["data"]["infer"]["outputs"]}
    assert outputs["label"] == model.predict(rows).tolist()
    expected = model.predict_proba(rows).reshape(-1)
    assert np.allclose(outputs["probabilities"], expected, atol=1e-5)
