"""``sesim hostkey``: host key pairs and a test PKI for simulated servers."""

from __future__ import annotations

import click


@click.group()
def hostkey() -> None:
    """Create host key pairs, host-key documents and a test PKI."""
