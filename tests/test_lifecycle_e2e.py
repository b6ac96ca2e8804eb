"""Versions published, swapped, rolled back and unloaded 20 times under continuous load on a
real server: no request fails, and every answer comes from a version that was serving."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server, write_repository
from tests.test_lifecycle import _publish, _scaled

pytestmark = pytest.mark.e2e

INFER = (
    '{ infer(model: "m", inputs: [{name: "x", shape: [1, 2], data: [1, 1]}]) '
    "{ version outputs { data } } }"
)
CLIENTS = 8


@dataclass
class Answer:
    started: float
    ended: float
    status: int
    body: dict[str, Any]


class Operator:
    """Admin mutations and waiting for their effect, timed."""

    def __init__(self, client: httpx.AsyncClient, root: Path) -> None:
        self.client = client
        self.root = root
        #: version -> when it was unloaded (requests starting later must not get it).
        self.unloaded: dict[int, float] = {}
        self.operations = 0

    async def mutate(self, mutation: str) -> None:
        body = (await self.client.post("/graphql", json={"query": mutation})).json()
        assert "errors" not in body, body
        self.operations += 1

    async def default_is(self, version: int) -> None:
        deadline = time.monotonic() + 30
        query = '{ model(name: "m") { defaultVersion } }'
        while True:
            body = (await self.client.post("/graphql", json={"query": query})).json()
            if body["data"]["model"]["defaultVersion"] == version:
                return
            assert time.monotonic() < deadline, f"default never became {version}: {body}"
            await asyncio.sleep(0.02)

    async def publish(self, version: int) -> None:
        _publish(self.root, f"m/{version}", _scaled(version))  # answers x * version
        self.operations += 1
        await self.default_is(version)

    async def unload(self, version: int) -> None:
        await self.mutate(f'mutation {{ unloadModel(name: "m", version: {version}) {{ name }} }}')
        self.unloaded[version] = time.monotonic()


async def _load(server: LiveServer, stop: asyncio.Event, answers: list[Answer]) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

        async def one_client() -> None:
            while not stop.is_set():
                started = time.monotonic()
                response = await client.post("/graphql", json={"query": INFER})
                answers.append(
                    Answer(started, time.monotonic(), response.status_code, response.json())
                )

        await asyncio.gather(*(one_client() for _ in range(CLIENTS)))


async def _operate(server: LiveServer, root: Path) -> Operator:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        op = Operator(client, root)
        for version in range(2, 7):  # 5 rounds of 4 operations
            await op.publish(version)  # a new version: loaded, warmed, swapped in
            await op.mutate(
                f'mutation {{ setDefaultVersion(name: "m", version: {version - 1}) {{ name }} }}'
            )
            await op.default_is(version - 1)  # a rollback
            await op.mutate('mutation { setDefaultVersion(name: "m", version: null) { name } }')
            await op.default_is(version)
            await op.unload(version - 1)  # the old version drained and unloaded
        return op


def test_twenty_lifecycle_operations_under_load_fail_no_request(tmp_path: Path) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _scaled(1)})
    server = start_server(
        root,
        tmp_path / "server.log",
        env={"GATEWAY_ADMIN_API": "true", "GATEWAY_POLL_SECONDS": "0.1"},
    )
    answers: list[Answer] = []

    async def scenario() -> Operator:
        stop = asyncio.Event()
        load = asyncio.create_task(_load(server, stop, answers))
        await asyncio.sleep(0.5)
        try:
            return await asyncio.wait_for(_operate(server, root), timeout=120)
        finally:
            await asyncio.sleep(0.5)
            stop.set()
            await load

    try:
        op = asyncio.run(scenario())
    finally:
        stop_server(server)
    assert op.operations == 20
    failed = [a for a in answers if a.status != 200 or "errors" in a.body]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[0].body}"
    assert len(answers) > 200
    served: set[int] = set()
    for answer in answers:
        result = answer.body["data"]["infer"]
        version = result["version"]
        served.add(version)
        # The answer is that version's model (x * version), not another load's.
        assert result["outputs"][0]["data"] == [float(version), float(version)]
        gone = op.unloaded.get(version)
        assert gone is None or answer.started < gone + 0.1, (
            f"version {version} answered a request that started after its unload"
        )
    assert served == {1, 2, 3, 4, 5, 6}
    print(f"{len(answers)} requests, 0 failed, across {op.operations} lifecycle operations")


TYPED = "{ predict { m(input: {x: [1, 1]}) { y modelVersion } } }"


def _opset(factor: float, opset: int) -> Any:
    """x * factor, written for another ONNX opset: the signature a caller sees is the same."""
    model = _scaled(factor)
    model.opset_import[0].version = opset
    return model


async def _mixed_load(server: LiveServer, stop: asyncio.Event, answers: list[Answer]) -> None:
    """Typed and infer clients, some sticky (X-Caller-Key), until ``stop``."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:

        async def one_client(query: str, headers: dict[str, str]) -> None:
            while not stop.is_set():
                started = time.monotonic()
                response = await client.post("/graphql", json={"query": query}, headers=headers)
                answers.append(
                    Answer(started, time.monotonic(), response.status_code, response.json())
                )

        await asyncio.gather(
            *(
                one_client(TYPED if i % 2 else INFER, {"X-Caller-Key": f"c{i}"} if i < 4 else {})
                for i in range(CLIENTS)
            )
        )


def test_canary_unload_and_delete_of_versions_differing_in_opset_fail_no_request(
    tmp_path: Path,
) -> None:
    root = write_repository(tmp_path / "repo", {"m/1": _opset(1, 13), "m/2": _opset(2, 17)})
    server = start_server(
        root,
        tmp_path / "server.log",
        env={"GATEWAY_ADMIN_API": "true", "GATEWAY_POLL_SECONDS": "0.1"},
    )
    answers: list[Answer] = []
    steps: list[tuple[str, float]] = []

    async def operate() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            op = Operator(client, root)

            async def step(name: str, mutation: str | None = None) -> None:
                steps.append((name, time.monotonic()))
                if mutation is not None:
                    await op.mutate(f"mutation {{ {mutation} {{ name }} }}")
                await asyncio.sleep(1.0)

            split = "[{version: 1, weight: 1}, {version: 2, weight: 1}]"
            await step("split", f'setTrafficSplit(name: "m", split: {split})')
            await step("unload 1", 'unloadModel(name: "m", version: 1)')
            await step("load 1", 'loadModel(name: "m", version: 1)')
            await step("unload 2 (the default)", 'unloadModel(name: "m", version: 2)')
            await step("load 2", 'loadModel(name: "m", version: 2)')
            steps.append(("delete 2", time.monotonic()))
            shutil.rmtree(root / "m" / "2")
            await op.default_is(1)
            await asyncio.sleep(1.0)
            await step("end the split", 'setTrafficSplit(name: "m", split: [])')
            steps.append(("publish 3", time.monotonic()))
            await op.publish(3)
            await asyncio.sleep(1.0)

    async def scenario() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(_mixed_load(server, stop, answers))
        await asyncio.sleep(0.5)
        try:
            await asyncio.wait_for(operate(), timeout=120)
        finally:
            stop.set()
            await load

    try:
        asyncio.run(scenario())
    finally:
        stop_server(server)
    failed = [a for a in answers if a.status != 200 or "errors" in a.body]
    if failed:
        first = failed[0].started
        at = max((name for name, t in steps if t <= first), default="start")
        pytest.fail(
            f"{len(failed)} of {len(answers)} requests failed (from {at}): {failed[0].body}"
        )
    typed = [a.body["data"]["predict"]["m"] for a in answers if "predict" in a.body["data"]]
    assert len(typed) > 200 and len(answers) - len(typed) > 200
    for answer in typed:
        assert answer["y"] == [float(answer["modelVersion"])] * 2  # that version's model
    assert {a["modelVersion"] for a in typed} == {1, 2, 3}
    print(f"{len(answers)} requests ({len(typed)} typed), 0 failed, across {len(steps)} steps")
