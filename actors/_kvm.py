"""KVM's host-side memory work, shared by the hypervisor actor, its vCPU threads and kernel threads.

The rules are Linux's (uv-semantics.md §3):

* a host touch of a secure page takes PGM 0x3d and goes through
  ``arch_make_folio_accessible``: pin it if it is shared, else export it
  (:meth:`Kvm.make_accessible`, :meth:`Kvm.kernel_access`);
* a page leaves a protected address space only after an export
  (``ptep_clear_flush`` → ``uv_convert_from_secure_pte``,
  :meth:`Kvm.export_for_unmap`);
* a guest's touch of a page that is not mapped is a host DAT fault: the page
  is swapped in, or a fresh one is zeroed (:meth:`Kvm.handle_dat_fault`);
* the import path (``make_hva_secure``, its single try and its locks) is in
  :mod:`actors._make_secure`;
* 0x3d inside SIE (a page left secure by an old configuration) is destroyed,
  or exported if that fails (:meth:`Kvm.destroy_page`).

``PG_arch_1`` lives on each :class:`~actors._linux_mm.Page`; it is mirrored
into ``VirtualMachine.maybe_secure`` (guest frame numbers) for the teardown's
range destroy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Self, TypeVar

from machine import HOST, PgmCode, ProgramInterrupt, Server
from machine._alloc import FrameAllocator
from machine._costs import UVC_REISSUE
from protocol import (
    Cc,
    ConvFromSecStorRequest,
    DestrSecStorRequest,
    PinPageSharedRequest,
    UvcCommand,
)
from protocol._uvc_codes import UvFeature

from ._bugs import NO_BUGS, BugSwitches
from ._fabric import Actor
from ._faults import NO_FAULTS, FaultPlan
from ._linux_mm import POLL_NS, LinuxMm, Page
from ._messages import Uvc
from ._swap import SwapDevice, swap_in
from ._vm import VirtualMachine

PAGE: Final = 4096
T = TypeVar("T")
ALLOC_PATIENCE: Final = 400_000
"""How long a fault waits for the reclaim thread before it takes a page beyond the limit."""
LEGACY_DESTROY: Final = (0x0107, 0x000D)
"""rc/rrc of DESTR_SEC_STOR on a page that is not secure, on older firmware: success for Linux."""


class Outcome(str):
    """What ``make_hva_secure`` returns, as a word: ``ok``, ``again``, ``fault`` or ``invalid``.

    ``rc`` is the UV's rc of the try that decided it (0 where no UVC ran).
    """

    rc: int

    def __new__(cls, value: str, rc: int = 0) -> Self:
        obj = super().__new__(cls, value)
        obj.rc = rc
        return obj


class Kvm:
    """Host-side helpers shared by the hypervisor actor, its vCPU threads and kernel threads.

    Args:
        server: the server (memory, address spaces).
        allocator: the host's frame allocator.
        uv_actor: where UVCs go.
        qui: the QUI answer (installed calls, feature bits).
        bugs: historical bugs to re-create (:mod:`actors._bugs`).
        limit_pages: host memory for guest pages, in pages (``None``: unlimited).
        faults: fault sites of a stress campaign (``reclaim_storm``, ``io_error``).
        reclaimer: the reclaim thread (:mod:`actors._reclaim`), woken under memory pressure.
        virtio: the virtio devices (:mod:`actors._virtio`), which serve DIAG 0x500 notifications.
    """

    def __init__(
        self,
        server: Server,
        allocator: FrameAllocator,
        uv_actor: Actor,
        qui: Any,
        *,
        bugs: BugSwitches = NO_BUGS,
        limit_pages: int | None = None,
        faults: FaultPlan = NO_FAULTS,
        reclaimer: Actor | None = None,
        virtio: Actor | None = None,
    ) -> None:
        self.server = server
        self.memory = server.memory
        self.allocator = allocator
        self.uv_actor = uv_actor
        self.qui = qui
        self.bugs = bugs
        self.faults = faults
        self.fabric = uv_actor.fabric
        self.vms: list[VirtualMachine] = []
        self.mm = LinuxMm(server.memory, allocator, self._report, limit_pages=limit_pages)
        self.swap = SwapDevice()
        self.reclaimer = reclaimer
        self.virtio = virtio
        self.misc = bool(qui is not None and qui.has_feature(UvFeature.MISC))

    def _report(self, who: str, what: str, detail: str) -> None:
        self.fabric.record(who, "host-bug", {"what": what, "detail": detail})

    # ------------------------------------------------------------ UVCs
    async def uvc(self, actor: Actor, vm: VirtualMachine | None, request: Any, *, retry: bool = True) -> Any:
        """A host UVC; with ``retry`` loop on busy and partial (``uv_call``), else one try (``__uv_call``)."""
        while True:
            response = await actor.call(self.uv_actor, Uvc(caller=HOST, request=request))
            if vm is not None:
                # busy and partial answers count as rc -2 and -3 (their rc means nothing)
                rc = response.rc if response.cc < Cc.BUSY else -int(response.cc)
                vm.stats.uvcs[(request.COMMAND.name, rc)] += 1
                if response.cc == Cc.BUSY:
                    vm.stats.busy += 1
            if not retry or response.cc < Cc.BUSY:
                return response
            await actor.sleep(UVC_REISSUE)

    @staticmethod
    def protected_count(vm: VirtualMachine) -> int:
        """``mm->context.protected_count``: secure configurations living in this address space.

        The current one, one set aside by an asynchronous teardown, leftovers
        still to clean up, and any others the VM records (``protected_count``).
        """
        extra = vm.protected_count + len(getattr(vm, "need_cleanup", ()))
        if getattr(vm, "set_aside", None) is not None:
            extra += 1
        return int(vm.protected) + extra

    def should_export_before_import(self, request: Any, vm: VirtualMachine) -> bool:
        """uv.c ``should_export_before_import`` (uv-semantics.md §3.5, §8 #9)."""
        if self.misc or request.COMMAND is UvcCommand.UNPIN_PAGE_SHARED:
            return False
        return self.protected_count(vm) > 1

    # ------------------------------------------------------- PG_arch_1
    @staticmethod
    def set_arch_1(page: Page) -> None:
        page.arch_1 = True
        if page.vm is not None:
            page.vm.maybe_secure.add(page.gfn)

    @staticmethod
    def clear_arch_1(page: Page) -> None:
        page.arch_1 = False
        vm = page.vm
        if vm is not None and vm.space.pfn_of(page.gfn) == page.pfn:
            vm.maybe_secure.discard(page.gfn)

    # ------------------------------------------------------ memory pressure
    def wake_reclaim(self) -> None:
        """Tell the reclaim thread that free memory ran low (``wakeup_kswapd``)."""
        reclaimer = self.reclaimer
        if reclaimer is not None:
            reclaimer.wake()  # type: ignore[attr-defined]

    async def alloc_page(self, actor: Actor, vm: VirtualMachine, gfn: int) -> Page:
        """A page for a fault, waiting for the reclaim thread while guest memory is at its limit."""
        mm = self.mm
        waited = 0
        while mm.over_limit and waited < ALLOC_PATIENCE:
            self.wake_reclaim()
            await actor.sleep(POLL_NS)
            waited += POLL_NS
        if mm.over_limit:
            mm.overcommitted += 1  # nothing reclaimable for a long while: dip into the reserves
        page = mm.alloc(vm, gfn, actor.name)
        self.note_allocation()
        return page

    def note_allocation(self) -> None:
        reclaimer = self.reclaimer
        if reclaimer is not None and reclaimer.should_run():  # type: ignore[attr-defined]
            reclaimer.wake()  # type: ignore[attr-defined]

    def map_page(self, vm: VirtualMachine, gfn: int, page: Page) -> None:
        vm.space.map(gfn, page.pfn)
        page.mapcount += 1
        page.vm = vm
        page.gfn = gfn

    def fault_in(self, vm: VirtualMachine, gfn: int) -> int:
        """Map a host frame behind guest frame ``gfn`` at once (QEMU loading an image, KVM's unpack).

        Synchronous: a swapped-out page is read back without waiting for the
        device, and the memory limit is not waited for (only the reclaim
        thread is woken).
        """
        pfn = vm.space.pfn_of(gfn)
        if pfn is not None:
            return pfn
        mm = self.mm
        slot = vm.swap_ptes.pop(gfn, None)
        data: bytes | None = None
        if slot is not None:
            cached = mm.swapcache.get(slot)
            if cached is not None and not cached.free:
                cached.refcount += 1  # the mapping's reference
                self.map_page(vm, gfn, cached)
                if not cached.writeback:
                    mm.swapcache_del(cached)
                    self.swap.free_slot(slot)
                    mm.put(cached, "kvm")
                return cached.pfn
            data = self.swap.read(slot)
            self.swap.free_slot(slot)
        page = mm.alloc(vm, gfn, "kvm")
        try:
            if data is None:
                self.memory.host_write(page.pfn * PAGE, bytes(PAGE))
            else:
                self.memory.host_write(page.pfn * PAGE, data)
        except ProgramInterrupt:
            self._report("kvm", "bug", f"PGM 0x3d writing page {page.pfn:#x} for a synchronous fault-in")
        self.map_page(vm, gfn, page)
        mm.lru_add(page, "kvm")
        self.note_allocation()
        return page.pfn

    async def handle_dat_fault(self, actor: Actor, vm: VirtualMachine, gfn: int) -> None:
        """A host DAT fault of the guest: swap the page in, or map a fresh zeroed one."""
        if gfn in vm.swap_ptes:
            await swap_in(actor, self, vm, gfn)
            return
        if vm.space.pfn_of(gfn) is not None:
            return  # another thread faulted it in meanwhile
        mm = self.mm
        page = await self.alloc_page(actor, vm, gfn)
        await self.kernel_access(actor, page, lambda: self.memory.host_write(page.pfn * PAGE, bytes(PAGE)))
        key = mm.ptl_key(vm, gfn)
        await mm.ptl_lock(actor, key)
        if vm.space.pfn_of(gfn) is not None or gfn in vm.swap_ptes:
            mm.ptl_unlock(key, actor.name)
            mm.put(page, actor.name)  # lost the race: give the fresh page back
            return
        self.map_page(vm, gfn, page)
        mm.ptl_unlock(key, actor.name)
        mm.lru_add(page, actor.name)

    # ------------------------------------------------------- host access
    async def make_accessible(self, actor: Actor, vm: VirtualMachine | None, page: Page) -> bool:
        """``arch_make_folio_accessible``: pin it if shared, else export it (uv-semantics.md §3.3).

        The caller holds the page lock or a reference. Two callers at once
        are fine: the second UVC is a no-op on an exported page.
        """
        if not page.arch_1:
            return True
        paddr = page.pfn * PAGE
        response = await self.uvc(actor, vm, PinPageSharedRequest(paddr=paddr))
        if response.cc == Cc.OK:
            self.clear_arch_1(page)
            return True
        response = await self.uvc(actor, vm, ConvFromSecStorRequest(paddr=paddr))
        if response.cc == Cc.OK:
            self.clear_arch_1(page)
            return True
        return False

    async def kernel_access(self, actor: Actor, page: Page, access: Callable[[], T]) -> T | None:
        """A kernel access to a page, with the kernel's PGM 0x3d handler around it.

        ``do_secure_storage_access`` in kernel mode: take a reference, make the
        page accessible, return to the instruction. A failure there is a
        ``BUG()`` (reported; the access is abandoned and ``None`` returned).
        """
        for _ in range(4):
            try:
                return access()
            except ProgramInterrupt as pgm:
                if pgm.code != PgmCode.SECURE_STORAGE_ACCESS:
                    raise
            mm = self.mm
            if not mm.try_get(page):
                self._report(actor.name, "bug", f"PGM 0x3d on page {page.pfn:#x} that has no reference")
                return None
            accessible = await self.make_accessible(actor, page.vm, page)
            mm.put(page, actor.name)
            if not accessible:
                self._report(actor.name, "bug", f"arch_make_folio_accessible failed on page {page.pfn:#x}")
                return None
        self._report(actor.name, "bug", f"PGM 0x3d on page {page.pfn:#x} again and again: PG_arch_1 lost")
        return None

    async def export_for_unmap(self, actor: Actor, vm: VirtualMachine, page: Page) -> None:
        """``ptep_clear_flush`` in a protected mm: ``uv_convert_from_secure_pte`` (WARN_ON_ONCE on failure)."""
        mm = self.mm
        mm.get(page, actor.name)  # uv_convert_from_secure_folio
        response = await self.uvc(actor, vm, ConvFromSecStorRequest(paddr=page.pfn * PAGE))
        if response.cc == Cc.OK:
            self.clear_arch_1(page)
        else:
            self._report(actor.name, "warn", f"export of page {page.pfn:#x} failed rc {response.rc:#06x}")
        mm.put(page, actor.name)

    async def destroy_page(self, actor: Actor, vm: VirtualMachine, gfn: int) -> bool:
        """``kvm_s390_pv_destroy_page``: 0x3d inside SIE on a page left secure by an old configuration.

        DESTR_SEC_STOR, and if that fails an export: two vCPUs may fault on the
        same page, the first destroys it and the guest imports it again, so the
        second cannot destroy it any more (uv-semantics.md §3.3, §8 #8).
        """
        mm = self.mm
        key = mm.ptl_key(vm, gfn)
        await mm.ptl_lock(actor, key)
        pfn = vm.space.pfn_of(gfn)
        if pfn is None:
            mm.ptl_unlock(key, actor.name)
            return True  # gone meanwhile: the guest faults again
        page = mm.page(pfn)
        mm.get(page, actor.name)
        mm.ptl_unlock(key, actor.name)
        paddr = pfn * PAGE
        response = await self.uvc(actor, vm, DestrSecStorRequest(paddr=paddr))
        done = response.cc == Cc.OK or (response.rc, response.rrc) == LEGACY_DESTROY
        if not done and not self.bugs.destroy_without_export_fallback:
            response = await self.uvc(actor, vm, ConvFromSecStorRequest(paddr=paddr))
            done = response.cc == Cc.OK
        if done:
            self.clear_arch_1(page)
        mm.put(page, actor.name)
        return done

    def replace_asce(self, hv: Any, vm: VirtualMachine) -> None:
        """``s390_replace_asce``: a fresh top-level table for the next configuration of ``vm``.

        A configuration set aside without DESTROY_SEC_CONF_FAST still names
        the old ASCE; the new one must get its own, over the same pages.
        """
        hv._asce += 0x1000_0000
        space = vm.space.with_asce(hv._asce | (vm.space.asce & 0xFFF))
        self.server.add_address_space(space)
        vm.space = space

    # ----------------------------------------------------- the import path
    async def make_secure(self, actor: Actor, vm: VirtualMachine, request: Any) -> Outcome:
        """``make_hva_secure`` for an import-like UVC (see :mod:`actors._make_secure`)."""
        from ._make_secure import make_hva_secure

        return await make_hva_secure(self, actor, vm, request)

    async def import_page(self, actor: Actor, vm: VirtualMachine, gaddr: int) -> Outcome:
        """PGM 0x3e: ``kvm_s390_pv_convert_to_secure`` and the fault-in on -ENXIO."""
        from ._make_secure import convert_to_secure

        return await convert_to_secure(self, actor, vm, gaddr)

    def alloc_contiguous(self, vm: VirtualMachine | None, length: int, align: int = PAGE) -> int:
        pages = (length + PAGE - 1) // PAGE
        pfn = self.allocator.alloc_contiguous(pages, max(1, align // PAGE))
        if vm is not None:
            vm.donations.append((pfn * PAGE, pages * PAGE))
        return pfn * PAGE

    # ------------------------------------------------------------ teardown
    def release_vm_memory(self, actor: Actor, vm: VirtualMachine) -> int:
        """``exit_mmap``: unmap every page of the VM, drop the mappings' and the swap cache's references.

        A page somebody else still holds (the reclaim thread in the middle of
        a writeback, say) lives on until they let go, as in Linux. A frame the
        UV may still own (secure, shared or UV storage) is never freed: its
        mapping's reference is kept, on purpose (uv-semantics.md §2.5,
        "intended memory leak"); the count is returned and recorded.
        """
        from machine import FrameState

        leaked = 0
        mm = self.mm
        who = actor.name
        vm.memory_released = True
        for gfn, pfn in list(vm.space.mappings()):
            vm.space.unmap(gfn)
            page = mm.pages.get(pfn)
            if self.memory.state_of(pfn) not in (FrameState.HOST, FrameState.EXPORTED):
                leaked += 1
                vm.leaked.append((pfn * PAGE, PAGE))
                vm.stats.leaked_pages += 1
                continue
            if page is None or page.free:
                self.memory.frame(pfn).fill(None)  # not one of ours (a frame loaded before the mm knew it)
                continue
            page.mapcount -= 1
            mm.put(page, who)
        for gfn, slot in sorted(vm.swap_ptes.items()):
            cached = mm.swapcache.get(slot)
            if cached is not None and cached.writeback:
                continue  # the writeback's owner frees the slot when it ends
            if cached is not None:
                mm.swapcache_del(cached)
                mm.put(cached, who)
            self.swap.free_slot(slot)
        vm.swap_ptes.clear()
        return leaked

    # ------------------------------------------------------ device access
    async def gup_pin(self, actor: Actor, vm: VirtualMachine, gfn: int) -> Page | None:
        """``pin_user_pages`` (FOLL_PIN) of one guest page for a device; ``None`` if it cannot be made accessible.

        Faults the page in if needed; ``follow_page_pte`` makes a pinned page
        accessible under the PTE lock: a shared page gets PIN_PAGE_SHARED, a
        secure one is exported (the device then sees only ciphertext).
        """
        mm = self.mm
        while True:
            key = mm.ptl_key(vm, gfn)
            await mm.ptl_lock(actor, key)
            pfn = vm.space.pfn_of(gfn)
            if pfn is None:
                mm.ptl_unlock(key, actor.name)
                await self.handle_dat_fault(actor, vm, gfn)  # faultin_page
                continue
            page = mm.page(pfn)
            if not mm.try_get(page):  # try_grab_folio fails on a frozen count: try again
                mm.ptl_unlock(key, actor.name)
                await actor.sleep(POLL_NS)
                continue
            page.pins += 1
            accessible = await self.make_accessible(actor, vm, page)
            mm.ptl_unlock(key, actor.name)
            if not accessible:
                self.gup_unpin(actor, page)
                return None
            return page

    def gup_unpin(self, actor: Actor, page: Page) -> None:
        """``unpin_user_page``."""
        page.pins -= 1
        self.mm.put(page, actor.name)

    # ----------------------------------------------------------- QEMU access
    async def user_access(
        self, actor: Actor, vm: VirtualMachine, gfn: int, data: bytes | None = None, *, reader: str = "qemu"
    ) -> bytes | None:
        """QEMU reads (or, with ``data``, writes) a guest page through its own mapping.

        A secure page takes PGM 0x3d; ``do_secure_storage_access`` in user mode
        finds the page under the PTE lock, takes a reference and makes it
        accessible (pin if shared, else export), and the access is retried:
        QEMU sees ciphertext. If that fails the VMM gets SIGSEGV (``None``).
        A read is a ``host-read`` event for the canary monitor.
        """
        from ._reclaim import record_host_read

        mm = self.mm
        for _ in range(8):
            pfn = vm.space.pfn_of(gfn)
            if pfn is None:
                await self.handle_dat_fault(actor, vm, gfn)  # a user page fault
                continue
            try:
                if data is None:
                    out = self.memory.host_read(pfn * PAGE, PAGE)
                    record_host_read(actor, self, vm, gfn, pfn, out, reader=reader)
                    return out
                self.memory.host_write(pfn * PAGE, data)
                return data
            except ProgramInterrupt as pgm:
                if pgm.code != PgmCode.SECURE_STORAGE_ACCESS:
                    return None
            key = mm.ptl_key(vm, gfn)
            await mm.ptl_lock(actor, key)
            if vm.space.pfn_of(gfn) != pfn:
                mm.ptl_unlock(key, actor.name)
                continue
            page = mm.page(pfn)
            mm.get(page, actor.name)
            mm.ptl_unlock(key, actor.name)
            accessible = await self.make_accessible(actor, vm, page)
            mm.put(page, actor.name)
            if not accessible:
                return None
        return None
