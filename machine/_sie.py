"""What the CPU does with guest memory accesses while it runs a guest in SIE.

For a secure guest the hardware and the ultravisor allow an access only to
a frame that is secure (or shared) for the guest's own configuration; a
non-secure page gives PGM 0x3e and the hypervisor imports it
(uv-semantics.md §3.2); a page secure for *another* configuration (left over
after an asynchronous teardown) gives 0x3d inside SIE (§3.3). A regular
guest may touch any host frame except secure or donated ones. A guest page
that the hypervisor has not mapped is a host DAT fault: SIE exits and KVM
faults the page in.
"""

from __future__ import annotations

from ._dat import AddressSpace
from ._memory import PAGE_SHIFT, PAGE_SIZE, Frame, FrameState, HostMemory
from ._pgm import PgmCode, ProgramInterrupt

_GUEST_OK = (FrameState.SECURE, FrameState.SHARED, FrameState.SHARED_PINNED)


def guest_frame(memory: HostMemory, space: AddressSpace, config_handle: int, gaddr: int) -> Frame:
    """The frame a guest access to ``gaddr`` reaches, or the interruption it takes.

    Args:
        config_handle: the secure configuration the CPU runs, 0 for a regular guest.

    Raises:
        ProgramInterrupt: PAGE_TRANSLATION (host DAT fault, address = gaddr),
            NON_SECURE_STORAGE_ACCESS (0x3e) or SECURE_STORAGE_ACCESS (0x3d).
    """
    if not 0 <= gaddr < space.size:
        raise ProgramInterrupt(PgmCode.ADDRESSING, gaddr)
    pfn = space.pfn_of(gaddr >> PAGE_SHIFT)
    if pfn is None:
        raise ProgramInterrupt(PgmCode.PAGE_TRANSLATION, gaddr)
    frame = memory.frame(pfn)
    state = frame.state
    if config_handle:
        if state in _GUEST_OK and frame.owner == config_handle:
            # The UV records which guest page a secure frame holds: the same frame reached through
            # another guest address (the hypervisor aliased or moved it without an export) is a
            # secure-storage violation (PGM 0x3f; Linux do_secure_storage_violation: "KVM messed
            # up the secure guest mapping").
            recorded = None if memory.guest_page_of is None else memory.guest_page_of(frame)
            if recorded is not None and recorded != gaddr >> PAGE_SHIFT:
                raise ProgramInterrupt(PgmCode.SECURE_STORAGE_VIOLATION, gaddr)
            return frame
        if state is FrameState.DONATED or state is FrameState.SECURE:
            raise ProgramInterrupt(PgmCode.SECURE_STORAGE_ACCESS, gaddr)
        # A page another configuration shares is not secure: 0x3e, no 0x3d (uv-semantics.md §3.5,
        # should_export_before_import: "shared pages ... don't trigger a secure storage exception").
        raise ProgramInterrupt(PgmCode.NON_SECURE_STORAGE_ACCESS, gaddr)
    if state is FrameState.DONATED or state is FrameState.SECURE:
        raise ProgramInterrupt(PgmCode.SECURE_STORAGE_ACCESS, gaddr)
    return frame


def guest_read(memory: HostMemory, space: AddressSpace, config_handle: int, gaddr: int, length: int) -> bytes:
    """Read guest memory as the CPU in SIE does (the access must stay in one page)."""
    if (gaddr & (PAGE_SIZE - 1)) + length > PAGE_SIZE:
        raise ValueError("a guest access must not cross a page")
    return guest_frame(memory, space, config_handle, gaddr).read(gaddr & (PAGE_SIZE - 1), length)


def guest_write(memory: HostMemory, space: AddressSpace, config_handle: int, gaddr: int, data: bytes) -> None:
    """Write guest memory as the CPU in SIE does (the access must stay in one page)."""
    if (gaddr & (PAGE_SIZE - 1)) + len(data) > PAGE_SIZE:
        raise ValueError("a guest access must not cross a page")
    guest_frame(memory, space, config_handle, gaddr).write(gaddr & (PAGE_SIZE - 1), data)
