"""The attestation request control block (ARCB): build, parse, unseal.

``reference/se-format.md`` §4.2 (``rust/pv/src/uvattest/arcb.rs``)::

    0x00 RequestHeader (magic 8 zero bytes, version 0x0100)
    0x30 u64 plaintext attestation flags | 0x38 u32 MAI | 0x3C u32 reserved
    0x40 customer public key X80‖Y80 | 0xE0 key slots (80 each, wrap the ARPK)
    E    encrypted: measurement key (64) ‖ nonce (16, if flag bit 1)
    E+sea GCM tag (16)

The ARPK (attestation request protection key) is the request protection
key of §4.1; ``pvattest create`` writes it to a file so that ``verify`` can
open the request later. ``exp/arcb.bin`` is reproduced by
:func:`build_arcb` with the inputs of the ``arcb_v1`` KAT.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from attrs import field, frozen
from cryptography.hazmat.primitives.asymmetric import ec

from ._attest import (
    ATTEST_FLAG_NONCE,
    MAI_HMAC_SHA512,
    MEASUREMENT_KEY_LEN,
    NONCE_LEN,
    additional_data_size,
)
from ._errors import FormatError, UsageError
from ._uvreq import SealedRequest, gcm_seal, request_aad

ARCB_MAGIC = bytes(8)
ARCB_VERSION = 0x0100
ARCB_AUTH_LEN = 16
"""flags (8) ‖ MAI (4) ‖ reserved (4)."""
ARCB_MAX_LEN = 1 << 20
"""uvdevice's limit on the ARCB (``UVIO_ATT_ARCB_MAX_LEN``)."""
_AUTH = struct.Struct(">QII")


def arcb_sea(flags: int) -> int:
    """Size of the encrypted area for ``flags``: the key, plus the nonce if bit 1 is set."""
    return MEASUREMENT_KEY_LEN + (NONCE_LEN if flags & ATTEST_FLAG_NONCE else 0)


def build_arcb(
    *,
    host_keys: Sequence[ec.EllipticCurvePublicKey],
    cust_private_key: ec.EllipticCurvePrivateKey,
    arpk: bytes,
    iv: bytes,
    flags: int,
    measurement_key: bytes,
    nonce: bytes | None,
    mai: int = MAI_HMAC_SHA512,
) -> bytes:
    """An encrypted ARCB (se-format.md §4.2); one key slot per host key, in order.

    ``nonce`` must be given exactly when ``flags`` has the nonce bit (pvattest
    always sets it).

    Raises:
        UsageError: sizes, the nonce/flag mismatch, or host keys (1-255, P-521).
    """
    if len(measurement_key) != MEASUREMENT_KEY_LEN:
        raise UsageError(f"measurement key must be {MEASUREMENT_KEY_LEN} bytes, got {len(measurement_key)}")
    if not 0 <= flags < 1 << 64:
        raise UsageError(f"attestation flags must be a u64, got {flags:#x}")
    if bool(flags & ATTEST_FLAG_NONCE) != (nonce is not None):
        raise UsageError("give a nonce exactly when the nonce flag (bit 1) is set")
    if nonce is not None and len(nonce) != NONCE_LEN:
        raise UsageError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    confidential = bytes(measurement_key) + bytes(nonce or b"")
    aad = request_aad(
        magic=ARCB_MAGIC, version=ARCB_VERSION, iv=iv, prot_key=arpk, cust_private_key=cust_private_key,
        host_keys=host_keys, before=_AUTH.pack(flags, mai, 0), after=b"", sea=len(confidential),
    )  # fmt: skip
    return gcm_seal(arpk, iv, aad, confidential)


@frozen(kw_only=True)
class AttestationSecrets:
    """The confidential part of an ARCB: only the requester and the UV see it."""

    measurement_key: bytes = field(repr=False)
    nonce: bytes | None = field(repr=False)


@frozen(kw_only=True)
class Arcb:
    """A parsed ARCB: the plaintext fields and the still-sealed envelope."""

    sealed: SealedRequest = field(repr=False)
    flags: int
    mai: int

    @property
    def version(self) -> int:
        return self.sealed.header.version

    @property
    def nks(self) -> int:
        return self.sealed.header.nks

    @property
    def phkhs(self) -> tuple[bytes, ...]:
        return self.sealed.phkhs

    @property
    def expected_additional_size(self) -> int:
        return additional_data_size(self.flags)

    @classmethod
    def parse(cls, data: bytes) -> Arcb:
        """Parse an ARCB at the start of ``data``.

        Raises:
            FormatError: not an ARCB (magic), another version, a reserved
                field set, an unknown MAI, or an inconsistent layout
                (truncated, ``rql`` vs nks/sea, no key slot, sea not the
                size its flags ask for).
        """
        if len(data) < 8 or bytes(data[:8]) != ARCB_MAGIC:
            raise FormatError("not an attestation request: the ARCB magic (8 zero bytes) is missing")
        sealed = SealedRequest.parse(data, what="attestation request", before_len=ARCB_AUTH_LEN)
        if sealed.header.version != ARCB_VERSION:
            raise FormatError(f"unsupported attestation request version {sealed.header.version:#x}")
        flags, mai, res = _AUTH.unpack(sealed.before)
        if res:
            raise FormatError("attestation request has a non-zero reserved field")
        if mai != MAI_HMAC_SHA512:
            raise FormatError(f"unsupported measurement algorithm {mai} (only 1, HMAC-SHA512)")
        if sealed.after:
            raise FormatError("attestation request has bytes between its key slots and its encrypted area")
        if sealed.header.sea != arcb_sea(flags):
            raise FormatError(
                f"attestation request encrypted area is {sealed.header.sea} bytes; its flags need {arcb_sea(flags)}"
            )
        return cls(sealed=sealed, flags=flags, mai=mai)

    def _secrets(self, plain: bytes) -> AttestationSecrets:
        nonce = plain[MEASUREMENT_KEY_LEN:] if self.flags & ATTEST_FLAG_NONCE else None
        return AttestationSecrets(measurement_key=plain[:MEASUREMENT_KEY_LEN], nonce=nonce)

    def open(self, arpk: bytes) -> AttestationSecrets:
        """Decrypt with the ARPK (``AttestationRequest::decrypt_bin``).

        Raises:
            VerificationError: ``check="request-tag"``: a wrong ARPK, or a
                changed byte in the request.
        """
        return self._secrets(self.sealed.open(arpk))

    def open_for_host(self, host_private_key: ec.EllipticCurvePrivateKey) -> tuple[AttestationSecrets, int]:
        """Unseal as this host's ultravisor does; (secrets, key-slot index).

        Raises:
            VerificationError: ``"no-key-slot"``, ``"key-slot-tag"`` or ``"request-tag"``.
        """
        plain, index = self.sealed.open_for_host(host_private_key)
        return self._secrets(plain), index
