"""sesim's stand-ins for pvimg's boot loaders, stage3a and stage3b.

The real ``stage3a.bin`` and ``stage3b_reloc.bin`` are s390x binaries built
from ``rust/pvimg/boot/*.{c,S}`` (se-format.md §2.4). sesim does not execute
s390x code, so it puts small, deterministic, documented blobs where pvimg puts
those binaries. Only their *argument areas* carry meaning, and they sit
exactly where pvimg puts them, so the simulated guest finds the header, the
IPIB, the kernel, the command line and the initrd the same way the real
loaders do (se-format.md §6 steps 2 and 4).

**stage3a stand-in** (non-secure, loaded at 0x10000, 0x3000 bytes: like the
real one, it ends between 0x12000 and 0x13000, so the SE header lands at the
legacy minimum 0x14000)::

    0x0000 magic   "SESIM-STAGE3A" padded with NUL to 16 bytes
    0x0010 BE32    stand-in format version (1)
    0x0014 BE32    total length (0x3000)
    0x0018 BE64    entry offset (0x1000: the short PSW points to 0x11000)
    0x0020 ASCII   a note saying what this is, NUL padded to 0x100
    0x1000 ASCII   "SESIM-STAGE3A-ENTRY" (what the IPL PSW lands on)
    0x2FE8 stage3a_args {u64 hdr_offs, u64 hdr_size, u64 ipib_offs}: offsets
           relative to the address of this 24-byte block (0x12FE8)

**stage3b stand-in** (secure component, 0x1000 bytes; the header's PSW
points at its first byte)::

    0x000 magic   "SESIM-STAGE3B" padded with NUL to 16 bytes
    0x010 BE32    stand-in format version (1)
    0x014 BE32    total length (0x1000)
    0x018 ASCII   a note, NUL padded to 0x100
    0xFC0 stage3b_args {kernel{src,size}, cmdline{src,size}, initrd{src,size},
          psw{mask, addr}}: src = component address, size = unpadded size

Everything else is zero. The real stage3b then moves the kernel down by
dropping its first 64 KiB, copies the command line to 0x10480 and stores the
initrd's start and size at 0x10408/0x10410 (se-format.md §6 step 4).
"""

from __future__ import annotations

import struct

from attrs import frozen

from ._errors import FormatError, UsageError

STAGE3A_LOAD_ADDRESS = 0x10000
STAGE3A_ENTRY = 0x11000
STAGE3A_BSS = 0xC000
KERNEL_ENTRY = 0x10000
PSW_MASK_EA_BA = 0x0000_0001_8000_0000
"""``PSW_MASK_EA | PSW_MASK_BA``: 64-bit addressing."""
_SHORT_PSW_BIT12 = 0x0008_0000_0000_0000

STAGE3_FORMAT_VERSION = 1
STAGE3A_MAGIC = b"SESIM-STAGE3A".ljust(16, b"\0")
STAGE3A_SIZE = 0x3000
STAGE3A_ENTRY_MARKER = b"SESIM-STAGE3A-ENTRY"
STAGE3B_MAGIC = b"SESIM-STAGE3B".ljust(16, b"\0")
STAGE3B_SIZE = 0x1000

_STAGE3A_NOTE = (
    b"sesim stand-in for s390-tools pvimg stage3a.bin (not s390x code); "
    b"stage3a_args are the last 24 bytes"
)
_STAGE3B_NOTE = (
    b"sesim stand-in for s390-tools pvimg stage3b_reloc.bin (not s390x code); "
    b"stage3b_args are the last 64 bytes"
)
_STAGE3A_ARGS = struct.Struct(">QQQ")
_STAGE3B_ARGS = struct.Struct(">8Q")
STAGE3A_ARGS_LEN = _STAGE3A_ARGS.size  # 24
STAGE3B_ARGS_LEN = _STAGE3B_ARGS.size  # 64
STAGE3A_ARGS_ADDR = STAGE3A_LOAD_ADDRESS + STAGE3A_SIZE - STAGE3A_ARGS_LEN


def short_psw(addr: int) -> bytes:
    """The 8-byte ESA short PSW pvimg writes at 0 (se-format.md §2.4)."""
    if not 0 <= addr < 1 << 31:
        raise UsageError(f"short PSW address {addr:#x} must be below 2 GiB")
    return (_SHORT_PSW_BIT12 | PSW_MASK_EA_BA | addr).to_bytes(8, "big")


@frozen(kw_only=True)
class Stage3aArgs:
    """``stage3a_args``: where stage3a finds the header and the IPIB.

    Offsets are relative to the address of the 24-byte block itself
    (``render_stage3a`` in ``bootloader.rs``).
    """

    hdr_offs: int
    hdr_size: int
    ipib_offs: int

    def pack(self) -> bytes:
        return _STAGE3A_ARGS.pack(self.hdr_offs, self.hdr_size, self.ipib_offs)

    @classmethod
    def parse(cls, data: bytes) -> Stage3aArgs:
        if len(data) < STAGE3A_ARGS_LEN:
            raise FormatError(f"stage3a_args truncated: {len(data)} of {STAGE3A_ARGS_LEN} bytes")
        hdr_offs, hdr_size, ipib_offs = _STAGE3A_ARGS.unpack_from(data)
        return cls(hdr_offs=hdr_offs, hdr_size=hdr_size, ipib_offs=ipib_offs)

    def hdr_addr(self, args_addr: int = STAGE3A_ARGS_ADDR) -> int:
        return args_addr + self.hdr_offs

    def ipib_addr(self, args_addr: int = STAGE3A_ARGS_ADDR) -> int:
        return args_addr + self.ipib_offs


@frozen(kw_only=True)
class MemBlob:
    """``memblob``: a component's address and unpadded size (0, 0 if absent)."""

    src: int = 0
    size: int = 0


@frozen(kw_only=True)
class Stage3bArgs:
    """``stage3b_args``: what stage3b needs to start the kernel."""

    kernel: MemBlob
    cmdline: MemBlob = MemBlob()
    initrd: MemBlob = MemBlob()
    psw_mask: int = PSW_MASK_EA_BA
    psw_addr: int = KERNEL_ENTRY

    def pack(self) -> bytes:
        k, c, i = self.kernel, self.cmdline, self.initrd
        return _STAGE3B_ARGS.pack(
            k.src, k.size, c.src, c.size, i.src, i.size, self.psw_mask, self.psw_addr
        )

    @classmethod
    def parse(cls, data: bytes) -> Stage3bArgs:
        if len(data) < STAGE3B_ARGS_LEN:
            raise FormatError(f"stage3b_args truncated: {len(data)} of {STAGE3B_ARGS_LEN} bytes")
        ks, kz, cs, cz, is_, iz, mask, addr = _STAGE3B_ARGS.unpack_from(data)
        return cls(
            kernel=MemBlob(src=ks, size=kz), cmdline=MemBlob(src=cs, size=cz),
            initrd=MemBlob(src=is_, size=iz), psw_mask=mask, psw_addr=addr,
        )  # fmt: skip


def _head(magic: bytes, size: int, note: bytes, entry: int | None) -> bytes:
    head = magic + struct.pack(">II", STAGE3_FORMAT_VERSION, size)
    if entry is not None:
        head += entry.to_bytes(8, "big")
    return head + note.ljust(0x100 - len(head), b"\0")


def render_stage3a(*, hdr_addr: int, hdr_size: int, ipib_addr: int) -> bytes:
    """The stage3a stand-in with its args filled in (loaded at 0x10000).

    Raises:
        UsageError: the header or IPIB is not after stage3a, as pvimg requires.
    """
    end = STAGE3A_LOAD_ADDRESS + STAGE3A_SIZE
    if hdr_addr <= end or ipib_addr <= end:
        raise UsageError("the SE header and the IPIB must lie after stage3a")
    args = Stage3aArgs(
        hdr_offs=hdr_addr - STAGE3A_ARGS_ADDR, hdr_size=hdr_size,
        ipib_offs=ipib_addr - STAGE3A_ARGS_ADDR,
    )  # fmt: skip
    blob = bytearray(STAGE3A_SIZE)
    head = _head(STAGE3A_MAGIC, STAGE3A_SIZE, _STAGE3A_NOTE, STAGE3A_ENTRY - STAGE3A_LOAD_ADDRESS)
    blob[: len(head)] = head
    entry = STAGE3A_ENTRY - STAGE3A_LOAD_ADDRESS
    blob[entry : entry + len(STAGE3A_ENTRY_MARKER)] = STAGE3A_ENTRY_MARKER
    blob[-STAGE3A_ARGS_LEN:] = args.pack()
    return bytes(blob)


def render_stage3b(args: Stage3bArgs) -> bytes:
    """The stage3b stand-in with its args in the last 64 bytes."""
    blob = bytearray(STAGE3B_SIZE)
    head = _head(STAGE3B_MAGIC, STAGE3B_SIZE, _STAGE3B_NOTE, None)
    blob[: len(head)] = head
    blob[-STAGE3B_ARGS_LEN:] = args.pack()
    return bytes(blob)


def _check_head(blob: bytes, magic: bytes, name: str) -> int:
    if len(blob) < 0x18 or bytes(blob[:16]) != magic:
        raise FormatError(f"not a sesim {name} stand-in (magic missing)")
    version, size = struct.unpack_from(">II", blob, 16)
    if version != STAGE3_FORMAT_VERSION:
        raise FormatError(f"unknown {name} stand-in version {version}")
    if size > len(blob):
        raise FormatError(f"{name} stand-in truncated: {len(blob)} of {size} bytes")
    if size < 0x100 + 64:
        raise FormatError(f"{name} stand-in length {size:#x} is too small")
    return size


def parse_stage3a(blob: bytes) -> Stage3aArgs:
    """The args of a stage3a stand-in (``blob`` starts at 0x10000).

    Raises:
        FormatError: not a stand-in, unknown version, truncated.
    """
    size = _check_head(blob, STAGE3A_MAGIC, "stage3a")
    return Stage3aArgs.parse(bytes(blob[size - STAGE3A_ARGS_LEN : size]))


def parse_stage3b(blob: bytes) -> Stage3bArgs:
    """The args of a (decrypted) stage3b stand-in.

    Raises:
        FormatError: not a stand-in, unknown version, truncated.
    """
    size = _check_head(blob, STAGE3B_MAGIC, "stage3b")
    return Stage3bArgs.parse(bytes(blob[size - STAGE3B_ARGS_LEN : size]))


def stage3a_length(blob: bytes) -> int:
    """The length a stage3a stand-in declares (FormatError if not one)."""
    return _check_head(blob, STAGE3A_MAGIC, "stage3a")
