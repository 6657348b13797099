"""``sesim demo``: the main job, run end to end."""

from __future__ import annotations

import click


@click.command()
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the run.")
def demo(seed: int) -> None:
    """Run the sesim demonstration."""
