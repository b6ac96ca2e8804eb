"""Example operations for the explorer, written from the models actually served."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from gateway.repository import ModelConfig
from gateway.tensors import DataType
from gateway.typed import InputField, TypedModel

__all__ = ["example_operations"]


def example_operations(
    typed: Mapping[str, TypedModel | str], configs: Mapping[str, ModelConfig]
) -> list[str]:
    """GraphQL documents: one typed prediction per model, then metadata and a generic infer."""
    operations: list[str] = []
    for name in sorted(typed):
        tm = typed[name]
        if isinstance(tm, TypedModel):
            operations.append(_typed_operation(tm, configs.get(name, ModelConfig())))
    operations.append(_METADATA)
    first = next((tm for tm in typed.values() if isinstance(tm, TypedModel)), None)
    if first is not None:
        operations.append(_infer_operation(first, configs.get(first.model, ModelConfig())))
    return operations


_METADATA = """# Every model, its versions and their state and signatures.
query Models {
  models {
    name
    description
    defaultVersion
    typedField
    versions {
      version state stateReason
      inputs { name datatype shape }
      outputs { name datatype shape }
    }
  }
}
"""


def _typed_operation(tm: TypedModel, config: ModelConfig) -> str:
    values = ", ".join(f"{f.graphql}: {_literal(_example(f, config))}" for f in tm.inputs)
    selection = ["label", "probabilities { label probability }"] if tm.classifier else []
    selection += [o.graphql for o in tm.outputs]
    selection.append("modelVersion")
    about = f"# {config.description}\n" if config.description else ""
    return (
        f"{about}query Predict{tm.type_stem} {{\n  predict {{\n"
        f"    {tm.field}(input: {{{values}}}) {{\n      "
        + "\n      ".join(selection)
        + "\n    }\n  }\n}\n"
    )


def _infer_operation(tm: TypedModel, config: ModelConfig) -> str:
    tensors = []
    for spec in tm.signature.inputs:
        shape = [1 if d < 0 else d for d in spec.shape]
        count = 1
        for d in shape:
            count *= d
        fields = [f for f in tm.inputs if f.tensor == spec.name]
        flat: list[Any] = []
        for f in fields:
            value = _example(f, config)
            flat.extend(_flatten(value))
        flat = (flat + [_zero(spec.datatype)] * count)[:count]
        # A missing value (NaN in [example]) is spelled as the tensor API reads it.
        flat = ["NaN" if _missing(v) else v for v in flat]
        name, dims, data = (json.dumps(x) for x in (spec.name, shape, flat))
        tensors.append(f"{{name: {name}, shape: {dims}, data: {data}}}")
    return (
        f"# The generic tensor API (any model): model {tm.model!r}.\nquery Infer {{\n"
        f"  infer(model: {json.dumps(tm.model)}, inputs: [{', '.join(tensors)}]) {{\n"
        "    model version id\n    outputs { name datatype shape data }\n  }\n}\n"
    )


def _example(f: InputField, config: ModelConfig) -> Any:
    for key in (f.source, f.graphql):
        if key in config.example:
            return config.example[key]
    value: Any = _zero(f.datatype)
    for size in reversed(f.row_shape):
        value = [value] * (size if size > 0 else 1)
    return value


def _zero(datatype: DataType) -> Any:
    if datatype is DataType.BYTES:
        return "text"
    if datatype is DataType.BOOL:
        return False
    if datatype in (DataType.FP16, DataType.FP32, DataType.FP64):
        return 0.0
    return 0


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _literal(value: Any) -> str:
    """A GraphQL literal: like JSON, but lists spelled the GraphQL way and a missing value
    (NaN in [example]) as null, which a float feature takes for it."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return "null" if _missing(value) else json.dumps(value)
