"""The non-secure bookkeeping structures of a boot image: IPIB and metadata.

* **IPIB** (IPL parameter block, PV type; ``se_img_comps/bootloader/ipl.rs``,
  se-format.md §2.4): lists the secure components (tweak prefix, address,
  padded length) in unpack order plus the SE header's address and size.
  The hypervisor unpacks exactly what it lists (se-format.md §6 step 3)::

    0x00 u32 len (=0x88+24n) | 0x04 u8 flags | 0x05 res[2] | 0x07 u8 version=1
    0x08 u32 pv_len (=0x80+24n) | 0x0C u8 pbt=5 | 0x0D res[3] | 0x10 loadparm[8]
    0x18 res[84] | 0x6C res[3] | 0x6F u8 pv_version=1 | 0x70 res[4]
    0x74 u32 num_comp | 0x78 u64 pv_hdr_addr | 0x80 u64 pv_hdr_size
    0x88 comps[n] {u64 tweak_pref, u64 addr, u64 len}

* **SeImgMetaData** (``brcb.rs``): 28 packed bytes at 0xC000 that let tools
  find the header and the IPIB: ``"SeImgLnx" ‖ BE64 hdr_off ‖ BE32 version=1
  ‖ BE64 ipib_off``.
"""

from __future__ import annotations

import struct

from attrs import field, frozen

from ._components import PAGE_SIZE
from ._errors import FormatError, UsageError

IPIB_FIXED_LEN = 0x88
IPIB_COMP_LEN = 24
IPIB_VERSION = 1
IPIB_PV_VERSION = 1
IPIB_PBT_PV = 5
_IPIB_HEAD = struct.Struct(">IB2sBIB3s8s84s3sB4sIQQ")
_IPIB_COMP = struct.Struct(">QQQ")

METADATA_OFFSET = 0xC000
METADATA_MAGIC = b"SeImgLnx"
METADATA_VERSION = 1
_METADATA = struct.Struct(">8sQIQ")
METADATA_LEN = _METADATA.size  # 28

_U64 = 1 << 64


@frozen(kw_only=True)
class IpibComponent:
    """One secure component as the IPIB lists it (``ipl_pb0_pv_comp``)."""

    tweak_prefix: int
    addr: int
    length: int
    """Padded length in bytes (a multiple of 4096)."""

    @property
    def kind(self) -> int:
        """The component kind in the top 16 bits of the tweak prefix."""
        return self.tweak_prefix >> 48


@frozen(kw_only=True)
class Ipib:
    """A PV-type IPL parameter block."""

    hdr_addr: int
    hdr_size: int
    components: tuple[IpibComponent, ...] = field(converter=tuple)

    @property
    def length(self) -> int:
        return IPIB_FIXED_LEN + IPIB_COMP_LEN * len(self.components)

    def pack(self) -> bytes:
        """The IPIB bytes (unpadded), exactly as pvimg writes them."""
        n = len(self.components)
        for value in (self.hdr_addr, self.hdr_size):
            if not 0 <= value < _U64:
                raise UsageError(f"IPIB header address/size {value:#x} does not fit in a u64")
        head = _IPIB_HEAD.pack(
            self.length, 0, bytes(2), IPIB_VERSION,
            self.length - 8, IPIB_PBT_PV, bytes(3), bytes(8), bytes(84), bytes(3),
            IPIB_PV_VERSION, bytes(4), n, self.hdr_addr, self.hdr_size,
        )  # fmt: skip
        comps = b"".join(
            _IPIB_COMP.pack(c.tweak_prefix, c.addr, c.length) for c in self.components
        )
        return head + comps

    @classmethod
    def parse(cls, data: bytes) -> Ipib:
        """Parse an IPIB from the start of ``data`` (trailing bytes ignored).

        Raises:
            FormatError: truncated, wrong lengths, wrong version or type, no
                components, or a component that is not page aligned, not a
                whole number of pages, or wraps past 2**64.
        """
        if len(data) < IPIB_FIXED_LEN:
            raise FormatError(f"IPIB truncated: {len(data)} bytes, need at least {IPIB_FIXED_LEN}")
        (length, _flags, _r1, version, pv_len, pbt, _r2, _lp, _r3, _r4, pv_version, _r5,
         num_comp, hdr_addr, hdr_size) = _IPIB_HEAD.unpack_from(data)  # fmt: skip
        if version != IPIB_VERSION:
            raise FormatError(f"IPIB version {version} is not {IPIB_VERSION}")
        if pbt != IPIB_PBT_PV:
            raise FormatError(f"IPIB parameter block type {pbt} is not 5 (PV)")
        if pv_version != IPIB_PV_VERSION:
            raise FormatError(f"IPIB PV version {pv_version} is not {IPIB_PV_VERSION}")
        expected = IPIB_FIXED_LEN + IPIB_COMP_LEN * num_comp
        if length != expected or pv_len != expected - 8:
            raise FormatError(
                f"IPIB lengths {length:#x}/{pv_len:#x} do not match {num_comp} components"
            )
        if num_comp == 0:
            raise FormatError("IPIB lists no components")
        if len(data) < expected:
            raise FormatError(f"IPIB truncated: {len(data)} bytes of {expected}")
        comps = []
        for i in range(num_comp):
            pref, addr, clen = _IPIB_COMP.unpack_from(data, IPIB_FIXED_LEN + IPIB_COMP_LEN * i)
            if addr % PAGE_SIZE or clen % PAGE_SIZE or clen == 0:
                raise FormatError(
                    f"IPIB component {i} at {addr:#x} (length {clen:#x}) is not whole pages"
                )
            if addr + clen > _U64:
                raise FormatError(f"IPIB component {i} at {addr:#x} wraps around the address space")
            # Order and overlap are not format rules: the UV unpacks what it is
            # given, and a moved component is caught by the ALD (se-format.md §2.3).
            comps.append(IpibComponent(tweak_prefix=pref, addr=addr, length=clen))
        return cls(hdr_addr=hdr_addr, hdr_size=hdr_size, components=comps)


@frozen(kw_only=True)
class ImageMetadata:
    """``SeImgMetaData`` v1: where the SE header and the IPIB are."""

    hdr_offset: int
    ipib_offset: int
    version: int = METADATA_VERSION

    def pack(self) -> bytes:
        """The 28 packed bytes (se-format.md §2.4, KAT ``se_img_metadata_v1``)."""
        return _METADATA.pack(METADATA_MAGIC, self.hdr_offset, self.version, self.ipib_offset)

    @classmethod
    def parse(cls, data: bytes) -> ImageMetadata:
        """Parse the 28 bytes at the start of ``data``.

        Raises:
            FormatError: too short, wrong magic, or a version other than 1.
        """
        if len(data) < METADATA_LEN:
            raise FormatError(f"image metadata truncated: {len(data)} of {METADATA_LEN} bytes")
        magic, hdr_off, version, ipib_off = _METADATA.unpack_from(data)
        if magic != METADATA_MAGIC:
            raise FormatError(f"image metadata magic is {magic!r}, not {METADATA_MAGIC!r}")
        if version != METADATA_VERSION:
            raise FormatError(f"unknown image metadata version {version}")
        return cls(hdr_offset=hdr_off, ipib_offset=ipib_off, version=version)

    @staticmethod
    def present(image: bytes) -> bool:
        """Whether ``image`` has the metadata magic at 0xC000."""
        return bytes(image[METADATA_OFFSET : METADATA_OFFSET + 8]) == METADATA_MAGIC
