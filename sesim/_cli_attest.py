"""``sesim attest``: create, perform and verify attestation requests, as pvattest does.

``create`` takes pvattest's options (``rust/pvattest/src/cli.rs``) and writes
the request in the exchange format plus the ARPK in a separate file;
``perform`` runs a request inside a secure guest booted on a simulated
server (a testbed with the given host key) instead of ``/dev/uv``;
``verify`` recomputes the measurement and names the check that failed
(se-format.md §4.2). Randomness for new requests comes from ``os.urandom``;
all format and check logic lives in :mod:`protocol`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from protocol import (
    ATTEST_FLAG_ATTEST_PHKH,
    ATTEST_FLAG_FIRMWARE_STATE,
    ATTEST_FLAG_IMAGE_PHKH,
    ATTEST_FLAG_NAMES,
    ATTEST_FLAG_NONCE,
    ATTEST_FLAG_SECRET_STORE_HASH,
    BootHdrTags,
    ExchangeRequest,
    ExchangeResponse,
    UsageError,
    build_arcb,
    find_se_header,
    flag_names,
    parse_image,
    parse_se_header,
    read_host_private_key,
    verify_attestation,
)
from protocol._crypto import phkh as phkh_of

from ._cli_certs import certificate_options, certificate_options_from, load_verified_host_keys

ADD_DATA_FLAGS = {
    "phkh-img": ATTEST_FLAG_IMAGE_PHKH,
    "phkh-att": ATTEST_FLAG_ATTEST_PHKH,
    "secret-store-hash": ATTEST_FLAG_SECRET_STORE_HASH,
    "firmware-state": ATTEST_FLAG_FIRMWARE_STATE,
}
"""``--add-data`` values: pvattest's two, and sesim's names for flag bits 4 and 5."""
MIB = 1 << 20


@click.group()
def attest() -> None:
    """Create, perform and verify attestation requests (like pvattest)."""


def _split(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    out = tuple(v for value in values for v in value.split(",") if v)
    for v in out:
        if v not in ADD_DATA_FLAGS:
            raise click.BadParameter(f"'{v}' is not one of {', '.join(ADD_DATA_FLAGS)}", ctx=ctx, param=param)
    return out


@attest.command()
@certificate_options
@click.option("-o", "--output", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the request (pvattest exchange format) to FILE.")
@click.option("-a", "--arpk", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="Save the attestation request protection key (32 bytes, unencrypted) in FILE. "
              "Do not publish it: whoever has it can forge a verification.")
@click.option("--add-data", multiple=True, metavar="FLAGS", callback=_split,
              help=f"Ask for additional data: {', '.join(ADD_DATA_FLAGS)}. Repeatable; comma-separated.")
def create(**opts: Any) -> None:
    """Create an attestation request for the hosts of the host-key documents.

    A fresh protection key (ARPK), measurement key and nonce are drawn for
    every request; the request always carries a nonce, as pvattest's do.
    """
    documents = load_verified_host_keys(certificate_options_from(opts))
    flags = ATTEST_FLAG_NONCE
    for name in opts["add_data"]:
        flags |= ADD_DATA_FLAGS[name]
    arpk = os.urandom(32)
    arcb = build_arcb(
        host_keys=[doc.public_key for doc in documents], cust_private_key=ec.generate_private_key(ec.SECP521R1()),
        arpk=arpk, iv=os.urandom(12), flags=flags, measurement_key=os.urandom(64), nonce=os.urandom(16),
    )  # fmt: skip
    request = ExchangeRequest.for_arcb(arcb)
    Path(opts["output"]).write_bytes(request.pack())
    Path(opts["arpk"]).write_bytes(arpk)
    click.echo(f"wrote {opts['output']}: attestation request for {len(documents)} host key(s), "
               f"flags {', '.join(flag_names(flags, ATTEST_FLAG_NAMES))}; ARPK in {opts['arpk']}")  # fmt: skip


def _read_limited(path: str | None, limit: int, what: str) -> bytes | None:
    if path is None:
        return None
    data = Path(path).read_bytes()
    if len(data) > limit:
        raise UsageError(f"{path}: {what} is at most {limit} bytes, the file has {len(data)}")
    return data


@attest.command()
@click.argument("input_pos", metavar="IN", required=False, type=click.Path(dir_okay=False))
@click.argument("output_pos", metavar="OUT", required=False, type=click.Path(dir_okay=False))
@click.option("-i", "--input", "input_opt", hidden=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", "output_opt", hidden=True, type=click.Path(dir_okay=False))
@click.option("--image", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The Secure Execution image the simulated guest boots.")
@click.option("--host-key", required=True, metavar="KEYFILE", type=click.Path(dir_okay=False),
              help="The simulated server's private host key (PEM or DER, EC P-521).")
@click.option("-u", "--user-data", metavar="FILE", type=click.Path(dir_okay=False),
              help="Up to 256 bytes of user data, bound into the measurement.")
@click.option("--memory", "memory_mib", type=click.IntRange(min=1), default=None,
              help="Guest memory in MiB (default: enough for the image and the buffers).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the simulated server (its handles and the configuration UID).")
def perform(**opts: Any) -> None:
    """Run a request inside a secure guest of a simulated server.

    The server gets the given host key, boots IMAGE as a secure guest (the
    real SET_SEC_CONF_PARAMS / UNPACK / VERIFY sequence), and the guest issues
    RETR_ATTEST with the request from its own memory, as 'pvattest perform'
    does through /dev/uv. The response (request, measurement, additional data,
    user data, configuration UID) is written to OUT.
    """
    src = _one_of(opts["input_pos"], opts["input_opt"], "IN")
    dst = _one_of(opts["output_pos"], opts["output_opt"], "OUT")
    request = ExchangeRequest.parse(Path(src).read_bytes())
    key = read_host_private_key(opts["host_key"])
    image = Path(opts["image"]).read_bytes()
    header = parse_image(image).header
    if phkh_of(key.public_key()) not in header.phkhs:
        raise UsageError(f"{opts['image']} has no key slot for the host key in {opts['host_key']}")
    user = _read_limited(opts["user_data"], 256, "user data")
    memory = opts["memory_mib"] or (len(image) + 2 * MIB) // MIB + 1
    response = trio.run(_perform, request, key, image, user, memory, opts["seed"])
    Path(dst).write_bytes(response.pack())
    click.echo(f"wrote {dst}: attestation response, configuration UID {response.cuid.hex()}")


def _one_of(positional: str | None, option: str | None, name: str) -> str:
    if positional and option:
        raise click.UsageError(f"give {name} once, as an argument or as an option")
    if not (positional or option):
        raise click.UsageError(f"missing argument '{name}'")
    return positional or option  # type: ignore[return-value]


async def _perform(
    request: ExchangeRequest, key: ec.EllipticCurvePrivateKey, image: bytes, user: bytes | None,
    memory_mib: int, seed: int,
) -> ExchangeResponse:  # fmt: skip
    from ._guest_ops import attest as attest_in_guest
    from .testbed import open_testbed

    async with open_testbed(seed=seed, host_key=key) as tb:
        guest = await tb.secure_guest(memory_mib=memory_mib, image=image)
        return await attest_in_guest(guest, request, user_data=user)


@attest.command()
@click.option("-i", "--input", "input_", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The attestation response to verify.")
@click.option("--hdr", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The guest's Secure Execution image, or its extracted SE header.")
@click.option("-a", "--arpk", required=True, metavar="FILE", type=click.Path(dir_okay=False),
              help="The protection key 'create' wrote for this request.")
@click.option("-o", "--output", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the verified values to FILE.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True,
              help="Format of --output.")
@click.option("-u", "--user-data", "user_out", metavar="FILE", type=click.Path(dir_okay=False),
              help="Write the (verified) user data to FILE, if the response has any.")
@click.option("--request", metavar="FILE", type=click.Path(dir_okay=False),
              help="Also check that the response answers this request (the file 'create' wrote).")
def verify(**opts: Any) -> None:
    """Verify an attestation response against the image header and the ARPK.

    Exits 1 naming the check that failed: a malformed response, another
    request, a wrong ARPK, wrong sizes, additional data that names host keys
    the request or the header do not have, or a measurement that does not
    match (which input differs an HMAC cannot tell; the message says what
    can).
    """
    response = ExchangeResponse.parse(Path(opts["input_"]).read_bytes())
    hdr = Path(opts["hdr"]).read_bytes()
    header = parse_se_header(memoryview(hdr)[find_se_header(hdr) :])
    arpk = Path(opts["arpk"]).read_bytes()
    request_arcb = ExchangeRequest.parse(Path(opts["request"]).read_bytes()).arcb if opts["request"] else None
    result = verify_attestation(
        response, header_phkhs=header.phkhs, tags=BootHdrTags.from_header(header), arpk=arpk,
        request_arcb=request_arcb,
    )  # fmt: skip
    values: dict[str, str] = {"cuid": "0x" + result.cuid.hex()}
    if result.additional is not None:
        values.update({k: "0x" + v for k, v in result.additional.as_dict().items()})
    if result.user_data is not None:
        values["user_data"] = "0x" + result.user_data.hex()
    click.echo("Attestation measurement verified")
    for key, value in values.items():
        click.echo(f"{key}: {value}")
    if opts["output"]:
        text = json.dumps(values, indent=2) + "\n" if opts["fmt"] == "json" else _yaml(values)
        Path(opts["output"]).write_text(text)
    if opts["user_out"]:
        if result.user_data is None:
            click.echo("sesim: warning: --user-data given, but the response contains no user data", err=True)
        else:
            Path(opts["user_out"]).write_bytes(result.user_data)


def _yaml(values: dict[str, str]) -> str:
    """A flat YAML mapping of quoted strings (what ``pvsecret create --cuid FILE`` reads)."""
    return "".join(f"{key}: '{value}'\n" for key, value in values.items())
