"""Requests for the guest's attestation and secret calls, built for a testbed server.

The ARCBs and ASRCBs are real ones (protocol's builders, fixed keys and IVs
so runs repeat), made for the testbed server's host key and bound to a
booted guest's SE header. The raw UVCBs go through ``uvc_conformance``'s
``guest_call`` like every other guest call of this suite.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from uvc_conformance import PAGE, Answer, guest_call

from protocol import (
    ATTEST_FLAG_NONCE,
    BootHdrTags,
    GuestSecret,
    RetrAttestRequest,
    build_arcb,
    build_asrcb,
    find_se_header,
    parse_se_header,
)
from protocol._crypto import ec_private_from_scalar
from protocol._guest_calls import add_secret_uvcb
from sesim.testbed import SecureGuest, Testbed

CUST = ec_private_from_scalar(b"\x5a" * 64)
OTHER_HOST = ec_private_from_scalar(b"\x3c" * 64)
"""A host key no testbed server has."""
ARPK = b"\x17" * 32
MEAS_KEY = b"\x77" * 64
NONCE = b"\xab" * 16

ARCB_AT = 0x90000
MEAS_AT = 0x92000
ADD_AT = 0x93000
ASRCB_AT = 0x94000
BUF_AT = 0x9A000
"""Guest addresses of the buffers (above the testbed image, below 1 MiB)."""


def arcb_for(tb: Testbed, *, flags: int = ATTEST_FLAG_NONCE, host: Any = None, nonce: bytes | None = NONCE) -> bytes:
    """An ARCB for the testbed's server (or ``host``, a public key)."""
    return build_arcb(
        host_keys=[tb.host_public_key if host is None else host], cust_private_key=CUST, arpk=ARPK,
        iv=b"\x55" * 12, flags=flags, measurement_key=MEAS_KEY,
        nonce=nonce if flags & ATTEST_FLAG_NONCE else None,
    )  # fmt: skip


def attest_uvcb(**changes: Any) -> RetrAttestRequest:
    """A RETR_ATTEST UVCB naming the buffers above; fields overridable."""
    fields: dict[str, Any] = {
        "arcb_addr": ARCB_AT, "meas_len": 64, "meas_addr": MEAS_AT, "add_data_len": 0x1000, "add_data_addr": ADD_AT,
    }  # fmt: skip
    fields.update(changes)
    return RetrAttestRequest(**fields)


async def retr_attest(g: SecureGuest, arcb: bytes, **changes: Any) -> Answer:
    g.write(ARCB_AT, arcb)
    return await guest_call(g, attest_uvcb(**changes))


def guest_tags(g: SecureGuest) -> BootHdrTags:
    data = g.image if isinstance(g.image, bytes) else g.image.data
    return BootHdrTags.from_header(parse_se_header(memoryview(data)[find_se_header(data) :]))


def asrcb_for(g: SecureGuest, secret: GuestSecret | None = None, *, host: Any = None, **changes: Any) -> bytes:
    """An ASRCB for ``g``'s server, bound to ``g``'s SE header; build_asrcb arguments overridable."""
    fields: dict[str, Any] = {
        "secret": GuestSecret.null() if secret is None else secret,
        "tags": guest_tags(g),
        "host_keys": [g.testbed.host_public_key if host is None else host],
        "cust_private_key": CUST,
        "prot_key": b"\x21" * 32,
        "iv": b"\x33" * 12,
    }
    fields.update(changes)
    return build_asrcb(**fields)


async def add(g: SecureGuest, asrcb: bytes, *, length: int | None = None) -> Answer:
    """ADD_SECRET of ``asrcb`` placed at :data:`ASRCB_AT`."""
    g.write(ASRCB_AT, asrcb)
    return await guest_call(g, add_secret_uvcb(ASRCB_AT), length=length)


def plain(name: str, data: bytes) -> GuestSecret:
    return GuestSecret.retrievable("plain", name, data)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec_private_from_scalar(b"\x42" * 32)


assert ASRCB_AT + 6 * PAGE <= BUF_AT
