"""Drive load at one server: ``wrk`` with a Lua script when it is installed, else ``pyload``.

Both generators run as a subprocess pinned to the load core, keep ``connections`` keep-alive
connections busy for ``seconds`` (a whole number: wrk counts in seconds) and print one JSON
line; ``run_load`` turns it into a ``LoadResult``. Errors are transport failures and timeouts,
every non-200 response, and every sampled 200 response whose body has a GraphQL ``"errors"``
entry (one response in ``sample_every`` is searched, so that the check stays cheap).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "DEFAULT_SAMPLE_EVERY",
    "ERROR_MARKER",
    "Check",
    "LoadError",
    "LoadRequest",
    "LoadResult",
    "Loadgen",
    "choose_loadgen",
    "percentile",
    "run_load",
    "verify",
]

Loadgen = Literal["wrk", "python"]
#: Takes a response body (status was 200); returns what is wrong with it, or None.
Check = Callable[[bytes], "str | None"]

DEFAULT_SAMPLE_EVERY = 16
ERROR_MARKER = b'"errors"'
_ROOT = Path(__file__).resolve().parent.parent
_RESULT_PREFIX = "BENCH_RESULT "
_GRACE = 30.0  # seconds a generator may take beyond its run to start, drain and report


class LoadError(RuntimeError):
    """The load generator failed, or the server answered wrongly before the run."""


@dataclass(frozen=True)
class LoadRequest:
    """The one request a run repeats: a JSON ``POST`` of ``body`` to ``url``."""

    url: str
    body: bytes


@dataclass(frozen=True)
class LoadResult:
    """What one run measured."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    sampled: int

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, float | int]:
        """The fields and ``rps``, for machine output."""
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 4),
            "rps": round(self.rps, 2),
            "errors": self.errors,
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "sampled": self.sampled,
        }


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def choose_loadgen(preference: Literal["auto", "wrk", "python"]) -> Loadgen:
    """``wrk`` when asked for or when ``auto`` finds it on PATH, else ``python``."""
    if preference == "python":
        return "python"
    if shutil.which("wrk") is not None:
        return "wrk"
    if preference == "wrk":
        raise LoadError("--loadgen wrk: wrk is not on PATH (Debian: apt-get install wrk)")
    return "python"


def verify(request: LoadRequest, check: Check, *, count: int = 3) -> None:
    """Send ``request`` ``count`` times; raise ``LoadError`` unless every answer is right."""
    for _ in range(count):
        http = urllib.request.Request(
            request.url,
            data=request.body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(http, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except OSError as exc:
            raise LoadError(f"{request.url}: {exc}") from exc
        problem = f"HTTP {status}" if status != 200 else check(body)
        if problem is not None:
            raise LoadError(f"{request.url} answered wrongly: {problem}: {body[:300]!r}")


def run_load(
    request: LoadRequest,
    *,
    loadgen: Loadgen,
    connections: int,
    seconds: int,
    core: int | None,
    sample_every: int = DEFAULT_SAMPLE_EVERY,
) -> LoadResult:
    """One bounded run of ``loadgen`` against ``request``; see the module docstring."""
    if connections < 1 or seconds < 1:
        raise ValueError("connections and seconds must be at least 1")
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        if loadgen == "wrk":
            script = Path(tmp) / "post.lua"
            script.write_text(_wrk_script(request.body, sample_every), encoding="utf-8")
            command = [
                "wrk",
                "--threads=1",  # one core for the generator: more threads would only contend
                f"--connections={connections}",
                f"--duration={seconds}s",
                "--timeout=10s",
                f"--script={script}",
                request.url,
            ]
            stdin = b""
        else:
            command = [
                sys.executable,
                "-m",
                "bench.pyload",
                f"--url={request.url}",
                f"--connections={connections}",
                f"--seconds={seconds}",
                f"--sample-every={sample_every}",
            ]
            stdin = request.body
        try:
            done = subprocess.run(
                [*pin, *command],
                input=stdin,
                capture_output=True,
                timeout=seconds + _GRACE,
                cwd=_ROOT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LoadError(f"{loadgen} did not finish within {seconds + _GRACE:.0f} s") from exc
    out = done.stdout.decode("utf-8", "replace")
    for line in out.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return _parse_result(line.removeprefix(_RESULT_PREFIX))
    err = done.stderr.decode("utf-8", "replace")
    raise LoadError(
        f"{loadgen} exited {done.returncode} without a result: {out[-800:]}{err[-800:]}"
    )


def _parse_result(text: str) -> LoadResult:
    raw = json.loads(text)
    return LoadResult(
        requests=int(raw["requests"]),
        seconds=float(raw["seconds"]),
        errors=int(raw["errors"]),
        p50_ms=float(raw["p50_ms"]),
        p99_ms=float(raw["p99_ms"]),
        sampled=int(raw["sampled"]),
    )


def _wrk_script(body: bytes, sample_every: int) -> str:
    text = body.decode("utf-8")
    if "]==]" in text:
        raise ValueError("the request body cannot be embedded in a Lua long string")
    marker = ERROR_MARKER.decode()
    # Counters are globals of each thread's Lua state; done() runs in another state and reads
    # them through the thread objects kept by setup().
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{text}]==]

local threads = {{}}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  responses = 0
  bad_status = 0
  graphql_errors = 0
  sampled = 0
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    bad_status = bad_status + 1
  elseif responses % {sample_every} == 1 or {sample_every} == 1 then
    sampled = sampled + 1
    if string.find(body, '{marker}', 1, true) then
      graphql_errors = graphql_errors + 1
    end
  end
end

function done(summary, latency, requests)
  local bad, gql, smp = 0, 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad_status")
    gql = gql + t:get("graphql_errors")
    smp = smp + t:get("sampled")
  end
  local e = summary.errors
  local errors = bad + gql + e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    '\\n{_RESULT_PREFIX}{{"requests": %d, "seconds": %.6f, "errors": %d, '
    .. '"p50_ms": %.3f, "p99_ms": %.3f, "sampled": %d}}\\n',
    summary.requests, summary.duration / 1e6, errors,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, smp))
end
"""
