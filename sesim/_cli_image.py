"""``sesim image``: build, inspect and verify Secure Execution boot images.

``create`` takes ``pvimg create``'s options and option rules (se-format.md §1);
``info`` prints the plaintext structure like ``pvimg info``; ``verify`` runs
the ultravisor's checks with a host private key; ``kernel`` writes a
synthetic s390x kernel to try things out. All logic lives in ``protocol``;
this module parses options, reads and writes files, and draws the random
keys (``os.urandom``) that ``protocol`` deliberately never draws itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from protocol import (
    PCF_ALLOW_DUMPING,
    PCF_BACKUP_TARGET_KEYS,
    PCF_DEFAULT,
    PCF_NO_COMPONENT_ENCRYPTION,
    PCF_PCKMO,
    PCF_PCKMO_HMAC,
    SCF_CCK_EXTENSION_SECRET,
    SCF_CCK_UPDATE_ALLOWED,
    ComponentKind,
    ImageSpec,
    UsageError,
    check_image,
    parse_image,
    read_host_private_key,
    secure_size,
    synthetic_kernel,
)

from ._cli_certs import certificate_options, certificate_options_from, load_verified_host_keys
from ._image_io import write_image_file

_PROGRESS_MIN = 8 << 20  # show a progress bar from 8 MiB of secure components on

# --enable-<stem> / --disable-<stem>: the flag bit, which word it lives in,
# and the two help texts (pvimg's CreateBootImageLegacyFlags).
_FLAG_OPTIONS = (
    ("dump", PCF_ALLOW_DUMPING, "pcf",
     "Allow dumping the guest. Needs --cck or --enable-cck-update.",
     "Do not allow dumping the guest (default)."),
    ("pckmo", PCF_PCKMO, "pcf",
     "Enable the DEA, TDEA, AES and ECC PCKMO key encryption functions (default).",
     "Disable the DEA, TDEA, AES and ECC PCKMO key encryption functions."),
    ("pckmo-hmac", PCF_PCKMO_HMAC, "pcf",
     "Enable the HMAC PCKMO key encryption function.",
     "Disable the HMAC PCKMO key encryption function (default)."),
    ("backup-keys", PCF_BACKUP_TARGET_KEYS, "pcf",
     "Enable the support for backup target keys.",
     "Disable the support for backup target keys (default)."),
    ("cck-extension-secret", SCF_CCK_EXTENSION_SECRET, "scf",
     "Add-secret requests must carry the CCK-derived extension secret. Needs --cck.",
     "Add-secret requests need not carry the CCK-derived extension secret (default)."),
    ("cck-update", SCF_CCK_UPDATE_ALLOWED, "scf",
     "Allow CCK updates (z17 and later). Not with --enable-cck-extension-secret.",
     "Do not allow CCK updates (default)."),
)  # fmt: skip


@click.group()
def image() -> None:
    """Build, inspect and verify Secure Execution boot images (like pvimg)."""


def _flag_decorators(func: Callable[..., Any]) -> Callable[..., Any]:
    for stem, _bit, _word, enable_help, disable_help in reversed(_FLAG_OPTIONS):
        func = click.option(f"--disable-{stem}", is_flag=True, help=disable_help)(func)
        func = click.option(f"--enable-{stem}", is_flag=True, help=enable_help)(func)
    func = click.option("--disable-image-encryption", is_flag=True,
                        help="Do not encrypt kernel, ramdisk and cmdline (PCF bit 35). "
                        "Use only for components without confidential content.")(func)  # fmt: skip
    func = click.option("--enable-image-encryption", is_flag=True,
                        help="Encrypt the image components (default).")(func)  # fmt: skip
    return func


def _parse_u64(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise UsageError(f"{option}: '{text}' is not a number") from None
    if not 0 <= value < 1 << 64:
        raise UsageError(f"{option}: {text} does not fit in 64 bits")
    return value


def control_flags(opts: dict[str, Any]) -> tuple[int, int]:
    """PCF and SCF from pvimg's options and option rules (se-format.md §1).

    Raises:
        UsageError: a rule of ``pvimg create`` is broken.
    """
    given = [
        name for name, value in opts.items()
        if value is True and name.startswith(("enable_", "disable_"))
    ]  # fmt: skip
    for stem, *_ in (*_FLAG_OPTIONS, ("image-encryption",)):
        key = stem.replace("-", "_")
        if opts.get(f"enable_{key}") and opts.get(f"disable_{key}"):
            raise UsageError(f"--enable-{stem} and --disable-{stem} cannot be used together")
    if given and (opts["x_pcf"] is not None or opts["x_scf"] is not None):
        raise UsageError("--x-pcf/--x-scf cannot be combined with --enable-*/--disable-* flags")
    if opts["enable_dump"] and not (opts["cck"] or opts["enable_cck_update"]):
        raise UsageError("--enable-dump requires --cck or --enable-cck-update")
    if opts["enable_cck_extension_secret"] and not opts["cck"]:
        raise UsageError("--enable-cck-extension-secret requires --cck")
    if opts["enable_cck_extension_secret"] and opts["enable_cck_update"]:
        raise UsageError("--enable-cck-update cannot be used with --enable-cck-extension-secret")
    if opts["image_key"] and opts["disable_image_encryption"]:
        raise UsageError("--image-key cannot be used with --disable-image-encryption")
    pcf = _parse_u64(opts["x_pcf"], "--x-pcf")
    scf = _parse_u64(opts["x_scf"], "--x-scf")
    flags = {"pcf": PCF_DEFAULT if pcf is None else pcf, "scf": 0 if scf is None else scf}
    for stem, bit, kind, *_help in _FLAG_OPTIONS:
        key = stem.replace("-", "_")
        if opts[f"enable_{key}"]:
            flags[kind] |= bit
        if opts[f"disable_{key}"]:
            flags[kind] &= ~bit
    if opts["disable_image_encryption"]:
        flags["pcf"] |= PCF_NO_COMPONENT_ENCRYPTION
    if opts["enable_image_encryption"]:
        flags["pcf"] &= ~PCF_NO_COMPONENT_ENCRYPTION
    return flags["pcf"], flags["scf"]


def _read_key(path: str | None, size: int, what: str) -> bytes | None:
    if path is None:
        return None
    data = Path(path).read_bytes()
    if len(data) != size:
        raise UsageError(f"{path}: {what} must be exactly {size} bytes, the file has {len(data)}")
    return data


@image.command()
@click.option("-i", "--image", "--kernel", "kernel", required=True, metavar="FILE",
              type=click.Path(dir_okay=False), help="Raw s390x Linux kernel Image (not ELF).")
@click.option("-r", "--ramdisk", metavar="FILE", type=click.Path(dir_okay=False),
              help="Initial RAM disk.")
@click.option("-p", "--parmfile", metavar="FILE", type=click.Path(dir_okay=False),
              help="Kernel command line.")
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Where to write the Secure Execution image.")
@certificate_options
@click.option("--no-component-check", is_flag=True, help="Do not check that the kernel looks "
              "like a raw s390x Image or that the command line fits.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
@click.option("--cck", "--comm-key", "cck", metavar="FILE", type=click.Path(dir_okay=False),
              help="Customer communication key (32 bytes).")
@click.option("--hdr-key", "--x-header-key", "hdr_key", metavar="FILE",
              type=click.Path(dir_okay=False), help="SE header protection key (32 bytes).")
@click.option("--image-key", "--x-comp-key", "image_key", metavar="FILE",
              type=click.Path(dir_okay=False), help="Image (AES-XTS) key (64 bytes).")
@_flag_decorators
@click.option("--x-psw", hidden=True, metavar="ADDRESS", help="Header PSW address (expert).")
@click.option("--x-pcf", hidden=True, metavar="PCF", help="Plaintext control flags (expert).")
@click.option("--x-scf", hidden=True, metavar="SCF", help="Secret control flags (expert).")
def create(**opts: Any) -> None:
    """Create a Secure Execution boot image, as 'pvimg create' does.

    The image holds the kernel, ramdisk and command line encrypted with a
    random image key, and an SE header that only the servers of the given
    host-key documents can open. Keys, IV and tweaks are random unless given
    as files.
    """
    pcf, scf = control_flags(opts)
    cert_options = certificate_options_from(opts)
    host_keys = [doc.public_key for doc in load_verified_host_keys(cert_options)]
    spec = ImageSpec(
        kernel=Path(opts["kernel"]).read_bytes(),
        ramdisk=Path(opts["ramdisk"]).read_bytes() if opts["ramdisk"] else None,
        cmdline=Path(opts["parmfile"]).read_bytes() if opts["parmfile"] else None,
        host_keys=host_keys,
        cust_private_key=ec.generate_private_key(ec.SECP521R1()),
        prot_key=_read_key(opts["hdr_key"], 32, "header key") or os.urandom(32),
        iv=os.urandom(12),
        cck=_read_key(opts["cck"], 32, "CCK") or os.urandom(32),
        xts_key=_read_key(opts["image_key"], 64, "image key") or os.urandom(64),
        tweak_randoms={kind: os.urandom(6) for kind in ComponentKind},
        pcf=pcf, scf=scf, psw_addr=_parse_u64(opts["x_psw"], "--x-psw"),
        component_check=not opts["no_component_check"],
    )  # fmt: skip
    if not spec.encrypted:
        click.echo("sesim: warning: component encryption is disabled; make sure the "
                   "components hold nothing confidential", err=True)  # fmt: skip
    output = Path(opts["output"])
    total = secure_size(spec)
    console = Console(stderr=True)
    if total >= _PROGRESS_MIN and console.is_terminal:
        columns = (*Progress.get_default_columns()[:1], BarColumn(), DownloadColumn(),
                   TransferSpeedColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("encrypting", total=total)
            desc = write_image_file(
                output, spec, overwrite=opts["overwrite"],
                progress=lambda done: bar.update(task, completed=done),
            )  # fmt: skip
    else:
        desc = write_image_file(output, spec, overwrite=opts["overwrite"])
    click.echo(f"wrote {output}: {desc.image_size} bytes, {len(desc.phkhs)} key slot(s), "
               f"{desc.nep} secure pages, header at {desc.hdr_addr:#x}")  # fmt: skip


@image.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def info(file: str, fmt: str) -> None:
    """Show the plaintext header fields and the components of an image."""
    data = Path(file).read_bytes()
    described = parse_image(data).as_dict()
    if fmt == "json":
        click.echo(json.dumps(described, indent=2))
        return
    console = Console()
    head = Table(title=f"{file}: Secure Execution image", show_header=False)
    head.add_column("field", style="bold")
    head.add_column("value", overflow="fold")
    for key, value in described["image"].items():
        head.add_row(key, str(value))
    head.add_section()
    for key, value in described["header"].items():
        if key == "key_slots":
            value = "\n".join(slot["phkh"] for slot in value)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        head.add_row(key, str(value))
    console.print(head)
    comps = Table(title="secure components (IPIB order)")
    for column in ("kind", "address", "size", "tweak prefix"):
        comps.add_column(column)
    for comp in described["components"]:
        comps.add_row(comp["kind"], comp["addr"], comp["length"], comp["tweak_prefix"])
    console.print(comps)


@image.command()
@click.option("--host-key", required=True, metavar="KEYFILE", type=click.Path(dir_okay=False),
              help="The host's private key (PEM or DER, EC P-521).")
@click.argument("file", type=click.Path(dir_okay=False))
def verify(host_key: str, file: str) -> None:
    """Run the ultravisor's checks on an image with a host private key.

    Exits 1 naming the first check that failed.
    """
    key = read_host_private_key(host_key)
    verdict = check_image(Path(file).read_bytes(), key)
    for result in verdict.checks:
        status = {"ok": "OK", "failed": "FAILED", "skipped": "skipped"}[result.status]
        click.echo(f"{status:8} {result.check:22} {result.label}")
    verdict.raise_for_failure()
    click.echo(f"{file}: verified ({verdict.digests.nep if verdict.digests else 0} pages)")


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        return int(number, 0) * scale
    except ValueError:
        raise UsageError(f"--size: '{text}' is not a size (e.g. 4096, 0x11000, 64M)") from None


@image.command()
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Where to write the kernel.")
@click.option("--size", default="1M", show_default=True, help="Size in bytes (K/M/G suffixes).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the deterministic content.")
def kernel(output: str, size: str, seed: int) -> None:
    """Write a synthetic s390x kernel Image (deterministic, for trying things out)."""
    Path(output).write_bytes(synthetic_kernel(_size(size), seed))
    click.echo(f"wrote {output}: synthetic kernel, {_size(size)} bytes, seed {seed}")
