"""Shrinking a failing run to a small one that fails the same way.

Two passes, both greedy delta debugging (Zeller's ddmin, in the simple
"remove a chunk, keep the removal if it still fails" form), bounded by a
number of runs and a wall-clock budget:

1. the configuration: fewer guests, fewer workload steps, fewer vCPUs, fewer
   active fault sites, each run with the failing seed's strategy;
2. the schedule: with the smaller configuration, the fewest deviations from
   the default schedule (always the first ready actor, every data choice 0)
   that still fail; :class:`actors._strategy.GuidedStrategy` runs them.

A candidate is kept only if it fails with the same failure class (the same
monitor, corruption, hang, crash or liveness kind) as the original.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import attrs
from attrs import frozen

from actors._faults import FaultPlan
from actors._strategy import GuidedStrategy

from ._campaign import CampaignOptions, SeedOutcome, run_seed
from ._simulation import GuestConfig, RunConfig

T = TypeVar("T")


@frozen(kw_only=True)
class ShrinkResult:
    config: RunConfig
    picks: dict[int, str]
    choices: dict[int, tuple[int, ...]]
    outcome: SeedOutcome
    runs: int
    guests_before: int
    steps_before: int
    ops_before: int


class _Budget:
    def __init__(self, runs: int, seconds: float) -> None:
        self.runs_left = runs
        self.deadline = time.monotonic() + seconds
        self.used = 0

    def take(self) -> bool:
        if self.runs_left <= 0 or time.monotonic() > self.deadline:
            return False
        self.runs_left -= 1
        self.used += 1
        return True


def _ddmin(items: Sequence[T], fails: Callable[[list[T]], bool], budget: _Budget) -> list[T]:
    """The smallest sub-list (greedy) for which ``fails`` still holds."""
    current = list(items)
    chunk = max(1, len(current) // 2)
    while chunk >= 1 and current:
        i = 0
        removed_any = False
        while i < len(current):
            candidate = current[:i] + current[i + chunk :]
            if not budget.take():
                return current
            if fails(candidate):
                current = candidate
                removed_any = True
            else:
                i += chunk
        if not removed_any:
            chunk //= 2
    return current


def shrink(seed: int, options: CampaignOptions, original: SeedOutcome, *, runs: int = 150, seconds: float = 30.0,
           config: RunConfig | None = None) -> ShrinkResult:
    """Shrink the failing ``seed`` of a campaign with ``options``."""
    target = original.failure_class
    budget = _Budget(runs, seconds)
    config = config or options.config(seed)
    ops_before = sum(len(g.workload) for g in config.guests)

    best = original.steps or options.max_steps

    def fails_config(candidate: RunConfig) -> bool:
        # Smaller only: a candidate must fail the same way in no more steps (a shorter
        # workload can make a run longer, e.g. when its guest then thrashes).
        nonlocal best
        outcome = run_seed(seed, options, config=candidate)
        if outcome.failure_class != target or outcome.steps > best:
            return False
        best = outcome.steps
        return True

    def with_guests(gs: list[GuestConfig]) -> RunConfig:
        names = {g.name for g in gs}  # a host thread goes with its guest
        threads = tuple(t for t in config.host_threads if t.guest in names)
        return attrs.evolve(config, guests=tuple(gs), host_threads=threads)

    # 1. guests, then host threads
    guests = _ddmin(list(config.guests), lambda gs: bool(gs) and fails_config(with_guests(gs)), budget)
    config = with_guests(guests)
    threads = _ddmin(
        list(config.host_threads), lambda ts: fails_config(attrs.evolve(config, host_threads=tuple(ts))), budget
    )
    config = attrs.evolve(config, host_threads=tuple(threads))
    # 2. workload steps, guest by guest
    for index in range(len(config.guests)):
        def with_ops(ops: list[str], index: int = index) -> RunConfig:
            gs = list(config.guests)
            gs[index] = attrs.evolve(gs[index], workload=tuple(ops))
            return attrs.evolve(config, guests=tuple(gs))

        ops = _ddmin(list(config.guests[index].workload), lambda o: fails_config(with_ops(o)), budget)
        config = with_ops(ops)
    # 3. vCPUs and fault sites
    for index, guest in enumerate(config.guests):
        if guest.cpus > 1 and budget.take():
            gs = list(config.guests)
            gs[index] = attrs.evolve(guest, cpus=1)
            candidate = attrs.evolve(config, guests=tuple(gs))
            if fails_config(candidate):
                config = candidate
    for site in ("uv_busy", "import_busy", "uv_partial", "fail_uvcs", "sie_exit_delay", "io_error", "reclaim_storm"):
        if getattr(config.faults, site) and budget.take():
            candidate = attrs.evolve(config, faults=attrs.evolve(config.faults, **{site: type(getattr(config.faults, site))()}))
            if fails_config(candidate):
                config = candidate
    # 4. the schedule: record the failing run's deviations, then drop as many as possible.
    recorder = GuidedStrategy({}, inner=options.strategy_for(seed))
    outcome = run_seed(seed, options, config=config, strategy=recorder)
    deviations = sorted(recorder.deviations.items())
    data = {step: tuple(values) for step, values in recorder.data.items()}

    best = min(best, outcome.steps) if outcome.failure_class == target else best

    def fails_schedule(kept: list[tuple[int, str]]) -> bool:
        # As above: fewer deviations only if the run stays as short (the default schedule,
        # first ready actor, can starve one actor and run far longer before it fails).
        nonlocal best
        found = run_seed(seed, options, config=config, strategy=GuidedStrategy(dict(kept), data))
        if found.failure_class != target or found.steps > best:
            return False
        best = found.steps
        return True

    kept = deviations
    if outcome.failure_class == target and budget.take():
        kept = [] if fails_schedule([]) else _ddmin(deviations, fails_schedule, budget)
    final = run_seed(seed, options, config=config, strategy=GuidedStrategy(dict(kept), data))
    return ShrinkResult(
        config=config,
        picks=dict(kept),
        choices=data,
        outcome=final if final.failure_class == target else outcome,
        runs=budget.used,
        guests_before=len(options.config(seed).guests),
        steps_before=original.steps,
        ops_before=ops_before,
    )


def write_shrunk_trace(seed: int, options: CampaignOptions, shrunk: ShrinkResult, path: Path) -> SeedOutcome:
    """Write the shrunk run's trace (it replays with ``sesim replay``)."""
    strategy = GuidedStrategy(shrunk.picks, shrunk.choices)
    return run_seed(seed, options, config=shrunk.config, strategy=strategy, trace=path)


__all__ = ["FaultPlan", "ShrinkResult", "shrink", "write_shrunk_trace"]
