"""``sesim demo``: the main job, run end to end."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ._cli_memory import inject_bug_option, print_memory
from ._simulation import RunResult, demo_config, run


def guest_table(result: RunResult, title: str) -> Table:
    """Per guest: pages unpacked, UVCs, exceptions, intercepts, final state."""
    table = Table(title=title)
    for column, justify in (
        ("guest", "left"),
        ("kind", "left"),
        ("unpacked", "right"),
        ("UVCs", "right"),
        ("failed", "right"),
        ("exceptions", "left"),
        ("intercepts", "left"),
        ("reboot, dump, teardown", "left"),
        ("final state", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for vm in result.vms:
        uvcs = vm.stats.uvcs
        failed = sum(n for (cmd, rc), n in uvcs.items() if rc not in (1, -2, -3))
        exceptions = ", ".join(f"PGM {code} x{n}" for code, n in sorted(vm.stats.exceptions.items())) or "-"
        intercepts = ", ".join(f"{k} x{n}" for k, n in sorted(vm.stats.intercepts.items())) or "-"
        state = vm.state.value
        detail = vm.reason if vm.reason and vm.reason != "halt" else ""
        guest = vm.guest
        if guest is not None and guest.state == "stopped" and state != "refused":
            state, detail = "stopped", guest.reason
        if guest is not None and guest.corruptions:
            detail = f"CORRUPTED: {guest.corruptions[0]}"
        table.add_row(
            vm.name,
            "secure" if vm.secure else "regular",
            str(vm.stats.pages_unpacked),
            str(sum(uvcs.values())),
            str(failed),
            exceptions,
            intercepts,
            life_of(vm),
            f"{state}: {detail}" if detail else state,
        )
    return table


def life_of(vm: Any) -> str:
    """Reboots, dumps and how the guest was torn down (what leaked, if anything)."""
    stats = vm.stats
    parts = [f"reboot x{stats.reboots}"] if stats.reboots else []
    if stats.dumps:
        parts.append(f"dumped x{stats.dumps}")
    elif vm.dumps:
        parts.append(f"dump refused ({vm.dumps[0].refused})")
    if stats.teardown:
        parts.append(f"teardown {stats.teardown}")
    if stats.leaked_pages:
        parts.append(f"{stats.leaked_pages} pages leaked")
    return ", ".join(parts) or "-"


def uvc_table(result: RunResult) -> Table:
    """UVCs by command and rc, one column per guest."""
    names = [vm.name for vm in result.vms if vm.stats.uvcs]
    rows: Counter[tuple[str, int]] = Counter()
    for vm in result.vms:
        rows.update(vm.stats.uvcs)
    table = Table(title="UVCs by command and rc")
    table.add_column("command")
    table.add_column("rc")
    for name in names:
        table.add_column(name, justify="right")
    for cmd, rc in sorted(rows):
        by_guest = {vm.name: vm.stats.uvcs.get((cmd, rc), 0) for vm in result.vms}
        table.add_row(cmd, {-2: "busy", -3: "partial"}.get(rc, f"{rc:#06x}"), *(str(by_guest[n] or "") for n in names))
    return table


def print_summary(console: Console, result: RunResult, *, title: str) -> None:
    console.print(guest_table(result, title))
    console.print(uvc_table(result))
    print_memory(console, result)
    for vm in result.vms:
        guest = vm.guest
        if guest is None:
            continue
        for ok, detail in guest.attestations:
            console.print(f"attestation of {vm.name}: {'verified by its owner' if ok else 'FAILED'} ({detail})")
        for name, ok, detail in guest.secrets:
            console.print(f"secret {name!r} for {vm.name}: {'received and used' if ok else 'FAILED'} ({detail})")
    console.print(
        f"{result.steps} steps, {result.virtual_ns / 1000:.1f} µs of virtual time, "
        f"{result.uv_calls} UVCs ({result.uv_busy} answered busy)"
    )
    if result.trace is not None:
        console.print(f"trace: {result.trace}")


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
@inject_bug_option
def demo(seed: int, trace_path: Path, bugs: tuple[str, ...]) -> None:
    """Run the demonstration: one server, three secure guests and one regular guest.

    Two secure guests boot images built for this server; the third image was
    built for another server and is refused at SET_SEC_CONF_PARAMS (rc
    0x0108). Each guest has two vCPUs and runs a workload that writes,
    reads back and checks its memory, shares a bounce-buffer page,
    triggers intercepts 104 and 108 and reboots once (DIAG 308 subcode 1,
    the whole reset sequence). The large secure guest (3 GiB) is dumped
    while it runs and torn down asynchronously. The host gives its guests
    only 512 KiB for their pages, less than they touch: the reclaim thread
    exports and swaps pages out, faults bring them back, and the guests do
    block and network I/O through shared bounce buffers; the UV answers busy
    now and then. Monitors check every step. The trace of every step is
    written to --trace.
    """
    result = run(demo_config(), seed=seed, trace=trace_path, bugs=bugs)
    print_summary(Console(), result, title="sesim demo: one server, three secure guests, one regular guest")
