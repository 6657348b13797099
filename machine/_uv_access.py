"""How the ultravisor reaches memory for a call: UVCBs of the host or of a guest, and ownership.

A UVCB of the host is read at host addresses; an invalid page there is
program interruption 0x11 (uv-interface.md §1), a secure or donated page
0x3d (the host cannot make the UV read or write what it may not touch
itself). A guest's UVCB is read at
guest absolute addresses through the address space of its configuration,
and each page must be one the guest could access itself
(:func:`machine.guest_frame`): otherwise SIE exits with the interruption
that access would take, for the host to resolve, and the guest re-executes
the UVC (uv-semantics.md §3.2). Beyond the end of guest memory the UVCB
cannot be read at all: 0x11 for the guest.
"""

from __future__ import annotations

from typing import Any, Protocol, final

from protocol import SesimInternalError
from protocol._uvc_codes import PgmCode

from ._dat import AddressSpace
from ._memory import HOST_INACCESSIBLE, PAGE_SHIFT, PAGE_SIZE, Frame, FrameState, HostMemory
from ._pgm import ProgramInterrupt
from ._sie import guest_frame


class UvcbView(Protocol):
    """Reads and writes of one caller's UVCB."""

    def read(self, addr: int, length: int) -> bytes: ...

    def write(self, addr: int, data: bytes) -> None: ...


def uv_owned_in(memory: HostMemory, origin: int, length: int) -> bool:
    """Whether any frame of ``[origin, origin+length)`` is in a state other than HOST.

    Walks whichever is shorter: the range, or the frames touched so far.
    """
    if length <= 0:
        return False
    first, end = origin >> PAGE_SHIFT, ((origin + length - 1) >> PAGE_SHIFT) + 1
    if end - first <= 4096:
        return any(memory.state_of(pfn) is not FrameState.HOST for pfn in range(first, end))
    return any(first <= f.pfn < end and f.state is not FrameState.HOST for f in memory.frames())


def host_inaccessible_in(memory: HostMemory, origin: int, length: int) -> int | None:
    """The first page of ``[origin, origin+length)`` a host access may not touch (secure or donated), or None.

    The UV acts for the host on host memory only: a host operand that lies in
    a guest's secure storage or in UV storage is refused as the host's own
    access would be (PGM 0x3d, uv-interface.md §4), never read or written for
    it. Otherwise a UVCB or an SE header placed on a secure page would make
    the UV parse the guest's plaintext and write its answer into it.
    """
    if length <= 0:
        return None
    for pfn in range(origin >> PAGE_SHIFT, ((origin + length - 1) >> PAGE_SHIFT) + 1):
        if memory.state_of(pfn) in HOST_INACCESSIBLE:
            return pfn << PAGE_SHIFT
    return None


@final
class HostView:
    """A host UVCB: host addresses; an invalid page (or beyond memory) is PGM 0x11, a secure or
    donated page PGM 0x3d (the host's own access to it would take 0x3d)."""

    def __init__(self, memory: HostMemory) -> None:
        self.memory = memory

    def _check(self, addr: int, length: int) -> None:
        if not self.memory.is_valid(addr, length):
            raise ProgramInterrupt(PgmCode.PAGE_TRANSLATION, addr)
        secure = host_inaccessible_in(self.memory, addr, length)
        if secure is not None:
            raise ProgramInterrupt(PgmCode.SECURE_STORAGE_ACCESS, secure)

    def read(self, addr: int, length: int) -> bytes:
        self._check(addr, length)
        return self.memory.raw_read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self._check(addr, len(data))
        self.memory.raw_write(addr, data)


@final
class GuestView:
    """A guest's UVCB: guest absolute addresses through its configuration's address space."""

    def __init__(self, memory: HostMemory, space: AddressSpace, config_handle: int) -> None:
        self.memory = memory
        self.space = space
        self.handle = config_handle

    def _frames(self, addr: int, length: int) -> list[tuple[Frame, int, int]]:
        if addr < 0 or addr + length > self.space.size:
            raise ProgramInterrupt(PgmCode.PAGE_TRANSLATION, addr)
        out = []
        while length > 0:
            offset = addr & (PAGE_SIZE - 1)
            chunk = min(length, PAGE_SIZE - offset)
            out.append((guest_frame(self.memory, self.space, self.handle, addr), offset, chunk))
            addr += chunk
            length -= chunk
        return out

    def read(self, addr: int, length: int) -> bytes:
        return b"".join(frame.read(offset, chunk) for frame, offset, chunk in self._frames(addr, length))

    def write(self, addr: int, data: bytes) -> None:
        pos = 0
        for frame, offset, chunk in self._frames(addr, len(data)):
            frame.write(offset, data[pos : pos + chunk])
            pos += chunk


def guest_view(uv: Any, config_handle: int) -> GuestView:
    """The view of the guest running configuration ``config_handle`` of ``uv``."""
    conf = uv.configs.get(config_handle)
    space = None if conf is None else uv.server.address_spaces.get(conf.asce)
    if conf is None or space is None:
        raise SesimInternalError("a guest UVC from a configuration that does not exist")
    return GuestView(uv.memory, space, conf.handle)
