"""``sesim hostkey``: host key pairs and a test PKI for simulated servers.

The commands only parse options and call :mod:`protocol` (``create_test_pki``,
``add_test_host``, ``read_host_key_document``, ``load_host_keys``); errors
become ``sesim: error: ...`` and exit status 1 in :class:`sesim._cli.SesimGroup`.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from protocol import TestPki, add_test_host, create_test_pki, read_host_key_document

from ._cli_certs import certificate_options, certificate_options_from, load_verified_host_keys, warnings_to_stderr

_ROLES = {
    "root_ca.crt": "root CA certificate (--root-ca)",
    "root_ca.key": "root CA private key",
    "root_ca.crl": "root CA CRL (--crl)",
    "inter_ca.crt": "intermediate CA certificate (-C)",
    "inter_ca.key": "intermediate CA private key",
    "inter_ca.crl": "intermediate CA CRL (--crl)",
    "ibm.crt": "IBM Z signing key certificate (-C)",
    "ibm.key": "IBM Z signing private key",
    "ibm.crl": "IBM Z signing key CRL (--crl)",
}


def _console() -> Console:
    return Console(soft_wrap=True)


def _files_table(title: str, rows: list[tuple[Path, str]]) -> Table:
    table = Table(title=title)
    table.add_column("file", overflow="fold")
    table.add_column("what")
    for path, what in rows:
        table.add_row(str(path), what)
    return table


def _usage_hint(pki: TestPki, host: str) -> str:
    q = shlex.quote
    parts = [
        "sesim image create",
        f"-k {q(str(pki.directory / (host + '.crt')))}",
        f"-C {q(str(pki.ibm_crt))}",
        f"-C {q(str(pki.inter_ca_crt))}",
        f"--crl {q(str(pki.ibm_crl))}",
        f"--crl {q(str(pki.inter_ca_crl))}",
        f"--crl {q(str(pki.root_ca_crl))}",
        f"--root-ca {q(str(pki.root_ca_crt))}",
        "--offline",
    ]
    return " ".join(parts) + " ..."


@click.group()
def hostkey() -> None:
    """Create host key pairs, host-key documents and a test PKI."""


@hostkey.command("pki")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, metavar="NAME",
              help="A simulated host to issue a host-key document for (repeatable; default: host).")
@click.option("--revoke", "revoked", multiple=True, metavar="NAME",
              help="List this host's document as revoked in ibm.crl (repeatable).")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Validity of every certificate and CRL, from now (default: 365).")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def pki_command(
    directory: Path, hosts: tuple[str, ...], revoked: tuple[str, ...], days: int | None, force: bool
) -> None:
    """Create a whole test PKI in DIRECTORY: CAs, IBM Z signing key, HKDs and host keys.

    The files let 'sesim image create' verify host-key documents exactly as
    pvimg does, without real IBM certificates; each NAME.key is the private
    host key a simulated server boots with.
    """
    names = hosts or ("host",)
    validity = {} if days is None else {"days": days}
    pki = create_test_pki(
        directory, hosts=names, revoked=revoked, now=datetime.now(timezone.utc), force=force, **validity
    )
    rows = [(path, _ROLES.get(path.name, "")) for path in pki.files[:9]]
    for host in pki.hosts:
        state = " (revoked)" if host.name in revoked else ""
        rows += [(host.crt, f"host-key document of {host.name}{state} (-k)"),
                 (host.key, f"private host key of {host.name}")]
    console = _console()
    console.print(_files_table(f"test PKI written to {pki.directory}", rows))
    console.print(f"hint: {_usage_hint(pki, names[0])}", markup=False, highlight=False)


@hostkey.command("create")
@click.argument("name")
@click.option("--pki", "pki_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory of a test PKI made by 'sesim hostkey pki'.")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Validity of the host-key document, from now (default: 365).")
@click.option("--force", is_flag=True, help="Overwrite NAME.crt and NAME.key if they exist.")
def create_command(name: str, pki_dir: Path, days: int | None, force: bool) -> None:
    """Add host NAME to a test PKI: NAME.crt (signed by its ibm.key) and NAME.key."""
    validity = {} if days is None else {"days": days}
    host = add_test_host(pki_dir, name, now=datetime.now(timezone.utc), force=force, **validity)
    rows = [(host.crt, f"host-key document of {host.name} (-k)"), (host.key, f"private host key of {host.name}")]
    _console().print(_files_table(f"host {host.name} added to {pki_dir}", rows))


@hostkey.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def show_command(file: Path) -> None:
    """Show a host-key document: subject, issuer, validity, key type and phkh."""
    with warnings_to_stderr():
        document = read_host_key_document(file)
    cert = document.certificate
    table = Table(title=f"host-key document {file}", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_row("subject", cert.subject.rfc4514_string())
    table.add_row("issuer", cert.issuer.rfc4514_string())
    table.add_row("serial", f"{cert.serial_number:x}")
    table.add_row("not before", f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
    table.add_row("not after", f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    table.add_row("key type", f"EC {document.public_key.curve.name} (P-521)")
    table.add_row("phkh", document.phkh.hex())
    _console().print(table)


@hostkey.command("verify")
@certificate_options
def verify_command(**kwargs: Any) -> None:
    """Verify host-key documents as pvimg does (-k HKD, then -C/--crl/--root-ca or --no-verify)."""
    options = certificate_options_from(kwargs)
    documents = load_verified_host_keys(options)
    verdict = "not verified (--no-verify)" if options.no_verify else "OK"
    for document in documents:
        click.echo(f"{document.source}: {verdict} (phkh {document.phkh.hex()})")
