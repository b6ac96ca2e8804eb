"""Start and stop the servers under test: the gateway and the baselines, each a subprocess.

Every server is ``python -m <module> --models M --port P --host 127.0.0.1``, pinned with
``taskset -c <core>`` when pinning is on, started with an environment from which every inherited
``GATEWAY_*`` and ``OTEL_*`` variable is removed (so only the scenario's overrides apply), and
ready when ``GET /readyz`` answers 200 (bounded wait). It is stopped with SIGINT, as uvicorn
expects, so that its lifespan (and any span exporter) shuts down cleanly; then SIGKILL if need be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "ROOT",
    "Server",
    "ServerKind",
    "ServerSpec",
    "ServerStartError",
    "running_server",
    "start_server",
    "stop_server",
]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_READY_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0
_SCRUBBED_PREFIXES = ("GATEWAY_", "OTEL_")

ServerKind = Literal["gateway", "bare", "minimal-strawberry"]
_MODULES: dict[ServerKind, str] = {
    "gateway": "gateway",
    "bare": "bench.baselines.bare",
    "minimal-strawberry": "bench.baselines.minimal_strawberry",
}


class ServerStartError(RuntimeError):
    """A server exited or did not become ready in time; the message ends with its log."""


@dataclass(frozen=True)
class ServerSpec:
    """What to start: which server, over which models, with which environment overrides."""

    kind: ServerKind
    models: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def command(self, port: int) -> list[str]:
        """The command line (without pinning) that serves on 127.0.0.1:``port``."""
        serve = ["serve"] if self.kind == "gateway" else []
        return [
            sys.executable,
            "-m",
            _MODULES[self.kind],
            *serve,
            "--models",
            str(self.models),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ]


@dataclass
class Server:
    """A running server process."""

    spec: ServerSpec
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def start_server(
    spec: ServerSpec,
    *,
    log: Path,
    core: int | None,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
) -> Server:
    """Start ``spec`` on a free port and wait until ``/readyz`` answers 200.

    Args:
        spec: the server to start.
        log: file that receives the server's stdout and stderr.
        core: the CPU to pin it to with ``taskset -c``; None leaves it unpinned.
        extra_env: variables added over ``spec.env`` (e.g. an OTLP endpoint known only now).
        ready_timeout: seconds to wait for readiness before giving up.
    """
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(spec.env)
    env.update(extra_env or {})
    env["PYTHONUNBUFFERED"] = "1"
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*pin, *spec.command(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
    server = Server(spec, f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_ready(server, ready_timeout)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: Server) -> None:
    """Stop ``server``: SIGINT (graceful shutdown, lifespan exit), then SIGKILL; bounded."""
    process = server.process
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT)


@contextlib.contextmanager
def running_server(
    spec: ServerSpec,
    *,
    log: Path,
    core: int | None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Server]:
    """``start_server`` as a context manager that always stops the server."""
    server = start_server(spec, log=log, core=core, extra_env=extra_env)
    try:
        yield server
    finally:
        stop_server(server)


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.spec.kind} exited with status {server.process.returncode}"
                + _log_tail(server.log)
            )
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or 503 while models load
        time.sleep(0.1)
    raise ServerStartError(
        f"{server.spec.kind} was not ready after {timeout:.0f} s" + _log_tail(server.log)
    )


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; log {log}:\n" + "\n".join(tail)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
