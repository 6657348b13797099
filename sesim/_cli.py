"""The ``sesim`` command line.

Every subcommand lives in its own ``_cli_<name>.py`` module and is added to
the group here. Errors are turned into one line and exit status 1 by
:class:`SesimGroup`, so no user ever sees a traceback for bad input.
"""

from __future__ import annotations

from typing import Any

import click

from protocol import SesimError

from . import __version__


def fail(message: str) -> None:
    """Print ``sesim: error: message`` on stderr and exit with status 1."""
    click.echo(f"sesim: error: {message}", err=True)
    raise SystemExit(1)


class SesimGroup(click.Group):
    """A click group that reports sesim's own errors as one line, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SesimError as exc:
            fail(str(exc))
        except OSError as exc:
            # A file the user named could not be read or written: say which.
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            fail("interrupted")


@click.group(cls=SesimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sesim")
def main() -> None:
    """sesim: a simulation of IBM Secure Execution for Linux.

    Build secure boot images as pvimg does, boot them on a simulated IBM Z
    server whose ultravisor, hypervisor, vCPUs and guests run as concurrent
    actors, and write every step to a deterministic trace.
    """


def _register() -> None:
    from ._cli_analyze import analyze, export, report, traces
    from ._cli_attack import attack
    from ._cli_attest import attest
    from ._cli_check import check
    from ._cli_demo import demo
    from ._cli_hostkey import hostkey
    from ._cli_image import image
    from ._cli_replay import replay
    from ._cli_run import run
    from ._cli_secret import secret
    from ._cli_stress import stress
    from ._cli_uv import uv

    for command in (analyze, attack, attest, check, demo, export, hostkey, image, replay, report, run, secret, stress, traces, uv):
        main.add_command(command)


_register()
