"""Sparse host physical memory and the owner state of every 4 KiB frame.

A frame exists only once something touched it, so a 64 GiB server costs
nothing until it is used. Untouched frames read as zeros and belong to the
host. Each frame carries the owner state of ``uv-semantics.md`` §3.1:

    HOST --donate--> DONATED            (UV storage: INIT_UV, CREATE_SEC_CONF/CPU)
    HOST --import/unpack--> SECURE(c)   (c = configuration handle)
    SECURE(c) --export--> EXPORTED(c)   (ciphertext, host-accessible)
    SECURE(c) --set shared--> SHARED(c) --pin--> SHARED_PINNED(c)
    SECURE/EXPORTED --destroy--> HOST

Host accesses are checked here: a DONATED or SECURE frame raises program
interruption 0x3d (``uv-interface.md`` §4 and §5 of uv-semantics); an invalid
page raises a page-translation exception.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Final, final

from attrs import frozen

from ._pgm import PgmCode, ProgramInterrupt

PAGE_SIZE: Final = 4096
PAGE_SHIFT: Final = 12
_ZERO_PAGE: Final = bytes(PAGE_SIZE)


class FrameState(enum.Enum):
    """Who owns a host frame (uv-semantics.md §3.1)."""

    HOST = "host"
    DONATED = "donated"
    SECURE = "secure"
    EXPORTED = "exported"
    SHARED = "shared"
    SHARED_PINNED = "shared-pinned"


HOST_INACCESSIBLE: Final = frozenset({FrameState.DONATED, FrameState.SECURE})
"""States in which a host access takes PGM 0x3d."""


@final
class Frame:
    """One 4 KiB frame: its contents (``None`` while all zero) and its owner."""

    __slots__ = ("pfn", "data", "state", "owner")

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.data: bytearray | None = None
        self.state = FrameState.HOST
        self.owner = 0  # configuration handle for SECURE/EXPORTED/SHARED*, else 0

    def read(self, offset: int = 0, length: int = PAGE_SIZE) -> bytes:
        if self.data is None:
            return _ZERO_PAGE[:length] if offset == 0 and length == PAGE_SIZE else bytes(length)
        return bytes(self.data[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        if self.data is None:
            self.data = bytearray(PAGE_SIZE)
        self.data[offset : offset + len(data)] = data

    def fill(self, data: bytes | None) -> None:
        """Replace the whole frame (``None`` = zeros)."""
        self.data = None if data is None else bytearray(data)


TransitionHook = Callable[[int, FrameState, FrameState, int], None]
RangeHook = Callable[[int, int, FrameState, FrameState, int], None]


@frozen(kw_only=True)
class MemoryStatistics:
    """What :meth:`HostMemory.statistics` reports."""

    size: int
    frames_touched: int
    by_state: dict[str, int]


@final
class HostMemory:
    """The host physical memory of one server.

    Args:
        size: bytes of memory (a multiple of 4 KiB).
    """

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"memory size must be a positive multiple of 4096, got {size}")
        self.size = size
        self.frames_total = size >> PAGE_SHIFT
        self._frames: dict[int, Frame] = {}
        self._invalid: set[int] = set()
        self.on_transition: TransitionHook | None = None
        self.on_range: RangeHook | None = None
        self.guest_page_of: Callable[[Frame], int | None] | None = None
        """The ultravisor's record of the guest frame number a secure or shared frame holds
        (set by :class:`machine.Ultravisor`); the CPU in SIE checks it on every guest access."""

    # ------------------------------------------------------------ frames
    def frame(self, pfn: int) -> Frame:
        """The frame ``pfn``, created on first touch."""
        frame = self._frames.get(pfn)
        if frame is None:
            if not 0 <= pfn < self.frames_total:
                raise ProgramInterrupt(PgmCode.ADDRESSING, pfn << PAGE_SHIFT)
            frame = self._frames[pfn] = Frame(pfn)
        return frame

    def peek(self, pfn: int) -> Frame | None:
        """The frame if it was ever touched, else ``None`` (a zero HOST frame)."""
        return self._frames.get(pfn)

    def state_of(self, pfn: int) -> FrameState:
        frame = self._frames.get(pfn)
        return FrameState.HOST if frame is None else frame.state

    def set_state(self, frame: Frame, state: FrameState, owner: int = 0) -> None:
        """Move ``frame`` to ``state`` (reported to :attr:`on_transition`)."""
        old, old_owner = frame.state, frame.owner
        frame.state = state
        frame.owner = owner
        if self.on_transition is not None and (old is not state or old_owner != owner):
            self.on_transition(frame.pfn, old, state, owner)

    def set_state_range(
        self, first_pfn: int, count: int, state: FrameState, owner: int = 0, *, only: FrameState | None = None
    ) -> int:
        """Move ``count`` frames from ``first_pfn`` on to ``state``, clearing their contents.

        With ``only``, frames in another state are left alone. Runs of frames
        that had the same old state are reported as one range to
        :attr:`on_range` (or frame by frame to :attr:`on_transition` if no range
        hook is set): a 8 MiB donation is one event, not 2048.

        Returns:
            How many frames changed.
        """
        changed = 0
        run_start, run_len, run_old = 0, 0, None

        def flush() -> None:
            if run_len and run_old is not None and run_old is not state:
                if self.on_range is not None:
                    self.on_range(run_start, run_len, run_old, state, owner)
                elif self.on_transition is not None:
                    for pfn in range(run_start, run_start + run_len):
                        self.on_transition(pfn, run_old, state, owner)

        for pfn in range(first_pfn, first_pfn + count):
            frame = self._frames.get(pfn) if only is not None else self.frame(pfn)
            if frame is None or (only is not None and frame.state is not only):
                flush()
                run_len, run_old = 0, None
                continue
            old = frame.state
            if old is not run_old or run_start + run_len != pfn:
                flush()
                run_start, run_len, run_old = pfn, 0, old
            run_len += 1
            frame.data = None
            frame.state = state
            frame.owner = owner
            changed += 1
        flush()
        return changed

    def frames(self) -> Iterator[Frame]:
        """Every touched frame, in address order."""
        for pfn in sorted(self._frames):
            yield self._frames[pfn]

    def contains(self, addr: int, length: int = 1) -> bool:
        return 0 <= addr and addr + length <= self.size

    # ------------------------------------------------------- validity
    def invalidate(self, addr: int) -> None:
        """Make the page at ``addr`` invalid: no translation exists for it."""
        self._invalid.add(addr >> PAGE_SHIFT)

    def validate(self, addr: int) -> None:
        self._invalid.discard(addr >> PAGE_SHIFT)

    def is_valid(self, addr: int, length: int = 1) -> bool:
        """Whether every page of ``[addr, addr+length)`` is valid and inside memory."""
        if not self.contains(addr, length):
            return False
        if not self._invalid:
            return True
        first, last = addr >> PAGE_SHIFT, (addr + max(length, 1) - 1) >> PAGE_SHIFT
        return not any(p in self._invalid for p in range(first, last + 1))

    # --------------------------------------------------- host accesses
    def _check_host(self, addr: int, length: int) -> None:
        if not self.contains(addr, length):
            raise ProgramInterrupt(PgmCode.ADDRESSING, addr)
        for pfn in range(addr >> PAGE_SHIFT, ((addr + max(length, 1) - 1) >> PAGE_SHIFT) + 1):
            if pfn in self._invalid:
                raise ProgramInterrupt(PgmCode.PAGE_TRANSLATION, pfn << PAGE_SHIFT)
            frame = self._frames.get(pfn)
            if frame is not None and frame.state in HOST_INACCESSIBLE:
                raise ProgramInterrupt(PgmCode.SECURE_STORAGE_ACCESS, pfn << PAGE_SHIFT)

    def host_read(self, addr: int, length: int) -> bytes:
        """A host (LPAR or hypervisor) read; PGM 0x3d on secure or donated frames."""
        self._check_host(addr, length)
        return self.raw_read(addr, length)

    def host_write(self, addr: int, data: bytes) -> None:
        """A host write; PGM 0x3d on secure or donated frames."""
        self._check_host(addr, len(data))
        self.raw_write(addr, data)

    # ------------------------------ firmware accesses (no owner check)
    def raw_read(self, addr: int, length: int) -> bytes:
        """Read without any owner check: only the ultravisor and the CPU in SIE may."""
        out = bytearray()
        while length > 0:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            chunk = min(length, PAGE_SIZE - off)
            frame = self._frames.get(pfn)
            out += bytes(chunk) if frame is None else frame.read(off, chunk)
            addr += chunk
            length -= chunk
        return bytes(out)

    def raw_write(self, addr: int, data: bytes) -> None:
        """Write without any owner check: only the ultravisor and the CPU in SIE may."""
        view = memoryview(data)
        while view:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            chunk = min(len(view), PAGE_SIZE - off)
            self.frame(pfn).write(off, bytes(view[:chunk]))
            addr += chunk
            view = view[chunk:]

    def clear(self, addr: int, length: int) -> None:
        """Zero a page-aligned range (drops the frames' contents)."""
        for pfn in range(addr >> PAGE_SHIFT, (addr + length) >> PAGE_SHIFT):
            frame = self._frames.get(pfn)
            if frame is not None:
                frame.data = None

    def statistics(self) -> MemoryStatistics:
        by_state: dict[str, int] = {}
        for frame in self._frames.values():
            by_state[frame.state.value] = by_state.get(frame.state.value, 0) + 1
        return MemoryStatistics(size=self.size, frames_touched=len(self._frames), by_state=by_state)
