"""pvimg's shared certificate options, for every command that takes host-key documents.

``rust/utils/src/cli.rs::CertificateOptions`` (se-format.md §3): ``-k`` is
required and repeatable, and exactly one of ``--no-verify`` and ``-C/--cert``
must be given; ``--crl``, ``--root-ca`` and ``--offline`` need ``--cert``.
Usage mistakes are reported with clap's wording, as pvimg would.

Use::

    @click.command()
    @certificate_options
    def create(**kwargs):
        options = certificate_options_from(kwargs)
        documents = load_verified_host_keys(options)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from protocol import CertificateOptions, HostKeyDocument, load_host_keys

F = TypeVar("F", bound=Callable[..., Any])

_KEYS = ("host_key_documents", "no_verify", "certs", "crls", "root_ca", "offline")


def _split_commas(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """clap's ``value_delimiter = ','``: ``-k a,b -k c`` gives a, b, c."""
    return tuple(part for value in values for part in value.split(",") if part)


def _check_combination(kwargs: dict[str, Any]) -> None:
    """The rules of clap's ``pv_verify`` group and ``requires("certs")``."""
    if kwargs["no_verify"] and kwargs["certs"]:
        raise click.UsageError("the argument '--no-verify' cannot be used with '--cert <FILE>'")
    if not kwargs["certs"]:
        needing = [
            name
            for name, given in (
                ("--crl <FILE>", kwargs["crls"]),
                ("--root-ca <ROOT_CA>", kwargs["root_ca"] is not None),
                ("--offline", kwargs["offline"]),
            )
            if given
        ]
        if needing:
            raise click.UsageError(
                f"the following required arguments were not provided: --cert <FILE> (needed by {', '.join(needing)})"
            )
    if not kwargs["no_verify"] and not kwargs["certs"]:
        raise click.UsageError("the following required arguments were not provided: <--no-verify|--cert <FILE>>")


def certificate_options(command: F) -> F:
    """Add ``-k``, ``--no-verify``, ``-C``, ``--crl``, ``--root-ca``, ``--offline`` to a command."""

    @functools.wraps(command)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _check_combination(kwargs)
        return command(*args, **kwargs)

    decorators = [
        click.option(
            "-k", "--host-key-document", "host_key_documents", multiple=True, required=True,
            metavar="FILE", callback=_split_commas,
            help="Use FILE as a host-key document. Repeatable; also comma-separated.",
        ),
        click.option(
            "--no-verify", is_flag=True,
            help="Disable the host-key document verification (only for testing: the host key is "
            "then taken on trust).",
        ),
        click.option(
            "-C", "--cert", "--crt", "certs", multiple=True, metavar="FILE", callback=_split_commas,
            help="Use FILE as a certificate to verify the host-key documents: give the IBM Z "
            "signing key and the intermediate CA certificate.",
        ),
        click.option(
            "--crl", "crls", multiple=True, metavar="FILE", callback=_split_commas,
            help="Use FILE as a certificate revocation list. Repeatable. Needs --cert.",
        ),
        click.option(
            "--root-ca", metavar="FILE", default=None,
            help="Use FILE as the root CA (default: the system's trusted CAs). Needs --cert.",
        ),
        click.option("--offline", is_flag=True, help="Make no attempt to download CRLs. Needs --cert."),
    ]
    wrapped: Any = checked
    for decorator in reversed(decorators):
        wrapped = decorator(wrapped)
    return wrapped  # type: ignore[no-any-return]


def certificate_options_from(kwargs: dict[str, Any]) -> CertificateOptions:
    """Pop the certificate options out of a command's ``kwargs``."""
    values = {key: kwargs.pop(key) for key in _KEYS}
    return CertificateOptions(
        host_key_documents=tuple(values["host_key_documents"]),
        no_verify=bool(values["no_verify"]),
        certs=tuple(values["certs"]),
        crls=tuple(values["crls"]),
        root_ca=values["root_ca"],
        offline=bool(values["offline"]),
    )


@contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Show the user warnings raised inside as ``sesim: warning: ...`` lines on stderr.

    They are printed even when the block ends in an error, so a warning that
    explains the error is not lost. Other warnings (deprecations) pass through.
    """
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                caught = list(recorded)
    finally:
        for warning in caught:
            if issubclass(warning.category, UserWarning):
                click.echo(f"sesim: warning: {warning.message}", err=True)
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def load_verified_host_keys(options: CertificateOptions) -> list[HostKeyDocument]:
    """:func:`protocol.load_host_keys` with its warnings shown to the user."""
    with warnings_to_stderr():
        return load_host_keys(options)
