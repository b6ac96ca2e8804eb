"""The typed API on models that are not ours: field names derived from any tensor name, nested
lists, model.toml features and labels, classifiers (ZipMap too), batching and versions.

In-process (no server); each repository is built inline with onnx.helper.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import graphql
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import (
    InProcessGateway,
    identity_model,
    load_gateway,
    make_model,
    tensor_info,
    write_repository,
)
from tests.test_api_generic import (
    ODD_NAMES,
    SAMPLES,
    TWO_IN_TWO_OUT,
    Factory,
    add_constant,
    infer,
    ok,
    run,
    tensors,
)

F = TensorProto.FLOAT
CLASSES = "label probabilities { label probability }"


def fields(gw: InProcessGateway, type_name: str) -> dict[str, str]:
    """The fields of a type of the gateway's SDL, as name -> GraphQL type."""
    found = graphql.build_schema(gw.sdl).get_type(type_name)
    assert isinstance(found, graphql.GraphQLInputObjectType | graphql.GraphQLObjectType)
    return {name: str(f.type) for name, f in found.fields.items()}


def typed_info(gw: InProcessGateway) -> dict[str, tuple[str | None, str | None]]:
    models = ok(run(gw, "{ models { name typedField typedFieldError } }"))["models"]
    return {m["name"]: (m["typedField"], m["typedFieldError"]) for m in models}


def softmax(values: list[float]) -> list[float]:
    exp = np.exp(np.array(values, dtype=np.float64))
    return list((exp / exp.sum()).tolist())


# --- every DataType as a scalar per row ---------------------------------------------------

# What a per-row scalar of each type is in GraphQL, in and out. GraphQL's Int is 32-bit, so
# wider integers come out as Float; float outputs are nullable (NaN and infinity are null), and
# so are float inputs (null is a missing value, NaN).
TYPED_SCALARS: dict[str, tuple[str, str, Any]] = {
    "BOOL": ("Boolean!", "Boolean!", True),
    "UINT8": ("Int!", "Int!", 255),
    "UINT16": ("Int!", "Int!", 65535),
    "UINT32": ("Int!", "Float!", 2**31 - 1),
    "UINT64": ("Int!", "Float!", 2**31 - 1),
    "INT8": ("Int!", "Int!", -128),
    "INT16": ("Int!", "Int!", -(2**15)),
    "INT32": ("Int!", "Int!", -(2**31)),
    "INT64": ("Int!", "Float!", -(2**31)),
    "FP16": ("Float", "Float", 65504.0),
    "FP32": ("Float", "Float", -1.5),
    "FP64": ("Float", "Float", 1e-300),
    "BYTES": ("String!", "String!", "日本語 🙂"),
}


@pytest.fixture(scope="module")
def scalars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    """An identity model [N] per DataType, named after it in lower case."""
    models = {f"{dt.lower()}/1": identity_model(elem, ("N",)) for dt, (elem, _) in SAMPLES.items()}
    gw = load_gateway(write_repository(tmp_path_factory.mktemp("scalars"), models))
    yield gw
    gw.runtime.close()


@pytest.mark.parametrize("datatype", list(TYPED_SCALARS))
def test_typed_scalar_of_every_datatype(scalars: InProcessGateway, datatype: str) -> None:
    gql_in, gql_out, value = TYPED_SCALARS[datatype]
    stem = datatype.capitalize()
    assert fields(scalars, f"{stem}Input") == {"x": gql_in}
    assert fields(scalars, f"{stem}Prediction") == {"y": gql_out, "modelVersion": "Int!"}
    field = datatype.lower()
    query = (
        f"query($v: {gql_in}) {{ predict {{ {field}(input: {{x: $v}}) {{ y modelVersion }} }} }}"
    )
    answer = ok(run(scalars, query, {"v": value}))["predict"][field]
    assert answer == {"y": value, "modelVersion": 1}
    assert type(answer["y"]) is type(float(value) if gql_out.startswith("Float") else value)


def test_non_finite_outputs_are_null_in_the_typed_api(gateway_factory: Factory) -> None:
    log = make_model(
        [helper.make_node("Log", ["x"], ["y"])],
        [tensor_info("x", F, ["N"])],
        [tensor_info("y", F, ["N"])],
    )
    gw = gateway_factory({"log/1": log})
    rows = ok(run(gw, "{ predict { logBatch(inputs: [{x: 1}, {x: 0}, {x: -1}]) { y } } }"))
    assert rows["predict"]["logBatch"] == [{"y": 0.0}, {"y": None}, {"y": None}]
    out = tensors(infer(gw, "log", [{"name": "x", "shape": [3], "data": [1, 0, -1]}]))
    assert out["y"]["data"] == [0.0, "-Infinity", "NaN"]


# --- shapes -------------------------------------------------------------------------------


def test_fixed_shapes_and_scalars(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "grid/1": identity_model(F, (2, 3)),
            "one/1": identity_model(F, (1, 4)),
            "scalar/1": identity_model(TensorProto.INT32, ()),
        }
    )
    assert fields(gw, "GridInput") == {"x": "[[Float!]!]!"}
    assert fields(gw, "GridPrediction") == {"y": "[[Float]!]!", "modelVersion": "Int!"}
    assert fields(gw, "OneInput") == {"x": "[Float!]!"}  # the fixed batch of 1 is the row
    assert fields(gw, "ScalarInput") == {"x": "Int!"}
    query = """{ predict {
        grid(input: {x: [[1, 2, 3], [4, 5, 6]]}) { y }
        gridBatch(inputs: [{x: [[1, 1, 1], [2, 2, 2]]}, {x: [[3, 3, 3], [4, 4, 4]]}]) { y }
        oneBatch(inputs: [{x: [1, 2, 3, 4]}, {x: [5, 6, 7, 8]}]) { y }
        scalar(input: {x: -5}) { y }
        scalarBatch(inputs: [{x: 1}, {x: 2}]) { y }
    } }"""
    answer = ok(run(gw, query))["predict"]
    assert answer["grid"] == {"y": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    assert answer["gridBatch"] == [
        {"y": [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]},
        {"y": [[3.0, 3.0, 3.0], [4.0, 4.0, 4.0]]},
    ]
    assert answer["oneBatch"] == [{"y": [1.0, 2.0, 3.0, 4.0]}, {"y": [5.0, 6.0, 7.0, 8.0]}]
    assert answer["scalar"] == {"y": -5}
    assert answer["scalarBatch"] == [{"y": 1}, {"y": 2}]


def test_model_without_toml_gets_fields_from_tensor_names(gateway_factory: Factory) -> None:
    model = make_model(
        [
            helper.make_node("ReduceSum", ["image:0", "axes"], ["total.sum"], keepdims=0),
            helper.make_node("Identity", ["caption"], ["caption_out"]),
        ],
        [tensor_info("image:0", F, ["N", 2, 2]), tensor_info("caption", TensorProto.STRING, ["N"])],
        [tensor_info("total.sum", F, ["N"]), tensor_info("caption_out", TensorProto.STRING, ["N"])],
        initializers=[helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])],
    )
    strings = identity_model(TensorProto.STRING, ("N", 2), input_name="words", output_name="echo")
    free = identity_model(F, ("N", "M"), input_name="Seq", output_name="SeqOut")
    gw = gateway_factory({"raw/1": model, "strings/1": strings, "free/1": free})
    assert fields(gw, "RawInput") == {"image0": "[[Float!]!]!", "caption": "String!"}
    assert fields(gw, "RawPrediction") == {
        "totalSum": "Float",
        "captionOut": "String!",
        "modelVersion": "Int!",
    }
    assert fields(gw, "StringsInput") == {"words": "[String!]!"}
    assert fields(gw, "FreeInput") == {"seq": "[Float!]!"}
    query = """{ predict {
        rawBatch(inputs: [{image0: [[1, 2], [3, 4]], caption: "é"},
                          {image0: [[0, 0], [0, 0.5]], caption: "🙂"}]) { totalSum captionOut }
        strings(input: {words: ["naïve", "日本"]}) { echo }
        freeBatch(inputs: [{seq: [1, 2, 3]}, {seq: [4, 5, 6]}]) { seqOut }
    } }"""
    answer = ok(run(gw, query))["predict"]
    assert answer["rawBatch"] == [
        {"totalSum": 10.0, "captionOut": "é"},
        {"totalSum": 0.5, "captionOut": "🙂"},
    ]
    assert answer["strings"] == {"echo": ["naïve", "日本"]}
    assert answer["freeBatch"] == [{"seqOut": [1.0, 2.0, 3.0]}, {"seqOut": [4.0, 5.0, 6.0]}]


# --- naming ---------------------------------------------------------------------------------


def test_odd_and_clashing_names(gateway_factory: Factory) -> None:
    clash = make_model(
        [helper.make_node("Sub", ["x.y", "x_y"], ["d"])],
        [tensor_info("x.y", F, ["N"]), tensor_info("x_y", F, ["N"])],
        [tensor_info("d", F, ["N"])],
    )
    reserved_out = identity_model(F, ("N",), output_name="model_version")
    gw = gateway_factory(
        {
            "odd/1": ODD_NAMES,
            "clash/1": clash,
            "tensor/1": identity_model(),
            "a-b/1": identity_model(),
            "a_b/1": identity_model(),
            "reserved/1": reserved_out,
        }
    )
    assert typed_info(gw) == {
        "a-b": (None, "its GraphQL name 'aB' clashes with model(s) 'a_b'"),
        "a_b": (None, "its GraphQL name 'aB' clashes with model(s) 'a-b'"),
        "clash": (None, "inputs 'x.y' and 'x_y' both derive to the GraphQL name 'xY'"),
        "odd": ("odd", None),
        "reserved": (None, "output 'model_version' derives to the reserved field 'modelVersion'"),
        "tensor": (None, "its GraphQL type name 'TensorInput' is reserved by the gateway"),
    }
    assert fields(gw, "OddInput") == {"input0": "Float", "xYZ": "Float"}
    assert fields(gw, "OddPrediction") == {
        "output1": "Float",
        "outPut": "Float",
        "modelVersion": "Int!",
    }
    odd_answer = ok(run(gw, "{ predict { odd(input: {input0: 2, xYZ: 3}) { output1 outPut } } }"))
    assert odd_answer == {"predict": {"odd": {"output1": 2.0, "outPut": -3.0}}}
    predict = fields(gw, "Predict")
    assert set(predict) == {"odd", "oddBatch"}  # the others are served by infer only
    sent = [{"name": "x.y", "shape": [1], "data": [5]}, {"name": "x_y", "shape": [1], "data": [2]}]
    assert tensors(infer(gw, "clash", sent))["d"]["data"] == [3.0]
    row = [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]
    for name in ("tensor", "a-b", "a_b"):
        assert tensors(infer(gw, name, row))["y"]["data"] == [1.0, 2.0, 3.0, 4.0]


# --- model.toml features and classifiers --------------------------------------------------


def argmax_classifier(classes: int = 3, *, features: int = 3) -> onnx.ModelProto:
    """label = argmax(x W), probabilities = softmax(x W): int64 labels, FP32 [N, classes]."""
    weights = np.eye(features, classes, dtype=np.float32)
    return make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["scores"]),
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        [tensor_info("x", F, ["N", features])],
        [
            tensor_info("label", TensorProto.INT64, ["N"]),
            tensor_info("probabilities", F, ["N", classes]),
        ],
        initializers=[onnx.numpy_helper.from_array(weights, "w")],
    )


def test_classifier_with_and_without_labels(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "plain/1": argmax_classifier(),
            "named/1": argmax_classifier(),
            "wrong/1": argmax_classifier(),
        },
        {
            "named": 'labels = ["cat", "dog", "bird"]\n'
            'features = ["size (cm)", "weight-kg", "class"]\n',
            "wrong": 'labels = ["yes", "no"]\n',
        },
    )
    assert typed_info(gw)["wrong"] == (None, "model.toml has 2 labels but the model has 3 classes")
    assert fields(gw, "PlainInput") == {"x": "[Float!]!"}
    assert fields(gw, "NamedInput") == {"sizeCm": "Float", "weightKg": "Float", "class": "Float"}
    assert fields(gw, "NamedPrediction") == {
        "label": "String!",
        "probabilities": "[ClassProbability!]!",
        "modelVersion": "Int!",
    }
    query = f"""{{ predict {{
        plain(input: {{x: [0, 2, 1]}}) {{ {CLASSES} }}
        namedBatch(inputs: [{{sizeCm: 0, weightKg: 2, class: 1}},
                            {{sizeCm: 0, weightKg: 0, class: 3}}]) {{ {CLASSES} }}
    }} }}"""
    answer = ok(run(gw, query))["predict"]
    expected = softmax([0, 2, 1])
    assert answer["plain"]["label"] == "1"
    assert [p["label"] for p in answer["plain"]["probabilities"]] == ["0", "1", "2"]
    got = [p["probability"] for p in answer["plain"]["probabilities"]]
    assert got == pytest.approx(expected, rel=1e-6)
    assert [row["label"] for row in answer["namedBatch"]] == ["dog", "bird"]
    second = answer["namedBatch"][1]["probabilities"]
    assert [p["label"] for p in second] == ["cat", "dog", "bird"]
    assert [p["probability"] for p in second] == pytest.approx(softmax([0, 0, 3]), rel=1e-6)


def test_features_of_one_input_among_several(gateway_factory: Factory) -> None:
    concat = make_model(
        [helper.make_node("Concat", ["num", "extra"], ["out"], axis=1)],
        [tensor_info("num", F, ["N", 2]), tensor_info("extra", F, ["N", 1])],
        [tensor_info("out", F, ["N", 3])],
    )
    gw = gateway_factory(
        {"two/1": concat, "miscount/1": concat},
        {
            "two": '[inputs.num]\nfeatures = ["height (cm)", "weight-kg"]\n',
            "miscount": '[inputs.num]\nfeatures = ["a", "b", "c"]\n',
        },
    )
    assert typed_info(gw)["miscount"] == (
        None,
        "model.toml lists 3 features for input 'num' of shape [-1, 2]; expected a [N, 3] input",
    )
    assert fields(gw, "TwoInput") == {"heightCm": "Float", "weightKg": "Float", "extra": "Float"}
    query = """{ predict { twoBatch(inputs: [{heightCm: 1, weightKg: 2, extra: 3},
                                           {extra: 6, weightKg: 5, heightCm: 4}]) { out } } }"""
    assert ok(run(gw, query))["predict"]["twoBatch"] == [
        {"out": [1.0, 2.0, 3.0]},
        {"out": [4.0, 5.0, 6.0]},
    ]


def test_features_of_inputs_without_a_free_batch_dimension(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "flat/1": identity_model(F, (3,)),
            "one/1": identity_model(F, (1, 3)),
            "column/1": identity_model(F, ("N", 1)),
            "several/1": TWO_IN_TWO_OUT,
            "elsewhere/1": identity_model(F, ("N", 2)),
        },
        {
            "flat": 'features = ["a", "b", "c"]\n',
            "one": 'features = ["a", "b", "c"]\n',
            "column": 'features = ["only"]\n',
            "several": 'features = ["p", "q", "r"]\n',
            "elsewhere": '[inputs.z]\nfeatures = ["p", "q"]\n',
        },
    )
    errors = typed_info(gw)
    assert errors["several"] == (
        None,
        "model.toml 'features' needs a model with one input; use [inputs.X]",
    )
    assert errors["elsewhere"] == (
        None,
        "model.toml names features of 'z', which is not an input",
    )
    assert fields(gw, "FlatInput") == {"a": "Float", "b": "Float", "c": "Float"}
    query = """{ predict {
        flat(input: {a: 1, b: 2, c: 3}) { y }
        flatBatch(inputs: [{a: 4, b: 5, c: 6}, {a: 7, b: 8, c: 9}]) { y }
        oneBatch(inputs: [{a: 1, b: 2, c: 3}, {a: 4, b: 5, c: 6}]) { y }
        columnBatch(inputs: [{only: 1}, {only: 2}]) { y }
    } }"""
    answer = ok(run(gw, query))["predict"]
    assert answer["flat"] == {"y": [1.0, 2.0, 3.0]}
    assert answer["flatBatch"] == [{"y": [4.0, 5.0, 6.0]}, {"y": [7.0, 8.0, 9.0]}]
    assert answer["oneBatch"] == [{"y": [1.0, 2.0, 3.0]}, {"y": [4.0, 5.0, 6.0]}]
    assert answer["columnBatch"] == [{"y": 1.0}, {"y": 2.0}]


def test_model_without_inputs_is_served_by_infer_only(gateway_factory: Factory) -> None:
    constant = helper.make_tensor("value", F, [2], [1.5, -2.0])
    model = make_model(
        [helper.make_node("Constant", [], ["y"], value=constant)], [], [tensor_info("y", F, [2])]
    )
    gw = gateway_factory({"constant/1": model, "other/1": identity_model()})
    assert typed_info(gw) == {
        "constant": (None, "the model has no inputs; a typed field needs at least one"),
        "other": ("other", None),
    }
    assert tensors(infer(gw, "constant", []))["y"]["data"] == [1.5, -2.0]


def zipmap_classifier(labels: list[int] | list[str]) -> onnx.ModelProto:
    """A LinearClassifier (scores = x, softmax) whose probabilities go through a ZipMap, as
    skl2onnx converts classifiers by default: output_probability is seq(map(label, float))."""
    ints = isinstance(labels[0], int)
    key = TensorProto.INT64 if ints else TensorProto.STRING
    seq_of_maps = helper.make_sequence_type_proto(
        helper.make_map_type_proto(key, helper.make_tensor_type_proto(F, None))
    )
    linear = helper.make_node(
        "LinearClassifier",
        ["x"],
        ["output_label", "scores"],
        domain="ai.onnx.ml",
        coefficients=np.eye(3, dtype=np.float32).ravel().tolist(),
        intercepts=[0.0, 0.0, 0.0],
        post_transform="SOFTMAX",
    )
    linear.attribute.append(
        helper.make_attribute("classlabels_ints" if ints else "classlabels_strings", labels)
    )
    zipmap = helper.make_node("ZipMap", ["scores"], ["output_probability"], domain="ai.onnx.ml")
    zipmap.attribute.append(
        helper.make_attribute("classlabels_int64s" if ints else "classlabels_strings", labels)
    )
    return make_model(
        [linear, zipmap],
        [tensor_info("x", F, ["N", 3])],
        [
            tensor_info("output_label", key, ["N"]),
            helper.make_value_info("output_probability", seq_of_maps),
        ],
        ml_opset=1,
    )


def test_zipmap_classifier_in_both_apis(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "ints/1": zipmap_classifier([10, 20, 30]),
            "texts/1": zipmap_classifier(["setosa", "versicolor", "virginica"]),
            "relabelled/1": zipmap_classifier([10, 20, 30]),
        },
        {"relabelled": 'labels = ["low", "mid", "high"]\n'},
    )
    meta = (
        '{ model(name: "ints") { versions { outputs { name datatype shape onnxType labels } } } }'
    )
    outputs = ok(run(gw, meta))["model"]["versions"][0]["outputs"]
    assert outputs == [
        {
            "name": "output_label",
            "datatype": "INT64",
            "shape": [-1],
            "onnxType": "tensor(int64)",
            "labels": None,
        },
        {
            "name": "output_probability",
            "datatype": "FP32",
            "shape": [-1, 3],
            "onnxType": "seq(map(int64,tensor(float)))",
            "labels": ["10", "20", "30"],
        },
    ]
    # infer serves the sequence of maps as a dense FP32 [N, C] tensor, columns in class order.
    sent = [{"name": "x", "shape": [2, 3], "data": [0, 1, 2, 3, 0, 0]}]
    out = tensors(infer(gw, "ints", sent))
    assert out["output_label"]["data"] == [30, 10]
    dense = out["output_probability"]
    assert (dense["datatype"], dense["shape"]) == ("FP32", [2, 3])
    assert dense["data"] == pytest.approx(softmax([0, 1, 2]) + softmax([3, 0, 0]), rel=1e-6)
    raw = np.frombuffer(base64.b64decode(dense["b64"]), dtype=np.float32)
    assert raw.tolist() == dense["data"]
    query = f"""{{ predict {{
        ints(input: {{x: [0, 1, 2]}}) {{ {CLASSES} }}
        textsBatch(inputs: [{{x: [0, 1, 2]}}, {{x: [0, 5, 0]}}]) {{ {CLASSES} }}
        relabelled(input: {{x: [3, 0, 0]}}) {{ {CLASSES} }}
    }} }}"""
    answer = ok(run(gw, query))["predict"]
    assert answer["ints"]["label"] == "30"
    assert [p["label"] for p in answer["ints"]["probabilities"]] == ["10", "20", "30"]
    assert [p["probability"] for p in answer["ints"]["probabilities"]] == pytest.approx(
        softmax([0, 1, 2]), rel=1e-6
    )
    assert [row["label"] for row in answer["textsBatch"]] == ["virginica", "versicolor"]
    assert [p["label"] for p in answer["textsBatch"][0]["probabilities"]] == [
        "setosa",
        "versicolor",
        "virginica",
    ]
    assert answer["relabelled"]["label"] == "low"
    assert [p["label"] for p in answer["relabelled"]["probabilities"]] == ["low", "mid", "high"]


# --- batching and versions ----------------------------------------------------------------

# y = x, rows = the number of rows in the run that answered: tells one run from many.
ROW_COUNTER = make_model(
    [
        helper.make_node("Identity", ["x"], ["y"]),
        helper.make_node("Mul", ["x", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "one"], ["ones"]),
        helper.make_node("ReduceSum", ["ones"], ["count"], keepdims=1),
        helper.make_node("Add", ["zeros", "count"], ["rows"]),
    ],
    [tensor_info("x", F, ["N"])],
    [tensor_info("y", F, ["N"]), tensor_info("rows", F, ["N"])],
    initializers=[
        helper.make_tensor("zero", F, [], [0.0]),
        helper.make_tensor("one", F, [], [1.0]),
    ],
)

# total = the sum of x: its output has no batch dimension, so every row is its own run.
TOTAL = make_model(
    [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
    [tensor_info("x", F, ["N"])],
    [tensor_info("total", F, [])],
)


def test_batch_field_answers_in_one_run_and_in_order(gateway_factory: Factory) -> None:
    gw = gateway_factory({"counter/1": ROW_COUNTER})
    values = [float(i) * 0.5 for i in range(100)]
    query = "query($rows: [CounterInput!]!) { predict { counterBatch(inputs: $rows) { y rows } } }"
    answer = ok(run(gw, query, {"rows": [{"x": v} for v in values]}))["predict"]["counterBatch"]
    assert answer == [{"y": v, "rows": 100.0} for v in values]
    single = ok(run(gw, "{ predict { counter(input: {x: 7}) { y rows } } }"))
    assert single["predict"]["counter"] == {"y": 7.0, "rows": 1.0}
    empty = ok(run(gw, "{ predict { counterBatch(inputs: []) { y } } }"))
    assert empty["predict"]["counterBatch"] == []


def test_non_batchable_model_answers_a_batch_row_by_row(gateway_factory: Factory) -> None:
    gw = gateway_factory({"total/1": TOTAL})
    assert fields(gw, "TotalPrediction") == {"total": "Float", "modelVersion": "Int!"}
    query = "{ predict { totalBatch(inputs: [{x: 1}, {x: 2}, {x: 4}]) { total } } }"
    # One run of three rows would answer 7 once; three runs answer each row.
    answer = ok(run(gw, query))["predict"]["totalBatch"]
    assert answer == [{"total": 1.0}, {"total": 2.0}, {"total": 4.0}]


def test_version_argument_and_a_version_with_another_signature(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "m/1": add_constant(1.0),
            "m/2": add_constant(2.0),
            "sig/1": TWO_IN_TWO_OUT,
            "sig/2": identity_model(F, ("N", 2), input_name="a", output_name="sum"),
        }
    )
    query = """{ predict {
        latest: m(input: {x: 1}) { y modelVersion }
        first: m(input: {x: 1}, version: 1) { y modelVersion }
        firstBatch: mBatch(inputs: [{x: 1}, {x: 2}], version: 1) { y modelVersion }
    } }"""
    answer = ok(run(gw, query))["predict"]
    assert answer["latest"] == {"y": 3.0, "modelVersion": 2}
    assert answer["first"] == {"y": 2.0, "modelVersion": 1}
    assert answer["firstBatch"] == [{"y": 2.0, "modelVersion": 1}, {"y": 3.0, "modelVersion": 1}]
    assert fields(gw, "SigInput") == {"a": "[Float!]!"}  # from version 2, the default
    response = run(gw, "{ predict { sig(input: {a: [1, 2]}, version: 1) { sum } } }")
    (error,) = response["errors"]
    assert error["extensions"] == {"code": "BAD_USER_INPUT"}
    assert error["message"] == (
        "version 1 of model 'sig' has another signature than the one its typed field was built "
        "from; call that version through infer"
    )
    sent = [
        {"name": "a", "shape": [1, 3], "data": [1, 2, 3]},
        {"name": "b", "shape": [1, 3], "data": [1, 1, 1]},
    ]
    assert tensors(infer(gw, "sig", sent, version=1))["sum"]["data"] == [2.0, 3.0, 4.0]


def _renamed(model: onnx.ModelProto, old: str, new: str) -> onnx.ModelProto:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new
    return model


def test_classifier_whose_probabilities_are_called_scores(gateway_factory: Factory) -> None:
    scores = _renamed(argmax_classifier(), "probabilities", "class_scores")
    # A label output with a float vector that is no probability: not a classifier, and the
    # names label/probabilities are then free for its outputs.
    embedding = _renamed(argmax_classifier(), "probabilities", "embedding")
    gw = gateway_factory({"scored/1": scores, "embedder/1": embedding})
    assert typed_info(gw) == {"scored": ("scored", None), "embedder": ("embedder", None)}
    assert fields(gw, "EmbedderPrediction") == {
        "label": "Float!",
        "embedding": "[Float]!",
        "modelVersion": "Int!",
    }
    answer = ok(run(gw, "{ predict { scored(input: {x: [0, 0, 5]}) { label } } }"))
    assert answer["predict"]["scored"]["label"] == "2"


def test_a_bad_model_toml_is_the_reason_for_no_typed_field(gateway_factory: Factory) -> None:
    gw = gateway_factory({"m/1": argmax_classifier()}, {"m": "lables = ['a']\n"})
    field, reason = typed_info(gw)["m"]
    assert field is None and reason is not None
    assert reason.startswith("m/model.toml: unknown key 'lables'")
