"""Run one scenario: start its servers, check them, then measure them in alternating rounds.

Method (these machines are shared and noisy, so only ratios measured together count):

1. Pinning. Every server runs on one core (``taskset -c``, the first core this process may
   use) and the load generator and the harness itself (with its OTLP sink) on another, so
   that the client never steals the server's CPU. With fewer than two cores, or no
   ``taskset``, nothing is pinned and the report says so.
2. All servers of a scenario are started together and stay up for the whole scenario, idle
   while another is measured; each must answer ``/readyz``, then a few correct responses
   (``verify``), before any load; then each gets an unrecorded warm-up run.
3. Rounds. A server's measured time (``duration``) is split into ``rounds`` runs of
   ``duration // rounds`` whole seconds. Round ``k`` runs the servers in the scenario's order
   rotated by ``k`` (for two servers: A B, B A, A B, ...), so that slow drift of the machine
   (another tenant, thermal limits) hits every server alike instead of whichever ran last.
4. Figures. A server's req/s, p50 and p99 are the medians of its runs; errors are summed.
   Its ratio is the median, over rounds, of its req/s divided by the baseline's req/s in the
   same round: pairing runs that were close in time cancels drift that a ratio of medians
   would keep. The baseline's ratio is 1 by definition. A goal's value is computed the same
   way: per round from the two servers' runs of that round (req/s ratio, p99 ratio or p50
   difference), then the median over rounds.
5. Reference figures measured in the harness process (a scenario's ``probe``, e.g. the p50 of
   ``session.run`` called directly) are taken after the warm-up, while every server is idle,
   with the harness thread moved to the servers' core for the duration.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench.inprocess import ProbeResult
from bench.load import Loadgen, LoadRequest, LoadResult, run_load, verify
from bench.scenarios import Goal, Scenario, Target
from bench.servers import Server, running_server
from bench.sink import SinkCounts, running_sink

__all__ = [
    "GoalResult",
    "Plan",
    "ScenarioResult",
    "TargetResult",
    "evaluate_goal",
    "paired_value",
    "plan_rounds",
    "rotation",
    "run_scenario",
]


@dataclass(frozen=True)
class Plan:
    """How every scenario of a run is measured."""

    loadgen: Loadgen
    rounds: int
    round_seconds: int
    warmup_seconds: int
    connections: int | None
    """Overrides every scenario's own connection count when set."""
    server_core: int | None
    load_core: int | None
    log_dir: Path


@dataclass
class TargetResult:
    """One server's runs in a scenario, and the figures drawn from them."""

    target: Target
    runs: list[LoadResult] = field(default_factory=list)
    round_ratios: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        """Median requests per second over the runs."""
        return _median([r.rps for r in self.runs])

    @property
    def p50_ms(self) -> float:
        """Median of the runs' median latencies."""
        return _median([r.p50_ms for r in self.runs])

    @property
    def p99_ms(self) -> float:
        """Median of the runs' 99th percentile latencies."""
        return _median([r.p99_ms for r in self.runs])

    @property
    def errors(self) -> int:
        """Errors over all runs."""
        return sum(r.errors for r in self.runs)

    @property
    def ratio(self) -> float:
        """Median over rounds of req/s relative to the baseline's in the same round."""
        return _median(self.round_ratios)


@dataclass(frozen=True)
class GoalResult:
    """A goal and what was measured for it."""

    goal: Goal
    value: float
    """The median over rounds of ``per_round``."""
    per_round: list[float]

    @property
    def met(self) -> bool:
        """Whether ``value`` is on the right side of the goal's bound."""
        if not self.per_round:
            return False
        return (
            self.value >= self.goal.bound if self.goal.at_least else self.value <= self.goal.bound
        )


@dataclass
class ScenarioResult:
    """A measured scenario."""

    scenario: Scenario
    connections: int
    targets: list[TargetResult]
    order: list[list[str]]
    sink: dict[str, SinkCounts] | None
    probe: ProbeResult | None = None

    def result(self, name: str) -> TargetResult:
        """The result of the target called ``name``."""
        return next(t for t in self.targets if t.target.name == name)

    @property
    def goals(self) -> list[GoalResult]:
        """Every goal of the scenario, evaluated on the runs."""
        return [
            evaluate_goal(
                goal,
                self.result(goal.target).runs,
                self.result(goal.reference or self.scenario.baseline).runs,
            )
            for goal in self.scenario.goals
        ]

    @property
    def goals_met(self) -> bool | None:
        """Whether every goal was met; None without goals."""
        goals = self.goals
        return all(g.met for g in goals) if goals else None


def paired_value(goal: Goal, run: LoadResult, reference: LoadResult) -> float:
    """The goal's figure for one round: ``run`` against ``reference``'s run of the same round."""
    if goal.metric == "rps_ratio":
        return run.rps / reference.rps if reference.rps > 0 else 0.0
    if goal.metric == "p99_ratio":
        return run.p99_ms / reference.p99_ms if reference.p99_ms > 0 else float("inf")
    return run.p50_ms - reference.p50_ms


def evaluate_goal(
    goal: Goal, runs: Sequence[LoadResult], reference_runs: Sequence[LoadResult]
) -> GoalResult:
    """``goal`` over rounds: run ``k`` of the target is paired with run ``k`` of the reference."""
    per_round = [paired_value(goal, a, b) for a, b in zip(runs, reference_runs, strict=False)]
    return GoalResult(goal, _median(per_round), per_round)


def plan_rounds(duration: int, rounds: int) -> tuple[int, int]:
    """(rounds, seconds per run) that fit ``duration`` seconds per server, each run >= 1 s."""
    rounds = max(1, min(rounds, duration))
    return rounds, max(1, duration // rounds)


def rotation(items: Sequence[str], k: int) -> list[str]:
    """``items`` rotated left by ``k``: the order of round ``k``."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def run_scenario(
    scenario: Scenario, plan: Plan, *, progress: Callable[[str], None]
) -> ScenarioResult:
    """Start ``scenario``'s servers, verify, warm up and measure them; always stop them."""
    connections = plan.connections or scenario.connections
    results = {t.name: TargetResult(t) for t in scenario.targets}
    order: list[list[str]] = []
    probe: ProbeResult | None = None
    if scenario.prepare is not None:
        progress(f"{scenario.name}: preparing")
        scenario.prepare()
    with contextlib.ExitStack() as outer:
        sink = outer.enter_context(running_sink()) if scenario.uses_sink else None
        with contextlib.ExitStack() as stack:
            requests: dict[str, LoadRequest] = {}
            for target in scenario.targets:
                progress(f"{scenario.name}: starting {target.name}")
                extra = (
                    {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint} if sink and target.otlp else {}
                )
                log = plan.log_dir / f"{scenario.name}-{_slug(target.name)}.log"
                server: Server = stack.enter_context(
                    running_server(target.server, log=log, core=plan.server_core, extra_env=extra)
                )
                requests[target.name] = LoadRequest(server.url + target.path, target.body)
            for target in scenario.targets:
                if target.prime is not None:
                    verify(
                        LoadRequest(requests[target.name].url, target.prime), target.check, count=1
                    )
                verify(requests[target.name], target.check)
            during = {t.name: t.during or contextlib.nullcontext for t in scenario.targets}
            if plan.warmup_seconds > 0:
                for target in scenario.targets:
                    progress(f"{scenario.name}: warming up {target.name}")
                    with during[target.name]():
                        _measure(requests[target.name], plan, connections, plan.warmup_seconds)
            if scenario.probe is not None:
                progress(f"{scenario.name}: measuring in-process reference")
                with _on_core(plan.server_core):
                    probe = replace(scenario.probe(), core=plan.server_core)
            names = [t.name for t in scenario.targets]
            for k in range(plan.rounds):
                order.append(rotation(names, k))
                for name in order[-1]:
                    progress(f"{scenario.name}: round {k + 1}/{plan.rounds}: {name}")
                    with during[name]():
                        run = _measure(requests[name], plan, connections, plan.round_seconds)
                    results[name].runs.append(run)
                baseline = results[scenario.baseline].runs[-1].rps
                for result in results.values():
                    rps = result.runs[-1].rps
                    result.round_ratios.append(rps / baseline if baseline > 0 else 0.0)
        # The servers have stopped, so spans still queued at the end have been flushed.
        counts = sink.snapshot() if sink is not None else None
    return ScenarioResult(scenario, connections, list(results.values()), order, counts, probe)


@contextlib.contextmanager
def _on_core(core: int | None) -> Iterator[None]:
    """Run the calling thread on ``core`` for the block (no change when None)."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _measure(request: LoadRequest, plan: Plan, connections: int, seconds: int) -> LoadResult:
    return run_load(
        request,
        loadgen=plan.loadgen,
        connections=connections,
        seconds=seconds,
        core=plan.load_core,
    )


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
