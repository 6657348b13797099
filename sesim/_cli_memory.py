"""The command line's view of memory under pressure, guest I/O, monitors and bug switches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from actors._bugs import BUGS

from ._simulation import RunResult

F = TypeVar("F", bound=Callable[..., Any])


def memory_table(result: RunResult) -> Table:
    """Per guest: imports and exports, swaps, busy answers, and I/O through shared bounce buffers.

    ``EAGAIN``: imports that found the page locked, referenced or busy and were
    tried again; ``I/O``: virtio requests; ``pins``: bounce-buffer pages the
    devices pinned for them.
    """
    table = Table(title="Secure memory under pressure, and guest I/O")
    for column in ("guest", "import", "export", "swap out/in", "busy", "EAGAIN", "I/O", "pins"):
        table.add_column(column, justify="left" if column == "guest" else "right")
    for vm in result.vms:
        uvcs = vm.stats.uvcs
        imports = sum(n for (cmd, rc), n in uvcs.items() if cmd == "CONV_TO_SEC_STOR" and rc == 1)
        exports = sum(n for (cmd, rc), n in uvcs.items() if cmd == "CONV_FROM_SEC_STOR" and rc == 1)
        s = vm.stats
        io = f"{s.io_requests} (+{s.io_retries} retried)" if s.io_retries else str(s.io_requests)
        table.add_row(
            vm.name,
            str(imports),
            str(exports),
            f"{s.swap_outs}/{s.swap_ins}",
            str(s.busy),
            str(s.eagain),
            io,
            str(s.bounce_pins),
        )
    return table


def print_memory(console: Console, result: RunResult) -> None:
    """The memory table, the host memory figures, and what the monitors found."""
    console.print(memory_table(result))
    figures = result.memory
    if figures is not None:
        limit = f"{figures.limit_pages} pages ({figures.limit_pages * 4} KiB)" if figures.limit_pages else "no limit"
        console.print(
            f"host memory for guest pages: {limit}, at most {figures.peak_pages} in use"
            + (f" ({figures.overcommitted} faults took a page from the reserves)" if figures.overcommitted else "")
            + ", for "
            f"{figures.touched_pages} guest pages touched; swap device: {figures.swap_writes} pages "
            f"written, {figures.swap_reads} read; {figures.virtio_requests} virtio requests"
        )
    if result.violations:
        console.print(f"[bold red]{len(result.violations)} monitor violation(s):[/]")
        for violation in result.violations[:10]:
            console.print(f"  {violation}")
    else:
        console.print("monitors (no plaintext, nothing lost, one owner, progress, kernel): no violation")


def inject_bug_option(fn: F) -> F:
    """``--inject-bug NAME`` (repeatable): a historical kernel bug of uv-semantics.md §8, re-created."""
    names = ", ".join(f"{b.name} (§8 #{b.row})" for b in BUGS)
    return click.option(
        "--inject-bug",
        "bugs",
        multiple=True,
        type=click.Choice([b.name for b in BUGS]),
        metavar="NAME",
        help=f"Re-create a fixed kernel bug in the hypervisor (repeatable): {names}.",
    )(fn)
