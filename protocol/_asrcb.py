"""The add-secret request control block (ASRCB): build, parse, unseal, verify.

``reference/se-format.md`` §4.3 (``rust/pv/src/uvsecret/{asrcb.rs,guest_secret.rs}``)::

    0x000 RequestHeader: magic "asrcbM" ‖ BE16 user-data type, version 0x0100
    0x030 u64 flags (MSB0 bit 0: disable dump)
    0x038 target SE header PLD ‖ ALD ‖ TLD ‖ tag      0x108 CUID (16; 0 = any)
    0x118 reserved (256)                               0x218 user data (512)
    0x418 customer public key                          0x4B8 key slots (80 each)
    …     secret header: u16 0 | BE16 type | BE32 len | u64 0 [| id 32]
    …     encrypted: secret value ‖ extension secret (32)
    end   GCM tag (16)

The secret header is 16 bytes for a null ("meta") secret and 48 otherwise
(an update-CCK secret has 32 zero bytes where the ID would be). The
extension secret is 32 bytes given verbatim, or derived from the image's
customer communication key: ``HKDF-SHA512(CCK, salt = SE-header tag, info =
"IBM Z Ultravisor Add-Secret", 32)``; zeros when there is none.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from attrs import field, frozen
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._asrcb_user import (
    USER_DATA_LEN,
    USER_DATA_OFFSET,
    SigningKey,
    UserDataType,
    VerifyingKey,
    sign_user_data,
    split_user_data,
    user_data_field,
    user_data_type_of,
    verify_user_signature,
)
from ._attest import CUID_LEN, BootHdrTags
from ._crypto import GCM_TAG_LEN
from ._errors import FormatError, UsageError, VerificationError
from ._request import REQUEST_HEADER_LEN
from ._secrets import (
    ASSOCIATION_SECRET_LEN,
    CCK_LEN,
    SECRET_ID_LEN,
    SecretType,
    retrievable_value,
    secret_id,
)
from ._uvreq import SealedRequest, gcm_seal, request_aad

ASRCB_MAGIC_PREFIX = b"asrcbM"
ASRCB_VERSION = 0x0100
ASRCB_MAX_LEN = 1 << 20
"""uvdevice's limit (``UVIO_ADD_SECRET_MAX_LEN``)."""
ASRCB_FLAG_DISABLE_DUMP = 1 << 63
"""MSB0 bit 0 of the add-secret flags (``AddSecretFlags::set_disable_dump``)."""
EXTENSION_SECRET_LEN = 32
EXTENSION_SECRET_INFO = b"IBM Z Ultravisor Add-Secret"
AUTH_LEN = 0x3E8
"""flags ‖ tags ‖ CUID ‖ reserved ‖ user data: the plain part before the customer key."""
_AUTH_HEAD = struct.Struct(">Q208s16s256s")
_SECRET_HDR = struct.Struct(">HHIQ")
SHORT_SECRET_HDR_LEN = 16
LONG_SECRET_HDR_LEN = 48


def asrcb_magic(kind: UserDataType) -> bytes:
    return ASRCB_MAGIC_PREFIX + struct.pack(">H", kind)


def derive_extension_secret(cck: bytes, hdr_tag: bytes) -> bytes:
    """The CCK-derived extension secret (``ExtSecret::Derived``)."""
    if len(cck) != CCK_LEN:
        raise UsageError(f"the CCK must be {CCK_LEN} bytes, got {len(cck)}")
    hkdf = HKDF(algorithm=hashes.SHA512(), length=EXTENSION_SECRET_LEN, salt=bytes(hdr_tag),
                info=EXTENSION_SECRET_INFO)  # fmt: skip
    return hkdf.derive(bytes(cck))


@frozen(kw_only=True)
class GuestSecret:
    """A secret to add: its type, value, and (for listed types) ID and name."""

    type: SecretType
    value: bytes = field(repr=False)
    id: bytes | None = field(default=None, repr=lambda v: "None" if v is None else v.hex())
    name: str | None = None

    def __attrs_post_init__(self) -> None:
        if not self.type.valid_length(len(self.value)):
            raise UsageError(f"a {self.type.label} secret cannot be {len(self.value)} bytes")
        if self.type.listable != (self.id is not None) or (self.id is not None and len(self.id) != SECRET_ID_LEN):
            raise UsageError(f"a {self.type.label} secret needs {'a 32-byte' if self.type.listable else 'no'} ID")

    @classmethod
    def null(cls) -> GuestSecret:
        """A "meta" secret: no value, carries only the request's flags."""
        return cls(type=SecretType.NULL, value=b"")

    @classmethod
    def association(cls, name: str, value: bytes, *, use_name: bool = False) -> GuestSecret:
        if len(value) != ASSOCIATION_SECRET_LEN:
            raise UsageError(f"an association secret is {ASSOCIATION_SECRET_LEN} bytes, got {len(value)}")
        return cls(type=SecretType.ASSOCIATION, value=bytes(value), id=secret_id(name, use_name=use_name), name=name)

    @classmethod
    def retrievable(cls, kind: str, name: str, data: bytes, *, use_name: bool = False) -> GuestSecret:
        """A retrievable secret from pvsecret's ``--type`` and the secret file's bytes."""
        stype, value = retrievable_value(kind, data)
        return cls(type=stype, value=value, id=secret_id(name, use_name=use_name), name=name)

    @classmethod
    def update_cck(cls, cck: bytes) -> GuestSecret:
        if len(cck) != CCK_LEN:
            raise UsageError(f"a new CCK is {CCK_LEN} bytes, got {len(cck)}")
        return cls(type=SecretType.UPDATE_CCK, value=bytes(cck))

    def header(self) -> bytes:
        """The plain secret header: 16 bytes (null) or 48 (with ID, or zeros for update-CCK)."""
        head = _SECRET_HDR.pack(0, self.type, len(self.value), 0)
        if self.type is SecretType.NULL:
            return head
        return head + (self.id or bytes(SECRET_ID_LEN))


def build_asrcb(
    *,
    secret: GuestSecret,
    tags: BootHdrTags,
    host_keys: Sequence[ec.EllipticCurvePublicKey],
    cust_private_key: ec.EllipticCurvePrivateKey,
    prot_key: bytes,
    iv: bytes,
    flags: int = 0,
    cuid: bytes | None = None,
    extension_secret: bytes | None = None,
    user_data: bytes | None = None,
    user_sign_key: SigningKey | None = None,
) -> bytes:
    """An encrypted ASRCB (se-format.md §4.3); one key slot per host key.

    With ``user_sign_key`` the request is encrypted once, signed over its
    AAD and ciphertext with the signature area zero, and encrypted again
    with the signature in place (``encrypt_with_signed_user_data``).

    Raises:
        UsageError: a size out of range, user data too long for its type, an
            unsupported signing key, or host keys (1-255, P-521).
    """
    if not 0 <= flags < 1 << 64:
        raise UsageError(f"add-secret flags must be a u64, got {flags:#x}")
    cuid = bytes(CUID_LEN) if cuid is None else bytes(cuid)
    if len(cuid) != CUID_LEN:
        raise UsageError(f"the CUID must be {CUID_LEN} bytes, got {len(cuid)}")
    ext = bytes(EXTENSION_SECRET_LEN) if extension_secret is None else bytes(extension_secret)
    if len(ext) != EXTENSION_SECRET_LEN:
        raise UsageError(f"the extension secret must be {EXTENSION_SECRET_LEN} bytes, got {len(ext)}")
    if user_sign_key is not None:
        kind = user_data_type_of(user_sign_key)
    else:
        kind = UserDataType.NULL if user_data is None else UserDataType.UNSIGNED
    ufield = user_data_field(user_data, kind)
    confidential = secret.value + ext
    auth = _AUTH_HEAD.pack(flags, tags.pack(), cuid, bytes(256)) + ufield

    def aad_with(before: bytes) -> bytes:
        return request_aad(
            magic=asrcb_magic(kind), version=ASRCB_VERSION, iv=iv, prot_key=prot_key,
            cust_private_key=cust_private_key, host_keys=host_keys, before=before,
            after=secret.header(), sea=len(confidential),
        )  # fmt: skip

    aad = aad_with(auth)
    request = gcm_seal(prot_key, iv, aad, confidential)
    if user_sign_key is None:
        return request
    signed = sign_user_data(ufield, user_sign_key, request[:-GCM_TAG_LEN])
    aad = aad[:USER_DATA_OFFSET] + signed + aad[USER_DATA_OFFSET + USER_DATA_LEN :]
    return gcm_seal(prot_key, iv, aad, confidential)


@frozen(kw_only=True)
class OpenedSecret:
    """The confidential part of an ASRCB, as the UV (or the requester) sees it."""

    value: bytes = field(repr=False)
    extension_secret: bytes = field(repr=False)


@frozen(kw_only=True)
class Asrcb:
    """A parsed ASRCB: plaintext fields and the still-sealed envelope."""

    sealed: SealedRequest = field(repr=False)
    user_data_type: UserDataType
    flags: int
    tags: BootHdrTags
    cuid: bytes = field(repr=lambda v: v.hex())
    user_data: bytes = field(repr=False)
    """The raw 512-byte user-data field."""
    secret_type: SecretType
    secret_len: int
    secret_id: bytes | None = field(repr=lambda v: "None" if v is None else v.hex())

    @property
    def tag(self) -> bytes:
        """The request's GCM tag: what the secret-store hash is made of."""
        return self.sealed.tag

    @property
    def phkhs(self) -> tuple[bytes, ...]:
        return self.sealed.phkhs

    @classmethod
    def parse(cls, data: bytes) -> Asrcb:
        """Parse an ASRCB at the start of ``data``.

        Raises:
            FormatError: wrong magic or user-data type, another version, a
                layout that does not add up, a reserved field set, an unknown
                secret type, or a secret header/length that does not fit its
                type.
        """
        if len(data) < 8 or bytes(data[:6]) != ASRCB_MAGIC_PREFIX:
            raise FormatError("not an add-secret request: the magic 'asrcbM' is missing")
        try:
            kind = UserDataType(int.from_bytes(data[6:8], "big"))
        except ValueError:
            raise FormatError(f"unknown add-secret user-data type {int.from_bytes(data[6:8], 'big')}") from None
        sealed = SealedRequest.parse(data, what="add-secret request", before_len=AUTH_LEN)
        if sealed.header.version != ASRCB_VERSION:
            raise FormatError(f"unsupported add-secret request version {sealed.header.version:#x}")
        flags, tags, cuid, res = _AUTH_HEAD.unpack_from(sealed.before)
        if any(res):
            raise FormatError("add-secret request has non-zero reserved bytes")
        stype, slen, sid = parse_secret_header(sealed.after)
        if sealed.header.sea != slen + EXTENSION_SECRET_LEN:
            raise FormatError(
                f"add-secret encrypted area is {sealed.header.sea} bytes; a {slen}-byte secret needs "
                f"{slen + EXTENSION_SECRET_LEN}"
            )
        return cls(
            sealed=sealed, user_data_type=kind, flags=flags, tags=BootHdrTags.parse(tags), cuid=cuid,
            user_data=sealed.before[_AUTH_HEAD.size :], secret_type=stype, secret_len=slen, secret_id=sid,
        )  # fmt: skip

    def _opened(self, plain: bytes) -> OpenedSecret:
        return OpenedSecret(value=plain[: self.secret_len], extension_secret=plain[self.secret_len :])

    def open(self, prot_key: bytes) -> OpenedSecret:
        """Decrypt with the request protection key (VerificationError ``"request-tag"``)."""
        return self._opened(self.sealed.open(prot_key))

    def open_for_host(self, host_private_key: ec.EllipticCurvePrivateKey) -> tuple[OpenedSecret, int]:
        """Unseal as this host's ultravisor does; (secret, key-slot index)."""
        plain, index = self.sealed.open_for_host(host_private_key)
        return self._opened(plain), index

    def verified_user_data(self, key: VerifyingKey | None) -> bytes | None:
        """The user data, its signature checked with ``key`` (``pvsecret verify``).

        Returns None without user data; the whole 512-byte field for unsigned
        data; the data part (256 or 128 bytes) for signed data.

        Raises:
            VerificationError: ``"user-key-missing"`` (signed, no key given),
                ``"user-key-mismatch"`` (key of another kind, or a key for
                unsigned data) or ``"user-signature"``.
        """
        kind = self.user_data_type
        if kind is UserDataType.NULL:
            return None
        if kind is UserDataType.UNSIGNED:
            if key is not None:
                raise VerificationError(
                    "the request's user data is not signed, but a verification key was given",
                    check="user-key-mismatch",
                )
            return self.user_data
        if key is None:
            raise VerificationError(
                f"the request's user data is signed ({kind.name}); give the verification key",
                check="user-key-missing",
            )
        data, sig, zeroed = split_user_data(self.user_data, kind)
        raw = self.sealed.raw
        message = raw[:USER_DATA_OFFSET] + zeroed + raw[USER_DATA_OFFSET + USER_DATA_LEN : -GCM_TAG_LEN]
        verify_user_signature(key, kind, message, sig)
        return data


def parse_secret_header(data: bytes) -> tuple[SecretType, int, bytes | None]:
    """(type, value length, ID or None) from the plain secret header.

    Raises:
        FormatError: not 16/48 bytes, an unknown type, a reserved field set,
            a header form or length the type does not take.
    """
    if len(data) not in (SHORT_SECRET_HDR_LEN, LONG_SECRET_HDR_LEN):
        raise FormatError(f"the secret header is {len(data)} bytes; it must be 16 or 48")
    res0, raw_type, slen, res8 = _SECRET_HDR.unpack_from(data)
    if res0 or res8:
        raise FormatError("the secret header has non-zero reserved bytes")
    try:
        stype = SecretType(raw_type)
    except ValueError:
        raise FormatError(f"unknown secret type {raw_type:#06x}") from None
    short = len(data) == SHORT_SECRET_HDR_LEN
    if short != (stype is SecretType.NULL):
        raise FormatError(f"a {stype.label} secret takes a {16 if stype is SecretType.NULL else 48}-byte header")
    if not stype.valid_length(slen):
        raise FormatError(f"a {stype.label} secret cannot be {slen} bytes")
    sid = None if short else bytes(data[16:48])
    if stype is SecretType.UPDATE_CCK:
        if any(sid or b""):
            raise FormatError("an update-CCK secret header has non-zero bytes where an ID would be")
        sid = None
    return stype, slen, sid


assert _AUTH_HEAD.size + USER_DATA_LEN == AUTH_LEN and REQUEST_HEADER_LEN + _AUTH_HEAD.size == USER_DATA_OFFSET
