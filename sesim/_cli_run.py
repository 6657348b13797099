"""``sesim run``: run a user-written topology."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ._cli_demo import print_summary
from ._cli_memory import inject_bug_option
from ._config import load_config
from ._simulation import run as run_simulation


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run (same seed, same trace).")
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the trace (default: CONFIG with .jsonl instead of .toml).",
)
@inject_bug_option
def run(config: Path, seed: int, trace_path: Path | None, bugs: tuple[str, ...]) -> None:
    """Run the server and guests described in CONFIG (a TOML file).

    See the README for the format: [server] with name, memory_mib, cpus and an
    optional host_key; one [[guest]] table per guest with name, secure,
    memory_mib, cpus, an optional image (a file from `sesim image create`) or
    image_for (build one for that server), and a workload list.
    """
    cfg = load_config(config)
    trace = trace_path or config.with_suffix(".jsonl")
    result = run_simulation(cfg, seed=seed, trace=trace, bugs=bugs)
    print_summary(Console(), result, title=f"sesim run {config.name}")
