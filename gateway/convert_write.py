"""Writing a converted model as a repository version: checked on the sample (batching, parity),
written with its ``model.toml`` (whole files, by rename), then loaded the way the server loads
it; nothing is left on disk when any step fails.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from gateway.convert_check import (
    check_batch,
    dense,
    match_outputs,
    parity,
    run_model,
    with_free_batch,
)
from gateway.convert_sample import Sample
from gateway.convert_toml import check_row, config_text, predicted_classes, statistics
from gateway.errors import ConfigError
from gateway.progress import Progress
from gateway.repository import MODEL_NAME_PATTERN, ModelConfig
from gateway.signature import signature_from_proto
from gateway.typed import TypedModel, build_typed_model

__all__ = [
    "Conversion",
    "Source",
    "check_name",
    "next_version",
    "require_file",
    "write_atomically",
    "write_version",
]


@dataclass
class Conversion:
    """What ``convert`` did: where it wrote, and the parity figures."""

    model: str
    version: int
    path: Path
    inputs: list[str]
    parity: dict[str, Any]
    rows: int
    labels: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "path": str(self.path),
            "inputs": self.inputs,
            "rows": self.rows,
            "labels": self.labels,
            "parity": self.parity,
        }


@dataclass
class Source:
    """A converted model and what to check it against: the original's answers on the sample."""

    onnx_model: onnx.ModelProto
    inputs: list[str]
    #: The original's outputs on the sample, by the ONNX output's name; a classifier's are
    #: "label" and "probabilities" (and a regressor's prediction is "label" too).
    original: dict[str, np.ndarray]
    #: Class names by class index (empty: a regressor, or classes named by their index).
    labels: list[str]
    #: framework, framework_version, converter, converter_version, estimator.
    provenance: dict[str, str]
    #: Whether the model takes one input per column (else one [N, F] input, features named).
    per_column: bool = False
    #: The sample's columns the model reads, in its order (empty: all of them, as they are);
    #: with ``per_column``, the column of each of ``inputs``.
    columns: list[str] = field(default_factory=list)

    def sample_of(self, sample: Sample) -> Sample:
        """The sample as the model takes it: its columns, in order, named like its inputs
        when it takes one per column."""
        if not self.columns:
            return sample
        chosen = sample.select(self.columns, what="the model reads")
        if not self.per_column:
            return chosen
        return Sample(dict(zip(self.inputs, chosen.columns.values(), strict=True)))


def check_name(name: str) -> None:
    """Refuse a model name the repository would skip.

    Raises:
        ConfigError: naming the pattern.
    """
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"--name {name!r}: a model name must match {MODEL_NAME_PATTERN.pattern} "
            "(a letter, then letters, digits, _ or -)"
        )


def require_file(path: Path, flag: str) -> None:
    """Refuse a path that is not a file, before anything is loaded.

    Raises:
        ConfigError: naming the flag and the path.
    """
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ConfigError(f"{flag} {path}: {what}; expected a file")


def write_version(
    source: Source,
    sample: Sample,
    repository: Path,
    name: str,
    tolerance: float,
    description: str | None,
    *,
    version: int | None = None,
    labels: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Conversion:
    """Check ``source`` against the original on ``sample``; write it as ``version`` (default:
    the next one) with its model.toml; load it as the server would.

    Args:
        labels: class names by class index, for a classifier whose classes are numbers.

    Raises:
        ParityError: beyond ``tolerance``; nothing is written.
        ConfigError: an invalid name, ``labels`` that do not fit, a model that does not answer
            row by row or does not load as the server would (nothing is left on disk).
    """
    progress = progress or Progress()
    check_name(name)
    if labels:
        classes = source.original.get("probabilities")
        count = 0 if classes is None else classes.shape[1]
        if count != len(labels):
            raise ConfigError(f"--labels: {len(labels)} names for a model with {count} classes")
        source.labels = labels
    sample = source.sample_of(sample)
    with progress.step(f"checking batching and parity on {sample.rows} rows"):
        model, converted = _batched(source.onnx_model, sample)
        report = parity(source.original, converted, tolerance, labels=source.labels)
        matched = match_outputs(source.original, converted)
        # ZipMap's lists of {class: probability} as [N, C] arrays, as the typed view reads them.
        dense_outputs = {k: dense(v) for k, v in converted.items()}
        answers = {**dense_outputs, **{matched[k]: v for k, v in source.original.items()}}
    features = list(sample.columns) if sample.tabular and not source.per_column else []
    typed = _typed_view(name, model, features, source.labels)
    model_dir = repository / name
    version = version if version is not None else next_version(model_dir)
    target = model_dir / str(version) / "model.onnx"
    if target.exists():
        raise ConfigError(f"{target} exists: versions are never overwritten")
    config_path = model_dir / "model.toml"
    previous = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    existing = tomllib.loads(previous) if previous is not None else {}
    model = _finish(
        model,
        description or existing.get("description") or _describe(source),
        {**{k: str(v) for k, v in source.provenance.items()}, **(metadata or {})},
    )
    payload = model.SerializeToString()
    example, check = check_row(typed, sample, answers, dense_outputs)
    predicted = predicted_classes(typed, answers, sample.rows) if typed.classifier else []
    text = config_text(
        existing,
        description=description,
        generated=_describe(source),
        features=features,
        labels=source.labels,
        example=example,
        check=check,
        conversion={**source.provenance, "version": version, "parity": report},
        baseline=statistics(sample, predicted),
        digest=(version, hashlib.sha256(payload).hexdigest()),
    )
    created = not model_dir.exists()
    try:
        with progress.step(f"writing {target}"):
            model_dir.mkdir(parents=True, exist_ok=True)
            # model.toml first, then the model by rename: a server polling the repository sees
            # the version only when it is complete, with the configuration written for it. The
            # model is written in the model's directory, where a file is not a version (a
            # version directory without its model.onnx would be reported as skipped).
            write_atomically(config_path, text.encode())
            write_atomically(target, payload, scratch=model_dir)
        with progress.step(f"loading {name} version {version} as the server would"):
            problem = _load_problem(repository, name, version)
        if problem is not None:
            if existing.get("samples"):
                problem += (
                    f" (the [[samples]] of {config_path} were kept: if the new model is right, "
                    "correct or remove them)"
                )
            raise ConfigError(f"the converted model does not load, nothing written: {problem}")
    except BaseException:
        # Whatever failed (the load, a full disk, an interrupt), the repository is as it was.
        _undo(model_dir, target, config_path, previous, created=created)
        raise
    return Conversion(name, version, target, source.inputs, report, sample.rows, source.labels)


def _batched(model: onnx.ModelProto, sample: Sample) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The model with a free batch dimension everywhere, checked, and its answers on the
    sample. A sample of one row is run twice over: a batch dimension needs two rows to show."""
    probe = sample
    if sample.rows < 2:
        probe = Sample({k: np.concatenate([v, v]) for k, v in sample.columns.items()})
    answered = run_model(model, probe)
    fixed = with_free_batch(model, answered, probe.rows)
    if fixed is not model:
        answered = run_model(fixed, probe)
    check_batch(fixed, answered, probe.rows)
    if probe is not sample:
        answered = {k: v[: sample.rows] for k, v in answered.items()}
    return fixed, answered


def _typed_view(
    name: str, model: onnx.ModelProto, features: list[str], labels: list[str]
) -> TypedModel:
    """The model's typed GraphQL view, as the server will build it from model.toml.

    Raises:
        ConfigError: the server could not build one (and would not load the version).
    """
    config = ModelConfig(
        features={"": tuple(features)} if features else {}, labels=tuple(labels) or None
    )
    try:
        return build_typed_model(name, signature_from_proto(model), config)
    except ConfigError as exc:
        raise ConfigError(f"the converted model has no typed view: {exc.message}") from exc


def _undo(
    model_dir: Path, target: Path, config_path: Path, previous: str | None, *, created: bool
) -> None:
    if created:
        shutil.rmtree(model_dir, ignore_errors=True)
        return
    shutil.rmtree(target.parent, ignore_errors=True)
    for scratch in model_dir.glob(".*.tmp"):
        scratch.unlink(missing_ok=True)
    if previous is None:
        config_path.unlink(missing_ok=True)
    else:
        write_atomically(config_path, previous.encode())


def _describe(source: Source) -> str:
    return f"{source.provenance['estimator']} converted with {source.provenance['converter']}"


def _finish(model: onnx.ModelProto, description: str, props: dict[str, str]) -> onnx.ModelProto:
    """The model as written: one opset entry per domain, sorted (converters may gather them in
    a set, whose order changes between runs), the description, and the conversion's provenance
    as metadata, so that the file says where it came from on its own."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    opsets: dict[str, int] = {}
    for opset in model.opset_import:
        opsets[opset.domain] = max(opset.version, opsets.get(opset.domain, 0))
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    model.doc_string = description
    merged = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**merged, **props})
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ConfigError(f"the converter wrote an invalid ONNX model: {exc}") from exc
    return model


def write_atomically(path: Path, content: bytes, *, scratch: Path | None = None) -> None:
    """Write ``path`` whole or not at all: a temporary file (beside it, or in ``scratch`` on
    the same file system), then a rename."""
    temporary = (scratch or path.parent) / f".{path.parent.name}-{path.name}.tmp"
    temporary.write_bytes(content)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary.replace(path)


def next_version(model_dir: Path) -> int:
    """The version after every version directory of ``model_dir`` (with a model or not)."""
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(existing, default=0) + 1


def _load_problem(repository: Path, name: str, version: int) -> str | None:
    """Why the version does not load as the server would load it (samples included), or None."""
    from gateway.config import Settings
    from gateway.repository import ModelSpec, RepositoryScan, VersionPolicy, scan_repository
    from gateway.runtime import ModelRuntime
    from gateway.versions import ModelState

    scan = scan_repository(repository)
    spec = next((s for s in scan.models if s.name == name), None)
    if spec is None or version not in spec.versions:
        said = [w for w in scan.warnings if w.startswith(name)]
        return "; ".join(said) or f"the repository scan does not find {name} version {version}"
    if spec.problem is not None:
        return spec.problem
    # Only this version, and served whatever [versions] says: it is the one being checked.
    config = replace(spec.config, versions=VersionPolicy())
    only = ModelSpec(name, {version: spec.versions[version]}, config)
    settings = Settings.load(environ={"GATEWAY_MODELS": str(repository)}, flags={"warmup": True})
    runtime = ModelRuntime(settings, RepositoryScan((only,)))
    # The runtime logs the failure; here it is the returned reason, said once.
    quiet = logging.getLogger("gateway")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        runtime.load_all()
        loaded = runtime.entries[name].versions[version]
        return loaded.reason if loaded.state is ModelState.FAILED else None
    finally:
        runtime.close()
        quiet.setLevel(level)
