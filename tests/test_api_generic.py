"""The generic API on models that are not ours: every DataType through ``infer``, metadata,
unusual signatures (fixed shapes, scalars, odd names, old and new opsets) and load failures.

In-process (no server); each repository is built inline with onnx.helper.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from gateway.signature import signature_from_proto
from tests.conftest import (
    InProcessGateway,
    identity_model,
    load_gateway,
    make_model,
    tensor_info,
    write_repository,
)
from tests.test_fastpath import both_paths, comparable

Factory = Callable[..., InProcessGateway]
F = TensorProto.FLOAT

INFER = """
query($model: String!, $version: Int, $inputs: [TensorInput!]!, $outputs: [String!], $id: ID) {
  infer(model: $model, version: $version, inputs: $inputs, outputs: $outputs, id: $id) {
    model version id outputs { name datatype shape data b64 }
  }
}"""

METADATA = """
query($name: String!) {
  model(name: $name) {
    name description defaultVersion typedField
    versions {
      version state stateReason
      inputs { name datatype shape onnxType }
      outputs { name datatype shape onnxType labels }
    }
  }
}"""

# Four values per type, extremes included; all exactly representable, so they round-trip.
SAMPLES: dict[str, tuple[int, list[Any]]] = {
    "BOOL": (TensorProto.BOOL, [True, False, False, True]),
    "UINT8": (TensorProto.UINT8, [0, 1, 200, 255]),
    "UINT16": (TensorProto.UINT16, [0, 1, 300, 65535]),
    "UINT32": (TensorProto.UINT32, [0, 1, 70000, 2**32 - 1]),
    "UINT64": (TensorProto.UINT64, [0, 1, 2**53 + 1, 2**64 - 1]),
    "INT8": (TensorProto.INT8, [-128, -1, 0, 127]),
    "INT16": (TensorProto.INT16, [-(2**15), -1, 0, 2**15 - 1]),
    "INT32": (TensorProto.INT32, [-(2**31), -1, 0, 2**31 - 1]),
    "INT64": (TensorProto.INT64, [-(2**63), -1, 2**53 + 1, 2**63 - 1]),
    "FP16": (TensorProto.FLOAT16, [0.5, -2.0, 65504.0, 2.0**-24]),
    "FP32": (TensorProto.FLOAT, [0.25, -1.5, 3.4028234663852886e38, 2.0**-149]),
    "FP64": (TensorProto.DOUBLE, [0.1, -1e308, 5e-324, 123456789.123456789]),
    "BYTES": (TensorProto.STRING, ["héllo", "日本語", "", "🙂 emoji"]),
}
NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def run(gw: InProcessGateway, query: str, variables: dict[str, Any] | None = None) -> Any:
    """Execute, and check that no answer ever shows where the repository is."""
    response = gw.execute(query, variables)
    text = json.dumps(response, ensure_ascii=False)
    root = Path(gw.settings.models)
    assert str(root) not in text and str(root.resolve()) not in text
    return response


def ok(response: Any) -> Any:
    assert "errors" not in response, response["errors"]
    return response["data"]


def infer(gw: InProcessGateway, model: str, inputs: list[dict[str, Any]], **more: Any) -> Any:
    return run(gw, INFER, {"model": model, "inputs": inputs, **more})


def tensors(response: Any) -> dict[str, Any]:
    return {t["name"]: t for t in ok(response)["infer"]["outputs"]}


def b64_of(values: list[Any], datatype: str) -> str:
    return base64.b64encode(np.array(values, dtype=NUMPY[datatype]).tobytes()).decode("ascii")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessGateway]:
    """An identity model [N, 2] per DataType, named after it in lower case."""
    models = {
        f"{dt.lower()}/1": identity_model(elem, ("N", 2)) for dt, (elem, _) in SAMPLES.items()
    }
    gw = load_gateway(write_repository(tmp_path_factory.mktemp("zoo"), models))
    yield gw
    gw.runtime.close()


# --- every DataType, both encodings -----------------------------------------------------------


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_infer_round_trips_every_datatype_as_data(zoo: InProcessGateway, datatype: str) -> None:
    values = SAMPLES[datatype][1]
    sent = [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": values}]
    (out,) = ok(infer(zoo, datatype.lower(), sent))["infer"]["outputs"]
    assert out["name"] == "y" and out["datatype"] == datatype and out["shape"] == [2, 2]
    assert out["data"] == values
    if datatype == "BYTES":
        assert out["b64"] is None
    else:
        assert out["b64"] == b64_of(values, datatype)


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "BYTES"])
def test_infer_round_trips_every_numeric_datatype_as_b64(
    zoo: InProcessGateway, datatype: str
) -> None:
    values = SAMPLES[datatype][1]
    raw = b64_of(values, datatype)
    sent = [{"name": "x", "shape": [2, 2], "b64": raw}]
    (out,) = ok(infer(zoo, datatype.lower(), sent))["infer"]["outputs"]
    assert out["datatype"] == datatype and out["shape"] == [2, 2]
    assert out["data"] == values and out["b64"] == raw


def test_extreme_integers_in_an_inline_literal(zoo: InProcessGateway) -> None:
    query = """{ infer(model: "uint64", inputs: [{name: "x", shape: [1, 2],
        data: [18446744073709551615, 0]}]) { outputs { data } } }"""
    assert ok(run(zoo, query))["infer"]["outputs"][0]["data"] == [2**64 - 1, 0]
    query = query.replace("uint64", "int64").replace("18446744073709551615", "-9223372036854775808")
    assert ok(run(zoo, query))["infer"]["outputs"][0]["data"] == [-(2**63), 0]


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_non_finite_floats_go_in_and_out_as_strings(zoo: InProcessGateway, datatype: str) -> None:
    values = ["NaN", "Infinity", "-Infinity", 1.5]
    out = tensors(infer(zoo, datatype.lower(), [{"name": "x", "shape": [2, 2], "data": values}]))
    assert out["y"]["data"] == values
    raw = base64.b64decode(out["y"]["b64"])
    decoded = np.frombuffer(raw, dtype=NUMPY[datatype]).tolist()
    assert np.isnan(decoded[0]) and decoded[1:] == [float("inf"), float("-inf"), 1.5]


def test_bytes_keep_unicode_and_refuse_b64(zoo: InProcessGateway) -> None:
    text = ["naïve café", "Ελληνικά", "\u0000nul", "𝄞 clef"]
    out = tensors(infer(zoo, "bytes", [{"name": "x", "shape": [2, 2], "data": text}]))
    assert out["y"]["data"] == text and out["y"]["b64"] is None
    response = infer(zoo, "bytes", [{"name": "x", "shape": [2, 2], "b64": "AAAA"}])
    assert response["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "b64 is not supported for BYTES" in response["errors"][0]["message"]


# --- outputs, id, versions, metadata --------------------------------------------------------

TWO_IN_TWO_OUT = make_model(
    [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
    [tensor_info("a", F, ["N", 3]), tensor_info("b", F, ["N", 3])],
    [tensor_info("sum", F, ["N", 3]), tensor_info("prod", F, ["N", 3])],
)


def add_constant(value: float) -> onnx.ModelProto:
    """y = x + value, x FP32 [N]: versions that share a signature but answer differently."""
    return make_model(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        [tensor_info("x", F, ["N"])],
        [tensor_info("y", F, ["N"])],
        initializers=[helper.make_tensor("c", F, [], [value])],
    )


def test_several_inputs_and_outputs_and_an_outputs_subset(gateway_factory: Factory) -> None:
    gw = gateway_factory({"arith/1": TWO_IN_TWO_OUT})
    a = {"name": "a", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}
    b = {"name": "b", "shape": [2, 3], "data": [10, 20, 30, 40, 50, 60]}
    out = tensors(infer(gw, "arith", [b, a]))  # inputs in any order
    assert out["sum"]["data"] == [11.0, 22.0, 33.0, 44.0, 55.0, 66.0]
    assert out["prod"]["data"] == [10.0, 40.0, 90.0, 160.0, 250.0, 360.0]
    only = ok(infer(gw, "arith", [a, b], outputs=["prod"]))["infer"]["outputs"]
    assert [t["name"] for t in only] == ["prod"]
    both = ok(infer(gw, "arith", [a, b], outputs=["prod", "sum"]))["infer"]["outputs"]
    assert [t["name"] for t in both] == ["prod", "sum"]


def _pair(
    a: list[str | int | None], b: list[str | int | None], out_b: list[str | int | None]
) -> onnx.ModelProto:
    """ya = a, yb = b: two inputs whose first dimensions are declared as given."""
    return make_model(
        [helper.make_node("Identity", ["a"], ["ya"]), helper.make_node("Identity", ["b"], ["yb"])],
        [tensor_info("a", F, a), tensor_info("b", F, b)],
        [tensor_info("ya", F, a), tensor_info("yb", F, out_b)],
    )


def test_inputs_that_share_a_batch_dimension_must_agree_on_it(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "named/1": _pair(["N", 3], ["N", 1], ["N", 1]),
            "unnamed/1": _pair([None, 3], [None, 1], [None, 1]),  # skl2onnx's [None, F]
        }
    )
    a = {"name": "a", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}
    b = {"name": "b", "shape": [1, 1], "data": [7]}
    query = (
        'query($a: JSON, $b: JSON) { infer(model: "%s", inputs: [{name: "a", shape: [2, 3], '
        'data: $a}, {name: "b", shape: [1, 1], data: $b}]) { outputs { name shape } } }'
    )
    for model, symbol in [("named", " 'N'"), ("unnamed", "")]:
        (error,) = infer(gw, model, [a, b])["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert error["message"] == (
            f"inputs 'a', 'b' share their first (batch) dimension{symbol} and must have the "
            "same size in it; 'a' has 2, 'b' has 1"
        )
        slow, fast = both_paths(gw, query % model, {"a": a["data"], "b": b["data"]})
        assert fast is not None and comparable(fast) == comparable(slow)
        assert slow["errors"][0]["message"] == error["message"]
        # Agreeing inputs are answered.
        rows = tensors(infer(gw, model, [a, {**b, "shape": [2, 1], "data": [7, 8]}]))
        assert rows["ya"]["shape"] == [2, 3] and rows["yb"]["data"] == [7.0, 8.0]


def _shared(*shapes: list[str | int | None]) -> tuple[tuple[str, ...], ...]:
    """The groups of inputs x0, x1... (outputs alike) that must agree on their first size."""
    names = [f"x{i}" for i in range(len(shapes))]
    model = make_model(
        [helper.make_node("Identity", [n], [f"y{n}"]) for n in names],
        [tensor_info(n, F, shape) for n, shape in zip(names, shapes, strict=True)],
        [tensor_info(f"y{n}", F, shape) for n, shape in zip(names, shapes, strict=True)],
    )
    return signature_from_proto(model).shared_first_dims


def test_which_inputs_share_a_batch_dimension() -> None:
    assert _shared(["N", 3], ["N"], [None, 2]) == (("x0", "x1", "x2"),)
    assert _shared([None, 3], [None], [None, 2]) == (("x0", "x1", "x2"),)
    assert _shared(["N", 3], ["K"], ["N", 2]) == (("x0", "x2"),)  # K: a size of its own
    assert _shared(["N", 3], ["K"], [None]) == ()
    assert _shared(["N", 3], [2], ["N"]) == (("x0", "x2"),)  # x1 is fixed: not batchable
    assert _shared([None, 3], [2], [None]) == ()  # unnamed, and no batch of rows
    assert _shared(["N", 3]) == ()


def test_inputs_whose_first_dimensions_differ_by_design_are_not_refused(
    gateway_factory: Factory,
) -> None:
    gw = gateway_factory(
        {
            # Another symbol: a parameter input (sizes, a shape, indices) of its own length.
            "symbols/1": _pair(["N", 3], ["K"], ["K"]),
            # Free but unnamed, in a model that is no batch of rows (an output of fixed size).
            "params/1": _pair([None, 3], [None], [1]),
            "fixed/1": _pair(["N", 3], [2], [2]),
        }
    )
    a = {"name": "a", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}
    for model, b in [
        ("symbols", {"name": "b", "shape": [5], "data": [1, 2, 3, 4, 5]}),
        ("fixed", {"name": "b", "shape": [2], "data": [1, 2]}),
    ]:
        out = tensors(infer(gw, model, [a, b]))
        assert out["ya"]["shape"] == [2, 3] and out["yb"]["data"] == b["data"]
    # params declares yb as [1]; ONNX Runtime checks nothing of it: one element passes.
    out = tensors(infer(gw, "params", [a, {"name": "b", "shape": [1], "data": [9]}]))
    assert out["ya"]["shape"] == [2, 3] and out["yb"]["data"] == [9.0]


def test_id_is_echoed_or_generated(gateway_factory: Factory) -> None:
    gw = gateway_factory({"m/1": add_constant(1.0)})
    x = [{"name": "x", "shape": [1], "data": [1]}]
    assert ok(infer(gw, "m", x, id="req-42 ✓"))["infer"]["id"] == "req-42 ✓"
    first, second = (ok(infer(gw, "m", x))["infer"]["id"] for _ in range(2))
    assert len(first) == 36 and first.count("-") == 4 and first != second


def test_version_selects_the_model_that_answers(gateway_factory: Factory) -> None:
    gw = gateway_factory({"m/1": add_constant(1.0), "m/2": add_constant(2.0), "m/10": b"corrupt"})
    x = [{"name": "x", "shape": [2], "data": [1, 5]}]
    default = ok(infer(gw, "m", x))["infer"]
    assert (default["model"], default["version"]) == ("m", 2)  # 10 FAILED: highest READY is 2
    assert default["outputs"][0]["data"] == [3.0, 7.0]
    first = ok(infer(gw, "m", x, version=1))["infer"]
    assert first["version"] == 1 and first["outputs"][0]["data"] == [2.0, 6.0]


def test_metadata_describes_versions_states_and_signatures(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {"arith/1": TWO_IN_TWO_OUT, "arith/2": TWO_IN_TWO_OUT, "arith/3": b"not onnx"},
        {"arith": 'description = "Adds and multiplies."\n'},
    )
    model = ok(run(gw, METADATA, {"name": "arith"}))["model"]
    assert model["name"] == "arith" and model["description"] == "Adds and multiplies."
    assert model["defaultVersion"] == 2 and model["typedField"] == "arith"
    states = [(v["version"], v["state"], v["stateReason"]) for v in model["versions"]]
    assert states == [
        (1, "READY", None),
        (2, "READY", None),
        (3, "FAILED", "not a readable ONNX model (DecodeError)"),
    ]
    spec = {"datatype": "FP32", "shape": [-1, 3], "onnxType": "tensor(float)"}
    assert model["versions"][0]["inputs"] == [{"name": "a", **spec}, {"name": "b", **spec}]
    assert model["versions"][0]["outputs"] == [
        {"name": "sum", **spec, "labels": None},
        {"name": "prod", **spec, "labels": None},
    ]
    assert model["versions"][2]["inputs"] == [] and model["versions"][2]["outputs"] == []
    assert ok(run(gw, METADATA, {"name": "nope"})) == {"model": None}


def test_models_lists_every_model_including_zero_config_files(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "zero.onnx": identity_model(TensorProto.INT64, ("batch", "len")),
            "arith/1": TWO_IN_TWO_OUT,
            "gone/1": b"",
        }
    )
    listed = ok(run(gw, "{ models { name defaultVersion versions { version state } } }"))
    assert listed["models"] == [
        {"name": "arith", "defaultVersion": 1, "versions": [{"version": 1, "state": "READY"}]},
        {"name": "gone", "defaultVersion": None, "versions": [{"version": 1, "state": "FAILED"}]},
        {"name": "zero", "defaultVersion": 1, "versions": [{"version": 1, "state": "READY"}]},
    ]
    zero = ok(run(gw, METADATA, {"name": "zero"}))["model"]["versions"][0]["inputs"]
    assert zero == [
        {"name": "x", "datatype": "INT64", "shape": [-1, -1], "onnxType": "tensor(int64)"}
    ]


# --- unusual signatures -------------------------------------------------------------------


def test_fixed_shapes_dynamic_dims_and_scalars(gateway_factory: Factory) -> None:
    gw = gateway_factory(
        {
            "grid/1": identity_model(F, (2, 3)),
            "one/1": identity_model(F, (1, 4)),
            "free/1": identity_model(F, ("N", "M")),
            "scalar/1": identity_model(TensorProto.INT32, ()),
        }
    )
    grid = tensors(infer(gw, "grid", [{"name": "x", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]))
    assert grid["y"]["shape"] == [2, 3] and grid["y"]["data"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    one = tensors(infer(gw, "one", [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]))
    assert one["y"]["shape"] == [1, 4]
    for shape in ([2, 5], [3, 1], [0, 7]):
        count = shape[0] * shape[1]
        free = tensors(infer(gw, "free", [{"name": "x", "shape": shape, "data": [0.5] * count}]))
        assert free["y"]["shape"] == shape and free["y"]["data"] == [0.5] * count
    scalar = tensors(infer(gw, "scalar", [{"name": "x", "shape": [], "data": [-7]}]))
    assert scalar["y"]["shape"] == [] and scalar["y"]["data"] == [-7]
    wrong = [
        ("grid", [3, 2], "shape [3, 2] does not match the model's [2, 3] (-1 = any size)"),
        ("one", [2, 4], "shape [2, 4] does not match the model's [1, 4]"),
        ("free", [8], "shape [8] does not match the model's [-1, -1]"),
        ("scalar", [1], "shape [1] does not match the model's []"),
    ]
    for model, shape, message in wrong:
        response = infer(gw, model, [{"name": "x", "shape": shape, "b64": "AAAA"}])
        assert response["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        assert message in response["errors"][0]["message"]


# "1" = "input:0", "out put" = -"x.y/z"
ODD_NAMES = make_model(
    [
        helper.make_node("Identity", ["input:0"], ["1"]),
        helper.make_node("Neg", ["x.y/z"], ["out put"]),
    ],
    [tensor_info("input:0", F, ["N"]), tensor_info("x.y/z", F, ["N"])],
    [tensor_info("1", F, ["N"]), tensor_info("out put", F, ["N"])],
)


def test_odd_tensor_names_are_served_as_they_are(gateway_factory: Factory) -> None:
    gw = gateway_factory({"odd/1": ODD_NAMES})
    sent = [
        {"name": "input:0", "shape": [1], "data": [4]},
        {"name": "x.y/z", "shape": [1], "data": [5]},
    ]
    out = tensors(infer(gw, "odd", sent, outputs=["out put", "1"]))
    assert out["1"]["data"] == [4.0] and out["out put"]["data"] == [-5.0]


def _row_sum(opset: int) -> onnx.ModelProto:
    """y = x summed over axis 1; ReduceSum takes its axes as an attribute before opset 13."""
    inputs = [tensor_info("x", F, ["N", 2])]
    outputs = [tensor_info("y", F, ["N"])]
    if opset < 13:
        node = helper.make_node("ReduceSum", ["x"], ["y"], axes=[1], keepdims=0)
        return make_model([node], inputs, outputs, opset=opset)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)
    return make_model([node], inputs, outputs, initializers=[axes], opset=opset)


@pytest.mark.parametrize("opset", [9, 13, 17, 21])
def test_models_of_several_opsets(gateway_factory: Factory, opset: int) -> None:
    gw = gateway_factory({"rowsum/1": _row_sum(opset)})
    out = tensors(infer(gw, "rowsum", [{"name": "x", "shape": [2, 2], "data": [1, 2, 3, 4]}]))
    assert out["y"]["data"] == [3.0, 7.0]
    typed = ok(run(gw, "{ predict { rowsum(input: {x: [1.5, 2]}) { y } } }"))
    assert typed == {"predict": {"rowsum": {"y": 3.5}}}


# --- load failures --------------------------------------------------------------------------


def _unknown_op(domain: str = "") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain=domain)],
        "unknown",
        [tensor_info("x", F, ["N"])],
        [tensor_info("y", F, ["N"])],
    )
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model  # not checked: onnx.checker would refuse it too


def _sequence_input() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        [helper.make_tensor_sequence_value_info("s", F, None)],
        [tensor_info("n", TensorProto.INT64, [])],
    )


def _sequence_output() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("SplitToSequence", ["x"], ["parts"], keepdims=0)],
        [tensor_info("x", F, [2])],
        [helper.make_tensor_sequence_value_info("parts", F, None)],
    )


def test_broken_models_fail_with_a_reason_while_the_others_serve(
    gateway_factory: Factory,
) -> None:
    good = identity_model()
    raw = good.SerializeToString()
    gw = gateway_factory(
        {
            "good/1": good,
            "corrupt/1": b"\x08\x07 this is not protobuf \xff\xff",
            "truncated/1": raw[: len(raw) // 2],
            "unknown-op/1": _unknown_op(),
            "custom-op/1": _unknown_op("com.example"),
            "sequence/1": _sequence_input(),
            "sequence-out/1": _sequence_output(),
            "bfloat/1": identity_model(TensorProto.BFLOAT16, ("N",)),
            "extra-key/1": good,
            "wrong-type/1": good,
            "bad-toml/1": good,
            "bad-session/1": good,
        },
        {
            "extra-key": 'description = "x"\nbatch_size = 8\n',
            "wrong-type": "labels = 3\n",
            "bad-toml": "labels = [\n",
            "bad-session": '[session]\nintra_op_threads = "many"\n',
        },
    )
    query = "{ models { name defaultVersion versions { version state stateReason } } }"
    reasons = {
        m["name"]: (m["defaultVersion"], m["versions"][0]["state"], m["versions"][0]["stateReason"])
        for m in ok(run(gw, query))["models"]
    }
    assert reasons.pop("good") == (1, "READY", None)
    assert all(default is None and state == "FAILED" for default, state, _ in reasons.values())
    why = {name: reason for name, (_, _, reason) in reasons.items()}
    assert why["corrupt"] == "not a readable ONNX model (DecodeError)"
    assert why["truncated"] == "not a readable ONNX model (DecodeError)"
    assert why["unknown-op"].startswith("ONNX Runtime cannot load the model: ")
    assert "No Op registered for NoSuchOp with domain_version of 17" in why["unknown-op"]
    # ORT names the file; the reason shows it relative to the repository.
    assert "<models>/custom-op/1/model.onnx" in why["custom-op"]
    assert "com.example:NoSuchOp(-1) is not a registered function/op" in why["custom-op"]
    assert (
        why["sequence"] == "input 's' of type seq(tensor(float)): only tensor inputs can be served"
    )
    assert (
        why["bfloat"]
        == "input 'x' of type tensor(bfloat16): element type BFLOAT16 is not supported"
    )
    assert why["extra-key"].startswith(
        "extra-key/model.toml: unknown key 'batch_size'; known keys:"
    )
    assert (
        why["wrong-type"] == "wrong-type/model.toml: labels: expected a non-empty list of strings"
    )
    assert why["bad-toml"].startswith("bad-toml/model.toml: ")
    assert why["bad-session"].startswith(
        "bad-session/model.toml: session.intra_op_threads: invalid value 'many'"
    )
    assert why["sequence-out"] == (
        "output 'parts' of type seq(tensor(float)): "
        "the gateway serves tensor, map and sequence-of-map outputs"
    )
    good_out = tensors(infer(gw, "good", [{"name": "x", "shape": [1, 4], "data": [1, 2, 3, 4]}]))
    assert good_out["y"]["data"] == [1.0, 2.0, 3.0, 4.0]
    response = infer(gw, "sequence", [{"name": "s", "shape": [1], "data": [1]}])
    assert response["errors"][0]["extensions"]["code"] == "MODEL_NOT_READY"
    assert response["errors"][0]["message"] == "model 'sequence' has no READY version (1: FAILED)"
