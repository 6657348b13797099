"""``sesim attack``: a hostile hypervisor tries every attack of the catalogue (issue 9).

``sesim attack --list`` shows the catalogue: each attack, what it tries and
the defence that must stop it. ``sesim attack NAME...`` or ``--all`` runs
attacks and prints, for each, the defence that fired, what became of the
victim guest and how many bytes of its plaintext the hypervisor obtained.
The exit status is 1 if any attack was not stopped or anything leaked. The
attacks and their judging are in :mod:`sesim._attacks`; this module only
parses options and prints.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ._attacks import AttackResult, catalogue, controls, find, run_attacks


@click.command("attack")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--list", "list_only", is_flag=True, help="List the catalogue (and the control scenarios).")
@click.option("--all", "run_all", is_flag=True, help="Run every attack of the catalogue.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")  # fmt: skip
@click.option("--steps", is_flag=True, help="Also show every step of each attack and the defence it met.")
def attack(names: tuple[str, ...], list_only: bool, run_all: bool, fmt: str, steps: bool) -> None:
    """Play a hostile hypervisor: try attacks on secure guests and show what stopped them.

    NAME runs the named attacks (or control scenarios); --all runs the
    whole catalogue. Every byte the hypervisor obtains is searched for the
    victim's plaintext; the count must be 0. Exit status 1 if any attack
    was not stopped or leaked. Control scenarios (``control-*``) leak on
    purpose, to show that the counter counts.
    """
    if list_only:
        _list(fmt)
        return
    if not names and not run_all:
        raise click.UsageError("name attacks to run, or give --all (see --list)")
    attacks = catalogue() if run_all else []
    chosen = {a.name for a in attacks}
    for name in names:
        if name not in chosen:
            attacks.append(find(name))
            chosen.add(name)
    results = run_attacks(attacks)
    if fmt == "json":
        click.echo(json.dumps(_json(results), indent=2))
    else:
        _table(results, steps)
    if not all(r.stopped for r in results):
        sys.exit(1)


def _list(fmt: str) -> None:
    entries = [*catalogue(), *controls()]
    if fmt == "json":
        out = [{"name": a.name, "area": a.area, "runner": a.runner, "title": a.title, "defence": a.defence,
                "expected": a.expected_labels, "steps": a.steps, "control": a.control} for a in entries]  # fmt: skip
        click.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"{len(catalogue())} attacks of a hostile hypervisor (and {len(controls())} controls)")
    table.add_column("attack", style="bold", no_wrap=True)
    table.add_column("area")
    table.add_column("what it tries")
    table.add_column("expected defence")
    for a in entries:
        table.add_row(a.name, a.area, a.title, a.defence + "\n[dim]" + "; ".join(a.expected_labels) + "[/dim]")
    Console(width=max(120, Console().width)).print(table)


def _verdict(r: AttackResult) -> str:
    if r.attack.control:
        return "[green]counter works[/green]" if r.stopped else "[red]COUNTER BLIND[/red]"
    return "[green]stopped[/green]" if r.stopped else "[bold red]NOT STOPPED[/bold red]"


def _table(results: list[AttackResult], steps: bool) -> None:
    console = Console(width=max(120, Console().width))
    table = Table(title="A hostile hypervisor: every attack tried")
    table.add_column("attack", style="bold", no_wrap=True)
    table.add_column("defence that fired")
    table.add_column("guest outcome")
    table.add_column("plaintext bytes", justify="right")
    table.add_column("verdict", no_wrap=True)
    for r in results:
        fired = "\n".join(r.defences_fired) or ("(none: a control)" if r.attack.control else "[red]none[/red]")
        if steps:
            fired += "\n[dim]" + "\n".join(
                f"{'ok ' if t.stopped else 'NO '} {t.step}: {t.fired.label if t.fired else 'went through'}"
                for t in r.attempts
            ) + "[/dim]"  # fmt: skip
        if r.problems and not r.attack.control:
            fired += "\n[red]" + "\n".join(r.problems) + "[/red]"
        leaked = str(r.leak.plaintext_bytes)
        leaked += f"\n[dim]of {r.leak.obtained_bytes} obtained[/dim]"
        table.add_row(r.attack.name, fired, r.guest, leaked, _verdict(r))
    console.print(table)
    summary = _summary(results)
    console.print(
        f"{summary['attacks']} attacks, {summary['stopped']} stopped, {summary['not_stopped']} not stopped; "
        f"plaintext bytes obtained by the hypervisor: {summary['plaintext_bytes']}"
        + (f" (controls: {summary['control_plaintext_bytes']})" if summary["controls"] else "")
    )


def _summary(results: list[AttackResult]) -> dict[str, Any]:
    attacks = [r for r in results if not r.attack.control]
    ctl = [r for r in results if r.attack.control]
    return {
        "attacks": len(attacks),
        "stopped": sum(r.stopped for r in attacks),
        "not_stopped": sum(not r.stopped for r in attacks),
        "plaintext_bytes": sum(r.leak.plaintext_bytes for r in attacks),
        "obtained_bytes": sum(r.leak.obtained_bytes for r in attacks),
        "controls": len(ctl),
        "control_plaintext_bytes": sum(r.leak.plaintext_bytes for r in ctl),
    }


def _json(results: list[AttackResult]) -> dict[str, Any]:
    return {"summary": _summary(results), "attacks": [r.to_json() for r in results]}
