"""Stress campaigns: many seeds, a verdict per seed, coverage, determinism rechecks.

A seed's run *fails* when a guest's data was corrupted, an actor crashed,
the run hung (step limit), a monitor raised a violation, or, in the liveness
phase after the faults healed, a guest did not finish its workload (it must
end halted, or refused or stopped for a stated reason that the run expects).

Every run's trace goes through a hashing sink, so ``--recheck`` can run a
share of the seeds twice and compare a rolling SHA-256 of the two traces: a
difference is a determinism failure of its own. A failing seed is run once
more to write its trace file (which also checks the hash again).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attrs import evolve, field, frozen

from actors import RandomStrategy, RunLimitReached
from actors._strategy import PctStrategy

from ._simulation import RunConfig, RunResult, run
from ._scenarios import scenario
from ._swarm import standard_config, swarm_config

DEFAULT_MAX_STEPS = 200_000
_CPU = re.compile(r"\.cpu\d+$")


@frozen(kw_only=True)
class CampaignOptions:
    """How a campaign runs its seeds (picklable: it travels to Dask workers)."""

    strategy: str = "random"
    depth: int = 3
    swarm: bool = False
    faults: bool = True
    max_steps: int = DEFAULT_MAX_STEPS
    bugs: tuple[str, ...] = ()
    scenario: str = ""  # a §8 scenario of sesim._scenarios instead of the standard configuration

    def config(self, seed: int) -> RunConfig:
        if self.scenario:
            config = scenario(self.scenario).build(seed)
            return evolve(config, strategy=self.strategy, pct_depth=self.depth)
        if self.swarm:
            return swarm_config(seed, strategy=self.strategy, depth=self.depth, faults=self.faults)
        return standard_config(strategy=self.strategy, depth=self.depth)

    def strategy_for(self, seed: int) -> Any:
        if self.strategy == "pct":
            return PctStrategy(seed, depth=self.depth)
        return RandomStrategy(seed)


@frozen(kw_only=True)
class SeedOutcome:
    """The verdict of one seed."""

    seed: int
    failures: tuple[str, ...]
    steps: int
    trace_hash: str
    coverage: frozenset[tuple[str, str, str]] = field(factory=frozenset)
    rcs: frozenset[tuple[str, int]] = field(factory=frozenset)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failure_class(self) -> str:
        """What kind of failure (for shrinking: a smaller run must fail the same way):
        ``violation: MONITOR``, ``corruption``, ``hang``, ``crash`` or ``liveness``."""
        if not self.failures:
            return ""
        parts = self.failures[0].split(":", 2)
        return f"{parts[0]}: {parts[1].strip()}" if parts[0] == "violation" and len(parts) > 2 else parts[0]


class HashSink:
    """A binary sink that keeps only a rolling SHA-256 of what is written."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._hash.update(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class TeeSink(HashSink):
    """Hash and also write to a file."""

    def __init__(self, file: Any) -> None:
        super().__init__()
        self._file = file

    def write(self, data: bytes) -> int:
        self._file.write(data)
        return super().write(data)


def actor_kind(name: str) -> str:
    """The kind of an actor from its name (``alpha.cpu1`` → ``vcpu``)."""
    if _CPU.search(name):
        return "vcpu"
    if name.endswith(".os"):
        return "guest"
    return {"uv": "ultravisor", "kvm": "hypervisor"}.get(name, name)


class CoverageCounter:
    """A trace processor collecting (actor kind, event kind, message type) triples and UVC rcs."""

    def __init__(self) -> None:
        self.triples: set[tuple[str, str, str]] = set()
        self.rcs: set[tuple[str, int]] = set()
        self.tampered: set[str] = set()  # guests a hostile host thread tampered with

    def __call__(self, logger: Any, method_name: str, event: dict[str, Any]) -> dict[str, Any]:
        kind = event.get("kind", "")
        if kind == "tamper":
            self.tampered.add(str(event.get("guest", "")))
        msg = event.get("msg")
        what = ""
        if msg is not None:
            what = type(msg).__name__
            request = getattr(msg, "request", None)
            if request is not None:
                what = f"Uvc:{type(request).__name__}"
            rc = getattr(msg, "rc", None)
            if kind == "reply" and rc is not None and what.endswith("Response"):
                cc = getattr(msg, "cc", 0)
                self.rcs.add((what[: -len("Response")], -2 if cc == 2 else int(rc)))
        elif kind == "frame":
            what = f"{event.get('from')}->{event.get('to')}"
        self.triples.add((actor_kind(event.get("actor", "")), str(kind), what))
        return event


def verdict(result: RunResult, tampered: Iterable[str] = ()) -> list[str]:
    """Why a finished run is a failure (empty: it passed).

    A guest a hostile host thread tampered with may stop: the UV refusing the
    tampered page is the right answer (the progress monitor still checks
    that the stop was for an integrity failure).
    """
    tampered = set(tampered)
    failures = []
    for violation in getattr(result, "violations", ()):
        failures.append(f"violation: {violation}")
    for vm in result.vms:
        guest = vm.guest
        if guest is not None and guest.corruptions:
            failures.append(f"corruption: {vm.name}: {guest.corruptions[0]}")
        state = vm.state.value
        if guest is not None and guest.state == "stopped" and vm.name in tampered and state == "halted":
            continue
        if guest is not None and guest.state in ("stopped", "corrupted") and state != "refused":
            state = f"{state}, its OS {guest.state}"
        elif state in ("halted", "refused"):
            continue
        reason = (guest.reason if guest is not None else "") or vm.reason
        failures.append(f"liveness: {vm.name} ended {state}" + (f" ({reason})" if reason else ""))
    return failures


def run_seed(
    seed: int, options: CampaignOptions, *, trace: Path | None = None, config: RunConfig | None = None,
    strategy: Any = None,
) -> SeedOutcome:
    """Run one seed and judge it. Never raises for a failing run: the failure is in the outcome."""
    config = config or options.config(seed)
    coverage = CoverageCounter()
    handle = open(trace, "wb", buffering=1 << 20) if trace is not None else None  # noqa: SIM115
    sink: HashSink = TeeSink(handle) if handle is not None else HashSink()
    failures: list[str] = []
    steps = 0
    try:
        result = run(
            config,
            seed=seed,
            trace=None,
            sink=sink,
            strategy=strategy if strategy is not None else options.strategy_for(seed),
            max_steps=options.max_steps,
            processors=(coverage,),
            **({"bugs": options.bugs} if options.bugs else {}),
        )
        steps = result.steps
        failures = verdict(result, coverage.tampered)
    except RunLimitReached as exc:
        failures = [f"hang: {exc}"]
        steps = options.max_steps
    except Exception as exc:  # an actor crashed: that is the finding
        failures = [f"crash: {type(exc).__name__}: {exc}"]
    finally:
        if handle is not None:
            handle.close()
    return SeedOutcome(
        seed=seed,
        failures=tuple(failures),
        steps=steps,
        trace_hash=sink.hexdigest(),
        coverage=frozenset(coverage.triples),
        rcs=frozenset(coverage.rcs),
    )


@frozen(kw_only=True)
class CampaignResult:
    outcomes: tuple[SeedOutcome, ...]
    nondeterministic: tuple[int, ...]

    @property
    def failing(self) -> list[SeedOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def coverage(self) -> Counter[tuple[str, str, str]]:
        counts: Counter[tuple[str, str, str]] = Counter()
        for outcome in self.outcomes:
            counts.update(outcome.coverage)
        return counts

    def rcs(self) -> Counter[tuple[str, int]]:
        counts: Counter[tuple[str, int]] = Counter()
        for outcome in self.outcomes:
            counts.update(outcome.rcs)
        return counts


def recheck_seeds(seeds: Iterable[int], fraction: float) -> list[int]:
    """Which seeds run twice: an evenly spread share ``fraction`` of them (deterministic)."""
    seeds = list(seeds)
    if fraction <= 0 or not seeds:
        return []
    every = max(1, round(1 / min(fraction, 1.0)))
    return seeds[::every]


def run_serial(
    seeds: Iterable[int], options: CampaignOptions, progress: Callable[[SeedOutcome], None] | None = None
) -> list[SeedOutcome]:
    outcomes = []
    for seed in seeds:
        outcome = run_seed(seed, options)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes


def run_distributed(
    seeds: list[int],
    options: CampaignOptions,
    *,
    workers: int,
    scheduler: str | None,
    progress: Callable[[SeedOutcome], None] | None = None,
    chunk: int = 8,
) -> list[SeedOutcome]:
    """Run the seeds on a Dask cluster: a LocalCluster of ``workers`` processes, or ``scheduler``."""
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # A random dashboard port: two campaigns on one machine must not fight over 8787.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    try:
        batches = [seeds[i : i + chunk] for i in range(0, len(seeds), chunk)]
        futures = [client.submit(_run_batch, batch, options, pure=False) for batch in batches]
        by_seed: dict[int, SeedOutcome] = {}
        for future in as_completed(futures):
            for outcome in future.result():
                by_seed[outcome.seed] = outcome
                if progress is not None:
                    progress(outcome)
        return [by_seed[seed] for seed in seeds]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_batch(seeds: list[int], options: CampaignOptions) -> list[SeedOutcome]:
    return [run_seed(seed, options) for seed in seeds]
