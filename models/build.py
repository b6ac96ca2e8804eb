"""Build the example model repository from data sets that ship with scikit-learn.

Trains small models (nothing is downloaded), converts them with skl2onnx and writes
``<out>/<model>/<version>/model.onnx`` and ``<out>/<model>/model.toml``:

- iris 1, 2: logistic regression, random forest; skl2onnx defaults (int64 label + ZipMap).
- diabetes 1: gradient-boosted regression trees over ten float features.
- digits 1: logistic regression behind a Reshape: image input [N, 1, 8, 8], no ZipMap.
- dataset-topic 1: TF-IDF + logistic regression; string input [N, 1], string labels, ZipMap.

Reproducible: random states and graph names are fixed, so runs with the same toolchain write
byte-identical files (tests/test_example_models.py checks it). Every written model is run in
onnxruntime on its test split and compared with scikit-learn; disagreement fails the build.

Usage: python models/build.py [--out DIR]   (default DIR: the directory of this script)
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn import datasets
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

Array = npt.NDArray[Any]

DEFAULT_OUT = Path(__file__).resolve().parent
RANDOM_STATE = 0
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# Recorded in each model's metadata: other versions may train or convert slightly differently.
TOOLCHAIN = ("numpy", "onnx", "scikit-learn", "scipy", "skl2onnx")
# "C" is the one locale every C++ runtime has. skl2onnx leaves StringNormalizer's locale unset and
# onnxruntime then asks for en_US.UTF-8, which fails where that locale is not installed.
STRING_NORMALIZER_LOCALE = "C"
# ONNX's Tokenizer is ASCII-only; give scikit-learn the same pattern so both tokenize alike.
TOKEN_PATTERN = r"[a-zA-Z0-9_]{2,}"
MIN_LABEL_AGREEMENT = 0.99
PROBABILITY_ATOL = 1e-4
REGRESSION_RTOL = 1e-5  # of the largest prediction; float32 sums over 100 trees
TOPICS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
TOPIC_EXAMPLE = "The length and width of the sepals and petals of each flower were measured."


@dataclass(frozen=True)
class Card:
    """The contents of a model.toml."""

    description: str
    features: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    example: dict[str, float | str] = field(default_factory=dict)
    #: The expected label of the example row: a [[samples]] check every version must pass.
    example_label: str | None = None


class Split(NamedTuple):
    x_train: Array
    x_test: Array
    y_train: Array
    y_test: Array


@dataclass(frozen=True)
class Check:
    """The test split as the ONNX model takes it, and what scikit-learn predicts for it."""

    feed: Array
    labels: Array | None  # predicted labels (classifiers only)
    scores: Array  # probabilities [N, C] for classifiers, predictions [N] for regressors


@dataclass(frozen=True)
class Entry:
    """One model of the repository: its card and its versions (version i + 1 is versions[i])."""

    name: str
    card: Card
    versions: tuple[tuple[onnx.ModelProto, Check], ...]


def _split(x: Array, y: Array, *, stratify: bool = True) -> Split:
    parts = train_test_split(
        x, y, test_size=0.25, random_state=RANDOM_STATE, stratify=y if stratify else None
    )
    return Split(*parts)


def _fit(
    estimator: Any,
    split: Split,
    name: str,
    input_type: object,
    *,
    input_name: str = "float_input",
    zipmap: bool = True,
    feed: Array | None = None,
) -> tuple[onnx.ModelProto, Check]:
    """Fit, convert with skl2onnx and record scikit-learn's predictions on the test split.

    `feed` is the test split as the ONNX model takes it (default: as scikit-learn takes it).
    """
    estimator.fit(split.x_train, split.y_train)
    options: dict[Any, Any] = {TfidfVectorizer: {"locale": STRING_NORMALIZER_LOCALE}}
    if not zipmap:
        options[id(estimator)] = {"zipmap": False}
    # An explicit name: skl2onnx would otherwise name the graph with a random uuid.
    model: onnx.ModelProto = convert_sklearn(
        estimator,
        name=name,
        initial_types=[(input_name, input_type)],
        target_opset=TARGET_OPSET,
        options=options,
    )
    feed = split.x_test if feed is None else feed
    if hasattr(estimator, "predict_proba"):
        labels = estimator.predict(split.x_test)
        return model, Check(feed, labels, estimator.predict_proba(split.x_test))
    return model, Check(feed, None, estimator.predict(split.x_test))


def _example(features: tuple[str, ...], row: Array) -> dict[str, float | str]:
    return {f: round(float(v), 6) for f, v in zip(features, row, strict=True)}


def build_iris() -> Entry:
    """Iris species: v1 logistic regression, v2 a small random forest."""
    data = datasets.load_iris()
    split = _split(data.data.astype(np.float32), data.target)
    features = tuple(re.sub(r" \(cm\)$", "", n).replace(" ", "_") for n in data.feature_names)
    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=RANDOM_STATE)
    versions = (
        _fit(LogisticRegression(max_iter=1000), split, "iris", FloatTensorType([None, 4])),
        _fit(forest, split, "iris", FloatTensorType([None, 4])),
    )
    card = Card(
        description="Iris flower species from four measurements in cm "
        "(v1 logistic regression, v2 random forest).",
        features=features,
        labels=tuple(str(n) for n in data.target_names),
        example=_example(features, data.data[0]),
        example_label=str(data.target_names[data.target[0]]),
    )
    return Entry("iris", card, versions)


def build_diabetes() -> Entry:
    """Diabetes disease progression after one year: gradient-boosted regression trees."""
    data = datasets.load_diabetes()
    split = _split(data.data.astype(np.float32), data.target, stratify=False)
    regressor = GradientBoostingRegressor(
        n_estimators=100, max_depth=3, learning_rate=0.05, random_state=RANDOM_STATE
    )
    features = tuple(str(n) for n in data.feature_names)
    card = Card(
        description="Diabetes progression one year after baseline from ten standardised "
        "baseline variables (gradient-boosted trees).",
        features=features,
        example=_example(features, data.data[0]),
    )
    return Entry(
        "diabetes", card, (_fit(regressor, split, "diabetes", FloatTensorType([None, 10])),)
    )


def _prepend_reshape(model: onnx.ModelProto, *, image: str, flat: str) -> onnx.ModelProto:
    """Make the [N, 64] input `flat` an inner value computed from an [N, 1, 8, 8] input `image`."""
    graph = model.graph
    shape = helper.make_tensor(f"{image}_shape", TensorProto.INT64, [2], [-1, 64])
    reshape = helper.make_node("Reshape", [image, shape.name], [flat], name=f"{image}_reshape")
    nodes = [reshape, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.append(shape)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(image, TensorProto.FLOAT, [None, 1, 8, 8]))
    return model


def build_digits() -> Entry:
    """Handwritten digits from 8x8 images: logistic regression on the 64 pixels."""
    data = datasets.load_digits()
    split = _split(data.data.astype(np.float32), data.target)
    model, check = _fit(
        LogisticRegression(max_iter=2000),
        split,
        "digits",
        FloatTensorType([None, 64]),
        input_name="pixels",
        zipmap=False,
        feed=split.x_test.reshape(-1, 1, 8, 8),
    )
    card = Card(
        description="Handwritten digit 0-9 from an 8x8 grey-level image with pixel values "
        "0..16, shaped [N, 1, 8, 8] (logistic regression).",
        labels=tuple(str(d) for d in range(10)),
    )
    return Entry("digits", card, ((_prepend_reshape(model, image="image", flat="pixels"), check),))


def _sentences(text: str) -> list[str]:
    """Split an RST description into sentences; list items and table rows stand alone."""
    chunks: list[list[str]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("..") or set(line) <= set("-=* "):
            chunks.append([])
            continue
        if line[0] in "-:*" or "  " in line:
            chunks.append([])
        chunks[-1].append(line)
    sentences = []
    for chunk in chunks:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(" ".join(chunk).split())):
            if len(re.findall(r"[A-Za-z]{2,}", sentence)) >= 3:
                sentences.append(sentence)
    return sentences


def build_dataset_topic() -> Entry:
    """Which bundled data set a sentence describes: TF-IDF + logistic regression."""
    descriptions = {name: getattr(datasets, f"load_{name}")().DESCR for name in TOPICS}
    per_set = {name: list(dict.fromkeys(_sentences(text))) for name, text in descriptions.items()}
    # Boilerplate shared by several descriptions (":Missing Attribute Values: None") has no topic.
    counts = Counter(s for sentences in per_set.values() for s in sentences)
    pairs = [(s, name) for name, ss in per_set.items() for s in ss if counts[s] == 1]
    x = np.array([s for s, _ in pairs], dtype=object)
    y = np.array([name for _, name in pairs], dtype=object)
    split = _split(x, y)
    pipeline = make_pipeline(
        TfidfVectorizer(token_pattern=TOKEN_PATTERN, ngram_range=(1, 2)),
        LogisticRegression(C=10.0, max_iter=1000),
    )
    text = StringTensorType([None, 1])
    version = _fit(
        pipeline, split, "dataset_topic", text, input_name="text", feed=split.x_test.reshape(-1, 1)
    )
    if pipeline.predict([TOPIC_EXAMPLE])[0] != "iris":
        raise RuntimeError(f"dataset-topic: the example {TOPIC_EXAMPLE!r} is not about iris")
    card = Card(
        description=f"Which scikit-learn data set ({', '.join(TOPICS)}) a sentence describes"
        " (TF-IDF + logistic regression on the data sets' descriptions).",
        features=("text",),
        example={"text": TOPIC_EXAMPLE},
    )
    return Entry("dataset-topic", card, (version,))


def _finish(model: onnx.ModelProto, card: Card) -> onnx.ModelProto:
    # skl2onnx gathers opsets in a set (so their order follows PYTHONHASHSEED) and may list a
    # domain twice: keep one entry per domain, sorted.
    opsets: dict[str, int] = {}
    for opset in model.opset_import:
        opsets[opset.domain] = max(opset.version, opsets.get(opset.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    model.doc_string = card.description
    toolchain = " ".join(f"{name}=={installed_version(name)}" for name in TOOLCHAIN)
    helper.set_model_props(model, {"source": "models/build.py", "toolchain": toolchain})
    onnx.checker.check_model(model, full_check=True)
    return model


def _toml(card: Card) -> str:
    # A JSON string, number or list of strings is also valid TOML.
    keys = {"description": card.description, "features": card.features, "labels": card.labels}
    lines = [
        f"{k} = {json.dumps(v if isinstance(v, str) else list(v))}" for k, v in keys.items() if v
    ]
    if card.example:
        lines += ["", "[example]", *(f"{k} = {json.dumps(v)}" for k, v in card.example.items())]
    if card.example and card.example_label is not None:
        row = ", ".join(f"{k} = {json.dumps(v)}" for k, v in card.example.items())
        lines += [
            "",
            "# Checked before a version takes traffic: a retrained model that gets this wrong",
            "# stays unloaded (and the previous version keeps serving).",
            "[[samples]]",
            f"input = {{ {row} }}",
            f"expect = {{ label = {json.dumps(card.example_label)} }}",
        ]
    return "\n".join(lines) + "\n"


def _verify(path: Path, check: Check) -> tuple[float | None, float]:
    """Run the written model on the test split; return (label agreement, max abs difference)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: check.feed})
    if check.labels is None:
        agreement = None
        difference = float(np.max(np.abs(np.ravel(outputs[0]) - check.scores)))
        tolerance = REGRESSION_RTOL * float(np.max(np.abs(check.scores)))
    else:
        agreement = float(np.mean(np.asarray(outputs[0]) == check.labels))
        probabilities = outputs[1]
        if isinstance(probabilities, list):  # ZipMap: one {class: probability} per row
            probabilities = [[row[k] for k in sorted(row)] for row in probabilities]
        difference = float(np.max(np.abs(np.asarray(probabilities) - check.scores)))
        tolerance = PROBABILITY_ATOL
    too_few_agree = agreement is not None and agreement < MIN_LABEL_AGREEMENT
    if too_few_agree or difference > tolerance:
        raise RuntimeError(
            f"{path}: onnxruntime disagrees with scikit-learn (label agreement {agreement}, "
            f"max abs difference {difference:.2e}, tolerance {tolerance:.1e})"
        )
    return agreement, difference


def _write(entry: Entry, out: Path) -> list[str]:
    """Write one model's card and versions under `out`, verify each version; return table rows."""
    (out / entry.name).mkdir(parents=True, exist_ok=True)
    (out / entry.name / "model.toml").write_text(_toml(entry.card), encoding="utf-8")
    rows = []
    for number, (model, check) in enumerate(entry.versions, start=1):
        path = out / entry.name / str(number) / "model.onnx"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(_finish(model, entry.card).SerializeToString())
        agreement, difference = _verify(path, check)
        labels = "-" if agreement is None else f"{agreement:.3f}"
        size = path.stat().st_size / 1024
        rows.append(
            f"{entry.name:<14}{number:>3}{len(check.feed):>6}{labels:>10}"
            f"{difference:>12.2e}{size:>10.1f}"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Build every example model into --out (default: the directory of this script)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository directory")
    args = parser.parse_args(argv)
    out: Path = args.out
    started = time.perf_counter()
    print(f"{'model':<14}{'ver':>3}{'rows':>6}{'labels ok':>10}{'max |diff|':>12}{'KiB':>10}")
    for build in (build_iris, build_diabetes, build_digits, build_dataset_topic):
        for row in _write(build(), out):
            print(row)
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
