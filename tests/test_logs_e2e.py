"""The log stream of a real server: JSON lines only (nothing ONNX Runtime or uvicorn colours),
human lines a client cannot forge, access lines with the outcome the client got, and a warning
for a misspelt GATEWAY_* variable."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto, helper

from tests.conftest import (
    LiveServer,
    make_model,
    start_server,
    stop_server,
    tensor_info,
    write_repository,
)

pytestmark = pytest.mark.e2e

#: A model ONNX Runtime fails on at run time when the target shape does not fit the data.
RESHAPE = make_model(
    [helper.make_node("Reshape", ["x", "shape"], ["y"])],
    [tensor_info("x", TensorProto.FLOAT, ["N", 4]), tensor_info("shape", TensorProto.INT64, [2])],
    [tensor_info("y", TensorProto.FLOAT, ["a", "b"])],
)
BAD_RESHAPE = (
    '{ infer(model: "reshape", inputs: [{name: "x", shape: [2, 4], data: [1, 2, 3, 4, 5, 6, 7, 8]},'
    ' {name: "shape", shape: [2], data: [3, 3]}]) { id } }'
)
FORGED = "2026-01-01 00:00:00,000 ERROR   gateway.auth: admin key accepted"


def _wait_for(log: Path, text: str) -> str:
    deadline = time.monotonic() + 10
    while text not in (content := log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{text!r} not logged: {content[-2000:]}"
        time.sleep(0.05)
    return content


def _access(server: LiveServer, outcome_marker: str) -> str:
    return _wait_for(server.log, outcome_marker)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return write_repository(tmp_path / "models", {"reshape/1": RESHAPE})


def test_json_logs_are_json_lines_without_colour_codes(repository: Path, tmp_path: Path) -> None:
    # No warm-up: the model's synthetic run fails too, and ONNX Runtime would log that as well.
    server = start_server(
        repository,
        tmp_path / "server.log",
        env={"GATEWAY_LOG_FORMAT": "json", "GATEWAY_WARMUP": "false", "GATEWAY_WARMPU": "true"},
    )
    try:
        body = httpx.post(f"{server.url}/graphql", json={"query": BAD_RESHAPE}).json()
        assert body["errors"][0]["extensions"]["code"] in (
            "BAD_USER_INPUT",
            "INTERNAL_SERVER_ERROR",
        )
        _wait_for(server.log, '"logger":"gateway.access"')
    finally:
        stop_server(server)
    raw = server.log.read_bytes()
    assert b"\x1b" not in raw, "ANSI colour codes in the log stream"
    records = [json.loads(line) for line in raw.decode().splitlines()]  # every line is JSON
    assert any(r["logger"] == "uvicorn.error" for r in records)  # uvicorn's lines are there
    assert not any("color_message" in r for r in records)
    assert not any("onnxruntime" in r["message"] and "[E:" in r["message"] for r in records)
    (typo,) = [r for r in records if "GATEWAY_WARMPU" in r["message"]]
    assert typo["level"] == "warning" and "did you mean GATEWAY_WARMUP?" in typo["message"]


def test_human_log_lines_cannot_be_forged_and_say_the_real_outcome(
    repository: Path, tmp_path: Path
) -> None:
    server = start_server(repository, tmp_path / "server.log", env={"GATEWAY_LOG_FORMAT": "human"})
    try:
        forged = httpx.post(
            f"{server.url}/graphql",
            json={"query": "query A { models { name } }", "operationName": f"A\n{FORGED}"},
        )
        assert forged.status_code == 400
        assert forged.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
        get_mutation = httpx.get(
            f"{server.url}/graphql",
            params={"query": 'mutation Unload { unloadModel(name: "reshape") { name } }'},
        )
        assert get_mutation.status_code in (400, 405), get_mutation.text
        content = _access(server, "mutation Unload BAD_REQUEST")
    finally:
        stop_server(server)
    # Every line is a record's first line (it starts with its time) or an indented one.
    record = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +\S+: ")
    lines = content.splitlines()
    assert all(record.match(line) or line.startswith(" ") for line in lines), content
    assert not any(line.startswith(FORGED) for line in lines)
    # The name the client sent is in no line: an operation is named after the document's
    # (this one names no operation "A\n..."), so the access line says what failed, unnamed.
    assert not any("admin key" in line for line in lines)
    access = [line for line in lines if "gateway.access" in line and " BAD_REQUEST " in line]
    assert access and all(line.endswith(" ms") and " OK " not in line for line in access)
