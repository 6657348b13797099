"""The sealed envelope shared by attestation (ARCB) and add-secret (ASRCB) requests.

``reference/se-format.md`` §4.1 (``rust/pv/src/req/{header.rs,request.rs}``)::

    RequestHeader(48) | plain part (request-specific) | customer key X80‖Y80
    | key slots (80 each) | plain trailer (ASRCB secret header; empty for ARCB)
    | encrypted area (sea bytes) | GCM tag (16)

The AAD is everything before the encrypted area; AES-256-GCM under the
request protection key with the header's IV. Every key slot wraps that key
for one host exactly as in an SE header (§2.1), so a host finds its slot by
phkh and unwraps it with ECDH against the request's customer key.

Nothing here draws random numbers: callers pass IV, keys and customer key.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import field, frozen
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._crypto import (
    GCM_TAG_LEN,
    KEY_SLOT_LEN,
    PHKH_LEN,
    PUBKEY_LEN,
    ec_public_coords,
    ec_public_from_coords,
    phkh,
    unwrap_key_slot,
    wrap_key_slot,
)
from ._errors import FormatError, UsageError, VerificationError
from ._request import REQUEST_HEADER_LEN, REQUEST_IV_LEN, RequestHeader
from ._se_header import KeySlot

PROT_KEY_LEN = 32
MAX_REQUEST_KEY_SLOTS = 0xFF
"""``nks`` is one byte in a request header (se-format.md §4.1)."""


def request_size(*, before: int, nks: int, after: int, sea: int) -> int:
    """``rql`` of a request with these part sizes (header and tag included)."""
    return REQUEST_HEADER_LEN + before + PUBKEY_LEN + KEY_SLOT_LEN * nks + after + sea + GCM_TAG_LEN


def request_aad(
    *,
    magic: bytes,
    version: int,
    iv: bytes,
    prot_key: bytes,
    cust_private_key: ec.EllipticCurvePrivateKey,
    host_keys: Sequence[ec.EllipticCurvePublicKey],
    before: bytes,
    after: bytes,
    sea: int,
) -> bytes:
    """The authenticated plaintext of a request: header, plain parts, key slots.

    Raises:
        UsageError: no host key or more than 255, a key that is not P-521, or
            a key, IV or magic of the wrong size.
    """
    if not 1 <= len(host_keys) <= MAX_REQUEST_KEY_SLOTS:
        raise UsageError(f"a request holds 1 to {MAX_REQUEST_KEY_SLOTS} host keys, got {len(host_keys)}")
    for i, key in enumerate((cust_private_key, *host_keys)):
        if not isinstance(getattr(key, "curve", None), ec.SECP521R1):
            what = "customer key" if i == 0 else f"host key #{i}"
            raise UsageError(f"the {what} must be an EC P-521 (secp521r1) key")
    if len(prot_key) != PROT_KEY_LEN:
        raise UsageError(f"request protection key must be {PROT_KEY_LEN} bytes, got {len(prot_key)}")
    if len(iv) != REQUEST_IV_LEN:
        raise UsageError(f"request IV must be {REQUEST_IV_LEN} bytes, got {len(iv)}")
    nks = len(host_keys)
    rql = request_size(before=len(before), nks=nks, after=len(after), sea=sea)
    header = RequestHeader(magic=bytes(magic), version=version, rql=rql, iv=bytes(iv), nks=nks, sea=sea)
    slots = b"".join(wrap_key_slot(cust_private_key, key, bytes(prot_key)) for key in host_keys)
    return header.pack() + bytes(before) + ec_public_coords(cust_private_key.public_key()) + slots + bytes(after)


def gcm_seal(prot_key: bytes, iv: bytes, aad: bytes, confidential: bytes) -> bytes:
    """``aad ‖ ciphertext ‖ tag``: the whole request once its AAD is known."""
    return bytes(aad) + AESGCM(bytes(prot_key)).encrypt(bytes(iv), bytes(confidential), bytes(aad))


@frozen(kw_only=True)
class SealedRequest:
    """A request split into its parts; nothing decrypted yet.

    ``before`` is the request-specific plain part between header and
    customer key, ``after`` the plain part between the last key slot and
    the encrypted area.
    """

    header: RequestHeader
    before: bytes = field(repr=False)
    cust_pub_key: bytes = field(repr=False)
    key_slots: tuple[KeySlot, ...] = field(converter=tuple)
    after: bytes = field(repr=False)
    encrypted: bytes = field(repr=False)
    tag: bytes
    raw: bytes = field(repr=False)

    @property
    def aad(self) -> bytes:
        """Everything the GCM tag authenticates besides the ciphertext."""
        return self.raw[: self.header.rql - GCM_TAG_LEN - self.header.sea]

    @property
    def phkhs(self) -> tuple[bytes, ...]:
        return tuple(slot.phkh for slot in self.key_slots)

    @classmethod
    def parse(cls, data: bytes, *, what: str, before_len: int) -> SealedRequest:
        """Split the request at the start of ``data`` (bytes after ``rql`` are ignored).

        Raises:
            FormatError: shorter than its header or than ``rql``, no key slot,
                or ``rql`` not large enough for the parts it declares.
        """
        header = RequestHeader.parse(data)
        rql, nks, sea = header.rql, header.nks, header.sea
        if nks == 0:
            raise FormatError(f"{what} has no key slot (nks = 0)")
        slots_at = REQUEST_HEADER_LEN + before_len + PUBKEY_LEN
        after_at = slots_at + KEY_SLOT_LEN * nks
        enc_at = rql - GCM_TAG_LEN - sea
        if enc_at < after_at:
            raise FormatError(f"{what} length {rql:#x} is too small for {nks} key slot(s) and sea {sea:#x}")
        if len(data) < rql:
            raise FormatError(f"{what} truncated: {len(data)} bytes of {rql}")
        raw = bytes(data[:rql])
        slots = [
            KeySlot(phkh=s[:PHKH_LEN], wrapped_key=s[PHKH_LEN:64], tag=s[64:])
            for s in (raw[slots_at + KEY_SLOT_LEN * i : slots_at + KEY_SLOT_LEN * (i + 1)] for i in range(nks))
        ]
        return cls(
            header=header, before=raw[REQUEST_HEADER_LEN:slots_at - PUBKEY_LEN],
            cust_pub_key=raw[slots_at - PUBKEY_LEN : slots_at], key_slots=slots,
            after=raw[after_at:enc_at], encrypted=raw[enc_at : rql - GCM_TAG_LEN],
            tag=raw[rql - GCM_TAG_LEN :], raw=raw,
        )  # fmt: skip

    def open(self, prot_key: bytes) -> bytes:
        """Decrypt the encrypted area with the request protection key.

        Raises:
            VerificationError: ``check="request-tag"`` if the GCM tag fails
                (a wrong key, or a changed byte anywhere in the request).
        """
        if len(prot_key) != PROT_KEY_LEN:
            raise VerificationError(
                f"the request protection key must be {PROT_KEY_LEN} bytes, got {len(prot_key)}",
                check="request-tag",
            )
        try:
            return AESGCM(bytes(prot_key)).decrypt(self.header.iv, self.encrypted + self.tag, self.aad)
        except InvalidTag:
            raise VerificationError(
                "the request does not open with this protection key (GCM tag mismatch)", check="request-tag"
            ) from None

    def protection_key_for(self, host_private_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, int]:
        """(protection key, slot index) as the ultravisor of this host recovers them.

        Raises:
            VerificationError: ``"no-key-slot"`` (no slot carries this host's
                phkh), ``"key-slot-tag"`` (the slot does not unwrap), or
                ``"key-type"``.
        """
        if not isinstance(getattr(host_private_key, "curve", None), ec.SECP521R1):
            raise VerificationError("the host key must be an EC P-521 private key", check="key-type")
        mine = phkh(host_private_key.public_key())
        index = next((i for i, s in enumerate(self.key_slots) if s.phkh == mine), None)
        if index is None:
            raise VerificationError("the request has no key slot for this host key", check="no-key-slot")
        try:
            cust_pub = ec_public_from_coords(self.cust_pub_key)
        except FormatError as exc:
            raise VerificationError(str(exc), check="key-slot-tag") from None
        return unwrap_key_slot(self.key_slots[index].pack(), host_private_key, cust_pub), index

    def open_for_host(self, host_private_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, int]:
        """(confidential plaintext, slot index): what the UV sees after unsealing."""
        prot_key, index = self.protection_key_for(host_private_key)
        return self.open(prot_key), index
