"""User data of add-secret requests: unsigned, or signed with the requester's key.

``reference/se-format.md`` §4.3 (``rust/pv/src/uvsecret/user_data.rs``). The
512 bytes at 0x218 of every ASRCB are ignored by the firmware but covered by
the request tag. With a signing key they hold the message and a signature
over the whole request up to its tag, taken while the signature area was
zero:

* EC secp521r1: ``data[256] | sig[139] | res[5] | BE16 sig_len | res[110]``
  (DER ECDSA with SHA-512);
* RSA-2048: ``data[256] | sig[256]``; RSA-3072: ``data[128] | sig[384]``
  (RSA-PSS, MGF1-SHA-512).

The user-data type travels in the request magic (``"asrcbM" ‖ BE16 type``).
"""

from __future__ import annotations

import enum
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ._errors import FormatError, UsageError, VerificationError

USER_DATA_OFFSET = 0x218
USER_DATA_LEN = 0x200
EC_SIG_MAX = 139
_EC_SIZE_AT = 256 + EC_SIG_MAX + 5


class UserDataType(enum.IntEnum):
    """The user-data type in the ASRCB magic (``UserDataType``)."""

    NULL = 0
    UNSIGNED = 1
    ECDSA_P521 = 2
    RSA_2048 = 3
    RSA_3072 = 4

    @property
    def max_data(self) -> int:
        """Bytes of arbitrary data that fit beside the signature."""
        return {0: 0, 1: 512, 2: 256, 3: 256, 4: 128}[int(self)]

    @property
    def signed(self) -> bool:
        return self.value >= UserDataType.ECDSA_P521


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def user_data_type_of(key: object) -> UserDataType:
    """The user-data type a signing (or verifying) key gives.

    Raises:
        UsageError: not EC secp521r1 and not RSA with 2048 or 3072 bits
            (s390-tools rejects RSA-4096 and other curves).
    """
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP521R1):
            return UserDataType.ECDSA_P521
        raise UsageError(f"unsupported user-signing key: EC {key.curve.name} (only secp521r1)")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size in (2048, 3072):
            return UserDataType.RSA_2048 if key.key_size == 2048 else UserDataType.RSA_3072
        raise UsageError(f"unsupported user-signing key: RSA {key.key_size} (only 2048 or 3072 bits)")
    raise UsageError("unsupported user-signing key: only EC secp521r1 and RSA 2048/3072 keys sign user data")


def user_data_field(data: bytes | None, kind: UserDataType) -> bytes:
    """The 512-byte field with ``data`` in front and the rest (the signature area) zero.

    Raises:
        UsageError: ``data`` longer than the type allows.
    """
    data = bytes(data or b"")
    if len(data) > kind.max_data:
        raise UsageError(f"user data for {kind.name} is at most {kind.max_data} bytes, got {len(data)}")
    return data.ljust(USER_DATA_LEN, b"\0")


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=padding.PSS.MAX_LENGTH)


def sign_user_data(field: bytes, key: SigningKey, message: bytes) -> bytes:
    """``field`` with the signature of ``message`` (the request with the area still zero) inserted."""
    kind = user_data_type_of(key)
    out = bytearray(field)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(message, ec.ECDSA(hashes.SHA512()))
        out[256 : 256 + len(sig)] = sig
        struct.pack_into(">H", out, _EC_SIZE_AT, len(sig))
    else:
        sig = key.sign(message, _pss(), hashes.SHA512())
        out[kind.max_data : kind.max_data + len(sig)] = sig
    return bytes(out)


def split_user_data(field: bytes, kind: UserDataType) -> tuple[bytes, bytes, bytes]:
    """(data, signature, field with the signature area zeroed) of a signed user-data field.

    Raises:
        FormatError: an EC signature length above 139.
    """
    data = bytes(field[: kind.max_data])
    if kind is UserDataType.ECDSA_P521:
        size = struct.unpack_from(">H", field, _EC_SIZE_AT)[0]
        if size > EC_SIG_MAX:
            raise FormatError(f"the EC user-data signature claims {size} bytes, at most {EC_SIG_MAX} fit")
        sig = bytes(field[256 : 256 + size])
    else:
        sig = bytes(field[kind.max_data :])
    return data, sig, data.ljust(USER_DATA_LEN, b"\0")


def verify_user_signature(key: VerifyingKey, kind: UserDataType, message: bytes, signature: bytes) -> None:
    """Check the signature of a request (``verify_asrcb_and_get_user_data``).

    Raises:
        VerificationError: ``"user-key-mismatch"`` (the key is not of the
            request's kind) or ``"user-signature"`` (it does not verify).
    """
    try:
        key_kind = user_data_type_of(key)
    except UsageError as exc:
        raise VerificationError(f"{exc}; the request is signed with {kind.name}", check="user-key-mismatch") from None
    if key_kind is not kind:
        raise VerificationError(
            f"the key is {key_kind.name} but the request's user data is signed with {kind.name}",
            check="user-key-mismatch",
        )
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, message, ec.ECDSA(hashes.SHA512()))
        else:
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=padding.PSS.AUTO)
            key.verify(signature, message, pss, hashes.SHA512())
    except InvalidSignature:
        raise VerificationError("the user-data signature does not verify", check="user-signature") from None
