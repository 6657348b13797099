"""QUI, the Query Ultravisor Information call (uv-interface.md §5).

QUI is the one call whose block length varies by design: its architected
length is 0x100, Linux (v6.13+) sends ``sizeof(struct uv_cb_qui)`` = 0x120
to get the secret limits too, and the UV accepts any block of at least 0xA8
bytes, writing only what fits and answering rc 0x0100 when the block is
short (§3). So both QUI classes carry ``length`` and pack to exactly
``max(8, length)`` bytes, and a :class:`QuiResponse` may hold a value only
in a field that fits entirely inside its ``length``.

Bitmaps are held as plain ints in the bytes' own big-endian order, which
makes the architecture's MSB-0 numbering direct: bit n of the 256-bit
``inst_calls_list`` (bit 63 - n % 64 of double word n // 64, §3) is
``1 << (255 - n)``; bit n of the 64-bit ``uv_feature_indications`` is
``1 << (63 - n)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self, final

from attrs import evolve, field, frozen

from ._errors import FormatError, UsageError
from ._uvc_codes import Cc, UvcCommand, UvFeature
from ._uvcb_base import HEADER_LEN, Buffer, UvcRequest, UvcResponse, uvcb_layout
from ._uvcb_fields import UintValidator, big_uint, u16, u32, u64

QUI_LENGTH = 0x100
"""Architected QUI length (§3)."""
QUI_MIN_LENGTH = 0xA8
"""Shortest QUI block the UV answers with data (§3; up to ``uv_feature_indications``)."""
QUI_FULL_LENGTH = 0x120
"""sizeof(struct uv_cb_qui) in uv.h v6.13+, the end of the last defined field's block."""

INST_CALLS_BITS = 256
FEATURE_BITS = 64


def qui_bit_mask(bit: int) -> int:
    """The ``inst_calls_list`` int with only MSB-0 bit ``bit`` set."""
    if not 0 <= bit < INST_CALLS_BITS:
        raise UsageError(f"QUI bit must be 0..255, got {bit}")
    return 1 << (INST_CALLS_BITS - 1 - bit)


def inst_calls_list_of(commands: Iterable[UvcCommand]) -> int:
    """The ``inst_calls_list`` that shows exactly ``commands`` as installed.

    Raises:
        UsageError: a command without a QUI bit (DESTR_SEC_STOR).
    """
    value = 0
    for cmd in commands:
        bit = UvcCommand(cmd).qui_bit
        if bit is None:
            raise UsageError(f"{UvcCommand(cmd).name} has no QUI bit")
        value |= qui_bit_mask(bit)
    return value


def feature_indications_of(features: Iterable[UvFeature]) -> int:
    """The ``uv_feature_indications`` value with exactly ``features`` set (MSB-0)."""
    value = 0
    for feat in features:
        value |= 1 << (FEATURE_BITS - 1 - int(feat))
    return value


@final
@uvcb_layout(UvcCommand.QUI, size=HEADER_LEN)
@frozen(kw_only=True)
class QuiRequest(UvcRequest):
    """A QUI block: only a header; ``length`` is also the block size packed."""

    def pack(self) -> bytes:
        """``max(8, length)`` bytes: the header, then zeros."""
        head = self._LAYOUT.struct.pack(self.length, UvcCommand.QUI, 0, 0)
        return head + bytes(max(0, self.length - HEADER_LEN))

    @classmethod
    def parse(cls, data: Buffer) -> Self:
        """Read a QUI request; needs only the header.

        Raises:
            FormatError: fewer than 8 bytes, or another command.
        """
        cls._LAYOUT.check(data, cls.__name__)
        return cls(length=int.from_bytes(data[0:2], "big"))


@final
@uvcb_layout(UvcCommand.QUI, size=QUI_FULL_LENGTH)
@frozen(kw_only=True)
class QuiResponse(UvcResponse):
    """What the UV tells about itself (§5; uv.h ``struct uv_cb_qui``).

    ``length`` is the header ``len`` of the block answered. Fields that end
    beyond it must be 0 (use :meth:`truncated`); :meth:`write_back` skips
    whatever does not fit the caller's block anyway.
    """

    length: int = field(default=QUI_LENGTH, validator=UintValidator(16))
    inst_calls_list: int = big_uint(0x10, 32)
    uv_base_stor_len: int = u64(0x40)
    conf_base_phys_stor_len: int = u64(0x50)
    conf_base_virt_stor_len: int = u64(0x58)
    conf_virt_var_stor_len: int = u64(0x60)
    cpu_stor_len: int = u64(0x68)
    max_num_sec_conf: int = u32(0x7C)
    max_guest_stor_addr: int = u64(0x80)
    max_guest_cpu_id: int = u16(0x9E)
    uv_feature_indications: int = u64(0xA0)
    supp_se_hdr_versions: int = u64(0xB0)
    supp_se_hdr_pcf: int = u64(0xB8)
    conf_dump_storage_state_len: int = u64(0xC8)
    conf_dump_finalize_len: int = u64(0xD0)
    supp_att_req_hdr_ver: int = u64(0xE0)
    supp_att_pflags: int = u64(0xE8)
    supp_add_secret_req_ver: int = u64(0xF8)
    supp_add_secret_pcf: int = u64(0x100)
    supp_secret_types: int = u64(0x108)
    max_assoc_secrets: int = u16(0x110)
    max_retr_secrets: int = u16(0x112)

    def __attrs_post_init__(self) -> None:
        for f in self.FIELDS:
            if f.offset + f.size > self.length and getattr(self, f.name):
                raise UsageError(
                    f"QuiResponse.{f.name} (at {f.offset:#x}) does not fit a "
                    f"{self.length:#x}-byte QUI block and must be 0"
                )

    @classmethod
    def with_commands(cls, commands: Iterable[UvcCommand], **fields: Any) -> Self:
        """A response whose ``inst_calls_list`` shows exactly ``commands``."""
        return cls(inst_calls_list=inst_calls_list_of(commands), **fields)

    def installed(self, cmd: UvcCommand) -> bool:
        """Whether ``inst_calls_list`` shows ``cmd``.

        DESTR_SEC_STOR has no bit; Linux issues it unconditionally, so it
        counts as installed.
        """
        bit = UvcCommand(cmd).qui_bit
        return True if bit is None else bool(self.inst_calls_list & qui_bit_mask(bit))

    @property
    def installed_commands(self) -> frozenset[UvcCommand]:
        """Every command whose bit is set (DESTR_SEC_STOR excluded: it has none)."""
        return frozenset(c for c in UvcCommand if c.qui_bit is not None and self.installed(c))

    def has_feature(self, feature: UvFeature) -> bool:
        """Whether ``uv_feature_indications`` has the (MSB-0) bit of ``feature``."""
        return bool(self.uv_feature_indications >> (FEATURE_BITS - 1 - int(feature)) & 1)

    @property
    def max_guest_cpus(self) -> int:
        """Number of CPUs a configuration may have (``max_guest_cpu_id`` + 1, §5)."""
        return self.max_guest_cpu_id + 1

    def truncated(self, length: int) -> Self:
        """This answer as it fits a ``length``-byte block: fields beyond it zeroed."""
        cut = {f.name: 0 for f in self.FIELDS if f.offset + f.size > length}
        return evolve(self, length=length, **cut)

    def pack(self) -> bytes:
        """``max(8, length)`` bytes: header with ``len`` = ``length``, then what fits."""
        lay = self._LAYOUT
        full = lay.struct.pack(self.length, lay.command, self.rc, self.rrc, *lay.values(self))
        size = max(HEADER_LEN, self.length)
        return full[:size] if size <= len(full) else full + bytes(size - len(full))

    @classmethod
    def parse(cls, data: Buffer, *, cc: int) -> Self:
        """Read a QUI answer of the length its header gives.

        Bytes beyond ``len`` are ignored; the block must hold at least
        ``min(len, 0x120)`` bytes (and the header).

        Raises:
            FormatError: too short, or another command.
        """
        lay = cls._LAYOUT
        lay.check(data, cls.__name__, HEADER_LEN)
        length = int.from_bytes(data[0:2], "big")
        used = min(max(HEADER_LEN, length), lay.size)
        if len(data) < used:
            raise FormatError(f"{cls.__name__}: QUI block of len {length:#x} has only {len(data)} bytes")
        block = bytes(data[:used]).ljust(lay.size, b"\0")
        vals = lay.struct.unpack(block)
        return lay.build(cls, {"cc": Cc(cc), "rc": vals[2], "rrc": vals[3], "length": length}, vals[4:])
