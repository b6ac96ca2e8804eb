"""``python bench/run.py``: parse the options, run the scenarios, print and write the report."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.load import LoadError, choose_loadgen
from bench.machine import command_line, describe_machine
from bench.report import Failure, RunInfo, render_json, render_markdown
from bench.runner import Plan, ScenarioResult, plan_rounds, run_scenario
from bench.scenarios import build_scenarios
from bench.servers import ROOT, ServerStartError

__all__ = ["main"]

DEFAULT_DURATION = 10
MAX_DURATION = 60
DEFAULT_ROUNDS = 5
DEFAULT_WARMUP = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every scenario was measured without errors, else 1 (2: usage)."""
    # Nothing is written under the scratch path unless a chosen scenario prepares something.
    scenarios = build_scenarios(ROOT / "models", Path(tempfile.gettempdir()))
    args = _parser(list(scenarios)).parse_args(argv)
    if args.list:
        for scenario in scenarios.values():
            print(f"{scenario.name}: {scenario.description}")
        return 0
    with tempfile.TemporaryDirectory(prefix="gateway-bench-models-") as scratch:
        return _run(args, Path(scratch))


def _run(args: argparse.Namespace, scratch: Path) -> int:
    """Run the chosen scenarios; ``scratch`` holds generated model repositories."""
    scenarios = build_scenarios(args.models.resolve(), scratch)
    chosen = [scenarios[name] for name in dict.fromkeys(args.scenario or scenarios)]
    try:
        loadgen = choose_loadgen(args.loadgen)
    except LoadError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    server_core, load_core = _cores(pin=not args.no_pin)
    if load_core is not None:
        # The harness and its OTLP sink share the load generator's core, never the server's.
        os.sched_setaffinity(0, {load_core})
    rounds, round_seconds = plan_rounds(args.duration, args.rounds)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="gateway-bench-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        loadgen=loadgen,
        rounds=rounds,
        round_seconds=round_seconds,
        warmup_seconds=args.warmup,
        connections=args.connections,
        server_core=server_core,
        load_core=load_core,
        log_dir=log_dir,
    )
    per_server = args.warmup + rounds * round_seconds
    total = sum(len(s.targets) for s in chosen) * per_server
    _progress(f"measuring about {total} s with {loadgen}; server logs in {log_dir}")

    results: list[ScenarioResult] = []
    failures: list[Failure] = []
    for scenario in chosen:
        try:
            results.append(run_scenario(scenario, plan, progress=_progress))
        except (LoadError, ServerStartError, OSError) as exc:
            failures.append(Failure(scenario.name, str(exc)))
            _progress(f"{scenario.name}: FAILED: {exc}")
    info = RunInfo(command=command_line(), machine=describe_machine(), plan=plan)
    print(render_markdown(info, results, failures), end="", flush=True)
    if args.json is not None:
        document = render_json(info, results, failures)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    errors = sum(t.errors for r in results for t in r.targets)
    if failures or errors:
        _progress(f"server logs kept in {log_dir}")
        return 1
    if args.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return 0


def _parser(names: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Measure the gateway against baselines started in the same run "
        "(see bench/README.md).",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=names,
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--duration",
        type=_bounded_int(1, MAX_DURATION),
        default=DEFAULT_DURATION,
        help=f"measured seconds per server, split into the rounds (default {DEFAULT_DURATION}, "
        f"at most {MAX_DURATION})",
    )
    parser.add_argument(
        "--rounds",
        type=_bounded_int(1, 20),
        default=DEFAULT_ROUNDS,
        help=f"runs per server, in rotating order (default {DEFAULT_ROUNDS})",
    )
    parser.add_argument(
        "--warmup",
        type=_bounded_int(0, 10),
        default=DEFAULT_WARMUP,
        help=f"unrecorded seconds of load per server first (default {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--connections",
        type=_bounded_int(1, 1024),
        help="concurrent connections (default: each scenario's own)",
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk when on PATH, else the Python generator",
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    parser.add_argument(
        "--models", type=Path, default=ROOT / "models", help="model repository (default models/)"
    )
    parser.add_argument(
        "--log-dir", type=Path, help="keep server logs here (default: a temporary directory)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _cores(*, pin: bool) -> tuple[int | None, int | None]:
    """(server core, load core): the first two CPUs this process may use, if pinning is possible."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[1]


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
