"""The report: a markdown table for people (stdout) and a JSON document for machines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.inprocess import ProbeResult
from bench.runner import GoalResult, Plan, ScenarioResult, TargetResult

__all__ = ["Failure", "RunInfo", "render_json", "render_markdown"]

_COLUMNS = (
    "scenario",
    "server",
    "connections",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "ratio",
)
_GOAL_COLUMNS = ("scenario", "goal", "measured", "per round", "status")


@dataclass(frozen=True)
class RunInfo:
    """Where and how the run was made."""

    command: str
    machine: Mapping[str, str]
    plan: Plan


@dataclass(frozen=True)
class Failure:
    """A scenario that could not be measured, and why."""

    scenario: str
    error: str


def render_markdown(
    info: RunInfo, results: Sequence[ScenarioResult], failures: Sequence[Failure] = ()
) -> str:
    """The header (command, machine, method), the table, then notes per scenario."""
    plan = info.plan
    machine = info.machine
    lines = [
        "# Gateway benchmark",
        "",
        f"- command: `{info.command}`",
        f"- machine: {machine.get('nproc')} CPUs, {machine.get('cpu')}, "
        f"Linux {machine.get('kernel')}",
        "- software: "
        + ", ".join(f"{k} {v}" for k, v in machine.items() if k not in {"nproc", "cpu", "kernel"}),
        f"- method: load generator {plan.loadgen}; {_pinning(plan)}; "
        f"{plan.rounds} round(s) of {plan.round_seconds} s per server in rotating order "
        f"after a {plan.warmup_seconds} s warm-up; figures are medians over rounds; ratio = "
        "median over rounds of req/s / the baseline's req/s in the same round",
        "",
    ]
    if results:
        lines.append("| " + " | ".join(_COLUMNS) + " |")
        lines.append(
            "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(_COLUMNS))) + " |"
        )
        for result in results:
            for target in result.targets:
                lines.append("| " + " | ".join(_row(result, target)) + " |")
            if result.probe is not None:
                lines.append("| " + " | ".join(_probe_row(result, result.probe)) + " |")
        lines.append("")
    goals = [(r, g) for r in results for g in r.goals]
    if goals:
        lines.append("| " + " | ".join(_GOAL_COLUMNS) + " |")
        lines.append("| --- | --- | ---: | --- | --- |")
        for result, goal in goals:
            lines.append("| " + " | ".join(_goal_row(result, goal)) + " |")
        lines.append("")
    for result in results:
        lines.extend(_notes(result))
    for failure in failures:
        # The first line names the server and its log; the JSON output has the whole message.
        first = failure.error.splitlines()[0] if failure.error else "unknown error"
        lines.append(f"- **{failure.scenario}: not measured**: {first}")
    return "\n".join(lines) + "\n"


def render_json(
    info: RunInfo, results: Sequence[ScenarioResult], failures: Sequence[Failure] = ()
) -> dict[str, Any]:
    """Everything in the markdown report, and every run, as plain JSON values."""
    plan = info.plan
    return {
        "command": info.command,
        "machine": dict(info.machine),
        "plan": {
            "loadgen": plan.loadgen,
            "rounds": plan.rounds,
            "round_seconds": plan.round_seconds,
            "warmup_seconds": plan.warmup_seconds,
            "connections": plan.connections,
            "server_core": plan.server_core,
            "load_core": plan.load_core,
        },
        "scenarios": [_scenario_json(r) for r in results],
        "failures": [{"scenario": f.scenario, "error": f.error} for f in failures],
    }


def _scenario_json(result: ScenarioResult) -> dict[str, Any]:
    scenario = result.scenario
    return {
        "name": scenario.name,
        "description": scenario.description,
        "baseline": scenario.baseline,
        "goals": [_goal_json(result, g) for g in result.goals],
        "goal_met": result.goals_met,
        "connections": result.connections,
        "rows_per_request": scenario.rows_per_request,
        "order": result.order,
        "otlp_sink": (
            {path: {"requests": c.requests, "bytes": c.bytes} for path, c in result.sink.items()}
            if result.sink is not None
            else None
        ),
        "in_process": result.probe.to_json() if result.probe is not None else None,
        "results": [
            {
                "server": t.target.name,
                "kind": t.target.server.kind,
                "env": dict(t.target.server.env),
                "connections": result.connections,
                "rps": round(t.rps, 2),
                "rows_per_s": round(t.rps * scenario.rows_per_request, 2),
                "p50_ms": round(t.p50_ms, 3),
                "p99_ms": round(t.p99_ms, 3),
                "errors": t.errors,
                "ratio": round(t.ratio, 4),
                "round_ratios": [round(r, 4) for r in t.round_ratios],
                "runs": [run.to_json() for run in t.runs],
            }
            for t in result.targets
        ],
    }


def _row(result: ScenarioResult, target: TargetResult) -> list[str]:
    is_baseline = target.target.name == result.scenario.baseline
    return [
        result.scenario.name,
        target.target.name,
        str(result.connections),
        f"{target.rps:.0f}",
        f"{target.rps * result.scenario.rows_per_request:.0f}",
        _ms(target.p50_ms),
        _ms(target.p99_ms),
        str(target.errors),
        "1.00 (baseline)" if is_baseline else f"{target.ratio:.2f}",
    ]


def _probe_row(result: ScenarioResult, probe: ProbeResult) -> list[str]:
    where = f"CPU {probe.core}" if probe.core is not None else "unpinned"
    return [
        result.scenario.name,
        f"{probe.name} (reference; {probe.calls} calls, {where})",
        "-",
        "-",
        "-",
        _ms(probe.p50_ms),
        _ms(probe.p99_ms),
        "-",
        "-",
    ]


def _goal_row(result: ScenarioResult, goal: GoalResult) -> list[str]:
    return [
        result.scenario.name,
        goal.goal.describe(result.scenario.baseline),
        _goal_value(goal.goal.metric, goal.value),
        ", ".join(_goal_value(goal.goal.metric, v) for v in goal.per_round),
        "met" if goal.met else "**NOT met**",
    ]


def _goal_value(metric: str, value: float) -> str:
    return f"{value:+.3f} ms" if metric == "p50_diff_ms" else f"{value:.2f}"


def _goal_json(result: ScenarioResult, goal: GoalResult) -> dict[str, Any]:
    return {
        "target": goal.goal.target,
        "reference": goal.goal.reference or result.scenario.baseline,
        "metric": goal.goal.metric,
        "bound": goal.goal.bound,
        "at_least": goal.goal.at_least,
        "description": goal.goal.describe(result.scenario.baseline),
        "value": round(goal.value, 4),
        "per_round": [round(v, 4) for v in goal.per_round],
        "met": goal.met,
    }


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _notes(result: ScenarioResult) -> list[str]:
    scenario = result.scenario
    notes = [f"- **{scenario.name}**: {scenario.description}; baseline: {scenario.baseline}."]
    met = result.goals_met
    if met is not None:
        notes.append(f"  goals: {'all met' if met else 'NOT all met'} (see the goals table).")
    for target in result.targets:
        runs = ", ".join(f"{r.rps:.0f}" for r in target.runs)
        ratios = ", ".join(f"{r:.2f}" for r in target.round_ratios)
        notes.append(f"  {target.target.name}: req/s per round {runs}; ratio per round {ratios}.")
    if result.sink is not None:
        parts = [f"{p}: {c.requests} requests, {c.bytes} bytes" for p, c in result.sink.items()]
        notes.append("  OTLP sink received " + ("; ".join(parts) if parts else "nothing") + ".")
    return notes


def _pinning(plan: Plan) -> str:
    if plan.server_core is None:
        return "NOT pinned (needs 2 cores and taskset)"
    return f"servers pinned to CPU {plan.server_core}, load generator to CPU {plan.load_core}"
