"""Describe the machine and the software a run measured on, for the top of the report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["command_line", "describe_machine"]

_PACKAGES = ("prediction-gateway", "onnxruntime", "strawberry-graphql", "starlette", "uvicorn")


def describe_machine() -> dict[str, str]:
    """nproc, CPU model, kernel, Python, package and wrk versions, as strings."""
    info = {
        "nproc": str(os.cpu_count() or 0),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for package in _PACKAGES:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["wrk"] = _wrk_version()
    return info


def command_line() -> str:
    """The exact command line this process was started with."""
    return shlex.join(sys.orig_argv)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    if shutil.which("wrk") is None:
        return "not installed"
    try:
        # wrk -v prints its version and usage, then exits non-zero.
        done = subprocess.run(["wrk", "-v"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()
    # "wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer" -> "debian/4.1.0-3+b2 [epoll]"
    first = lines[0].split(" Copyright")[0].removeprefix("wrk ").strip() if lines else ""
    return first or "unknown"
