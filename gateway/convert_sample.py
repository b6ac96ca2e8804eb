"""Sample data for ``gateway convert`` and ``gateway optimize``: read from CSV, Parquet, ``.npy``
or ``.npz`` into named columns or tensors, and fed to an ONNX Runtime session.

Missing values: an empty CSV cell, and NaN or null in Parquet, is NaN in a numeric column; in a
text column it is the empty string (a string tensor has no missing value).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from gateway.errors import ConfigError
from gateway.tensors import datatype_from_onnx, numpy_dtype

__all__ = ["Sample", "feeds_for", "read_sample"]

_SAMPLE_FORMATS = ".csv (with a header row), .parquet, .npy or .npz"


@dataclass
class Sample:
    """Sample data by name: the 1-D columns of a table (float64, or str objects), or tensors
    whose first dimension is the row (an image batch ``[N, 1, 8, 8]``)."""

    columns: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def tabular(self) -> bool:
        return all(c.ndim == 1 for c in self.columns.values())

    @property
    def text(self) -> list[str]:
        """The names of the columns that hold text."""
        return [k for k, v in self.columns.items() if v.dtype == object]

    def matrix(self) -> np.ndarray:
        """All columns as one float matrix (for models fitted on plain arrays)."""
        if not self.tabular:
            shapes = {k: list(v.shape) for k, v in self.columns.items()}
            raise ConfigError(f"expected a table of columns, the sample holds tensors {shapes}")
        if self.text:
            raise ConfigError(
                f"the model takes numbers, but the sample's column {self.text[0]!r} holds text"
            )
        return np.column_stack([c.astype(np.float64) for c in self.columns.values()])

    def frame(self) -> Any:
        """The columns as a pandas DataFrame (for models fitted on one)."""
        import pandas as pd

        return pd.DataFrame(self.columns)

    def select(self, columns: Sequence[str], *, what: str) -> Sample:
        """The named columns, in that order.

        Raises:
            ConfigError: the sample lacks one (``what`` says who wants them).
        """
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ConfigError(
                f"{what} {len(columns)} columns; the sample has no column "
                + ", ".join(repr(c) for c in missing[:5])
                + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
                + f"; it has {', '.join(self.columns)}"
            )
        return Sample({c: self.columns[c] for c in columns})

    def complete_row(self) -> int:
        """The first row without a missing (NaN) value; the first row if every row has one."""
        present = np.ones(self.rows, dtype=bool)
        for column in self.columns.values():
            if column.dtype.kind == "f":
                present &= ~np.isnan(column.reshape(self.rows, -1)).any(axis=1)
        complete = np.flatnonzero(present)
        return int(complete[0]) if complete.size else 0


def read_sample(path: Path) -> Sample:
    """Read sample data: a CSV file with a header row or a Parquet file (numeric columns as
    floats, others as strings), a ``.npy`` array (2-D: columns f0, f1...; more dimensions: one
    tensor named ``input``), or a ``.npz`` archive (one tensor or column per name)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _npy(path, np.load(path, allow_pickle=False))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return _checked(path, {k: archive[k] for k in archive.files})
        if suffix in (".parquet", ".pq"):
            return _parquet(path)
        if suffix in (".csv", ".txt"):
            return _csv(path)
    except (OSError, ValueError) as exc:  # unreadable, or not the format its name says
        raise ConfigError(f"{path}: cannot read the sample: {exc}") from exc
    raise ConfigError(f"{path}: unknown sample format; expected {_SAMPLE_FORMATS}")


def _npy(path: Path, array: np.ndarray) -> Sample:
    if array.ndim == 2:
        return _checked(
            path, {f"f{i}": array[:, i].astype(np.float64) for i in range(array.shape[1])}
        )
    if array.ndim > 2:
        return _checked(path, {"input": array})
    raise ConfigError(f"{path}: expected rows of features (2-D) or of tensors (3-D or more)")


def _checked(path: Path, columns: dict[str, np.ndarray]) -> Sample:
    lengths = {k: (len(v) if v.ndim else 0) for k, v in columns.items()}
    if not columns or min(lengths.values()) == 0 or len(set(lengths.values())) != 1:
        raise ConfigError(f"{path}: expected arrays with the same number of rows, got {lengths}")
    return Sample(columns)


def _parquet(path: Path) -> Sample:
    import pandas as pd

    frame = pd.read_parquet(path)
    columns: dict[str, np.ndarray] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            # Nullable integer and float columns hold pd.NA: NaN here, as in a float column.
            columns[str(name)] = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            columns[str(name)] = series.fillna("").astype(str).to_numpy(dtype=object)
    return _checked(path, columns)


def _csv(path: Path) -> Sample:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        raise ConfigError(f"{path}: expected a header row and at least one row of data")
    header, data = rows[0], rows[1:]
    for line, row in enumerate(data, start=2):
        if len(row) != len(header):
            raise ConfigError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
    columns: dict[str, np.ndarray] = {}
    for index, name in enumerate(header):
        values = [row[index] for row in data]
        try:
            # An empty cell is a missing number; a column of only empty cells is numeric too.
            numbers = [float(v) if v.strip() else np.nan for v in values]
            columns[name] = np.asarray(numbers, dtype=np.float64)
        except ValueError:
            columns[name] = np.asarray(values, dtype=object)
    return Sample(columns)


def feeds_for(session: ort.InferenceSession, sample: Sample) -> dict[str, np.ndarray]:
    """The sample as the model's inputs: a column or tensor per input of that name, or the whole
    sample (a table, or its one tensor) as the model's single input.

    Raises:
        ConfigError: the sample has no column for an input, or its width or shape does not fit.
    """
    inputs = session.get_inputs()
    if len(inputs) == 1 and inputs[0].name not in sample.columns:
        spec = inputs[0]
        dtype = _dtype(spec.type)
        if len(sample.columns) == 1 and not sample.tabular:
            values = next(iter(sample.columns.values())).astype(dtype)
        elif dtype.kind == "O":
            values = np.column_stack([c.astype(str) for c in sample.columns.values()])
        else:
            values = sample.matrix().astype(dtype)
        return {spec.name: _fitted(spec, values, "the sample")}
    feeds: dict[str, np.ndarray] = {}
    for spec in inputs:
        if spec.name not in sample.columns:
            raise ConfigError(
                f"the sample has no column {spec.name!r} for the model's input; it has "
                + ", ".join(sample.columns)
            )
        dtype = _dtype(spec.type)
        column = sample.columns[spec.name]
        values = column.astype(str) if dtype.kind == "O" else column
        if column.ndim == 1 and len(spec.shape) == 2:
            values = values.reshape(-1, 1)  # a table column as an [N, 1] input
        feeds[spec.name] = _fitted(spec, values.astype(dtype), f"the sample's {spec.name!r}")
    return feeds


def _fitted(spec: Any, values: np.ndarray, what: str) -> np.ndarray:
    """``values`` if their shape fits the input's declared one (free dimensions fit anything)."""
    declared = [d if isinstance(d, int) else None for d in spec.shape]
    fits = len(declared) == values.ndim and all(
        d is None or d == v for d, v in zip(declared[1:], values.shape[1:], strict=True)
    )
    if not fits:
        shape = ", ".join("N" if d is None else str(d) for d in declared)
        rows = ", ".join(["N", *(str(v) for v in values.shape[1:])])
        if values.ndim == 2 and len(declared) == 2:
            raise ConfigError(
                f"{what} has {values.shape[1]} columns; the model's input {spec.name!r} "
                f"takes {declared[1]} ([{shape}])"
            )
        raise ConfigError(f"{what} is [{rows}]; the model's input {spec.name!r} takes [{shape}]")
    return values


def _dtype(onnx_type: str) -> np.dtype[Any]:
    """The numpy type of an ONNX Runtime input type ("tensor(float)"); float32 for types the
    gateway does not serve (the session then says what it wanted)."""
    datatype = datatype_from_onnx(onnx_type)
    return numpy_dtype(datatype) if datatype is not None else np.dtype(np.float32)
