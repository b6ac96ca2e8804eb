"""Shared fixtures: tiny ONNX models built with onnx.helper, repositories, in-process and live
gateways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from onnx import TensorProto, helper
from opentelemetry.sdk.trace import sampling

from gateway.api import GatewayContext, GatewaySchema, build_schema
from gateway.app import schema_extensions
from gateway.config import Settings
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime
from gateway.telemetry.spans import LeanTracerProvider, RecordedSpan


class SpanCollector:
    """A span processor that keeps every ended span: the tests' in-memory exporter."""

    def __init__(self) -> None:
        self.spans: list[RecordedSpan] = []

    def on_end(self, span: RecordedSpan) -> None:
        self.spans.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    def shutdown(self) -> None:
        return None


def collecting_provider() -> tuple[LeanTracerProvider, SpanCollector]:
    """The gateway's tracer provider (default sampler) with every span kept in memory."""
    collector = SpanCollector()
    provider = LeanTracerProvider(
        sampler=sampling.ParentBased(sampling.ALWAYS_ON), processors=[collector]
    )
    return provider, collector


ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODELS = ROOT / "models"
OPSET = 17


def tensor_info(
    name: str, elem_type: int, shape: Sequence[int | str | None]
) -> onnx.ValueInfoProto:
    """A tensor input/output; a str or None dimension is dynamic."""
    return helper.make_tensor_value_info(name, elem_type, list(shape))


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    *,
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = OPSET,
    ml_opset: int | None = None,
) -> onnx.ModelProto:
    """A checked ONNX model from nodes (IR version that current ONNX Runtime accepts)."""
    graph = helper.make_graph(list(nodes), "test", list(inputs), list(outputs), list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    if ml_opset is not None:
        opsets.append(helper.make_opsetid("ai.onnx.ml", ml_opset))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="gateway-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def identity_model(
    elem_type: int = TensorProto.FLOAT,
    shape: Sequence[int | str | None] = ("N", 4),
    *,
    input_name: str = "x",
    output_name: str = "y",
) -> onnx.ModelProto:
    """y = x, for any element type and shape."""
    return make_model(
        [helper.make_node("Identity", [input_name], [output_name])],
        [tensor_info(input_name, elem_type, shape)],
        [tensor_info(output_name, elem_type, shape)],
    )


def write_repository(
    root: Path,
    models: Mapping[str, onnx.ModelProto | bytes],
    tomls: Mapping[str, str] | None = None,
) -> Path:
    """Write ``{"name/1": model}`` (or ``{"name.onnx": model}``) and ``{"name": toml}`` files."""
    root.mkdir(parents=True, exist_ok=True)
    for key, model in models.items():
        path = root / key if key.endswith(".onnx") else root / key / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    for name, text in (tomls or {}).items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "model.toml").write_text(text, encoding="utf-8")
    return root


@dataclass
class InProcessGateway:
    """A loaded runtime and its schema, executed without a server."""

    runtime: ModelRuntime
    built: GatewaySchema
    settings: Settings

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run an operation; returns the response as a client would see it (JSON round trip)."""
        context = GatewayContext(self.runtime, self.settings, self.built.typed)
        result = asyncio.run(
            self.built.schema.execute(query, variable_values=variables, context_value=context)
        )
        response: dict[str, Any] = {"data": result.data}
        if result.errors:
            response["errors"] = [e.formatted for e in result.errors]
        return dict(json.loads(json.dumps(response)))

    @property
    def sdl(self) -> str:
        return self.built.as_sdl()


def load_gateway(root: Path, **settings: Any) -> InProcessGateway:
    """Scan, load and build the schema of the repository at ``root``."""
    environ = {"GATEWAY_MODELS": str(root), "GATEWAY_INFERENCE_THREADS": "2"}
    config = Settings.load(environ=environ, flags=settings)
    runtime = ModelRuntime(config, scan_repository(root))
    runtime.load_all()
    built = build_schema(list(runtime.entries.values()), extensions=schema_extensions(config))
    return InProcessGateway(runtime, built, config)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    """Build an in-process gateway from ``{"name/1": model}``; runtimes are closed afterwards."""
    made: list[InProcessGateway] = []

    def factory(
        models: Mapping[str, onnx.ModelProto | bytes],
        tomls: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> InProcessGateway:
        root = write_repository(tmp_path / f"repo{len(made)}", models, tomls)
        gateway = load_gateway(root, **settings)
        made.append(gateway)
        return gateway

    yield factory
    for gateway in made:
        gateway.runtime.close()


@pytest.fixture(scope="session")
def example_gateway() -> Iterator[InProcessGateway]:
    """The bundled example models, in-process."""
    gateway = load_gateway(EXAMPLE_MODELS)
    yield gateway
    gateway.runtime.close()


#: Debian's chromium, headless, on a machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str:
    """Debian's chromium (./scripts/test installs it); in CI a missing browser fails."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        message = "no Chromium (apt-get install chromium, or set CHROMIUM=/path/to/it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """A real ``gateway serve`` process on 127.0.0.1."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30
        )


def start_server(
    models: Path,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    wait_ready: bool = True,
    args: Sequence[str] = (),
) -> LiveServer:
    """Start ``python -m gateway serve`` on a free port; wait until it answers (bounded)."""
    port = free_port()
    environ = {**os.environ, "GATEWAY_LOG_LEVEL": "info", **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway",
                "serve",
                "--models",
                str(models),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            cwd=ROOT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    probe = "/readyz" if wait_ready else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')}")
        try:
            if httpx.get(server.url + probe, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready in time: {log.read_text(errors='replace')}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=5)


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real server on the bundled example models, shared by the end-to-end tests."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    server = start_server(EXAMPLE_MODELS, log)
    yield server
    stop_server(server)


def in_process_client(
    root: Path, env: Mapping[str, str], *, peer: str = "127.0.0.1"
) -> Iterator[Any]:
    """A Starlette test client of the gateway on ``root`` (settings from ``env``), named
    ``localhost`` from ``peer`` (by default, as a browser on this machine); yields it once the
    models are loaded and the admin mutations ready."""
    from starlette.testclient import TestClient

    from gateway.app import create_app

    app = create_app(Settings.load(environ={"GATEWAY_MODELS": str(root), **env}))
    with TestClient(app, base_url="http://localhost", client=(peer, 1)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 or app.state.gateway.lifecycle is None:
            assert time.monotonic() < deadline, "the gateway did not get ready"
            time.sleep(0.02)
        yield client


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in-process, its lifespan running and its initial load done."""
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
        app.router.lifespan_context(app),
    ):
        for _ in range(3000):  # up to 30 s on a busy machine
            if (await client.get("/readyz")).json()["status"] != "loading":
                break
            await asyncio.sleep(0.01)
        yield client
