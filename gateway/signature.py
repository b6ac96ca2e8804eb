"""Read a model's signature from its ONNX file: inputs, outputs, class labels.

Uses the ``onnx`` package only, so a schema can be built (``gateway export-schema``) without
creating ONNX Runtime sessions. Non-tensor outputs that converters emit by default (skl2onnx's
ZipMap: a sequence of label-to-probability maps) are described as the dense tensor the gateway
turns them into: FP32 ``[N, classes]``, columns in class order.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from gateway.categories import CategoryCheck, read_category_checks
from gateway.errors import ModelLoadError
from gateway.tensors import DataType, TensorSpec, datatype_from_elem_type

__all__ = ["IOKind", "IOSpec", "Signature", "read_signature", "signature_from_proto"]

_CLASSIFIER_OPS = {"LinearClassifier", "TreeEnsembleClassifier", "SVMClassifier"}


class IOKind(enum.Enum):
    """How a value is represented in the ONNX graph."""

    TENSOR = "tensor"
    SEQUENCE_OF_MAPS = "sequence_of_maps"  # e.g. ZipMap: [{label: p, ...}, ...] -> [N, C]
    MAP = "map"  # {key: value} -> [C]


@dataclass(frozen=True, slots=True)
class IOSpec:
    """One input or output as the gateway presents it."""

    name: str
    datatype: DataType
    shape: tuple[int, ...]  # -1 = dynamic dimension
    kind: IOKind = IOKind.TENSOR
    #: The ONNX type as written in the graph, e.g. ``seq(map(int64,tensor(float)))``.
    onnx_type: str = ""
    #: Map keys in column order, for map outputs whose keys the graph declares.
    keys: tuple[str | int, ...] | None = None
    #: The symbolic name of each dimension ("" when fixed or unnamed): ONNX means one size
    #: wherever a name recurs. Not compared: versions that name a dimension differently look
    #: the same to a caller.
    dim_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def tensor(self) -> TensorSpec:
        """This value as a plain tensor spec."""
        return TensorSpec(self.name, self.datatype, self.shape)


@dataclass(frozen=True, slots=True)
class Signature:
    """A model's inputs and outputs, and its class labels when the graph declares them.

    Two signatures are equal when a caller sees no difference: the same inputs and outputs
    (names, types, shapes) and class labels. The opset is not part of it: converters pick it
    per estimator, and two versions that differ only there serve the same typed field.
    """

    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    class_labels: tuple[str | int, ...] | None = None
    #: Not compared: versions that differ only in opset take the same requests.
    opset: int = field(default=0, compare=False)
    #: Categorical encoders that fail a run on an unknown value, by node name (not compared:
    #: what a caller may send is the same).
    categories: Mapping[str, CategoryCheck] = field(default_factory=dict, repr=False, compare=False)

    #: Inputs and outputs by name: outputs are looked up for every request.
    _inputs_by_name: dict[str, IOSpec] = field(init=False, repr=False, compare=False)
    _outputs_by_name: dict[str, IOSpec] = field(init=False, repr=False, compare=False)
    _shared_first: tuple[tuple[str, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs_by_name", {i.name: i for i in self.inputs})
        object.__setattr__(self, "_outputs_by_name", {o.name: o for o in self.outputs})
        object.__setattr__(self, "_shared_first", _shared_first_dims(self))

    @property
    def shared_first_dims(self) -> tuple[tuple[str, ...], ...]:
        """Groups of inputs whose first (batch) dimensions must be equal in one request.

        Inputs whose free first dimensions carry one symbolic name (ONNX: one size); and when
        every input and output has a free first dimension (the gateway then stacks requests
        along it as rows) all inputs, unless they name their first dimensions differently:
        a parameter input (a shape, sizes, indices) may then differ.
        """
        return self._shared_first

    @property
    def stackable(self) -> bool:
        """Whether rows of several requests can be stacked along the first dimension and the
        outputs split back: every input and output is a tensor with a free first dimension,
        and the inputs share it (a parameter input, such as Gather's indices ``[K]`` beside
        ``[N, 3]``, names its own and must not be concatenated across requests)."""
        values = (*self.inputs, *self.outputs)
        if any(v.shape[:1] != (-1,) or v.kind is IOKind.MAP for v in values):
            return False
        names = {i.name for i in self.inputs}
        return len(names) <= 1 or any(set(group) == names for group in self._shared_first)

    def input(self, name: str) -> IOSpec | None:
        """The input called ``name``, if any."""
        return self._inputs_by_name.get(name)

    def output(self, name: str) -> IOSpec | None:
        """The output called ``name``, if any."""
        return self._outputs_by_name.get(name)


def read_signature(path: Path) -> Signature:
    """Read the signature of the ONNX model at ``path``.

    Raises:
        ModelLoadError: the file is not an ONNX model, or uses types the gateway cannot serve.
    """
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError...
        raise ModelLoadError(f"not a readable ONNX model ({type(exc).__name__})") from exc
    return signature_from_proto(proto)


def signature_from_proto(proto: onnx.ModelProto) -> Signature:
    """The signature of an in-memory ONNX model (see ``read_signature``)."""
    graph = proto.graph
    if not graph.output:
        raise ModelLoadError("the graph has no outputs")
    initializers = {i.name for i in graph.initializer}
    class_labels = _class_labels(graph)
    map_keys = _map_keys(graph)
    inputs = tuple(
        _io_spec(v, map_keys, is_input=True) for v in graph.input if v.name not in initializers
    )
    outputs = tuple(_io_spec(v, map_keys, is_input=False) for v in graph.output)
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return Signature(inputs, outputs, class_labels, opset, read_category_checks(graph))


def _io_spec(
    value: onnx.ValueInfoProto, map_keys: dict[str, tuple[str | int, ...]], *, is_input: bool
) -> IOSpec:
    type_proto = value.type
    onnx_type = _type_text(type_proto)
    where = f"{'input' if is_input else 'output'} {value.name!r} of type {onnx_type}"
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        tensor = type_proto.tensor_type
        datatype = _datatype(tensor.elem_type, where)
        names = tuple(d.dim_param for d in tensor.shape.dim) if tensor.HasField("shape") else ()
        return IOSpec(value.name, datatype, _shape(tensor), onnx_type=onnx_type, dim_names=names)
    if is_input:
        raise ModelLoadError(f"{where}: only tensor inputs can be served")
    keys = map_keys.get(value.name)
    columns = len(keys) if keys else -1
    if which == "sequence_type":
        elem = type_proto.sequence_type.elem_type
        if elem.WhichOneof("value") == "map_type":
            value_type = elem.map_type.value_type
            _map_value_datatype(value_type, where)
            return IOSpec(
                value.name, DataType.FP32, (-1, columns), IOKind.SEQUENCE_OF_MAPS, onnx_type, keys
            )
    if which == "map_type":
        datatype = _map_value_datatype(type_proto.map_type.value_type, where)
        return IOSpec(value.name, datatype, (columns,), IOKind.MAP, onnx_type, keys)
    raise ModelLoadError(f"{where}: the gateway serves tensor, map and sequence-of-map outputs")


def _shared_first_dims(signature: Signature) -> tuple[tuple[str, ...], ...]:
    free = [i for i in signature.inputs if i.shape[:1] == (-1,)]
    named: dict[str, list[str]] = {}
    for spec in free:
        name = spec.dim_names[0] if spec.dim_names else ""
        if name:
            named.setdefault(name, []).append(spec.name)
    values = (*signature.inputs, *signature.outputs)
    if len(named) <= 1 and all(v.shape[:1] == (-1,) for v in values):
        groups = [[i.name for i in signature.inputs]]
    else:
        groups = list(named.values())
    return tuple(tuple(g) for g in groups if len(g) > 1)


def _map_value_datatype(value_type: onnx.TypeProto, where: str) -> DataType:
    if value_type.WhichOneof("value") != "tensor_type":
        raise ModelLoadError(f"{where}: map values must be tensors")
    datatype = _datatype(value_type.tensor_type.elem_type, where)
    # ORT gives map values as Python floats; FP32 is what every converter declares.
    return DataType.FP32 if datatype in (DataType.FP16, DataType.FP64) else datatype


def _datatype(elem_type: int, where: str) -> DataType:
    datatype = datatype_from_elem_type(elem_type)
    if datatype is None:
        name = onnx.TensorProto.DataType.Name(elem_type)
        raise ModelLoadError(f"{where}: element type {name} is not supported")
    return datatype


def _shape(tensor_type: onnx.TypeProto.Tensor) -> tuple[int, ...]:
    if not tensor_type.HasField("shape"):
        return ()
    return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)


def _type_text(type_proto: onnx.TypeProto) -> str:
    which = type_proto.WhichOneof("value")
    if which == "tensor_type":
        elem = type_proto.tensor_type.elem_type
        return f"tensor({_ELEM_NAMES.get(elem, onnx.TensorProto.DataType.Name(elem).lower())})"
    if which == "sequence_type":
        return f"seq({_type_text(type_proto.sequence_type.elem_type)})"
    if which == "map_type":
        key = _ELEM_NAMES.get(type_proto.map_type.key_type, "?")
        return f"map({key},{_type_text(type_proto.map_type.value_type)})"
    if which == "optional_type":
        return f"optional({_type_text(type_proto.optional_type.elem_type)})"
    return str(which)


_ELEM_NAMES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float",
    onnx.TensorProto.DOUBLE: "double",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT64: "uint64",
}


def _labels_of(node: onnx.NodeProto) -> tuple[str | int, ...] | None:
    for attr in node.attribute:
        if attr.name in ("classlabels_int64s", "classlabels_ints") and attr.ints:
            return tuple(int(i) for i in attr.ints)
        if attr.name == "classlabels_strings" and attr.strings:
            return tuple(s.decode("utf-8", "replace") for s in attr.strings)
    return None


def _class_labels(graph: onnx.GraphProto) -> tuple[str | int, ...] | None:
    for node in graph.node:
        if node.domain == "ai.onnx.ml" and node.op_type in _CLASSIFIER_OPS | {"ZipMap"}:
            labels = _labels_of(node)
            if labels:
                return labels
    return None


def _map_keys(graph: onnx.GraphProto) -> dict[str, tuple[str | int, ...]]:
    """Keys of the maps each ZipMap node writes, by output name (ZipMap feeds outputs directly
    or through an Identity/Cast, as skl2onnx emits)."""
    producers = {out: node for node in graph.node for out in node.output}
    keys: dict[str, tuple[str | int, ...]] = {}
    for output in graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type in ("Identity", "Cast") and node.input:
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "ZipMap":
            labels = _labels_of(node)
            if labels:
                keys[output.name] = labels
    return keys
