"""What an operation sends to models through its variables, counted before anything runs.

A variable may be used by many fields: ``query($t: String!) { predict { a: m(input: {text:
$t}) ... z: m(input: {text: $t}) } }`` sends ``$t`` to the model once per alias. The budget of
string bytes (``max_operation_string_bytes``), the length of one string (``max_string_bytes``)
and the rows of batch fields fed by a variable (``max_cost``) are checked here for the whole
operation once its variables are known, on both paths: an operation over them is refused
before any of its fields runs (counted field by field instead, thirty aliases of a 100 KB
string each built their input and failed in turn, 10 ms of the event loop per request).
``RowBudget`` still counts what actually runs, field by field.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    Visitor,
    visit,
)

from gateway.api.limits import TOO_COMPLEX, QueryLimits

__all__ = ["VariableUses", "check_variables", "variable_uses"]

# Where a selection set sits (as in gateway.api.limits): model fields are typed predictions
# under ``predict`` and ``infer`` at the root.
_ROOT, _PREDICT, _OTHER = 0, 1, 2


class VariableUses:
    """How often each variable feeds a model field, fragments expanded: as values (a typed
    input, ``infer``'s ``data``), as a list of ``infer`` tensors (only their ``data`` reaches
    the model: ``b64`` carries numbers, ``name`` and ``shape`` say where), or as a typed batch
    field's whole list of rows (``inputs: $rows``)."""

    __slots__ = ("batches", "models", "tensors")

    def __init__(self, models: Counter[str], tensors: Counter[str], batches: Counter[str]) -> None:
        self.models = models
        self.tensors = tensors
        self.batches = batches


def variable_uses(document: DocumentNode, operation: OperationDefinitionNode) -> VariableUses:
    """The variables of ``operation`` that reach models, with their counts."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    walk = _Walk(fragments)
    return VariableUses(*walk.selection_set(operation.selection_set, _ROOT))


def check_variables(
    uses: VariableUses, variables: Mapping[str, Any] | None, limits: QueryLimits
) -> GraphQLError | None:
    """The error refusing an operation whose variables would send more than ``limits``
    allow to models, or None."""
    if not variables or not (uses.models or uses.tensors):
        return None
    total = 0
    fed = [(name, count, variables.get(name)) for name, count in uses.models.items()]
    for name, count in uses.tensors.items():
        tensors = variables.get(name)
        if isinstance(tensors, list):
            data = [t.get("data") for t in tensors if isinstance(t, dict)]
            fed.append((name, count, data))
    for name, count, value in fed:
        longest, size = _strings(value)
        if longest > limits.max_string_bytes:
            return GraphQLError(
                f"variable ${name} holds a string of {longest} bytes; at most "
                f"{limits.max_string_bytes} (max_string_bytes)",
                extensions={"code": "BAD_USER_INPUT"},
            )
        total += size * count
    if total > limits.max_operation_string_bytes:
        return GraphQLError(
            f"the operation sends {total} bytes of strings to models (each use of a variable "
            f"counts); at most {limits.max_operation_string_bytes} "
            "(max_operation_string_bytes): split it into several requests",
            extensions={"code": TOO_COMPLEX},
        )
    rows = sum(
        len(value) * count
        for name, count in uses.batches.items()
        if isinstance(value := variables.get(name), list)
    )
    if rows > limits.max_cost:
        return GraphQLError(
            f"the operation asks for {rows} model rows in its variables (each use counts); at "
            f"most {limits.max_cost} (max_cost): split it into several requests",
            extensions={"code": TOO_COMPLEX},
        )
    return None


def _strings(value: Any) -> tuple[int, int]:
    """The longest string in ``value`` and the bytes of all of them (UTF-8)."""
    if isinstance(value, str):
        size = len(value) if value.isascii() else len(value.encode(errors="surrogatepass"))
        return size, size
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    longest = total = 0
    for item in items:
        one, size = _strings(item)
        longest, total = max(longest, one), total + size
    return longest, total


_Counts = tuple[Counter[str], Counter[str], Counter[str]]


class _Walk:
    """Variable uses of selection sets, each fragment walked once per place it is spread and
    its counts reused (as ``gateway.api.limits`` does, and for the same reason)."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._known: dict[tuple[str, int], _Counts] = {}
        self._expanding: set[str] = set()

    def selection_set(self, selection_set: SelectionSetNode, where: int) -> _Counts:
        counts: _Counts = (Counter(), Counter(), Counter())
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                found = self._field(selection, where)
            elif isinstance(selection, InlineFragmentNode):
                found = self.selection_set(selection.selection_set, where)
            elif isinstance(selection, FragmentSpreadNode):
                found = self._fragment(selection.name.value, where)
            else:
                continue
            for total, more in zip(counts, found, strict=True):
                total.update(more)
        return counts

    def _fragment(self, name: str, where: int) -> _Counts:
        known = self._known.get((name, where))
        if known is not None:
            return known
        fragment = self._fragments.get(name)
        if fragment is None or name in self._expanding:
            return Counter(), Counter(), Counter()  # unknown or cyclic: validation reports it
        self._expanding.add(name)
        counts = self.selection_set(fragment.selection_set, where)
        self._expanding.discard(name)
        self._known[(name, where)] = counts
        return counts

    def _field(self, node: FieldNode, where: int) -> _Counts:
        name = node.name.value
        if where == _PREDICT and not name.startswith("__"):
            models: Counter[str] = Counter()
            batches: Counter[str] = Counter()
            for argument in node.arguments or ():
                value = argument.value
                models.update(_variables_in(value))
                if argument.name.value == "inputs" and isinstance(value, VariableNode):
                    batches[value.name.value] += 1
            return models, Counter(), batches
        if where == _ROOT and name == "infer":
            return _infer_uses(node)
        if node.selection_set is None:
            return Counter(), Counter(), Counter()
        below = _PREDICT if where == _ROOT and name == "predict" else _OTHER
        return self.selection_set(node.selection_set, below)


def _infer_uses(node: FieldNode) -> _Counts:
    """Variables of ``infer``'s ``inputs`` whose strings reach the model: the whole list
    (``inputs: $tensors``), or a tensor's ``data`` (``data: $d``)."""
    models: Counter[str] = Counter()
    tensors: Counter[str] = Counter()
    for argument in node.arguments or ():
        if argument.name.value != "inputs":
            continue
        value = argument.value
        if isinstance(value, VariableNode):
            tensors[value.name.value] += 1
            continue
        items = value.values if isinstance(value, ListValueNode) else (value,)
        for item in items:
            if isinstance(item, VariableNode):
                tensors[item.name.value] += 1
            elif isinstance(item, ObjectValueNode):
                for f in item.fields:
                    if f.name.value == "data":
                        models.update(_variables_in(f.value))
    return models, tensors, Counter()


class _Variables(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.append(node.name.value)


def _variables_in(value: ValueNode) -> list[str]:
    if isinstance(value, VariableNode):  # the common case, without a visitor
        return [value.name.value]
    found = _Variables()
    visit(value, found)
    return found.names
