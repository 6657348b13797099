"""``sesim demo``: the main job, run end to end."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ._simulation import RunResult, demo_config, run


def summary_table(result: RunResult) -> Table:
    """Per guest: pages unpacked, UVCs by command and rc, exceptions, intercepts, final state."""
    table = Table(title="sesim demo: one server, four guests", show_lines=True)
    table.add_column("guest")
    table.add_column("kind")
    table.add_column("unpacked", justify="right")
    table.add_column("UVCs (command rc: count)")
    table.add_column("exceptions")
    table.add_column("intercepts")
    table.add_column("final state")
    for vm in result.vms:
        uvcs = "\n".join(
            f"{cmd} {rc:#06x}: {n}" if rc >= 0 else f"{cmd} busy: {n}"
            for (cmd, rc), n in sorted(vm.stats.uvcs.items(), key=lambda kv: (kv[0][0], kv[0][1]))
        )
        exceptions = ", ".join(f"PGM {code}: {n}" for code, n in sorted(vm.stats.exceptions.items())) or "-"
        intercepts = ", ".join(f"{k}: {n}" for k, n in sorted(vm.stats.intercepts.items())) or "-"
        guest = vm.guest
        state = vm.state.value
        detail = vm.reason if vm.reason and vm.reason != "halt" else ""
        if guest is not None and guest.corruptions:
            detail = f"CORRUPTED: {guest.corruptions[0]}"
        table.add_row(
            vm.name,
            "secure" if vm.secure else "regular",
            str(vm.stats.pages_unpacked),
            uvcs or "-",
            exceptions,
            intercepts,
            f"{state}\n{detail}".strip(),
        )
    return table


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run (same seed, same trace).")
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("sesim-demo.jsonl"),
    show_default=True,
    help="Where to write the trace (JSON Lines).",
)
def demo(seed: int, trace_path: Path) -> None:
    """Run the demonstration: one server, three secure guests and one regular guest.

    Two secure guests boot images built for this server; the third image was
    built for another server and is refused at SET_SEC_CONF_PARAMS (rc
    0x0108). Each guest has two vCPUs and runs a workload that writes,
    reads back and checks its memory, shares a bounce-buffer page and
    triggers intercepts. The trace of every step is written to --trace.
    """
    result = run(demo_config(), seed=seed, trace=trace_path)
    console = Console()
    console.print(summary_table(result))
    console.print(
        f"{result.steps} steps, {result.virtual_ns / 1000:.1f} µs of virtual time, "
        f"{result.uv_calls} UVCs ({result.uv_busy} busy)"
    )
    console.print(f"trace: {trace_path}")
