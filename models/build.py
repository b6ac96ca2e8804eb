"""Build the example model repository from data sets that ship with scikit-learn.

Trains small models (nothing is downloaded) and writes them through ``gateway convert``'s own
code (skl2onnx conversion, parity check on the test split, model.toml with labels, example,
samples, provenance and baseline statistics, a load as the server would):
``<out>/<model>/<version>/model.onnx`` and ``<out>/<model>/model.toml``:

- iris 1, 2: logistic regression, random forest; skl2onnx defaults (int64 label + ZipMap).
- diabetes 1: gradient-boosted regression trees over ten float features.
- digits 1: logistic regression behind a Reshape: image input [N, 1, 8, 8], no ZipMap.
- dataset-topic 1: TF-IDF + logistic regression; string input [N, 1], string labels, ZipMap.

The text model's StringNormalizer runs in the "C" locale (gateway convert sets it for every text
vectoriser), so it loads where no en_US.UTF-8 locale is installed.

Reproducible: random states and graph names are fixed, so runs with the same toolchain write
byte-identical files (tests/test_example_models.py checks it). A version whose ONNX Runtime
answers disagree with scikit-learn's on its test split fails the build.

Usage: python models/build.py [--out DIR]   (default DIR: the directory of this script)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn import datasets
from sklearn.ensemble import GradientBoostingRegressor, RandomForestClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from gateway.convert import Conversion, Sample, Source, sklearn_source, write_version

Array = npt.NDArray[Any]

DEFAULT_OUT = Path(__file__).resolve().parent
RANDOM_STATE = 0
# Recorded in each model's metadata: other versions may train or convert slightly differently.
TOOLCHAIN = ("numpy", "onnx", "scikit-learn", "scipy", "skl2onnx")
# ONNX's Tokenizer is ASCII-only; give scikit-learn the same pattern so both tokenize alike.
TOKEN_PATTERN = r"[a-zA-Z0-9_]{2,}"
# OpenBLAS picks its kernels by CPU (AVX2, AVX-512...), and their rounding differs: enough for
# lbfgs to stop elsewhere on the ill-conditioned digits problem. One kernel family for every
# x86-64 machine (AVX2 ones, that is any from the last decade) makes the build reproducible
# across them.
OPENBLAS_KERNELS = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"}
PROBABILITY_ATOL = 1e-4
REGRESSION_RTOL = 1e-5  # of the largest prediction; float32 sums over 100 trees
TOPICS = ("breast_cancer", "diabetes", "digits", "iris", "wine")
TOPIC_EXAMPLE = "The length and width of the sepals and petals of each flower were measured."


@dataclass(frozen=True)
class Version:
    """One version as gateway convert writes it: the converted model, and the sample (the
    example row first, then the test split) it is checked on."""

    source: Source
    sample: Sample
    tolerance: float = PROBABILITY_ATOL


@dataclass(frozen=True)
class Entry:
    """One model of the repository (version i + 1 is versions[i])."""

    name: str
    description: str
    versions: tuple[Version, ...]
    labels: tuple[str, ...] = ()


class Split(NamedTuple):
    x_train: Array
    x_test: Array
    y_train: Array
    y_test: Array


def _split(x: Array, y: Array, *, stratify: bool = True) -> Split:
    parts = train_test_split(
        x, y, test_size=0.25, random_state=RANDOM_STATE, stratify=y if stratify else None
    )
    return Split(*parts)


def _fit(
    estimator: Any,
    split: Split,
    name: str,
    sample: dict[str, Array],
    input_type: object,
    *,
    input_name: str = "float_input",
    zipmap: bool = True,
    data: Array | None = None,
) -> Version:
    """Fit, convert with gateway convert's skl2onnx step, and keep scikit-learn's answers on
    ``data`` (default: the sample's columns as a matrix) for the parity check.

    ``sample`` is ``data`` as the ONNX model takes it, by column or input name.
    """
    estimator.fit(split.x_train, split.y_train)
    table = Sample(sample)
    source = sklearn_source(
        estimator,
        table,
        data=data,
        # An explicit name: skl2onnx would otherwise name the graph with a random uuid.
        name=name,
        initial_types=[(input_name, input_type)],
        zipmap=zipmap,
    )
    return Version(source, table)


def _columns(features: tuple[str, ...], rows: Array) -> dict[str, Array]:
    return {f: rows[:, i].astype(np.float64) for i, f in enumerate(features)}


def build_iris() -> Entry:
    """Iris species: v1 logistic regression, v2 a small random forest."""
    data = datasets.load_iris()
    split = _split(data.data.astype(np.float32), data.target)
    features = tuple(re.sub(r" \(cm\)$", "", n).replace(" ", "_") for n in data.feature_names)
    # The first row of the data set (a setosa) leads: it becomes the example and the sample
    # every version must get right.
    rows = np.vstack([data.data[:1].astype(np.float32), split.x_test])
    forest = RandomForestClassifier(n_estimators=20, max_depth=4, random_state=RANDOM_STATE)
    sample = _columns(features, rows)
    return Entry(
        "iris",
        "Iris flower species from four measurements in cm "
        "(v1 logistic regression, v2 random forest).",
        (
            _fit(
                LogisticRegression(max_iter=1000),
                split,
                "iris",
                sample,
                FloatTensorType([None, 4]),
                data=rows,
            ),
            _fit(forest, split, "iris", sample, FloatTensorType([None, 4]), data=rows),
        ),
        labels=tuple(str(n) for n in data.target_names),
    )


def build_diabetes() -> Entry:
    """Diabetes disease progression after one year: gradient-boosted regression trees."""
    data = datasets.load_diabetes()
    split = _split(data.data.astype(np.float32), data.target, stratify=False)
    regressor = GradientBoostingRegressor(
        n_estimators=100, max_depth=3, learning_rate=0.05, random_state=RANDOM_STATE
    )
    features = tuple(str(n) for n in data.feature_names)
    rows = np.vstack([data.data[:1].astype(np.float32), split.x_test])
    version = _fit(
        regressor,
        split,
        "diabetes",
        _columns(features, rows),
        FloatTensorType([None, 10]),
        data=rows,
    )
    return Entry(
        "diabetes",
        "Diabetes progression one year after baseline from ten standardised "
        "baseline variables (gradient-boosted trees).",
        (Version(version.source, version.sample, REGRESSION_RTOL),),
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
    version = _fit(
        LogisticRegression(max_iter=2000),
        split,
        "digits",
        {"image": split.x_test.reshape(-1, 1, 8, 8)},
        FloatTensorType([None, 64]),
        input_name="pixels",
        zipmap=False,
        data=split.x_test,
    )
    version.source.onnx_model = _prepend_reshape(
        version.source.onnx_model, image="image", flat="pixels"
    )
    version.source.inputs = ["image"]
    return Entry(
        "digits",
        "Handwritten digit 0-9 from an 8x8 grey-level image with pixel values "
        "0..16, shaped [N, 1, 8, 8] (logistic regression).",
        (version,),
        labels=tuple(str(d) for d in range(10)),
    )


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
    text = np.array([TOPIC_EXAMPLE, *split.x_test], dtype=object)
    version = _fit(
        pipeline, split, "dataset_topic", {"text": text}, StringTensorType([None, 1]),
        input_name="text", data=text,
    )  # fmt: skip
    if version.source.original["label"][0] != "iris":
        raise RuntimeError(f"dataset-topic: the example {TOPIC_EXAMPLE!r} is not about iris")
    return Entry(
        "dataset-topic",
        f"Which scikit-learn data set ({', '.join(TOPICS)}) a sentence describes"
        " (TF-IDF + logistic regression on the data sets' descriptions).",
        (version,),
    )


def _write(entry: Entry, out: Path) -> list[str]:
    """Write one model's versions under ``out`` with gateway convert's code; return table rows.

    Raises:
        RuntimeError: a version's answers differ from scikit-learn's on its test split.
    """
    shutil.rmtree(out / entry.name, ignore_errors=True)  # the build owns these directories
    toolchain = " ".join(f"{name}=={installed_version(name)}" for name in TOOLCHAIN)
    rows = []
    for number, version in enumerate(entry.versions, start=1):
        done: Conversion = write_version(
            version.source,
            version.sample,
            out,
            entry.name,
            version.tolerance,
            entry.description,
            version=number,
            labels=list(entry.labels) or None,
            metadata={"source": "models/build.py", "toolchain": toolchain},
        )
        # write_version refuses a version whose labels agree on too few rows (ParityError).
        agreement = done.parity.get("label_agreement")
        difference = done.parity.get(
            "probabilities_max_abs_error", done.parity.get("max_abs_error")
        )
        labels = "-" if agreement is None else f"{agreement:.3f}"
        size = done.path.stat().st_size / 1024
        rows.append(
            f"{entry.name:<14}{number:>3}{done.rows:>6}{labels:>10}{difference:>12.2e}{size:>10.1f}"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Build every example model into --out (default: the directory of this script)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="repository directory")
    args = parser.parse_args(argv)
    if platform.machine() in ("x86_64", "AMD64") and any(
        os.environ.get(k) != v for k, v in OPENBLAS_KERNELS.items()
    ):
        # OpenBLAS reads these when numpy loads it, which has happened: start again with them.
        os.execve(
            sys.executable,
            [sys.executable, __file__, *sys.argv[1:]],
            {**os.environ, **OPENBLAS_KERNELS},
        )
    out: Path = args.out
    started = time.perf_counter()
    print(f"{'model':<14}{'ver':>3}{'rows':>6}{'labels ok':>10}{'max |diff|':>12}{'KiB':>10}")
    for build in (build_iris, build_diabetes, build_digits, build_dataset_topic):
        for row in _write(build(), out):
            print(row)
    print(f"wrote {out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
