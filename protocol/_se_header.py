"""The Secure Execution header ("IBMSecEx", version 0x100): build, parse, open.

Layout (``reference/se-format.md`` §1, ``pvimg/src/pv_utils/se_hdr/hdr_v1.rs``),
all big-endian::

    0x000 magic[8] | 0x008 u32 version | 0x00C u32 sehs | 0x010 IV[12] | 0x01C res1
    0x020 u64 nks  | 0x028 u64 sea     | 0x030 u64 nep  | 0x038 u64 pcf
    0x040 cust_pub_key X80‖Y80 | 0x0E0 PLD | 0x120 ALD | 0x160 TLD
    0x1A0 key slots (80 bytes each: phkh ‖ wrapped key ‖ slot tag)
    E     encrypted: CCK[32] ‖ XTS key[64] ‖ PSW mask,addr ‖ u64 scf ‖ u32 noi ‖ u32 res2
    E+sea GCM tag[16]

AAD is ``[0, E)``; the encrypted area is AES-256-GCM under the header
protection key, which every key slot wraps for one host (se-format.md §2.1,
§2.2). The builder never draws random numbers: the caller passes the IV,
keys and customer key, so known-answer tests can pin them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from attrs import field, frozen
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._crypto import (
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
from ._ipib import METADATA_OFFSET, ImageMetadata

HDR_MAGIC = b"IBMSecEx"
HDR_VERSION = 0x100
HDR_FIXED_LEN = 0x1A0
HDR_SEA = 0x80
"""Size of the encrypted area without optional items."""
HDR_TAG_LEN = 16
HDR_IV_LEN = 12
MAX_HEADER_SIZE = 8192
"""``SeHdrDataV1::MAX_SIZE``: two pages."""
MAX_KEY_SLOTS = 95
"""The most key slots that fit in :data:`MAX_HEADER_SIZE`."""
_MAX_PARSE_SIZE = 1024 * 4096
_PROBE_PAGES = 0x15

_HEAD = struct.Struct(">8sII12s4sQQQQ160s64s64s64s")
_SECRETS = struct.Struct(">32s64sQQQII")
_U64_MAX = (1 << 64) - 1

# Plaintext control flags, MSB0 bit numbers of a u64 (flags.rs::PcfV1).
PCF_ALLOW_DUMPING = 1 << (63 - 34)
PCF_NO_COMPONENT_ENCRYPTION = 1 << (63 - 35)
PCF_PCKMO_DEA_TDEA = 1 << (63 - 56)
PCF_PCKMO_AES = 1 << (63 - 57)
PCF_PCKMO_ECC = 1 << (63 - 58)
PCF_PCKMO_HMAC = 1 << (63 - 59)
PCF_BACKUP_TARGET_KEYS = 1 << (63 - 62)
PCF_PCKMO = PCF_PCKMO_DEA_TDEA | PCF_PCKMO_AES | PCF_PCKMO_ECC
PCF_DEFAULT = PCF_PCKMO
"""``pvimg create`` default: the three PCKMO bits, 0xE0 (se-format.md §1)."""
# Secret control flags (ScfV1).
SCF_CCK_EXTENSION_SECRET = 1 << (63 - 1)
SCF_CCK_UPDATE_ALLOWED = 1 << (63 - 2)

PCF_NAMES = {
    PCF_ALLOW_DUMPING: "allow-dumping",
    PCF_NO_COMPONENT_ENCRYPTION: "no-component-encryption",
    PCF_PCKMO_DEA_TDEA: "pckmo-dea-tdea",
    PCF_PCKMO_AES: "pckmo-aes",
    PCF_PCKMO_ECC: "pckmo-ecc",
    PCF_PCKMO_HMAC: "pckmo-hmac",
    PCF_BACKUP_TARGET_KEYS: "backup-target-keys",
}
SCF_NAMES = {
    SCF_CCK_EXTENSION_SECRET: "cck-extension-secret",
    SCF_CCK_UPDATE_ALLOWED: "cck-update-allowed",
}


def flag_names(value: int, names: dict[int, str]) -> tuple[str, ...]:
    """Names of the set bits of a control-flag word; unknown bits as ``bit N``."""
    out = []
    for bit in range(64):
        mask = 1 << (63 - bit)
        if value & mask:
            out.append(names.get(mask, f"bit {bit}"))
    return tuple(out)


def header_size(nks: int) -> int:
    """``sehs`` of a v1 header with ``nks`` key slots and no optional items."""
    return HDR_FIXED_LEN + KEY_SLOT_LEN * nks + HDR_SEA + HDR_TAG_LEN


@frozen(kw_only=True)
class KeySlot:
    """One 80-byte key slot: whose host key, and the wrapped protection key."""

    phkh: bytes
    wrapped_key: bytes = field(repr=False)
    tag: bytes = field(repr=False)

    def pack(self) -> bytes:
        return self.phkh + self.wrapped_key + self.tag


@frozen(kw_only=True)
class SeHeader:
    """A parsed SE header: the plaintext fields and the still-encrypted area."""

    version: int
    sehs: int
    iv: bytes
    nks: int
    sea: int
    nep: int
    pcf: int
    cust_pub_key: bytes = field(repr=False)
    """The customer's P-521 public key, X80 ‖ Y80."""
    pld: bytes = field(repr=False)
    ald: bytes = field(repr=False)
    tld: bytes = field(repr=False)
    key_slots: tuple[KeySlot, ...] = field(converter=tuple)
    encrypted: bytes = field(repr=False)
    tag: bytes
    raw: bytes = field(repr=False)
    """The header's ``sehs`` bytes exactly as parsed."""

    @property
    def aad(self) -> bytes:
        """The authenticated plaintext, ``[0, E)``."""
        return self.raw[: self.sehs - self.sea - HDR_TAG_LEN]

    @property
    def phkhs(self) -> tuple[bytes, ...]:
        return tuple(slot.phkh for slot in self.key_slots)

    def to_bytes(self) -> bytes:
        return self.raw


@frozen(kw_only=True)
class SeHeaderSecrets:
    """The decrypted part of a header: only the UV and the owner see it."""

    cck: bytes = field(repr=False)
    xts_key: bytes = field(repr=False)
    psw_mask: int
    psw_addr: int
    scf: int
    noi: int = 0


@frozen(kw_only=True)
class OpenedSeHeader:
    """A header the ultravisor has unwrapped and authenticated."""

    header: SeHeader
    secrets: SeHeaderSecrets
    key_slot_index: int


def _need_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != n:
        got = len(value) if isinstance(value, bytes | bytearray) else type(value).__name__
        raise UsageError(f"{name} must be {n} bytes, got {got}")


def _need_u64(name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise UsageError(f"{name} must be an unsigned 64-bit integer, got {value!r}")


def _need_p521(name: str, key: object) -> None:
    curve = getattr(key, "curve", None)
    if not isinstance(curve, ec.SECP521R1):
        raise UsageError(f"{name} must be an EC P-521 (secp521r1) key")


def check_host_keys(host_keys: Sequence[object]) -> None:
    """The host keys an SE header can take: 1 to 95, all EC P-521.

    Raises:
        UsageError: none, more than 95 (the header would exceed 8192 bytes),
            or a key that is not P-521.
    """
    if not 1 <= len(host_keys) <= MAX_KEY_SLOTS:
        raise UsageError(
            f"an SE header holds 1 to {MAX_KEY_SLOTS} host keys (max {MAX_HEADER_SIZE} bytes), "
            f"got {len(host_keys)}"
        )
    for i, key in enumerate(host_keys):
        _need_p521(f"host key #{i + 1}", key)


def build_se_header(
    *,
    cust_private_key: ec.EllipticCurvePrivateKey,
    host_keys: Sequence[ec.EllipticCurvePublicKey],
    prot_key: bytes,
    iv: bytes,
    cck: bytes,
    xts_key: bytes,
    psw_mask: int,
    psw_addr: int,
    pcf: int,
    scf: int,
    nep: int,
    pld: bytes,
    ald: bytes,
    tld: bytes,
) -> bytes:
    """Build a complete, encrypted v1 SE header (se-format.md §1, §2.1, §2.2).

    One key slot per host key, in the order given; each wraps ``prot_key``.

    Raises:
        UsageError: no host key or more than 95 (the header may not exceed
            8192 bytes), a key that is not P-521, or a value of the wrong size.
    """
    check_host_keys(host_keys)
    _need_p521("customer private key", cust_private_key)
    for name, value, n in (
        ("header protection key", prot_key, 32), ("IV", iv, HDR_IV_LEN), ("CCK", cck, 32),
        ("XTS key", xts_key, 64), ("PLD", pld, 64), ("ALD", ald, 64), ("TLD", tld, 64),
    ):  # fmt: skip
        _need_len(name, value, n)
    for name, num in (("PSW mask", psw_mask), ("PSW address", psw_addr), ("pcf", pcf),
                      ("scf", scf), ("nep", nep)):  # fmt: skip
        _need_u64(name, num)

    nks = len(host_keys)
    cust_pub = ec_public_coords(cust_private_key.public_key())
    head = _HEAD.pack(
        HDR_MAGIC, HDR_VERSION, header_size(nks), bytes(iv), bytes(4), nks, HDR_SEA, nep, pcf,
        cust_pub, bytes(pld), bytes(ald), bytes(tld),
    )  # fmt: skip
    slots = b"".join(wrap_key_slot(cust_private_key, key, bytes(prot_key)) for key in host_keys)
    secrets = _SECRETS.pack(bytes(cck), bytes(xts_key), psw_mask, psw_addr, scf, 0, 0)
    aad = head + slots
    return aad + AESGCM(bytes(prot_key)).encrypt(bytes(iv), secrets, aad)


def parse_se_header(data: bytes) -> SeHeader:
    """Parse the plaintext of the header at the start of ``data``.

    Bytes after ``sehs`` are ignored. Nothing is decrypted.

    Raises:
        FormatError: truncated data, wrong magic, a version other than 0x100,
            sehs ≤ 16 or > 1024 pages (as ``SeHdr::try_from_io``), no key
            slot, an encrypted area smaller than 0x80, or sehs not equal to
            ``0x1A0 + 80·nks + sea + 16``.
    """
    if len(data) < 16:
        raise FormatError(f"SE header truncated: {len(data)} bytes")
    magic, version, sehs = struct.unpack_from(">8sII", data)
    if magic != HDR_MAGIC:
        raise FormatError(f"not an SE header: magic {bytes(magic)!r}, expected {HDR_MAGIC!r}")
    if version != HDR_VERSION:
        raise FormatError(f"unsupported SE header version {version:#x} (only 0x100)")
    if sehs <= 16 or sehs > _MAX_PARSE_SIZE:
        raise FormatError(f"SE header size {sehs:#x} is out of range")
    if sehs < HDR_FIXED_LEN + HDR_TAG_LEN:
        raise FormatError(f"SE header size {sehs:#x} is smaller than its fixed part")
    if len(data) < sehs:
        raise FormatError(f"SE header truncated: {len(data)} bytes of {sehs}")
    raw = bytes(data[:sehs])
    (_m, _v, _s, iv, _res1, nks, sea, nep, pcf, cust, pld, ald, tld) = _HEAD.unpack_from(raw)
    if nks == 0:
        raise FormatError("SE header has no key slot (nks = 0)")
    if sea < HDR_SEA:
        raise FormatError(f"SE header encrypted area {sea:#x} is smaller than {HDR_SEA:#x}")
    if HDR_FIXED_LEN + KEY_SLOT_LEN * nks + sea + HDR_TAG_LEN != sehs:
        raise FormatError(f"SE header size {sehs:#x} does not match nks={nks} and sea={sea:#x}")
    slots = []
    for i in range(nks):
        s = raw[HDR_FIXED_LEN + KEY_SLOT_LEN * i : HDR_FIXED_LEN + KEY_SLOT_LEN * (i + 1)]
        slots.append(KeySlot(phkh=s[:PHKH_LEN], wrapped_key=s[PHKH_LEN:64], tag=s[64:]))
    enc_start = HDR_FIXED_LEN + KEY_SLOT_LEN * nks
    return SeHeader(
        version=version, sehs=sehs, iv=iv, nks=nks, sea=sea, nep=nep, pcf=pcf,
        cust_pub_key=cust, pld=pld, ald=ald, tld=tld, key_slots=slots,
        encrypted=raw[enc_start : enc_start + sea], tag=raw[sehs - HDR_TAG_LEN :], raw=raw,
    )  # fmt: skip


def find_se_header(image: bytes) -> int:
    """The offset of the SE header inside a boot image (``seek_se_hdr_start``).

    If ``SeImgLnx`` metadata is at 0xC000, the header must be at its
    ``hdr_off``. Otherwise the magic is probed at each page start from 0,
    for 0x15 pages (se-format.md §2.4).

    Raises:
        FormatError: no header where the metadata says, or none found.
    """
    if ImageMetadata.present(image):
        meta = ImageMetadata.parse(image[METADATA_OFFSET:])
        off = meta.hdr_offset
        if bytes(image[off : off + 8]) != HDR_MAGIC:
            raise FormatError(f"image metadata points to {off:#x} but no SE header is there")
        return off
    for page in range(_PROBE_PAGES):
        off = page * 4096
        if bytes(image[off : off + 8]) == HDR_MAGIC:
            return off
    raise FormatError("no SE header found in the image")


def open_se_header(data: bytes, host_private_key: ec.EllipticCurvePrivateKey) -> OpenedSeHeader:
    """Unwrap and authenticate a header as the ultravisor does (se-format.md §6).

    Finds the key slot whose phkh is this host's, derives the KEK with the
    header's customer key, unwraps the protection key and GCM-decrypts.

    Raises:
        FormatError: the header is malformed (see :func:`parse_se_header`),
            or its customer key is not a P-521 point.
        VerificationError: with ``check`` one of (stable names, mapped to UV
            return codes by the simulated ultravisor):

            * ``"no-key-slot"``: no slot carries this host's phkh (UV 0x0108);
            * ``"key-slot-tag"``: the slot's GCM tag fails with this key;
            * ``"header-tag"``: the header's GCM tag fails (tampered AAD or
              encrypted area);
            * ``"header-optional-items"``: authentic, but declares optional
              items (noi ≠ 0 or sea ≠ 0x80), which no v1 reader supports;
            * ``"key-type"``: the host key is not P-521.
    """
    header = parse_se_header(data)
    _need_host_key(host_private_key)
    mine = phkh(host_private_key.public_key())
    index = next((i for i, s in enumerate(header.key_slots) if s.phkh == mine), None)
    if index is None:
        raise VerificationError(
            "the SE header has no key slot for this host key", check="no-key-slot"
        )
    cust_pub = ec_public_from_coords(header.cust_pub_key)
    prot_key = unwrap_key_slot(header.key_slots[index].pack(), host_private_key, cust_pub)
    try:
        plain = AESGCM(prot_key).decrypt(header.iv, header.encrypted + header.tag, header.aad)
    except InvalidTag:
        raise VerificationError(
            "SE header authentication (GCM tag) failed", check="header-tag"
        ) from None
    cck, xts, mask, addr, scf, noi, _res2 = _SECRETS.unpack_from(plain)
    if noi != 0 or header.sea != HDR_SEA:
        raise VerificationError(
            f"SE header declares optional items (noi={noi}, sea={header.sea:#x}); "
            "none are supported",
            check="header-optional-items",
        )
    secrets = SeHeaderSecrets(cck=cck, xts_key=xts, psw_mask=mask, psw_addr=addr, scf=scf, noi=noi)
    return OpenedSeHeader(header=header, secrets=secrets, key_slot_index=index)


def _need_host_key(key: object) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP521R1):
        raise VerificationError("the host key must be an EC P-521 private key", check="key-type")


assert _HEAD.size == HDR_FIXED_LEN and _SECRETS.size == HDR_SEA and PUBKEY_LEN == 160
