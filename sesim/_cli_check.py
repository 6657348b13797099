"""``sesim check``: the run's safety and liveness monitors, offline over a recorded trace."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from traces._monitors import Monitors
from traces._replay import read_recording


@click.command("check")
@click.argument("traces_", metavar="TRACE...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
def check(traces_: tuple[Path, ...]) -> None:
    """Run the monitors (no plaintext, nothing lost, one owner, progress, kernel) over recorded traces.

    The monitors are the ones that ran during the simulation; here they read
    the recorded events, so a trace from another version of sesim, or one
    edited by hand, is judged on what it says. Exits 1 if any violation is
    found. Violations the run itself recorded are listed too.
    """
    console = Console(highlight=False, soft_wrap=True)
    failed = False
    for path in traces_:
        recording = read_recording(path)
        monitors = Monitors()
        recorded = []
        events = []
        for line in recording.lines:
            event = orjson.loads(line)
            if event.get("kind") == "violation":
                recorded.append(event)
            else:
                events.append(event)
        found = monitors.observe_all(events)
        table = Table(title=f"{path}: {len(events)} events, {len(found)} violations")
        for column in ("monitor", "guest", "step", "detail"):
            table.add_column(column)
        for violation in found:
            table.add_row(violation.monitor, violation.guest, str(violation.step), violation.detail)
        if found:
            console.print(table)
            failed = True
        else:
            console.print(f"{path}: {len(events)} events, no violation")
        if recorded:
            console.print(f"  the run itself recorded {len(recorded)} violation(s), first: "
                          f"{recorded[0].get('monitor')}: {recorded[0].get('detail')}")
            failed = True
    if failed:
        raise SystemExit(1)
