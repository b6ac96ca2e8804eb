"""Unknown categories: which input a categorical encoder reads, and the value it did not know.

A scikit-learn ``OneHotEncoder`` without ``handle_unknown`` becomes an ONNX ``OneHotEncoder``
that fails the whole run on a category it was not fitted on; ONNX Runtime's message names only
the node. ``read_category_checks`` maps each such node, once per model, to the input (and
column) it reads and the categories it knows; after a failed run ``unknown_category`` finds the
value and row the node refused, so the caller hears which of its values was wrong.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from gateway.errors import UnknownCategoryError

__all__ = ["CategoryCheck", "read_category_checks", "unknown_category"]

# "... while running OneHotEncoder node. Name:'OneHotEncoder1' Status Message: Unknown Category"
_FAILED_NODE = re.compile(r"running OneHotEncoder node\. Name:'(?P<name>[^']*)'.*Unknown Category")
# Operators between an encoder and the graph input that keep each value where it was.
_KEEPS_VALUES = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
#: Known categories quoted in a message, at most.
_QUOTED = 10


@dataclass(frozen=True, slots=True)
class CategoryCheck:
    """What one encoder node reads and knows."""

    input: str  # the graph input it reads
    column: int | None  # the column of a [N, F] input it reads; None: the whole input
    known: tuple[str | int, ...]  # its categories, in the model's order


def read_category_checks(graph: onnx.GraphProto) -> dict[str, CategoryCheck]:
    """The OneHotEncoder nodes of ``graph`` that read a graph input, by node name."""
    inputs = {i.name for i in graph.input}
    constants = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    checks: dict[str, CategoryCheck] = {}
    for node in graph.node:
        if node.op_type != "OneHotEncoder" or not node.input:
            continue
        known = _categories(node)
        source = _source(node.input[0], inputs, constants, producers)
        if known and source is not None:
            checks[node.name] = CategoryCheck(source[0], source[1], known)
    return checks


def unknown_category(
    checks: Mapping[str, CategoryCheck], message: str, feeds: Mapping[str, np.ndarray]
) -> UnknownCategoryError | None:
    """The error to give the caller for ONNX Runtime's ``message``, when an encoder refused a
    value of ``feeds``; None when the message is about something else or no value is found."""
    found = _FAILED_NODE.search(message)
    check = checks.get(found["name"]) if found else None
    array = feeds.get(check.input) if check else None
    if check is None or array is None:
        return None
    column = check.column
    if column is not None:
        if array.ndim < 2 or column >= array.shape[1]:
            return None
        array = array[:, column]
        column = None if feeds[check.input].shape[1] == 1 else column  # [N, 1]: no news
    known = set(check.known)
    rows = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    for row, values in enumerate(rows.tolist()):
        for value in values:
            if _category(value) not in known:
                return UnknownCategoryError(
                    input=check.input,
                    column=column,
                    row=row,
                    value=value,
                    detail=f"{_show(value)} is not a category the model knows; "
                    f"{_known_text(check.known)}",
                )
    return None


def _categories(node: onnx.NodeProto) -> tuple[str | int, ...]:
    for attr in node.attribute:
        if attr.name == "cats_strings":
            return tuple(s.decode("utf-8", "replace") for s in attr.strings)
        if attr.name == "cats_int64s":
            return tuple(int(i) for i in attr.ints)
    return ()


def _source(
    name: str,
    inputs: set[str],
    constants: Mapping[str, onnx.TensorProto],
    producers: Mapping[str, onnx.NodeProto],
) -> tuple[str, int | None] | None:
    """The graph input (and column) that the tensor ``name`` holds the values of, if any."""
    column: int | None = None
    while name not in inputs:
        node = producers.get(name)
        if node is None or not node.input:
            return None
        if node.op_type in ("Gather", "ArrayFeatureExtractor") and column is None:
            # skl2onnx picks a column of a [N, F] input: Gather(axis=1) or ArrayFeatureExtractor
            # with a constant index.
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            index = constants.get(node.input[1]) if len(node.input) > 1 else None
            if index is None or (node.op_type == "Gather" and axis != 1):
                return None
            picked = numpy_helper.to_array(index).reshape(-1)
            if picked.size != 1:
                return None
            column = int(picked[0])
        elif node.op_type not in _KEEPS_VALUES:
            return None
        name = node.input[0]
    return name, column


def _category(value: object) -> object:
    # ONNX Runtime reads numeric input of an integer-category encoder as int64.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _show(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _known_text(known: tuple[str | int, ...]) -> str:
    quoted = ", ".join(_show(k) for k in known[:_QUOTED])
    more = f" and {len(known) - _QUOTED} more" if len(known) > _QUOTED else ""
    return f"it knows {quoted}{more}"
