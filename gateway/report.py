"""What the server would say of a repository, said offline: ``gateway check`` (load every
version, print a table, the warnings, and exit 1 when one FAILED) and ``gateway
export-schema`` (the SDL, with the same warnings on stderr).

Both load the repository as the server does and build the typed fields as its schema does, so
that a problem the server reports (a version that fails, two labels for a three-class model,
a typed field left out) is reported here too, in the same words.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from gateway.api import build_schema, build_typed_models
from gateway.api.schema import typed_field_warnings
from gateway.config import Settings
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.versions import ModelState, ModelVersion, Warmup

__all__ = ["check_repository", "export_schema"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The runtime's log lines kept back: these commands say the same things themselves."""
    gateway_logger = logging.getLogger("gateway")
    level = gateway_logger.level
    gateway_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        gateway_logger.setLevel(level)


def export_schema(settings: Settings, out: TextIO, err: TextIO, *, output: Path | None) -> int:
    """Write the SDL of ``settings.models`` to ``output`` (else ``out``) and what the server
    would warn of to ``err``; returns the exit status."""
    scan = scan_repository(settings.models)
    runtime = ModelRuntime(settings, scan)
    try:
        with _quiet():
            runtime.load_all(sessions=False)
        entries = list(runtime.entries.values())
        built = build_schema(entries)
        failed = [mv.describe() for e in entries for mv in e.versions.values() if _failed(mv)]
        warnings = typed_field_warnings(entries, built.typed)
    finally:
        runtime.close()
    for line in [*(f"repository: {w}" for w in scan.warnings), *failed, *warnings.values()]:
        err.write(f"gateway export-schema: warning: {line}\n")
    sdl = built.as_sdl()
    if output is not None:
        output.write_text(sdl, encoding="utf-8")
    else:
        out.write(sdl)
    return 0


def check_repository(settings: Settings, out: TextIO, *, strict: bool = False) -> int:
    """Load every version of ``settings.models`` and print a table, what was skipped and the
    warnings; returns 1 when a version FAILED (or, with ``strict``, on any warning)."""
    scan = scan_repository(settings.models)
    runtime = ModelRuntime(settings, scan)
    try:
        with _quiet():
            runtime.load_all()
        entries = list(runtime.entries.values())
        warnings = typed_field_warnings(entries, build_typed_models(entries))
    finally:
        runtime.close()
    rows = [("MODEL", "VERSION", "INPUTS", "OUTPUTS", "LOAD MS", "STATE")]
    failed = False
    for entry in entries:
        for v, mv in sorted(entry.versions.items()):
            rows.append((entry.name, str(v), *_columns(mv)))
            failed |= _failed(mv)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        out.write(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] + "\n"
        )
    for warning in scan.warnings:
        out.write(f"skipped: {warning}\n")
    for warning in warnings.values():
        out.write(f"warning: {warning}\n")
    return 1 if failed or (strict and (warnings or scan.warnings)) else 0


def _failed(mv: ModelVersion) -> bool:
    return mv.state is ModelState.FAILED


def _columns(mv: ModelVersion) -> tuple[str, str, str, str]:
    """INPUTS, OUTPUTS, LOAD MS and STATE of a version's row."""
    sig = mv.signature
    ins = (
        ", ".join(f"{i.name}:{i.datatype.value}{list(i.shape)}" for i in sig.inputs) if sig else "-"
    )
    outs = (
        ", ".join(f"{o.name}:{o.datatype.value}{list(o.shape)}" for o in sig.outputs)
        if sig
        else "-"
    )
    ms = f"{mv.load_seconds * 1000:.1f}" if mv.load_seconds is not None else "-"
    # close() marks READY versions UNAVAILABLE; what counts is whether the load worked.
    state = "FAILED: " + (mv.reason or "") if _failed(mv) else "READY"
    if mv.warmup is Warmup.SKIPPED:
        state += f" (warm-up skipped: {mv.warmup_skipped})"
    return ins, outs, ms, state
