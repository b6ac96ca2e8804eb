"""What ``gateway convert`` checks on a converted model before it is written: that it takes and
answers rows (a free batch dimension on every tensor input and output, one answer row per
sample row), and that it answers like the original (parity).

Converters do not always declare the batch dimension: onnxmltools declares a LightGBM
classifier's label ``INT64[1]`` and skl2onnx a QuadraticDiscriminantAnalysis's label ``[1, N]``.
A fixed first dimension stops the gateway from batching rows (each row becomes its own run) and
makes ONNX Runtime warn on every run with more rows; ``with_free_batch`` repairs the
declarations from what the model answers on the sample, and ``check_batch`` refuses a model
that still does not answer row by row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from gateway.convert_sample import Sample, feeds_for
from gateway.errors import ConfigError, GatewayError

__all__ = [
    "ParityError",
    "check_batch",
    "dense",
    "first_line",
    "MIN_LABEL_AGREEMENT",
    "match_outputs",
    "parity",
    "run_model",
    "with_free_batch",
]


#: The share of sample rows on which the converted model must predict the original's class.
#: Not 1: where two classes' probabilities tie within float32 rounding, either may win.
MIN_LABEL_AGREEMENT = 0.99


class ParityError(GatewayError):
    """The converted model does not answer like the original."""

    code = "PARITY_FAILED"


def run_model(model: onnx.ModelProto, sample: Sample) -> dict[str, Any]:
    """The model's outputs on the sample, by output name.

    Raises:
        ConfigError: the sample does not fit the model's inputs, or ONNX Runtime refuses the
            model or the sample (the first line of its message says why).
    """
    options = ort.SessionOptions()
    # Errors only: a declared shape that the answers do not match is what this module repairs
    # and checks, and says so itself.
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # Fail, InvalidGraph...: ONNX Runtime's refusals of the model
        raise ConfigError(
            f"ONNX Runtime cannot load the converted model: {first_line(exc)}"
        ) from exc
    feeds = feeds_for(session, sample)
    try:
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds), strict=True))
    except Exception as exc:  # InvalidArgument, Fail...: its refusals of the sample
        raise ConfigError(f"ONNX Runtime cannot run the sample: {first_line(exc)}") from exc


def with_free_batch(model: onnx.ModelProto, outputs: dict[str, Any], rows: int) -> onnx.ModelProto:
    """``model`` with a free first dimension on every tensor input and output. An output that
    answered ``[1, N]`` for N rows loses the leading 1 (a Reshape), other declared dimensions
    follow what the output answered. The model is returned as it is if nothing needs a change
    (so that a rebuild writes the same bytes).

    Args:
        outputs: the model's answers on ``rows`` sample rows (at least 2, so that a batch
            dimension can be told from a dimension of 1).
    """
    changed = onnx.ModelProto.FromString(model.SerializeToString())
    graph = changed.graph
    touched = False
    for value in graph.input:
        touched |= _free_first(value, None)
    for value in graph.output:
        answer = outputs.get(value.name)
        if not value.type.HasField("tensor_type") or not isinstance(answer, np.ndarray):
            continue  # a ZipMap's sequence of maps has no batch dimension to declare
        if answer.ndim >= 2 and answer.shape[0] == 1 and answer.shape[1] == rows:
            _squeeze_first(graph, value)
            touched = True
            answer = answer[0]
        touched |= _free_first(value, answer.shape if answer.ndim else None)
    return changed if touched else model


def check_batch(model: onnx.ModelProto, outputs: dict[str, Any], rows: int) -> None:
    """Refuse a model whose tensor inputs and outputs do not all have a free first dimension,
    or whose outputs do not answer one row per sample row.

    Raises:
        ConfigError: naming the input or output and its shape.
    """
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            if not value.type.HasField("tensor_type"):
                continue
            dims = value.type.tensor_type.shape.dim
            if not dims or dims[0].HasField("dim_value"):
                shape = [d.dim_value if d.HasField("dim_value") else "N" for d in dims]
                raise ConfigError(
                    f"the converted model's {kind} {value.name!r} is declared {shape}: "
                    "without a free first (batch) dimension the gateway cannot batch its rows"
                )
            answer = outputs.get(value.name) if kind == "output" else None
            if isinstance(answer, np.ndarray) and (answer.ndim == 0 or answer.shape[0] != rows):
                raise ConfigError(
                    f"the converted model's output {value.name!r} answers shape "
                    f"{list(answer.shape)} for {rows} rows: not one row per input row"
                )


def _free_first(value: onnx.ValueInfoProto, answered: tuple[int, ...] | None) -> bool:
    """Declare ``value``'s first dimension free; whether that changed it. A declaration of
    another rank than ``answered`` (or none) becomes ``answered`` with its first dimension
    free; a declared size that ``answered`` contradicts (scores declared [N, 2] that answer
    [N, 1]) becomes the answered one; other declared dimensions are kept."""
    tensor = value.type.tensor_type
    dims = tensor.shape.dim
    if answered is not None and (not tensor.HasField("shape") or len(dims) != len(answered)):
        tensor.shape.Clear()
        for index, size in enumerate(answered):
            dim = tensor.shape.dim.add()
            if index:
                dim.dim_value = size
        return True
    changed = False
    for dim, size in zip(dims[1:], (answered or ())[1:], strict=False):
        if dim.HasField("dim_value") and dim.dim_value != size:
            dim.dim_value = size
            changed = True
    if dims and dims[0].HasField("dim_value"):
        dims[0].Clear()
        changed = True
    return changed


def _squeeze_first(graph: onnx.GraphProto, value: onnx.ValueInfoProto) -> None:
    """Rename the tensor behind ``value`` and compute ``value`` from it without its leading 1."""
    inner = f"{value.name}_unbatched"
    for node in graph.node:
        node.output[:] = [inner if o == value.name else o for o in node.output]
        node.input[:] = [inner if i == value.name else i for i in node.input]
    axes = onnx.helper.make_tensor(f"{value.name}_squeeze_axes", onnx.TensorProto.INT64, [1], [0])
    graph.initializer.append(axes)
    graph.node.append(
        onnx.helper.make_node("Squeeze", [inner, axes.name], [value.name], name=f"{inner}_squeeze")
    )


def match_outputs(original: dict[str, np.ndarray], converted: dict[str, Any]) -> dict[str, str]:
    """The converted model's output name for each of the original's outputs. Converters name
    outputs their way (skl2onnx: "variable" for a regressor, "output_label" and
    "output_probability" beside a ZipMap): an output of another name is taken by position,
    the label (or prediction) first and the probabilities second."""
    names = list(converted)
    by_position = dict(zip(("label", "probabilities"), names, strict=False))
    matched = {}
    for key in original:
        name = key if key in converted else by_position.get(key)
        if name is None:
            raise ConfigError(f"the converted model has no output {key!r} to compare")
        matched[key] = name
    return matched


def parity(
    original: dict[str, np.ndarray],
    converted: dict[str, Any],
    tolerance: float,
    *,
    labels: list[str] | None = None,
) -> dict[str, Any]:
    """Compare each output of the original with the converted model's of the same name:
    labels by agreement (by class name: ``labels`` names classes by index, which converters
    answer for boolean classes), probabilities by absolute error, other numbers by absolute and
    relative error (the tolerance scaled by the largest value when that is above 1). NaN
    matches NaN only.

    Raises:
        ParityError: beyond ``tolerance``, or labels agreeing on fewer than
            ``MIN_LABEL_AGREEMENT`` of the rows.
    """
    report: dict[str, Any] = {"tolerance": tolerance}
    problems = []
    for key, name in match_outputs(original, converted).items():
        want, got = original[key], dense(converted[name])
        if key == "label" and ("probabilities" in original or want.dtype.kind not in "fc"):
            agree = _class_names(want, labels) == _class_names(got, labels)
            report["label_agreement"] = float(np.mean(agree)) if agree.size else 1.0
            if report["label_agreement"] < MIN_LABEL_AGREEMENT:
                problems.append(
                    f"the predicted class agrees on {report['label_agreement']:.1%} of the "
                    f"sample rows (at least {MIN_LABEL_AGREEMENT:.0%} expected)"
                )
            continue
        error = _error(want.astype(np.float64), got.astype(np.float64).reshape(want.shape))
        prefix = "" if key == "label" else f"{key}_"
        report[f"{prefix}max_abs_error"] = _figure(error.max()) if error.size else 0.0
        if key == "probabilities":
            if error.size and error.max() > tolerance:
                problems.append(
                    f"probabilities differ by up to {error.max():.3g} (tolerance {tolerance:g});"
                    " tree models compare float32 inputs with float64 thresholds: values on a "
                    "threshold may fall on the other side"
                )
            continue
        scale = np.maximum(np.abs(np.nan_to_num(want.astype(np.float64))), 1e-12)
        report[f"{prefix}max_rel_error"] = _figure((error / scale).max()) if error.size else 0.0
        largest = float(np.nanmax(np.abs(want))) if want.size else 0.0
        if error.size and error.max() > tolerance * max(1.0, largest):
            what = "predictions" if key == "label" else f"output {key!r}"
            problems.append(
                f"{what} differ by up to {error.max():.3g} "
                f"(tolerance {tolerance:g}, relative to the largest value)"
            )
    if problems:
        raise ParityError(
            "the converted model does not answer like the original: " + "; ".join(problems)
        )
    return report


def _class_names(values: np.ndarray, labels: list[str] | None) -> np.ndarray:
    """Predicted classes as names: a value that is a class name stays; a class index (as
    converters answer for boolean classes) becomes the name ``labels`` gives it."""
    names = set(labels or ())
    out = []
    for value in np.asarray(values).reshape(-1).tolist():
        text = str(value)
        if text not in names and labels and isinstance(value, int) and 0 <= value < len(labels):
            text = labels[value]
        out.append(text)
    return np.asarray(out, dtype=object)


def _error(want: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Absolute differences; NaN against NaN is no difference, NaN against a number infinite
    (a comparison with NaN is false, so a NaN error would pass any tolerance)."""
    error: np.ndarray = np.abs(want - got)
    both = np.isnan(want) & np.isnan(got)
    error[both] = 0.0
    error[np.isnan(error)] = np.inf
    return error


def dense(values: Any) -> np.ndarray:
    """An output as an array: converters' lists of {class: probability} maps become [N, C]."""
    if isinstance(values, list) and values and isinstance(values[0], dict):
        return np.asarray([[row[k] for k in sorted(row)] for row in values])
    return np.asarray(values)


def _figure(value: float) -> float:
    """An error figure to three significant digits: ONNX Runtime's kernels differ by CPU in the
    last bits, and model.toml should not."""
    return float(f"{float(value):.3g}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (ONNX Runtime's and the frameworks' go on with
    stack frames)."""
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
