"""The cryptographic building blocks shared by SE headers and UV requests.

All of it follows s390-tools (``rust/pv/src/crypto.rs``, ``req/keyslot.rs``,
``req/ec_coord.rs``) byte for byte; see ``reference/se-format.md`` §2.1:

* EC public keys travel as X ‖ Y, each left-zero-padded to **80** bytes
  (not 66), and the public host-key hash (phkh) is SHA-256 over that form.
* The key-encryption key is one round of the X9.63 KDF:
  ``SHA-256(Z ‖ 00000001)`` with Z the 66-byte ECDH x-coordinate.
* A key slot is ``phkh ‖ AES-256-GCM(KEK, IV=0^12, AAD='', protection key)``.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._errors import FormatError, VerificationError

COORD_LEN = 80
"""Bytes per padded EC coordinate (``ec_coord.rs``: 0x50)."""
PUBKEY_LEN = 2 * COORD_LEN
KEY_SLOT_LEN = 80
PHKH_LEN = 32
GCM_TAG_LEN = 16
P521_SCALAR_LEN = 66


def ec_public_coords(key: ec.EllipticCurvePublicKey) -> bytes:
    """The 160-byte X80 ‖ Y80 form of a P-521 public key."""
    numbers = key.public_numbers()
    return numbers.x.to_bytes(COORD_LEN, "big") + numbers.y.to_bytes(COORD_LEN, "big")


def ec_public_from_coords(data: bytes) -> ec.EllipticCurvePublicKey:
    """Parse X80 ‖ Y80 back into a P-521 public key.

    Raises:
        FormatError: wrong length, or the point is not on secp521r1.
    """
    if len(data) != PUBKEY_LEN:
        raise FormatError(f"EC public key must be {PUBKEY_LEN} bytes (X80||Y80), got {len(data)}")
    x = int.from_bytes(data[:COORD_LEN], "big")
    y = int.from_bytes(data[COORD_LEN:], "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, ec.SECP521R1()).public_key()
    except ValueError as exc:
        raise FormatError(f"EC public key is not a point on secp521r1: {exc}") from None


def ec_private_from_scalar(data: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-521 private key from its big-endian scalar (any length up to 80 bytes)."""
    if not 1 <= len(data) <= COORD_LEN:
        raise FormatError(f"P-521 private scalar must be 1..{COORD_LEN} bytes, got {len(data)}")
    try:
        return ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP521R1())
    except ValueError as exc:
        raise FormatError(f"not a valid P-521 private scalar: {exc}") from None


def phkh(key: ec.EllipticCurvePublicKey) -> bytes:
    """The public host-key hash: SHA-256 over X80 ‖ Y80."""
    return hashlib.sha256(ec_public_coords(key)).digest()


def derive_kek(private: ec.EllipticCurvePrivateKey, peer: ec.EllipticCurvePublicKey) -> bytes:
    """The AES-256 key-encryption key of an ECDH P-521 exchange.

    ``SHA-256(Z ‖ 00 00 00 01)``: one X9.63 KDF round, counter 1, no SharedInfo.
    Both sides get the same key: the customer with (cust_priv, host_pub), the
    ultravisor with (host_priv, cust_pub).
    """
    if not isinstance(peer.curve, ec.SECP521R1) or not isinstance(private.curve, ec.SECP521R1):
        raise VerificationError("ECDH keys must be on secp521r1 (P-521)", check="key-type")
    shared = private.exchange(ec.ECDH(), peer)
    return hashlib.sha256(shared + b"\x00\x00\x00\x01").digest()


def wrap_key_slot(
    cust_priv: ec.EllipticCurvePrivateKey, host_pub: ec.EllipticCurvePublicKey, prot_key: bytes
) -> bytes:
    """One 80-byte key slot: phkh ‖ GCM(KEK, zero IV, no AAD, prot_key) ‖ tag."""
    if len(prot_key) != 32:
        raise FormatError(f"protection key must be 32 bytes, got {len(prot_key)}")
    kek = derive_kek(cust_priv, host_pub)
    wrapped = AESGCM(kek).encrypt(b"\x00" * 12, prot_key, None)
    return phkh(host_pub) + wrapped


def unwrap_key_slot(
    slot: bytes, host_priv: ec.EllipticCurvePrivateKey, cust_pub: ec.EllipticCurvePublicKey
) -> bytes:
    """The protection key inside a key slot, as the ultravisor recovers it.

    Raises:
        FormatError: the slot is not 80 bytes.
        VerificationError: ``check="key-slot-tag"`` if the slot's GCM tag fails.
    """
    if len(slot) != KEY_SLOT_LEN:
        raise FormatError(f"key slot must be {KEY_SLOT_LEN} bytes, got {len(slot)}")
    kek = derive_kek(host_priv, cust_pub)
    try:
        return AESGCM(kek).decrypt(b"\x00" * 12, slot[PHKH_LEN:], None)
    except InvalidTag:
        raise VerificationError("key slot does not open with this host key", check="key-slot-tag") from None
