"""``sesim secret``: create and verify add-secret requests, as pvsecret does.

``create`` takes pvsecret's options (``rust/pvsecret/src/cli.rs``): the
certificate options, ``--hdr`` (the image or its SE header the secret is
bound to), ``-o``, an extension secret (``--extension-secret`` or ``--cck``),
a CUID (``--cuid-hex`` or ``--cuid FILE``), flags (``--flags disable-dump``
or the hidden raw ``--pcf``), signed or unsigned user data, ``--use-name``,
then the kind of secret: ``meta``, ``association NAME``, ``retrievable
NAME --secret FILE --type TYPE`` or ``update-cck --secret FILE``. Named
secrets also get ``NAME.yaml`` with their name and ID (``--stdout`` prints
it instead). ``verify`` checks that a file is a sound request and verifies
its user-data signature. Randomness for requests comes from ``os.urandom``;
the formats live in :mod:`protocol` (se-format.md §4.3).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_der_private_key,
    load_der_public_key,
    load_pem_private_key,
    load_pem_public_key,
)

from protocol import (
    ASRCB_FLAG_DISABLE_DUMP,
    RETRIEVABLE_KINDS,
    Asrcb,
    BootHdrTags,
    FormatError,
    GuestSecret,
    UsageError,
    build_asrcb,
    derive_extension_secret,
)

from ._cli_certs import certificate_options, certificate_options_from, load_verified_host_keys


@click.group()
def secret() -> None:
    """Create and verify add-secret requests (like pvsecret)."""


def _split_flags(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(v for value in values for v in value.split(",") if v)
    for v in out:
        if v != "disable-dump":
            raise click.BadParameter(f"'{v}' is not a flag (possible: disable-dump)", ctx=ctx, param=param)
    return out


@secret.group(subcommand_metavar="meta|association|retrievable|update-cck")
@certificate_options
@click.option("--hdr", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The Secure Execution image, or its extracted SE header, the secret is for.")
@click.option("-f", "--force", is_flag=True,
              help="Accepted for pvsecret compatibility (sesim never runs inside a secure guest).")
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the request to FILE.")
@click.option("--extension-secret", metavar="FILE", type=click.Path(dir_okay=False),
              help="Use the 32 bytes of FILE as the extension secret.")
@click.option("--cck", metavar="FILE", type=click.Path(dir_okay=False),
              help="Derive the extension secret from the image's customer communication key in FILE (32 bytes).")
@click.option("--cuid-hex", metavar="HEXSTRING",
              help="Bind the request to the configuration unique ID HEXSTRING (128 bits, leading zeros).")
@click.option("--cuid", metavar="FILE", type=click.Path(dir_okay=False),
              help="Bind to the CUID in FILE: 16 bytes, or YAML with a 'cuid' entry ('sesim attest verify -o').")
@click.option("--pcf", hidden=True, metavar="FLAGS", help="Raw add-secret flags (expert, not checked).")
@click.option("--flags", multiple=True, metavar="FLAGS", callback=_split_flags,
              help="Request flags: disable-dump (no host-initiated dumps of the guest afterwards).")
@click.option("--user-data", metavar="FILE", type=click.Path(dir_okay=False),
              help="Up to 512 bytes of user data (256 with an EC or RSA-2048 key, 128 with RSA-3072).")
@click.option("--user-sign-key", metavar="FILE", type=click.Path(dir_okay=False),
              help="Sign the request with this private key (PEM or DER: EC secp521r1, RSA 2048 or 3072).")
@click.option("--use-name", is_flag=True, help="Use the name itself as the secret ID instead of its SHA-256.")
@click.pass_context
def create(ctx: click.Context, **opts: Any) -> None:
    """Create an add-secret request for a Secure Execution guest."""
    for a, b in (("extension_secret", "cck"), ("cuid_hex", "cuid"), ("pcf", "flags")):
        if opts[a] and opts[b]:
            raise click.UsageError(f"--{a.replace('_', '-')} cannot be used with --{b.replace('_', '-')}")
    ctx.obj = opts


def _read_exact(path: str, size: int, what: str) -> bytes:
    data = Path(path).read_bytes()
    if len(data) != size:
        raise UsageError(f"{path}: {what} must be exactly {size} bytes, the file has {len(data)}")
    return data


def _cuid(opts: dict[str, Any]) -> bytes | None:
    if opts["cuid_hex"]:
        return _hex128(opts["cuid_hex"], "--cuid-hex")
    if not opts["cuid"]:
        return None
    data = Path(opts["cuid"]).read_bytes()
    if len(data) == 16:
        return data
    found = re.search(rb"""(?m)^\s*cuid\s*:\s*['"]?(0x[0-9a-fA-F]+)""", data)
    if found is None:
        raise UsageError(f"{opts['cuid']}: neither 16 bytes nor YAML with a 'cuid' entry")
    return _hex128(found.group(1).decode(), opts["cuid"])


def _hex128(text: str, where: str) -> bytes:
    digits = text[2:] if text.lower().startswith("0x") else text
    if len(digits) != 32 or not re.fullmatch(r"[0-9a-fA-F]+", digits):
        raise UsageError(f"{where}: a CUID is 32 hex digits (128 bits, leading zeros included), got '{text}'")
    return bytes.fromhex(digits)


def _flags(opts: dict[str, Any]) -> int:
    if opts["pcf"]:
        try:
            value = int(opts["pcf"], 0)
        except ValueError:
            raise UsageError(f"--pcf: '{opts['pcf']}' is not a number") from None
        if not 0 <= value < 1 << 64:
            raise UsageError("--pcf: does not fit in 64 bits")
        return value
    return ASRCB_FLAG_DISABLE_DUMP if "disable-dump" in opts["flags"] else 0


def _signing_key(path: str | None) -> Any:
    if path is None:
        return None
    data = Path(path).read_bytes()
    for loader in (load_pem_private_key, load_der_private_key):
        try:
            return loader(data, password=None)
        except (ValueError, TypeError):
            continue
    raise FormatError(f"{path}: not an unencrypted PEM or DER private key")


def _build(ctx: click.Context, guest_secret: GuestSecret) -> None:
    """Build, encrypt and write the request from the group's options."""
    opts = ctx.obj
    hdr_file = opts["hdr"]
    try:
        tags = BootHdrTags.from_image_or_header(Path(hdr_file).read_bytes())
    except FormatError as exc:
        raise FormatError(f"{hdr_file}: the SE header is malformed: {exc}") from None
    ext = None
    if opts["extension_secret"]:
        ext = _read_exact(opts["extension_secret"], 32, "the extension secret")
    elif opts["cck"]:
        ext = derive_extension_secret(_read_exact(opts["cck"], 32, "the CCK"), tags.tag)
    user = Path(opts["user_data"]).read_bytes() if opts["user_data"] else None
    documents = load_verified_host_keys(certificate_options_from(dict(opts)))
    request = build_asrcb(
        secret=guest_secret, tags=tags, host_keys=[d.public_key for d in documents],
        cust_private_key=ec.generate_private_key(ec.SECP521R1()), prot_key=os.urandom(32), iv=os.urandom(12),
        flags=_flags(opts), cuid=_cuid(opts), extension_secret=ext, user_data=user,
        user_sign_key=_signing_key(opts["user_sign_key"]),
    )  # fmt: skip
    Path(opts["output"]).write_bytes(request)
    click.echo(f"wrote {opts['output']}: add-secret request ({guest_secret.type.label}), "
               f"{len(documents)} host key(s)")  # fmt: skip


def _describe(guest_secret: GuestSecret, stdout: bool) -> None:
    """``NAME.yaml`` (or stdout): the non-confidential name and ID of a named secret."""
    assert guest_secret.name is not None and guest_secret.id is not None
    kind = guest_secret.type
    head = "Association" if kind.label == "Association" else "Retrievable"
    text = f"{head}:\n"
    if head == "Retrievable":
        text += f"  kind: {int(kind)} ({kind.label})\n"
    text += f"  name: {guest_secret.name}\n  id: '0x{guest_secret.id.hex()}'\n"
    if stdout:
        click.echo(text, nl=False)
        return
    path = "".join("_" if c.isspace() else c for c in guest_secret.name) + ".yaml"
    Path(path).write_text(text)
    click.echo(f"wrote {path}: the secret's name and ID")


@create.command()
@click.pass_context
def meta(ctx: click.Context) -> None:
    """A meta secret: no value; it only carries the request flags."""
    _build(ctx, GuestSecret.null())


@create.command()
@click.argument("name")
@click.option("--stdout", is_flag=True, help="Print the name and ID instead of writing NAME.yaml.")
@click.option("--input-secret", metavar="SECRET-FILE", type=click.Path(dir_okay=False),
              help="Read the 32-byte secret from SECRET-FILE (default: random).")
@click.option("--output-secret", metavar="SECRET-FILE", type=click.Path(dir_okay=False),
              help="Save the generated secret in SECRET-FILE (plaintext; destroy it after use).")
@click.pass_context
def association(ctx: click.Context, name: str, stdout: bool, input_secret: str | None,
                output_secret: str | None) -> None:  # fmt: skip
    """An association secret (connects a trusted AP device to the guest)."""
    if input_secret and output_secret:
        raise click.UsageError("--input-secret cannot be used with --output-secret")
    if not stdout and f"{name}.yaml" in (output_secret, ctx.obj["output"]):
        raise click.UsageError(f"the output file and the secret's '{name}.yaml' are the same")
    value = _read_exact(input_secret, 32, "the association secret") if input_secret else os.urandom(32)
    guest_secret = GuestSecret.association(name, value, use_name=ctx.obj["use_name"])
    _build(ctx, guest_secret)
    _describe(guest_secret, stdout)
    if output_secret:
        Path(output_secret).write_bytes(value)


@create.command(name="retrievable")
@click.argument("name")
@click.option("--secret", "secret_file", required=True, metavar="SECRET-FILE", type=click.Path(dir_okay=False),
              help="The secret: plaintext (up to 8190 bytes), raw key bytes, or an EC private key (PEM/DER).")
@click.option("--type", "--secret-type", "kind", required=True, type=click.Choice(RETRIEVABLE_KINDS),
              help="plain, aes (16/24/32 bytes), aes-xts (32/64), hmac-sha (64/128) or ec.")
@click.option("--stdout", is_flag=True, help="Print the name and ID instead of writing NAME.yaml.")
@click.pass_context
def retrievable(ctx: click.Context, name: str, secret_file: str, kind: str, stdout: bool) -> None:
    """A retrievable secret: the guest can read it back (keys as protected keys)."""
    guest_secret = GuestSecret.retrievable(kind, name, Path(secret_file).read_bytes(), use_name=ctx.obj["use_name"])
    _build(ctx, guest_secret)
    _describe(guest_secret, stdout)


create.add_command(retrievable, name="retr")


@create.command(name="update-cck")
@click.option("--secret", "secret_file", required=True, metavar="SECRET-FILE", type=click.Path(dir_okay=False),
              help="The new customer communication key (32 bytes).")
@click.pass_context
def update_cck(ctx: click.Context, secret_file: str) -> None:
    """Replace the guest's customer communication key (images that allow CCK updates)."""
    _build(ctx, GuestSecret.update_cck(_read_exact(secret_file, 32, "the new CCK")))


def _verifying_key(path: str) -> Any:
    data = Path(path).read_bytes()
    for loader in (x509.load_pem_x509_certificate, x509.load_der_x509_certificate):
        try:
            return loader(data).public_key()
        except ValueError:
            continue
    for key_loader in (load_pem_public_key, load_der_public_key):
        try:
            return key_loader(data)
        except (ValueError, TypeError):
            continue
    raise FormatError(f"{path}: not a PEM or DER certificate or public key")


@secret.command(name="verify")
@click.argument("input_", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--user-cert", metavar="FILE", type=click.Path(dir_okay=False),
              help="Certificate (or public key) that verifies the user-data signature.")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the user data (zero padded) to FILE.")
def verify_cmd(input_: str, user_cert: str | None, output: str | None) -> None:
    """Check that FILE is a sound add-secret request; verify its user-data signature.

    Exits 1 if it is malformed, signed without --user-cert, or the signature
    does not verify with the given key.
    """
    request = Asrcb.parse(Path(input_).read_bytes())
    key = _verifying_key(user_cert) if user_cert else None
    user = request.verified_user_data(key)
    what = request.secret_type.label + (f" {request.secret_id.hex()}" if request.secret_id else "")
    click.echo(f"{input_}: add-secret request, {what}, {request.sealed.header.nks} key slot(s), "
               f"flags {request.flags:#018x}, CUID {request.cuid.hex()}")  # fmt: skip
    if request.user_data_type.signed:
        click.echo(f"user-data signature ({request.user_data_type.name}) verified")
    if output and user is not None:
        Path(output).write_bytes(user)
