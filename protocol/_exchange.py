"""The pvattest exchange format, version 1: requests and responses as one file.

``reference/se-format.md`` §4.2 (``rust/pvattest/src/exchange.rs``). A 0x40
byte header, big-endian::

    0x00 "pvattest" | 0x08 u32 version 0x0100 | 0x0C u32 total size | 0x10 u64 reserved
    0x18 five entries {u32 size, u32 offset}: arcb, measurement, additional, user, cuid

then the data of every entry with an offset, in that order. An entry with
size 0 is absent; size > 0 with offset 0 states an *expected size* only
(requests carry the sizes the measurement and the additional data will
need); an offset between 1 and 0x3F is invalid. A request holds the ARCB
and the two expected sizes; a response holds all five entries' data (user
data and additional data only when present).
"""

from __future__ import annotations

import struct

from attrs import field, frozen

from ._arcb import ARCB_MAX_LEN, Arcb
from ._attest import ADDITIONAL_MAX, CUID_LEN, MEASUREMENT_LEN, MEASUREMENT_MAX, USER_DATA_MAX
from ._errors import FormatError, UsageError

EXCHANGE_MAGIC = b"pvattest"
EXCHANGE_VERSION = 0x0100
EXCHANGE_HEADER_LEN = 0x40
_HEAD = struct.Struct(">8sIIQ10I")
ENTRY_NAMES = ("arcb", "measurement", "additional", "user", "cuid")
_LIMITS = {
    "arcb": ARCB_MAX_LEN, "measurement": MEASUREMENT_MAX, "additional": ADDITIONAL_MAX,
    "user": USER_DATA_MAX, "cuid": CUID_LEN,
}  # fmt: skip
_PREFIX = "not a valid pvattest exchange file:"


@frozen(kw_only=True)
class ExchangeEntry:
    """One entry as read: absent (size 0), an expected size, or data."""

    size: int = 0
    data: bytes | None = field(default=None, repr=lambda v: "None" if v is None else f"<{len(v)} bytes>")

    @property
    def present(self) -> bool:
        return self.size > 0


@frozen(kw_only=True)
class ExchangeFile:
    """Any v1 exchange file, entry by entry, as :func:`parse_exchange` reads it."""

    total_size: int
    entries: dict[str, ExchangeEntry]


def parse_exchange(data: bytes) -> ExchangeFile:
    """Read the header and every entry (``Entry::read``) of an exchange file.

    Raises:
        FormatError: too short for the header, wrong magic or version, the file
            shorter than its declared size, an offset inside the header, or an
            entry reaching beyond the end of the file.
    """
    if len(data) < EXCHANGE_HEADER_LEN:
        raise FormatError(f"{_PREFIX} {len(data)} bytes is shorter than the 64-byte header")
    magic, version, total, _res, *raw = _HEAD.unpack_from(data)
    if magic != EXCHANGE_MAGIC:
        raise FormatError(f"{_PREFIX} it does not start with the magic 'pvattest'")
    if version != EXCHANGE_VERSION:
        raise FormatError(f"{_PREFIX} unsupported version {version:#x}")
    if len(data) < total:
        raise FormatError(f"{_PREFIX} the file is {len(data)} bytes, its header says {total}")
    entries: dict[str, ExchangeEntry] = {}
    for i, name in enumerate(ENTRY_NAMES):
        size, offset = raw[2 * i], raw[2 * i + 1]
        if size == 0:
            entries[name] = ExchangeEntry()
        elif offset == 0:
            entries[name] = ExchangeEntry(size=size)
        elif offset < EXCHANGE_HEADER_LEN:
            raise FormatError(f"{_PREFIX} the {name} entry starts at {offset:#x}, inside the header")
        elif offset + size > len(data):
            raise FormatError(f"{_PREFIX} the {name} entry ({size} bytes at {offset:#x}) lies beyond the end")
        else:
            entries[name] = ExchangeEntry(size=size, data=bytes(data[offset : offset + size]))
    return ExchangeFile(total_size=total, entries=entries)


def _check_size(name: str, size: int, *, low: int = 0) -> None:
    if not low <= size <= _LIMITS[name]:
        raise UsageError(f"the {name} size must be {low}..{_LIMITS[name]:#x}, got {size:#x}")


def _pack(entries: list[tuple[int, bytes | None]]) -> bytes:
    """Header plus data; ``(size, data)``: data None → expected size only (offset 0)."""
    offset = EXCHANGE_HEADER_LEN
    words: list[int] = []
    body = b""
    for size, data in entries:
        if data is None:
            words += [size, 0]
        else:
            words += [len(data), offset if data else 0]
            body += data
            offset += len(data)
    return _HEAD.pack(EXCHANGE_MAGIC, EXCHANGE_VERSION, offset, 0, *words) + body


@frozen(kw_only=True)
class ExchangeRequest:
    """An attestation request in exchange format (``ExchangeFormatRequest``)."""

    arcb: bytes = field(repr=lambda v: f"<{len(v)} bytes>")
    measurement_size: int
    additional_size: int

    def __attrs_post_init__(self) -> None:
        _check_size("arcb", len(self.arcb))
        _check_size("measurement", self.measurement_size, low=1)
        _check_size("additional", self.additional_size)

    @classmethod
    def for_arcb(cls, arcb: bytes) -> ExchangeRequest:
        """The request ``pvattest create`` writes: the ARCB, 64 measurement bytes, the additional
        size its flags ask for.

        Raises:
            FormatError: ``arcb`` is not a well-formed ARCB.
        """
        parsed = Arcb.parse(arcb)
        return cls(arcb=bytes(arcb), measurement_size=MEASUREMENT_LEN,
                   additional_size=parsed.expected_additional_size)  # fmt: skip

    def pack(self) -> bytes:
        return _pack([(len(self.arcb), self.arcb), (self.measurement_size, None),
                      (self.additional_size, None), (0, None), (0, None)])  # fmt: skip

    @classmethod
    def parse(cls, data: bytes) -> ExchangeRequest:
        """Read a request (``ExchangeFormatRequest::read``); user data and CUID are ignored.

        Raises:
            FormatError: see :func:`parse_exchange`; no ARCB data; or sizes
                out of range (measurement 1..0x8000, additional ≤ 0x8000).
        """
        ex = parse_exchange(data)
        arcb = ex.entries["arcb"].data
        if arcb is None:
            raise FormatError(f"{_PREFIX} it contains no attestation request")
        try:
            return cls(arcb=arcb, measurement_size=ex.entries["measurement"].size,
                       additional_size=ex.entries["additional"].size)  # fmt: skip
        except UsageError as exc:
            raise FormatError(f"{_PREFIX} {exc}") from None


@frozen(kw_only=True)
class ExchangeResponse:
    """An attestation response in exchange format (``ExchangeFormatResponse``)."""

    arcb: bytes = field(repr=lambda v: f"<{len(v)} bytes>")
    measurement: bytes = field(repr=lambda v: v.hex()[:16] + "…")
    additional: bytes | None = field(default=None, repr=False)
    user_data: bytes | None = field(default=None, repr=False)
    cuid: bytes = field(repr=lambda v: v.hex())

    def __attrs_post_init__(self) -> None:
        _check_size("arcb", len(self.arcb))
        _check_size("measurement", len(self.measurement))
        if self.additional is not None:
            _check_size("additional", len(self.additional))
        if self.user_data is not None:
            _check_size("user", len(self.user_data))
        if len(self.cuid) != CUID_LEN:
            raise UsageError(f"the configuration UID must be {CUID_LEN} bytes, got {len(self.cuid)}")

    def pack(self) -> bytes:
        return _pack([(0, self.arcb), (0, self.measurement), (0, self.additional or b""),
                      (0, self.user_data or b""), (0, self.cuid)])  # fmt: skip

    @classmethod
    def parse(cls, data: bytes) -> ExchangeResponse:
        """Read a response (``ExchangeFormatResponse::read``).

        Raises:
            FormatError: see :func:`parse_exchange`; no ARCB, no measurement
                data, no CUID or one that is not 16 bytes, or a size above its
                limit.
        """
        ex = parse_exchange(data)
        e = ex.entries
        if e["arcb"].data is None:
            raise FormatError(f"{_PREFIX} it contains no attestation request")
        if e["measurement"].data is None:
            raise FormatError(f"{_PREFIX} it contains no attestation response (measurement missing)")
        if e["cuid"].data is None:
            raise FormatError(f"{_PREFIX} it contains no attestation response (configuration UID missing)")
        if e["cuid"].size != CUID_LEN:
            raise FormatError(f"{_PREFIX} the configuration UID is {e['cuid'].size} bytes, not {CUID_LEN}")
        try:
            return cls(arcb=e["arcb"].data, measurement=e["measurement"].data, additional=e["additional"].data,
                       user_data=e["user"].data, cuid=e["cuid"].data)  # fmt: skip
        except UsageError as exc:
            raise FormatError(f"{_PREFIX} {exc}") from None
