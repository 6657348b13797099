"""The import path: ``make_hva_secure`` and its race rules (uv-semantics.md §3.5).

Every import-like UVC of the host (CONV_TO_SEC_STOR on PGM 0x3e, UNPACK_IMG
at boot, UNPIN_PAGE_SHARED after intercept 108) goes through here, in
Linux's order:

1. take the PTE lock and find the page (no page: -ENXIO, fault it in);
2. take a temporary reference (``folio_get``: safe because the PTE lock is held);
3. ``folio_trylock``, never sleep: taken by someone else → -EAGAIN;
4. export first if several configurations live in this address space and
   the UV has no MISC feature (``should_export_before_import``);
5. writeback in progress → -EBUSY; freeze the reference count at its
   expected value, else -EBUSY;
6. set ``PG_arch_1``, issue the UVC **once** (busy/partial → -EAGAIN,
   rc 0x010a → -ENXIO, anything else → -EINVAL), unfreeze;
7. drop the page lock and the PTE lock; on -EBUSY wait for writeback and
   drain the LRU batch (``s390_wiggle_split_folio``), holding the reference,
   then -EAGAIN; drop the reference.

The caller retries -EAGAIN later (the vCPU by re-entering SIE, the unpack
loop by trying the same page again). Nothing here loops while it holds a
lock. The switches of :class:`~actors._bugs.BugSwitches` put back the bugs
of §8 #1, #9, #17 and #19 at the exact step where the kernel had them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from protocol import Cc, ConvFromSecStorRequest, ConvToSecStorRequest, ImportRc

from ._kvm import Outcome
from ._linux_mm import Page

if TYPE_CHECKING:
    from ._fabric import Actor
    from ._kvm import Kvm
    from ._vm import VirtualMachine

PAGE: Final = 4096
_EBUSY: Final = "ebusy"


async def make_hva_secure(kvm: Kvm, actor: Actor, vm: VirtualMachine, request: Any) -> Outcome:
    """Make the page at ``request.gaddr`` secure with ``request``: ``ok``, ``again``, ``fault`` or ``invalid``."""
    mm = kvm.mm
    who = actor.name
    gfn = request.gaddr >> 12
    key = mm.ptl_key(vm, gfn)
    await mm.ptl_lock(actor, key)  # folio_walk_start: the PTE lock is held from here
    pfn = vm.space.pfn_of(gfn)
    if pfn is None:
        mm.ptl_unlock(key, who)
        return Outcome("fault")  # no folio: -ENXIO
    page = mm.page(pfn)
    gen = page.gen
    holds_ptl = True
    if kvm.bugs.import_without_pte_lock:
        # §8 #19 (5cbe24350b7d): gfn_to_page() pins the page the way GUP does (a try,
        # which fails on a frozen count), and the PTE lock is not held from there on;
        # mmap_read_lock() may sleep before the page lock is tried.
        mm.ptl_unlock(key, who)
        holds_ptl = False
        if not mm.try_get(page):
            return Outcome("again")
        await actor.yield_()
    else:
        mm.get(page, who)  # folio_get: plain, because the PTE lock is held
    try:
        rc = await _make_folio_secure(kvm, actor, vm, page, request)
    finally:
        if holds_ptl:
            mm.ptl_unlock(key, who)
    if rc == _EBUSY or (rc == "again" and kvm.bugs.writeback_without_ref):
        # (Before 3f29f6537f54 every -EAGAIN waited for writeback too, without a reference.)
        if rc == _EBUSY:
            vm.stats.ebusy += 1
            # Visible in the trace: the freeze failed on extra references or writeback (§8 #3).
            actor.record("import-ebusy", guest=vm.name, pfn=page.pfn)
        await _wiggle(kvm, actor, page, gen)
        vm.stats.eagain += 1
        return Outcome("again")
    mm.put(page, who)
    if rc == "again":
        vm.stats.eagain += 1
    return rc  # type: ignore[return-value]


async def _make_folio_secure(kvm: Kvm, actor: Actor, vm: VirtualMachine, page: Page, request: Any) -> str:
    """``make_folio_secure``: the page lock by trylock, export before import, then the UVC."""
    mm = kvm.mm
    who = actor.name
    if not mm.trylock(page, who):
        return Outcome("again")  # no sleeping under the PTE lock: -EAGAIN
    try:
        if kvm.should_export_before_import(request, vm) and not kvm.bugs.no_export_before_import:
            # Shared pages of another configuration raise no 0x3d: export first (§8 #9).
            await kvm.uvc(actor, vm, ConvFromSecStorRequest(paddr=page.pfn * PAGE))
        return await _make_folio_secure_locked(kvm, actor, vm, page, request)
    finally:
        mm.unlock(page, who)


async def _make_folio_secure_locked(kvm: Kvm, actor: Actor, vm: VirtualMachine, page: Page, request: Any) -> str:
    """``__make_folio_secure``: writeback and reference checks, then a single UVC try."""
    mm = kvm.mm
    if page.writeback:
        return _EBUSY
    expected = mm.expected_refs(page) + 1
    if not mm.freeze(page, expected):
        return _EBUSY  # someone else holds a reference (a GUP pin, the LRU batch)
    kvm.set_arch_1(page)  # PG_arch_1 is set before the UVC (over-indicating)
    # A single try: looping here would hold the PTE lock and the page lock for as
    # long as the UV stays busy (§8 #1); busy_loop_under_lock puts the loop back.
    response = await kvm.uvc(actor, vm, request, retry=kvm.bugs.busy_loop_under_lock)
    mm.unfreeze(page, expected)
    if response.cc == Cc.OK:
        mm.touch(page)
        return Outcome("ok")
    if response.cc >= Cc.BUSY:
        return Outcome("again", response.rc)
    if response.rc == ImportRc.GADDR_NOT_MAPPED:
        return Outcome("fault", response.rc)
    return Outcome("invalid", response.rc)


PREEMPTION: Final = (0, 0, 2_000, 10_000, 40_000)
"""How long the thread may be preempted once it dropped the PTE lock (a recorded choice)."""


async def _preempted(actor: Actor) -> None:
    """A preemption point: the spinlock is released, another thread may run for a while first."""
    await actor.sleep(PREEMPTION[actor.choose("preempt", len(PREEMPTION))])


async def _wiggle(kvm: Kvm, actor: Actor, page: Page, gen: int) -> None:
    """-EBUSY: wait for writeback and drain the LRU batch, then drop the temporary reference."""
    mm = kvm.mm
    who = actor.name
    if kvm.bugs.writeback_without_ref:
        # §8 #17 (before 3f29f6537f54): the reference is gone before the wait.
        mm.put(page, who)
        await _preempted(actor)
        await mm.wait_writeback(actor, page, gen, holds_ref=False)
        mm.lru_drain(who)
        return
    await _preempted(actor)
    await mm.wait_writeback(actor, page, gen, holds_ref=True)
    mm.lru_drain(who)
    mm.put(page, who)


async def convert_to_secure(kvm: Kvm, actor: Actor, vm: VirtualMachine, gaddr: int) -> Outcome:
    """PGM 0x3e (``vcpu_post_run_handle_fault``): import; on -ENXIO handle a write DAT fault.

    Returns ``ok``, ``again`` (re-enter SIE: the guest faults again if it
    must) or ``invalid`` (-EINVAL: the VMM gets SIGSEGV; ``rc`` says why).
    """
    result = await make_hva_secure(
        kvm, actor, vm, ConvToSecStorRequest(guest_handle=vm.config_handle, gaddr=gaddr & ~(PAGE - 1))
    )
    if result == "fault":
        await kvm.handle_dat_fault(actor, vm, gaddr >> 12)
        return Outcome("again")
    return result
