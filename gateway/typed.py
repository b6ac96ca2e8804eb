"""The typed view of a model: rows of named fields in, rows of named predictions out.

``build_typed_model`` decides, from the ONNX signature and ``model.toml``, which GraphQL input
fields a row has (one per named feature, else one per input tensor) and what a prediction holds
(a classifier's label and per-class probabilities, else one field per output tensor). It is pure:
Strawberry types are made from it in ``gateway.api.predict``.

Rows are stacked along the first dimension when every input has a dynamic first dimension
(``batched``): a list of rows is one model run. Otherwise each row is its own run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import numpy as np

from gateway.columns import (
    FLOAT_TYPES,
    LARGEST,
    column_array,
    float_values,
    holds,
    python_values,
)
from gateway.errors import ConfigError, InferenceError, InvalidInputError, UnknownCategoryError
from gateway.naming import field_name, type_name
from gateway.repository import ModelConfig
from gateway.signature import IOKind, IOSpec, Signature
from gateway.tensors import DataType, numpy_dtype

__all__ = [
    "RESERVED_PREDICTION_FIELDS",
    "Classifier",
    "InputField",
    "OutputField",
    "TypedModel",
    "build_typed_model",
]

#: Fields every prediction type has; an output that derives to one of these is a clash.
RESERVED_PREDICTION_FIELDS = frozenset({"label", "probabilities", "modelVersion"})
# Outputs named like these beside a label output are read as class probabilities.
_PROBABILITY_NAME = re.compile(r"prob|score|logit|softmax", re.IGNORECASE)
_LABEL_TYPES = {DataType.INT64, DataType.INT32, DataType.BYTES}
#: Up to this many values, float feeds are checked in Python rather than with numpy calls.
_FEW_VALUES = 64


@dataclass(frozen=True, slots=True)
class InputField:
    """One field of a model's GraphQL input type."""

    graphql: str
    source: str  # the feature or tensor name it came from
    tensor: str
    column: int | None  # its column in a named-feature [N, F] input; None = the whole row value
    datatype: DataType
    row_shape: tuple[int, ...]  # shape of one row's value; () = a scalar

    @property
    def nullable(self) -> bool:
        """Whether the field takes null: a scalar float, where null is a missing value (NaN)."""
        return self.row_shape == () and self.datatype in FLOAT_TYPES


@dataclass(frozen=True, slots=True)
class OutputField:
    """One field of a model's GraphQL prediction type, from one output tensor."""

    graphql: str
    tensor: str
    datatype: DataType
    row_shape: tuple[int, ...]  # shape of one row's value; () = a scalar


@dataclass(frozen=True, slots=True)
class Classifier:
    """Where a classifier's label and probabilities are, and what its classes are called."""

    label_output: str
    probability_output: str
    class_names: tuple[str, ...] | None  # by probability column; None = known only at run time
    label_names: Mapping[str, str]  # the label output's value (as text) -> class name


@dataclass(frozen=True, slots=True)
class TypedModel:
    """Everything needed to build and serve a model's typed GraphQL field."""

    model: str
    field: str  # e.g. "iris"; the batch field is field + "Batch"
    type_stem: str  # e.g. "Iris": types IrisInput and IrisPrediction
    signature: Signature
    batched: bool
    inputs: tuple[InputField, ...]
    outputs: tuple[OutputField, ...]
    classifier: Classifier | None
    #: Float tensors fed only by scalar feature columns, with their fields in column order:
    #: built in one step (the common tabular case).
    float_columns: Mapping[str, tuple[InputField, ...]] = dataclass_field(default_factory=dict)

    @property
    def batch_field(self) -> str:
        """The field that takes a list of rows."""
        return f"{self.field}Batch"

    @property
    def output_names(self) -> tuple[str, ...]:
        """The output tensors a prediction needs."""
        names = [o.tensor for o in self.outputs]
        if self.classifier is not None:
            names += [self.classifier.label_output, self.classifier.probability_output]
        return tuple(names)

    def feeds(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Input tensors for ``rows`` (each a mapping of GraphQL field name to value).

        With ``batched`` the rows are stacked into one run; otherwise pass one row at a time.
        A null (or NaN) float is a missing value: NaN in the tensor, as imputers expect.

        Raises:
            InvalidInputError: a value does not fit its tensor (range, nested shape).
        """
        fast = self._float_columns(rows)
        if fast is not None:
            return fast
        columns: dict[str, list[np.ndarray]] = {}
        featured = {f.tensor for f in self.inputs if f.column is not None}
        for f in self.inputs:
            values = [row[f.graphql] for row in rows]
            columns.setdefault(f.tensor, []).append(
                column_array(f.graphql, f.datatype, f.row_shape, values, len(rows))
            )
        feeds: dict[str, np.ndarray] = {}
        for spec in self.signature.inputs:
            parts = columns[spec.name]
            # Named features are the columns of one [N, F] (or [F]) tensor; else one field each.
            array = np.stack(parts, axis=1) if spec.name in featured else parts[0]
            if not _has_leading(spec, self.batched):
                array = array[0, ...]  # a whole-tensor row: the tensor itself (0-d stays an array)
            elif array.ndim < len(spec.shape):
                array = array.reshape(len(rows), *(1 for _ in spec.shape[1:]))  # squeezed [N, 1]
            feeds[spec.name] = array
        return feeds

    def _float_columns(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray] | None:
        """The feeds in one step when every input is a float matrix of scalar features and
        every value is finite or null (NaN); None to take the general path (which words any
        error)."""
        if len(self.float_columns) != len(self.signature.inputs):
            return None
        feeds: dict[str, np.ndarray] = {}
        for spec in self.signature.inputs:
            fields = self.float_columns[spec.name]
            if len(rows) * len(fields) <= _FEW_VALUES:
                # A few values (a single row): checked in Python, which costs less than the
                # numpy calls and error-state switches of the path below.
                flat = float_values([row[f.graphql] for row in rows for f in fields])
                largest = LARGEST[spec.datatype]
                # NaN (a missing value) fails the comparison but passes `v != v`; infinity
                # fails both and goes to the general path, which refuses it.
                if flat is None or not all(-largest <= v <= largest or v != v for v in flat):
                    return None
                dtype = numpy_dtype(spec.datatype)
                feeds[spec.name] = np.array(flat, dtype).reshape(len(rows), len(fields))
                continue
            try:
                # numpy reads a null as NaN in a float array: a missing value.
                matrix = np.array([[row[f.graphql] for f in fields] for row in rows], np.float64)
            except (TypeError, ValueError):
                return None
            with np.errstate(over="ignore"):
                array = matrix.astype(numpy_dtype(spec.datatype))
            if matrix.ndim != 2 or np.isinf(array).any():
                return None
            feeds[spec.name] = array
        return feeds

    def refusal(
        self, error: UnknownCategoryError, rows: Sequence[Mapping[str, Any]]
    ) -> InvalidInputError:
        """``error`` (about a tensor) in the caller's terms: the field, and the row of a batch,
        that holds the value."""
        for f in self.inputs:
            if f.tensor != error.input or f.column not in (None, error.column):
                continue
            where = f.graphql
            if f.column is None and error.column is not None and f.row_shape:
                where += f"[{error.column}]"  # a column of a list field
            if len(rows) > 1:
                held = (i for i, row in enumerate(rows) if holds(row[f.graphql], error.value))
                where = f"inputs[{next(held, error.row)}].{where}"
            return InvalidInputError(f"{where}: {error.detail}")
        return error

    def predictions(self, outputs: Mapping[str, np.ndarray], rows: int) -> list[dict[str, Any]]:
        """Per-row prediction values (field name -> value) from the model's outputs."""
        result: list[dict[str, Any]] = [{} for _ in range(rows)]
        for f in self.outputs:
            array = self._rows(outputs, f.tensor, rows)
            if f.row_shape == ():
                array = array.reshape(rows)
            for row, value in zip(result, python_values(array, f.datatype), strict=True):
                row[f.graphql] = value
        if self.classifier is not None:
            self._classify(outputs, rows, result)
        return result

    def _rows(self, outputs: Mapping[str, np.ndarray], name: str, rows: int) -> np.ndarray:
        array = outputs[name]
        spec = self.signature.output(name)
        assert spec is not None
        if not _has_leading(spec, self.batched):
            return array[np.newaxis]  # a whole-tensor output belongs to the single row
        if array.ndim == 0 or array.shape[0] != rows:
            raise InferenceError(
                f"output {name!r} has {array.shape[0] if array.ndim else 0} rows "
                f"for {rows} input rows"
            )
        return array

    def _classify(
        self, outputs: Mapping[str, np.ndarray], rows: int, result: list[dict[str, Any]]
    ) -> None:
        c = self.classifier
        assert c is not None
        labels = self._rows(outputs, c.label_output, rows)
        probs = self._rows(outputs, c.probability_output, rows).reshape(rows, -1)
        names = c.class_names or tuple(str(i) for i in range(probs.shape[1]))
        for row, label, p in zip(
            result, labels.reshape(rows).tolist(), probs.tolist(), strict=True
        ):
            text = label if isinstance(label, str) else str(label)
            row["label"] = c.label_names.get(text, text)
            row["probabilities"] = list(zip(names, p, strict=True))


def build_typed_model(name: str, signature: Signature, config: ModelConfig) -> TypedModel:
    """Derive the typed view of a model.

    Raises:
        ConfigError: a GraphQL name cannot be derived or clashes, or model.toml does not fit the
            signature; the model is then served through the generic API only.
    """
    stem = type_name(name)
    field = field_name(name, role="model")
    if stem is None or field is None:
        raise ConfigError(f"no GraphQL name can be derived from the model name {name!r}")
    batched = signature.stackable
    inputs = tuple(_input_fields(signature, config, batched))
    if not inputs:  # GraphQL has no empty input types
        raise ConfigError("the model has no inputs; a typed field needs at least one")
    _check_unique([f.graphql for f in inputs], "input", [f.source for f in inputs])
    classifier = _classifier(signature, config, batched)
    taken = {classifier.label_output, classifier.probability_output} if classifier else set()
    outputs = tuple(_output_field(o, batched) for o in signature.outputs if o.name not in taken)
    names = [o.graphql for o in outputs]
    _check_unique(names, "output", [o.tensor for o in outputs])
    # label and probabilities are only added for classifiers; other models may use the names.
    reserved = RESERVED_PREDICTION_FIELDS if classifier else {"modelVersion"}
    for o in outputs:
        if o.graphql in reserved:
            raise ConfigError(f"output {o.tensor!r} derives to the reserved field {o.graphql!r}")
    float_columns = {
        spec.name: tuple(f for f in inputs if f.tensor == spec.name)
        for spec in signature.inputs
        if spec.datatype in FLOAT_TYPES
        and len(spec.shape) == 2
        and _has_leading(spec, batched)
        and all(f.column is not None for f in inputs if f.tensor == spec.name)
    }
    return TypedModel(
        name, field, stem, signature, batched, inputs, outputs, classifier, float_columns
    )


def _has_leading(spec: IOSpec, batched: bool) -> bool:
    """Whether the first dimension counts rows (else a row is the whole tensor)."""
    return batched or (len(spec.shape) >= 1 and spec.shape[0] in (-1, 1))


def _row_shape(spec: IOSpec, batched: bool) -> tuple[int, ...]:
    shape = spec.shape[1:] if _has_leading(spec, batched) else spec.shape
    return () if shape == (1,) else shape


def _input_fields(signature: Signature, config: ModelConfig, batched: bool) -> list[InputField]:
    named = dict(config.features)
    if "" in named:
        if len(signature.inputs) != 1:
            raise ConfigError("model.toml 'features' needs a model with one input; use [inputs.X]")
        named[signature.inputs[0].name] = named.pop("")
    unknown = sorted(set(named) - {i.name for i in signature.inputs})
    if unknown:
        raise ConfigError(f"model.toml names features of {unknown[0]!r}, which is not an input")
    fields: list[InputField] = []
    for spec in signature.inputs:
        row_shape = _row_shape(spec, batched)
        features = named.get(spec.name)
        if features is None:
            gql = field_name(spec.name, role="input")
            if gql is None:
                raise ConfigError(f"no GraphQL name can be derived from input {spec.name!r}")
            fields.append(InputField(gql, spec.name, spec.name, None, spec.datatype, row_shape))
            continue
        columns = spec.shape[1:] if _has_leading(spec, batched) else spec.shape
        if len(columns) != 1 or columns[0] not in (-1, len(features)):
            raise ConfigError(
                f"model.toml lists {len(features)} features for input {spec.name!r} of shape "
                f"{list(spec.shape)}; expected a [N, {len(features)}] input"
            )
        for column, feature in enumerate(features):
            gql = field_name(feature, role="feature")
            if gql is None:
                raise ConfigError(f"no GraphQL name can be derived from feature {feature!r}")
            fields.append(InputField(gql, feature, spec.name, column, spec.datatype, ()))
    return fields


def _output_field(spec: IOSpec, batched: bool) -> OutputField:
    gql = field_name(spec.name, role="output")
    if gql is None:
        raise ConfigError(f"no GraphQL name can be derived from output {spec.name!r}")
    return OutputField(gql, spec.name, spec.datatype, _row_shape(spec, batched))


def _classifier(signature: Signature, config: ModelConfig, batched: bool) -> Classifier | None:
    labels = [
        o
        for o in signature.outputs
        if o.kind is IOKind.TENSOR and o.datatype in _LABEL_TYPES and _row_shape(o, batched) == ()
    ]
    probs = [
        o
        for o in signature.outputs
        if o.kind is IOKind.SEQUENCE_OF_MAPS
        or (
            o.datatype in FLOAT_TYPES
            and len(_row_shape(o, batched)) == 1
            and (_PROBABILITY_NAME.search(o.name) or signature.class_labels or config.labels)
        )
    ]
    if len(labels) != 1 or len(probs) != 1:
        return None
    label, prob = labels[0], probs[0]
    columns = prob.shape[-1]
    known = prob.keys or signature.class_labels
    if config.labels is not None:
        if columns not in (-1, len(config.labels)) or (known and len(known) != len(config.labels)):
            raise ConfigError(
                f"model.toml has {len(config.labels)} labels but the model has "
                f"{len(known) if known else columns} classes"
            )
        names: tuple[str, ...] | None = config.labels
    else:
        names = tuple(str(k) for k in known) if known else None
    label_names: dict[str, str] = {}
    if names is not None and label.datatype is not DataType.BYTES:
        keys = [str(k) for k in known] if known else [str(i) for i in range(len(names))]
        label_names = dict(zip(keys, names, strict=True))
    return Classifier(label.name, prob.name, names, label_names)


def _check_unique(names: list[str], role: str, sources: list[str]) -> None:
    seen: dict[str, str] = {}
    for gql, source in zip(names, sources, strict=True):
        if gql in seen:
            raise ConfigError(
                f"{role}s {seen[gql]!r} and {source!r} both derive to the GraphQL name {gql!r}"
            )
        seen[gql] = source
