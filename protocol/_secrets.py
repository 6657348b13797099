"""Ultravisor secrets: types, sizes, IDs, the secret list and the secret-store hash.

Sources: ``reference/se-format.md`` §4.3, s390-tools
``pv_core/src/uvdevice/{secret_list.rs,retr_secret.rs}`` and
``pv/src/uvsecret/guest_secret.rs``, Linux ``arch/s390/include/asm/uv.h``
(``struct uv_secret_list``).

* Secret types (u16): 1 null ("meta"), 2 association, 3 plaintext,
  4/5/6 AES-128/192/256, 7/8 AES-XTS-128/256, 9/0xA HMAC-SHA-256/512,
  0x11-0x13 ECDSA P-256/P-384/P-521, 0x14 Ed25519, 0x15 Ed448, 0x16 update
  CCK. Null and update-CCK secrets carry no ID and are not listed.
* A secret ID is SHA-256 of the name, or the name itself (at most 31 bytes
  and a NUL, zero padded) with pvsecret's ``--use-name``.
* The list a guest gets from LIST_SECRETS is one 4 KiB page: a 16-byte
  header ``u16 num_secr_stored | u16 total_num_secrets | u16
  next_secret_idx | u16 res | u64 res`` and up to 85 entries of 48 bytes
  ``u16 index | u16 type | u32 length | u64 res | id[32]``.
* The secret-store hash of attestation is ``SHA-512(tag_1 ‖ … ‖ tag_n ‖
  locked)``: the GCM tags of every add-secret request in the order the UV
  accepted them, then one byte 1 if the store is locked, else 0
  (``pvattest/src/cmd/check/secret_store.rs``).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Iterable, Sequence

from attrs import field, frozen
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_der_private_key,
    load_pem_private_key,
)

from ._errors import FormatError, UsageError

SECRET_ID_LEN = 32
ASSOCIATION_SECRET_LEN = 32
CCK_LEN = 32
PLAINTEXT_MAX = 8190
"""Largest plaintext payload: the 8 KiB retrieve buffer minus the 2-byte length."""
RETRIEVE_MAX = 0x2000
"""Largest secret RETR_SECRET hands out (``UVIO_RETR_SECRET_MAX_LEN``)."""
LIST_PAGE_LEN = 4096
LIST_MAX_ENTRIES = 85
_LIST_HEAD = struct.Struct(">HHHHQ")
_LIST_ENTRY = struct.Struct(">HHIQ32s")


class SecretType(enum.IntEnum):
    """UV secret types (``ListableSecretType``, uv.h ``enum uv_secret_types``)."""

    NULL = 0x0001
    ASSOCIATION = 0x0002
    PLAINTEXT = 0x0003
    AES_128 = 0x0004
    AES_192 = 0x0005
    AES_256 = 0x0006
    AES_XTS_128 = 0x0007
    AES_XTS_256 = 0x0008
    HMAC_SHA_256 = 0x0009
    HMAC_SHA_512 = 0x000A
    ECDSA_P256 = 0x0011
    ECDSA_P384 = 0x0012
    ECDSA_P521 = 0x0013
    ED25519 = 0x0014
    ED448 = 0x0015
    UPDATE_CCK = 0x0016

    @property
    def listable(self) -> bool:
        """Whether it has an ID and appears in the secret list."""
        return self not in (SecretType.NULL, SecretType.UPDATE_CCK)

    @property
    def retrievable(self) -> bool:
        """Whether RETR_SECRET hands it out (plaintext and keys, not association secrets)."""
        return self.listable and self is not SecretType.ASSOCIATION

    @property
    def label(self) -> str:
        """The stable name s390-tools prints (``RetrievableSecret`` Display)."""
        return _LABELS[self]

    def valid_length(self, length: int) -> bool:
        """Whether a secret value of ``length`` bytes is right for this type."""
        if self is SecretType.PLAINTEXT:
            return 16 <= length <= PLAINTEXT_MAX + 2 and length % 16 == 0
        return length == SECRET_SIZES[self]


SECRET_SIZES: dict[SecretType, int] = {
    SecretType.NULL: 0, SecretType.ASSOCIATION: 32, SecretType.AES_128: 16, SecretType.AES_192: 24,
    SecretType.AES_256: 32, SecretType.AES_XTS_128: 32, SecretType.AES_XTS_256: 64,
    SecretType.HMAC_SHA_256: 64, SecretType.HMAC_SHA_512: 128, SecretType.ECDSA_P256: 32,
    SecretType.ECDSA_P384: 48, SecretType.ECDSA_P521: 80, SecretType.ED25519: 32, SecretType.ED448: 64,
    SecretType.UPDATE_CCK: CCK_LEN,
}  # fmt: skip
"""Value size of every fixed-size type (plaintext varies: BE16 length ‖ data, padded to 16)."""

_LABELS = {
    SecretType.NULL: "Meta", SecretType.ASSOCIATION: "Association", SecretType.PLAINTEXT: "PLAINTEXT",
    SecretType.AES_128: "AES-128-KEY", SecretType.AES_192: "AES-192-KEY", SecretType.AES_256: "AES-256-KEY",
    SecretType.AES_XTS_128: "AES-XTS-128-KEY", SecretType.AES_XTS_256: "AES-XTS-256-KEY",
    SecretType.HMAC_SHA_256: "HMAC-SHA-256-KEY", SecretType.HMAC_SHA_512: "HMAC-SHA-512-KEY",
    SecretType.ECDSA_P256: "EC-SECP256R1-PRIVATE-KEY", SecretType.ECDSA_P384: "EC-SECP384R1-PRIVATE-KEY",
    SecretType.ECDSA_P521: "EC-SECP521R1-PRIVATE-KEY", SecretType.ED25519: "EC-ED25519-PRIVATE-KEY",
    SecretType.ED448: "EC-ED448-PRIVATE-KEY", SecretType.UPDATE_CCK: "Update-CCK",
}  # fmt: skip


def secret_id(name: str, *, use_name: bool = False) -> bytes:
    """The 32-byte ID of a named secret: SHA-256(name), or the name itself (``--use-name``).

    With ``use_name`` the first 31 bytes of the UTF-8 name are kept, then
    zeros (``SecretId::from_string``).
    """
    raw = name.encode()
    if use_name:
        return raw[: SECRET_ID_LEN - 1].ljust(SECRET_ID_LEN, b"\0")
    return hashlib.sha256(raw).digest()


def secret_store_hash(tags: Iterable[bytes], *, locked: bool) -> bytes:
    """SHA-512 over the request tags in the order they were added, then the lock byte."""
    digest = hashlib.sha512()
    for tag in tags:
        digest.update(bytes(tag))
    digest.update(b"\x01" if locked else b"\x00")
    return digest.digest()


# -- values of retrievable secrets (guest_secret.rs) ------------------------------------


def plaintext_value(data: bytes) -> bytes:
    """A plaintext secret's value: BE16 length ‖ data, zero padded to a multiple of 16."""
    if len(data) > PLAINTEXT_MAX:
        raise UsageError(f"a plaintext secret is at most {PLAINTEXT_MAX} bytes, got {len(data)}")
    value = struct.pack(">H", len(data)) + bytes(data)
    return value + bytes(-len(value) % 16)


def plaintext_payload(value: bytes) -> bytes:
    """The data inside a retrieved plaintext value, or the value unchanged if it is not one.

    Follows ``RetrievedSecret::from``: the length must fit, the padding be
    less than 15 bytes and all zero.
    """
    if len(value) < 2:
        return bytes(value)
    n = int.from_bytes(value[:2], "big")
    if n <= PLAINTEXT_MAX and 0 <= len(value) - (n + 2) < 15 and not any(value[n + 2 :]):
        return bytes(value[2 : n + 2])
    return bytes(value)


_BY_KIND_AND_SIZE = {
    ("aes", 16): SecretType.AES_128, ("aes", 24): SecretType.AES_192, ("aes", 32): SecretType.AES_256,
    ("aes-xts", 32): SecretType.AES_XTS_128, ("aes-xts", 64): SecretType.AES_XTS_256,
    ("hmac-sha", 64): SecretType.HMAC_SHA_256, ("hmac-sha", 128): SecretType.HMAC_SHA_512,
}  # fmt: skip
_EXPECTED = {"aes": "16, 24 or 32", "aes-xts": "32 or 64", "hmac-sha": "64 or 128"}
RETRIEVABLE_KINDS = ("plain", "aes", "aes-xts", "hmac-sha", "ec")
"""pvsecret's ``--type`` values."""


def retrievable_value(kind: str, data: bytes) -> tuple[SecretType, bytes]:
    """(type, value) of a retrievable secret given as pvsecret's ``--type`` and file content.

    ``plain``: any data up to 8190 bytes; ``aes``/``aes-xts``/``hmac-sha``:
    raw key bytes of an allowed size; ``ec``: a PEM or DER private key on
    P-256, P-384, P-521, Ed25519 or Ed448.

    Raises:
        UsageError: an unknown kind or a size the kind does not allow.
        FormatError: ``ec`` data that is not a supported private key.
    """
    if kind == "plain":
        return SecretType.PLAINTEXT, plaintext_value(data)
    if kind == "ec":
        return ec_secret_value(_load_private_key(data))
    if kind not in _EXPECTED:
        raise UsageError(f"unknown retrievable secret type '{kind}' (one of {', '.join(RETRIEVABLE_KINDS)})")
    stype = _BY_KIND_AND_SIZE.get((kind, len(data)))
    if stype is None:
        raise UsageError(f"an {kind} secret must be {_EXPECTED[kind]} bytes, got {len(data)}")
    return stype, bytes(data)


def _load_private_key(data: bytes) -> object:
    for loader in (load_pem_private_key, load_der_private_key):
        try:
            return loader(bytes(data), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    raise FormatError("the EC secret is not an unencrypted PEM or DER private key")


def ec_secret_value(key: object) -> tuple[SecretType, bytes]:
    """(type, left-padded private scalar or raw Edwards key) of an EC private key.

    Raises:
        FormatError: a curve other than P-256, P-384, P-521, Ed25519, Ed448.
    """
    if isinstance(key, ec.EllipticCurvePrivateKey):
        stype = {"secp256r1": SecretType.ECDSA_P256, "secp384r1": SecretType.ECDSA_P384,
                 "secp521r1": SecretType.ECDSA_P521}.get(key.curve.name)  # fmt: skip
        if stype is None:
            raise FormatError(f"unsupported EC curve {key.curve.name} (P-256, P-384, P-521, Ed25519 or Ed448)")
        return stype, key.private_numbers().private_value.to_bytes(SECRET_SIZES[stype], "big")
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        stype = SecretType.ED25519 if isinstance(key, ed25519.Ed25519PrivateKey) else SecretType.ED448
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return stype, raw.rjust(SECRET_SIZES[stype], b"\0")
    raise FormatError("the EC secret must be an EC (P-256/384/521) or Ed25519/Ed448 private key")


# -- the secret list page (uv.h struct uv_secret_list) ---------------------------------


@frozen(kw_only=True)
class SecretEntry:
    """One entry of the secret list (``uv_secret_list_item``)."""

    index: int
    type: int
    length: int
    id: bytes = field(repr=lambda v: v.hex())

    def pack(self) -> bytes:
        return _LIST_ENTRY.pack(self.index, self.type, self.length, 0, self.id)


@frozen(kw_only=True)
class SecretList:
    """One page of LIST_SECRETS output."""

    total: int
    next_index: int
    entries: tuple[SecretEntry, ...] = field(converter=tuple)

    def pack(self) -> bytes:
        """The 4096-byte page (``uv_secret_list``)."""
        if len(self.entries) > LIST_MAX_ENTRIES:
            raise UsageError(f"a secret list page holds at most {LIST_MAX_ENTRIES} entries")
        body = _LIST_HEAD.pack(len(self.entries), self.total, self.next_index, 0, 0)
        body += b"".join(e.pack() for e in self.entries)
        return body.ljust(LIST_PAGE_LEN, b"\0")

    @classmethod
    def parse(cls, data: bytes) -> SecretList:
        """Read a list page (``SecretList::decode``).

        Raises:
            FormatError: shorter than its header or its entries, or more than 85 entries.
        """
        if len(data) < _LIST_HEAD.size:
            raise FormatError(f"a secret list needs {_LIST_HEAD.size} bytes of header, got {len(data)}")
        stored, total, nxt, _r6, _r8 = _LIST_HEAD.unpack_from(data)
        if stored > LIST_MAX_ENTRIES:
            raise FormatError(f"a secret list page holds at most {LIST_MAX_ENTRIES} entries, this says {stored}")
        end = _LIST_HEAD.size + stored * _LIST_ENTRY.size
        if len(data) < end:
            raise FormatError(f"the secret list is truncated: {stored} entries need {end} bytes")
        entries = []
        for i in range(stored):
            index, stype, length, _res, sid = _LIST_ENTRY.unpack_from(data, _LIST_HEAD.size + i * _LIST_ENTRY.size)
            entries.append(SecretEntry(index=index, type=stype, length=length, id=sid))
        return cls(total=total, next_index=nxt, entries=entries)


def find_secret(entries: Sequence[SecretEntry], sid: bytes) -> SecretEntry | None:
    """The first entry with ID ``sid`` (``SecretList::find``)."""
    return next((e for e in entries if e.id == sid), None)
