"""PyTorch modules for ``gateway convert``, exported with ``torch.onnx`` with a free batch
dimension.

Two sources:

- ``--torchscript model.pt``: a TorchScript file (``torch.jit.save``). It holds its own code, so
  nothing of the user's is imported; TorchScript modules go through the TorchScript-based
  exporter, the only one that takes them.
- ``--torch package.module:factory [--weights state.pt]``: the factory (a class or a function)
  is called without arguments and must return an ``nn.Module``; the weights, a state dict saved
  with ``torch.save``, are read with ``weights_only=True`` (tensors only: no pickled code runs).
  Importing the module runs its code, as any import does. The module is exported with
  ``torch.export`` (the dynamo-based exporter), the one PyTorch develops.

The sample gives the inputs: a table (CSV, Parquet, 2-D ``.npy``) is one float input ``[N, F]``
with the columns as features; a ``.npy`` of more dimensions is one tensor input; a ``.npz``
gives one input per array, in the order of the module's ``forward`` arguments. With
``classifier`` the module's ``[N, C]`` output is read as class scores (``logits``: a softmax is
added to the graph; ``probabilities``: taken as they are) and the ONNX model answers ``label``
(their argmax) and ``probabilities``, which the gateway serves as a typed classifier.

Needs the ``torch`` extra (torch, onnxscript).
"""

from __future__ import annotations

import importlib
import io
import logging
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gateway.convert import Conversion, Sample, Source, read_sample, write_version
from gateway.convert_check import first_line
from gateway.convert_write import check_name, require_file
from gateway.errors import ConfigError
from gateway.progress import Progress

__all__ = ["convert_torch"]

OPSET = 18
CLASSIFIER_SCORES = ("logits", "probabilities")
# The original runs on the sample in chunks: a large sample of images would otherwise make one
# huge activation tensor.
_CHUNK = 512


def convert_torch(
    sample_path: Path,
    repository: Path,
    name: str,
    *,
    torchscript: Path | None = None,
    factory: str | None = None,
    weights: Path | None = None,
    classifier: str | None = None,
    labels: list[str] | None = None,
    tolerance: float = 1e-4,
    description: str | None = None,
    progress: Progress | None = None,
) -> Conversion:
    """Export a TorchScript file or a ``module:factory`` module into the next version of
    ``name`` (see the module docstring).

    Raises:
        ConfigError: the module cannot be loaded or exported, or the sample does not fit it.
        ParityError: the ONNX model's answers differ from the module's beyond ``tolerance``.
    """
    import torch

    if (torchscript is None) == (factory is None):
        raise ConfigError("give a TorchScript file or a module:factory, not both")
    if classifier not in (None, *CLASSIFIER_SCORES):
        raise ConfigError(f"classifier: expected logits or probabilities, got {classifier!r}")
    check_name(name)
    for path, flag in ((torchscript, "--torchscript"), (weights, "--weights")):
        if path is not None:
            require_file(path, flag)
    progress = progress or Progress()
    with progress.step(f"reading the sample {sample_path.name}"):
        sample = read_sample(sample_path)
    with progress.step("loading the module"):
        if torchscript is not None:
            with warnings.catch_warnings():  # PyTorch deprecates TorchScript; files remain
                warnings.simplefilter("ignore", DeprecationWarning)
                module = _torchscript(torchscript)
            what = f"TorchScript {torchscript.name}"
        else:
            module = _from_factory(str(factory), weights)
            what = str(factory)
        module.eval()
    names, tensors = _inputs(sample)
    with progress.step(f"running the module on {sample.rows} rows"):
        try:
            results = _run(module, tensors)
        except (RuntimeError, TypeError, ValueError) as exc:  # shapes or types that do not fit
            raise ConfigError(f"the module fails on the sample: {exc}") from exc
    outputs = _output_names(len(results))
    with progress.step(f"exporting with torch.onnx (opset {OPSET})"):
        onnx_model, exporter = _export(
            module, names, outputs, tensors, script=torchscript is not None
        )
    original = dict(zip(outputs, results, strict=True))
    if classifier:
        if len(results) != 1 or results[0].ndim != 2:
            shapes = [list(r.shape) for r in results]
            raise ConfigError(f"--classifier needs one [N, C] output of scores, got {shapes}")
        onnx_model = _classifier_head(onnx_model, classifier)
        probabilities = _softmax(results[0]) if classifier == "logits" else results[0]
        original = {"label": probabilities.argmax(axis=-1), "probabilities": probabilities}
    source = Source(
        onnx_model,
        names,
        original,
        [],
        {
            "framework": "pytorch",
            "framework_version": str(torch.__version__),
            "converter": "torch.onnx",
            "converter_version": f"{torch.__version__} ({exporter})",
            "estimator": what,
        },
        per_column=len(names) > 1,
    )
    return write_version(
        source, sample, repository, name, tolerance, description, labels=labels, progress=progress
    )


def _torchscript(path: Path) -> Any:
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
    except (RuntimeError, ValueError) as exc:  # not a TorchScript archive
        raise ConfigError(
            f"--torchscript {path}: not a TorchScript file (torch.jit.save): {first_line(exc)}"
        ) from exc


def _from_factory(spec: str, weights: Path | None) -> Any:
    import torch

    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"--torch {spec!r}: expected package.module:factory")
    # Like ``python -m`` and uvicorn's app-dir: modules beside the caller are importable.
    here = str(Path.cwd())
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--torch {spec!r}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(here)
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"--torch {spec!r} returned {type(module).__name__}, not an nn.Module")
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch's unpickler refuses anything but tensors and containers
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"--weights {weights}: not a state dict of tensors (read with weights_only=True, "
                f"so that no pickled code runs): {first[:300]}"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
            state = state["state_dict"]
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError) as exc:
            # torch lists the missing, unexpected and mis-shaped keys, one per line.
            detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:4])
            raise ConfigError(f"--weights {weights} do not fit {spec}: {detail}") from exc
    return module


def _inputs(sample: Sample) -> tuple[list[str], list[np.ndarray]]:
    """Input names and arrays: a table is one float32 [N, F] input named ``input``."""
    if sample.tabular and len(sample.columns) > 1:
        if any(c.dtype == object for c in sample.columns.values()):
            raise ConfigError("a PyTorch module takes numbers: the sample has text columns")
        return ["input"], [sample.matrix().astype(np.float32)]
    names = list(sample.columns)
    arrays = [_torch_dtype(sample.columns[n]) for n in names]
    return names, arrays


def _torch_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        return array.astype(np.float32)  # PyTorch's default; float64 weights are rare
    if array.dtype.kind in "iu":
        return array.astype(np.int64)  # indices and token ids
    if array.dtype.kind == "b":
        return array
    raise ConfigError(f"a PyTorch module takes numbers: the sample has {array.dtype} values")


def _output_names(count: int) -> list[str]:
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _run(model: Any, arrays: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    chunks: list[list[np.ndarray]] = []
    rows = len(arrays[0])
    with torch.no_grad():
        for start in range(0, rows, _CHUNK):
            result = model(*(torch.from_numpy(a[start : start + _CHUNK]) for a in arrays))
            results = list(result) if isinstance(result, tuple | list) else [result]
            if not all(isinstance(r, torch.Tensor) for r in results):
                kinds = ", ".join(type(r).__name__ for r in results)
                raise ConfigError(f"the module returns {kinds}; expected tensors")
            chunks.append([r.numpy() for r in results])
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _export(
    model: Any,
    names: list[str],
    outputs: list[str],
    arrays: list[np.ndarray],
    *,
    script: bool,
) -> tuple[onnx.ModelProto, str]:
    import torch

    # Two rows at least: a batch of one would let the exporter specialise the batch dimension.
    example = tuple(torch.from_numpy(np.concatenate([a[:2], a[:2]])[:2]) for a in arrays)
    # The exporters' chatter: progress on stdout, warnings about absent torchvision operators.
    chatter = logging.getLogger("torch.onnx")
    level = chatter.level
    chatter.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            if script:
                return _export_torchscript(model, names, outputs, example), "TorchScript exporter"
            return _export_dynamo(model, names, outputs, example), "torch.export"
    except Exception as exc:  # the exporters' own errors name the unsupported construct
        raise ConfigError(f"torch.onnx could not export the module: {exc}") from exc
    finally:
        chatter.setLevel(level)


def _export_torchscript(
    model: Any, names: list[str], outputs: list[str], example: tuple[Any, ...]
) -> onnx.ModelProto:
    """TorchScript modules (and wrappers of them): the TorchScript-based exporter, the only one
    that takes them."""
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(
        model,
        example,
        buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects too
        input_names=names,
        output_names=outputs,
        dynamic_axes={n: {0: "batch"} for n in [*names, *outputs]},
        opset_version=OPSET,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(
    model: Any, names: list[str], outputs: list[str], example: tuple[Any, ...]
) -> onnx.ModelProto:
    import torch

    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        example,
        input_names=names,
        output_names=outputs,
        dynamic_shapes=tuple({0: batch} for _ in names),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    assert program is not None  # export returns the program when given no file
    return program.model_proto


def _classifier_head(model: onnx.ModelProto, scores: str) -> onnx.ModelProto:
    """The model's one ``[N, C]`` output (scores) becomes ``probabilities`` (a softmax of logits)
    and ``label`` (their argmax): the outputs the gateway serves as a typed classifier."""
    from onnx import TensorProto, helper

    graph = model.graph
    (output,) = graph.output
    raw = output.name
    if scores == "logits":
        graph.node.append(helper.make_node("Softmax", [raw], ["probabilities"], axis=-1))
    else:
        graph.node.append(helper.make_node("Identity", [raw], ["probabilities"]))
    graph.node.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=-1, keepdims=0))
    batch = output.type.tensor_type.shape.dim[0]
    classes = output.type.tensor_type.shape.dim[-1]
    del graph.output[:]
    graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [batch.dim_param or None]),
            helper.make_tensor_value_info(
                "probabilities",
                TensorProto.FLOAT,
                [batch.dim_param or None, classes.dim_value or None],
            ),
        ]
    )
    return model


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True))
