"""``sesim replay``: re-run a recorded trace and say whether it comes out the same."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ._replay import explore, replay as replay_trace


@click.command("replay")
@click.argument("trace", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--until", type=int, default=None, help="Stop at this step and compare up to it.")
@click.option(
    "--explore",
    "explore_seeds",
    type=int,
    default=0,
    help="Replay the prefix (up to --until, or all), then explore N fresh seeds from there.",
)
@click.option("--context", type=int, default=3, show_default=True, help="Events shown before a difference.")
def replay(trace: Path, until: int | None, explore_seeds: int, context: int) -> None:
    """Re-run TRACE with its recorded configuration, seed and scheduling choices.

    Prints "identical", or the first event that differs with the events before
    it, and exits 1 in that case.
    """
    console = Console(highlight=False, soft_wrap=True)
    if explore_seeds:
        table = Table(title=f"exploring from step {until if until is not None else 'end'} of {trace}")
        for column in ("seed", "steps", "guests"):
            table.add_column(column)
        for seed, result in explore(trace, prefix=until, seeds=range(explore_seeds)):
            if isinstance(result, str):
                table.add_row(str(seed), "-", result)
            else:
                states = ", ".join(f"{vm.name}: {vm.state.value}" for vm in result.vms)
                table.add_row(str(seed), str(result.steps), states)
        console.print(table)
        return
    outcome = replay_trace(trace, until=until, context=context)
    if outcome.identical:
        console.print(f"identical: {outcome.events} events")
        return
    diff = outcome.difference
    if diff is None:
        console.print(f"diverged: {outcome.divergence}")
        raise SystemExit(1)
    where = f"event {diff.index + 1}" + (f" (step {diff.step})" if diff.step is not None else "")
    console.print(f"differs at {where}" + (f"; {outcome.divergence}" if outcome.divergence else ""))
    for line in diff.before:
        console.print("  " + line.decode(errors="replace"))
    console.print("- " + (diff.expected.decode(errors="replace") if diff.expected else "(recording ended)"))
    console.print("+ " + (diff.got.decode(errors="replace") if diff.got else "(replay ended)"))
    raise SystemExit(1)
