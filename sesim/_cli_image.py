"""``sesim image``: build, inspect and verify Secure Execution boot images."""

from __future__ import annotations

import click


@click.group()
def image() -> None:
    """Build, inspect and verify Secure Execution boot images (like pvimg)."""
