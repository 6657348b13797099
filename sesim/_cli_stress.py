"""``sesim stress``: a campaign over many seeds, with shrinking of every failure."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from actors._bugs import BUG_NAMES

from ._campaign import CampaignOptions, CampaignResult, SeedOutcome, recheck_seeds, run_distributed, run_seed, run_serial
from ._scenarios import SCENARIO_NAMES
from ._shrink import shrink, write_shrunk_trace


def parse_seeds(text: str) -> range:
    """``A..B`` (inclusive) or a single number."""
    try:
        if ".." in text:
            first, last = (int(part) for part in text.split("..", 1))
        else:
            first = last = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use A..B (inclusive) or a single seed") from None
    if first < 0 or last < first:
        raise click.BadParameter(f"{text!r}: need 0 <= A <= B")
    return range(first, last + 1)


def _reproduce(seed: int, options: CampaignOptions) -> str:
    words = ["sesim", "stress", "--seeds", f"{seed}..{seed}", "--strategy", options.strategy, "--workers", "1"]
    if options.strategy == "pct":
        words += ["--depth", str(options.depth)]
    if options.swarm:
        words.append("--swarm")
    if options.scenario:
        words += ["--scenario", options.scenario]
    if not options.faults:
        words.append("--no-faults")
    for bug in options.bugs:
        words += ["--inject-bug", bug]
    return shlex.join(words)


@click.command("stress")
@click.option("--seeds", "seed_text", default="0..99", show_default=True, help="Seeds to run: A..B inclusive.")
@click.option("--strategy", type=click.Choice(["random", "pct"]), default="random", show_default=True)
@click.option("--depth", type=int, default=3, show_default=True, help="PCT bug depth (with --strategy pct).")
@click.option("--swarm/--no-swarm", default=False, help="Each seed also picks topology, workloads and faults.")
@click.option("--scenario", type=click.Choice(SCENARIO_NAMES), default=None,
              help="Run a race scenario of uv-semantics.md §8 instead (its configuration varies with the seed).")
@click.option("--faults/--no-faults", default=True, show_default=True, help="Fault sites in the safety phase.")
@click.option("--workers", type=int, default=os.cpu_count() or 1, show_default=True,
              help="Processes of a Dask LocalCluster (1: run in this process).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler to run on instead.")
@click.option("--recheck", type=float, default=0.0, show_default=True,
              help="Share of seeds run twice to compare their trace hashes (determinism self-check).")
@click.option("--inject-bug", "bugs", multiple=True, type=click.Choice(BUG_NAMES),
              help="Turn on a historical kernel bug in the hypervisor (repeatable).")
@click.option("--max-steps", type=int, default=200_000, show_default=True, help="Steps before a run counts as hung.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("stress-out"),
              show_default=True, help="Where failing seeds leave their traces, and the coverage file.")
@click.option("--shrink-seconds", type=float, default=30.0, show_default=True, help="Time budget per shrink.")
@click.option("--max-failures", type=int, default=5, show_default=True, help="Failing seeds to record and shrink.")
def stress(seed_text: str, strategy: str, depth: int, swarm: bool, scenario: str | None, faults: bool, workers: int,
           scheduler: str | None, recheck: float, bugs: tuple[str, ...], max_steps: int, out_dir: Path,
           shrink_seconds: float, max_failures: int) -> None:
    """Run a stress campaign over SEEDS and report every failing seed.

    A run fails on a monitor violation, corrupted guest data, a crash, a hang
    (--max-steps) or, after the faults healed, a guest that did not finish.
    Each failing seed leaves its trace, a shrunk trace and the command that
    reproduces it in --out; coverage (actor kind, event, message) triples and
    UVC rcs reached are printed and saved there as coverage.json.
    """
    seeds = parse_seeds(seed_text)
    if swarm and scenario:
        raise click.UsageError("--swarm and --scenario exclude each other")
    if scenario and not faults:
        raise click.UsageError("--no-faults has no effect with --scenario (a scenario's fault sites are part of it)")
    options = CampaignOptions(strategy=strategy, depth=depth, swarm=swarm, faults=faults, max_steps=max_steps,
                              bugs=bugs, scenario=scenario or "")
    console = Console(highlight=False)
    failures = 0
    started = time.perf_counter()
    columns = (TextColumn("[bold]stress"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TextColumn("[red]{task.fields[failed]} failed"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("seeds", total=len(seeds), failed=0, rate="")

        def advance(outcome: SeedOutcome) -> None:
            nonlocal failures
            failures += not outcome.ok
            done = progress.tasks[0].completed + 1
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, failed=failures, rate=f"{rate:.1f} seeds/s")

        if workers > 1 or scheduler:
            outcomes = run_distributed(list(seeds), options, workers=workers, scheduler=scheduler, progress=advance)
        else:
            outcomes = run_serial(seeds, options, progress=advance)
        again = recheck_seeds(seeds, recheck)
        by_seed = {o.seed: o for o in outcomes}
        nondeterministic = []
        for seed in again:
            if run_seed(seed, options).trace_hash != by_seed[seed].trace_hash:
                nondeterministic.append(seed)
    elapsed = time.perf_counter() - started
    result = CampaignResult(outcomes=tuple(outcomes), nondeterministic=tuple(nondeterministic))
    out_dir.mkdir(parents=True, exist_ok=True)
    _report(console, result, options, out_dir, elapsed, len(again), shrink_seconds, max_failures)
    if result.failing or result.nondeterministic:
        raise SystemExit(1)


def _report(console: Console, result: CampaignResult, options: CampaignOptions, out_dir: Path, elapsed: float,
            rechecked: int, shrink_seconds: float, max_failures: int) -> None:
    failing = result.failing
    summary = Table(title="stress campaign")
    summary.add_column("")
    summary.add_column("", justify="right")
    summary.add_row("seeds", str(len(result.outcomes)))
    summary.add_row("failing seeds", str(len(failing)))
    summary.add_row("seeds rechecked / nondeterministic", f"{rechecked} / {len(result.nondeterministic)}")
    summary.add_row("seeds per second", f"{len(result.outcomes) / max(elapsed, 1e-9):.1f}")
    summary.add_row("steps (total)", f"{sum(o.steps for o in result.outcomes):,}")
    coverage, rcs = result.coverage(), result.rcs()
    summary.add_row("coverage triples / UVC rc values", f"{len(coverage)} / {len(rcs)}")
    console.print(summary)
    coverage_file = out_dir / "coverage.json"
    coverage_file.write_text(json.dumps({
        "triples": [{"actor": a, "event": e, "message": m, "seeds": n} for (a, e, m), n in sorted(coverage.items())],
        "uvc_rcs": [{"command": c, "rc": rc, "seeds": n} for (c, rc), n in sorted(rcs.items())],
    }, indent=1))
    console.print(f"coverage: {coverage_file}")
    if result.nondeterministic:
        console.print(f"[red]nondeterministic seeds (trace hash differs between two runs): {list(result.nondeterministic)}")
    for outcome in failing[:max_failures]:
        seed = outcome.seed
        trace = out_dir / f"seed-{seed}.jsonl"
        run_seed(seed, options, trace=trace)
        shrunk = shrink(seed, options, outcome, seconds=shrink_seconds)
        shrunk_path = out_dir / f"seed-{seed}.shrunk.jsonl"
        final = write_shrunk_trace(seed, options, shrunk, shrunk_path)
        events = sum(1 for _ in shrunk_path.open("rb")) - 1
        console.print(f"[red]seed {seed}[/red]: {outcome.failures[0]}")
        console.print(f"  trace: {trace} ({outcome.steps} steps)")
        console.print(
            f"  shrunk: {shrunk_path} ({events} events, {final.steps} steps, {len(shrunk.config.guests)} of "
            f"{shrunk.guests_before} guests, {sum(len(g.workload) for g in shrunk.config.guests)} of "
            f"{shrunk.ops_before} workload steps, {len(shrunk.picks)} schedule deviations; {shrunk.runs} runs)"
            + ("" if final.failure_class == outcome.failure_class else " [yellow](the shrunk run no longer fails)")
        )
        console.print(f"  reproduce: {_reproduce(seed, options)}   or: sesim replay {trace}")
    if len(failing) > max_failures:
        console.print(f"... and {len(failing) - max_failures} more failing seeds: "
                      f"{[o.seed for o in failing[max_failures:max_failures + 20]]}")
    if not failing and not result.nondeterministic:
        console.print("[green]no failures")
