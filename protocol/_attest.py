"""Attestation: flags, additional data, the SE-header tags and the measurement.

``reference/se-format.md`` §4.2 (``rust/pv/src/uvattest/{arcb.rs,additional.rs,attest.rs}``):

* Plaintext attestation flags, MSB-0 bits of a u64: 1 nonce, 2 image PHKH,
  3 attestation PHKH, 4 secret-store hash, 5 firmware state. Each of bits
  2-5 asks the ultravisor for one item of *additional data*, 32, 32, 64 and
  320 bytes, concatenated in that order.
* The measurement is ``HMAC-SHA512(measurement key, PLD ‖ ALD ‖ TLD ‖ tag ‖
  CUID ‖ BE16 len(user) ‖ 00 00 ‖ BE32 len(additional) ‖ user ‖ nonce ‖
  additional)``; the nonce only when the request carries one.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable

from attrs import field, frozen

from ._errors import FormatError, UsageError
from ._se_header import SeHeader, find_se_header, parse_se_header

# Plaintext attestation flags (AttestationFlags, MSB0 bit n = 1 << (63 - n)).
ATTEST_FLAG_NONCE = 1 << (63 - 1)
ATTEST_FLAG_IMAGE_PHKH = 1 << (63 - 2)
ATTEST_FLAG_ATTEST_PHKH = 1 << (63 - 3)
ATTEST_FLAG_SECRET_STORE_HASH = 1 << (63 - 4)
ATTEST_FLAG_FIRMWARE_STATE = 1 << (63 - 5)
ATTEST_FLAGS_KNOWN = (
    ATTEST_FLAG_NONCE | ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_ATTEST_PHKH
    | ATTEST_FLAG_SECRET_STORE_HASH | ATTEST_FLAG_FIRMWARE_STATE
)  # fmt: skip

PHKH_SIZE = 0x20
SECRET_STORE_HASH_SIZE = 0x40
FIRMWARE_STATE_SIZE = 0x140
ADDITIONAL_ITEMS: tuple[tuple[int, str, int], ...] = (
    (ATTEST_FLAG_IMAGE_PHKH, "image_phkh", PHKH_SIZE),
    (ATTEST_FLAG_ATTEST_PHKH, "attestation_phkh", PHKH_SIZE),
    (ATTEST_FLAG_SECRET_STORE_HASH, "secret_store_hash", SECRET_STORE_HASH_SIZE),
    (ATTEST_FLAG_FIRMWARE_STATE, "firmware_state", FIRMWARE_STATE_SIZE),
)
"""(flag, field name, size) of every additional-data item, in their order (``additional.rs``)."""

MAI_HMAC_SHA512 = 1
"""Measurement algorithm identifier of HMAC-SHA512, the only one (``AttestationMeasAlg``)."""
MEASUREMENT_KEY_LEN = 64
MEASUREMENT_LEN = 64
NONCE_LEN = 16
CUID_LEN = 16
USER_DATA_MAX = 0x100
MEASUREMENT_MAX = 0x8000
ADDITIONAL_MAX = 0x8000
"""uvdevice limits (``pv_core/src/uvdevice/ffi.rs``, se-format.md §4.2)."""

ATTEST_FLAG_NAMES = {
    ATTEST_FLAG_NONCE: "nonce",
    ATTEST_FLAG_IMAGE_PHKH: "image-phkh",
    ATTEST_FLAG_ATTEST_PHKH: "attestation-phkh",
    ATTEST_FLAG_SECRET_STORE_HASH: "secret-store-hash",
    ATTEST_FLAG_FIRMWARE_STATE: "firmware-state",
}


def _short_hex(value: bytes | None) -> str:
    return "None" if value is None else value.hex()[:16] + ("…" if len(value) > 8 else "")


def additional_data_size(flags: int) -> int:
    """Bytes of additional data the flags ask for (``expected_additional_size``)."""
    return sum(size for flag, _name, size in ADDITIONAL_ITEMS if flags & flag)


@frozen(kw_only=True)
class AdditionalData:
    """The additional data of a response, split by the request's flags.

    ``unrecognized`` holds any bytes beyond the items the flags name.
    """

    image_phkh: bytes | None = field(default=None, repr=_short_hex)
    attestation_phkh: bytes | None = field(default=None, repr=_short_hex)
    secret_store_hash: bytes | None = field(default=None, repr=_short_hex)
    firmware_state: bytes | None = field(default=None, repr=_short_hex)
    unrecognized: bytes | None = field(default=None, repr=_short_hex)

    @classmethod
    def parse(cls, data: bytes, flags: int) -> AdditionalData:
        """Split ``data`` as ``AdditionalData::from_slice`` does.

        Raises:
            FormatError: an item the flags ask for is missing (too few bytes).
        """
        values: dict[str, bytes] = {}
        pos = 0
        for flag, name, size in ADDITIONAL_ITEMS:
            if flags & flag:
                if len(data) - pos < size:
                    raise FormatError(
                        f"additional data is {len(data)} bytes: too short for the {name.replace('_', ' ')}"
                    )
                values[name] = bytes(data[pos : pos + size])
                pos += size
        if pos < len(data):
            values["unrecognized"] = bytes(data[pos:])
        return cls(**values)

    def pack(self) -> bytes:
        return b"".join(v for v in (self.image_phkh, self.attestation_phkh, self.secret_store_hash,
                                    self.firmware_state, self.unrecognized) if v is not None)  # fmt: skip

    def as_dict(self) -> dict[str, str]:
        """Present items as hex strings, in their order."""
        names = ("image_phkh", "attestation_phkh", "secret_store_hash", "firmware_state", "unrecognized")
        return {n: getattr(self, n).hex() for n in names if getattr(self, n) is not None}


def _len_is(n: int) -> Callable[[object, object, bytes], None]:
    def check(_inst: object, attribute: object, value: bytes) -> None:
        if not isinstance(value, bytes) or len(value) != n:
            raise UsageError(f"{getattr(attribute, 'name', 'value')} must be {n} bytes")

    return check


@frozen(kw_only=True)
class BootHdrTags:
    """What an SE header contributes to measurements and add-secret binding (``brcb.rs``)."""

    pld: bytes = field(validator=_len_is(64), repr=_short_hex)
    ald: bytes = field(validator=_len_is(64), repr=_short_hex)
    tld: bytes = field(validator=_len_is(64), repr=_short_hex)
    tag: bytes = field(validator=_len_is(16), repr=lambda v: v.hex())

    SIZE = 208

    def pack(self) -> bytes:
        return self.pld + self.ald + self.tld + self.tag

    @classmethod
    def parse(cls, data: bytes) -> BootHdrTags:
        if len(data) < cls.SIZE:
            raise FormatError(f"SE header tags need {cls.SIZE} bytes, got {len(data)}")
        d = bytes(data[: cls.SIZE])
        return cls(pld=d[:64], ald=d[64:128], tld=d[128:192], tag=d[192:208])

    @classmethod
    def from_header(cls, header: SeHeader) -> BootHdrTags:
        return cls(pld=header.pld, ald=header.ald, tld=header.tld, tag=header.tag)

    @classmethod
    def from_image_or_header(cls, data: bytes) -> BootHdrTags:
        """The tags of a boot image or of a bare SE header (``BootHdrTags::from_se_image``).

        Raises:
            FormatError: no SE header found, or it is malformed.
        """
        view = memoryview(data)
        return cls.from_header(parse_se_header(view[find_se_header(view) :]))


def measurement_items(
    *,
    tags: BootHdrTags,
    cuid: bytes,
    user_data: bytes | None = None,
    nonce: bytes | None = None,
    additional: bytes | None = None,
) -> bytes:
    """The message the measurement authenticates (``AttestationItems::new``)."""
    if len(cuid) != CUID_LEN:
        raise UsageError(f"configuration UID must be {CUID_LEN} bytes, got {len(cuid)}")
    if nonce is not None and len(nonce) != NONCE_LEN:
        raise UsageError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    user = bytes(user_data or b"")
    add = bytes(additional or b"")
    if len(user) > USER_DATA_MAX:
        raise UsageError(f"user data is at most {USER_DATA_MAX} bytes, got {len(user)}")
    lengths = struct.pack(">HHI", len(user), 0, len(add) & 0xFFFF_FFFF)
    return tags.pack() + bytes(cuid) + lengths + user + bytes(nonce or b"") + add


def compute_measurement(key: bytes, items: bytes) -> bytes:
    """HMAC-SHA512 over ``items`` (MAI 1)."""
    return hmac.new(bytes(key), items, hashlib.sha512).digest()


def measurement_matches(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison, as ``AttestationMeasurement::eq_secure``."""
    return len(expected) == len(received) and hmac.compare_digest(expected, received)
