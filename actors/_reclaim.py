"""The reclaim thread (``kswapd``): when guest memory runs short, swap pages out (uv-semantics.md §3.4).

Each victim goes the way Linux's reclaim takes it:

1. **isolate**: the LRU scan reaches the page through its mapping, under the
   PTE lock, and takes a reference with a plain ``folio_get`` (safe only
   because whoever freezes a reference count holds that lock, §8 #19);
2. ``folio_trylock``; a page under writeback, pinned for DMA or still in the
   LRU-add batch is skipped;
3. **unmap** (``try_to_unmap`` → ``ptep_clear_flush``): under the PTE lock
   the PTE becomes a swap entry and, the address space being protected, the
   page is exported first (``uv_convert_from_secure_pte``);
4. **pageout**: ``__folio_start_writeback`` (``arch_make_folio_accessible``,
   a no-op since the export cleared ``PG_arch_1``), the page lock is dropped,
   the swap device reads the page (ciphertext: every host read is checked by
   the canary monitor) and writeback ends;
5. **free** (``__remove_mapping``): if only the swap cache and the isolation
   hold it, the page is freed; if a fault mapped it again meanwhile it stays.

The thread wakes when a fault finds guest memory at its low watermark and
works down to the high one. The ``reclaim_storm`` fault site makes it run
without pressure too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

from attrs import frozen

from machine._costs import RECLAIM_SCAN, SWAP_WRITE

from ._fabric import Actor, Fabric
from ._messages import Shutdown

if TYPE_CHECKING:
    from ._kvm import Kvm
    from ._linux_mm import Page
    from ._vm import VirtualMachine

PAGE: Final = 4096
STORM_PAGES: Final = 4
"""Pages a reclaim storm swaps out without pressure."""
CHOICES: Final = 3
"""The scan picks its victim among this many candidates (a recorded choice)."""


@frozen(kw_only=True)
class ReclaimWake:
    """Free memory ran low (``wakeup_kswapd``), or a storm of the fault plan."""

    storm: bool = False


@final
class ReclaimActor(Actor):
    """``kswapd`` of one server."""

    kind = "reclaim"

    def __init__(self, fabric: Fabric, name: str, hypervisor: Any) -> None:
        super().__init__(fabric, name)
        self.hv = hypervisor
        self._wake_sent = False
        self._storm = False
        self.swapped_out = 0
        self.skipped = 0

    @property
    def kvm(self) -> Kvm:
        return self.hv.kvm  # type: ignore[no-any-return]

    # ------------------------------------------------------------ wake-ups
    def _margins(self) -> tuple[int, int]:
        limit = self.kvm.mm.limit_pages or 0
        return max(2, limit // 32), max(4, limit // 8)

    def should_run(self) -> bool:
        """Whether an allocation should wake the thread (low watermark, or a storm firing)."""
        kvm = self.kvm
        mm = kvm.mm
        if mm.limit_pages is not None and mm.guest_pages >= mm.limit_pages - self._margins()[0]:
            return True
        if kvm.faults.reclaim_storm and kvm.faults.fires(self, "reclaim-storm", kvm.faults.reclaim_storm):
            self._storm = True
            return True
        return False

    def wake(self) -> None:
        if not self._wake_sent:
            self._wake_sent = True
            self.send(self, ReclaimWake(storm=self._storm))

    # ------------------------------------------------------------------ loop
    async def main(self) -> None:
        while True:
            env = await self.receive()
            if isinstance(env.msg, Shutdown):
                return
            if not isinstance(env.msg, ReclaimWake):
                continue
            self._wake_sent = False
            storm, self._storm = self._storm or env.msg.storm, False
            await self._balance(storm)

    def _below_target(self) -> bool:
        mm = self.kvm.mm
        if mm.limit_pages is None:
            return True
        return mm.guest_pages <= mm.limit_pages - self._margins()[1]

    async def _balance(self, storm: bool) -> None:
        """``balance_pgdat``: swap out until guest memory is down to the high watermark."""
        kvm = self.kvm
        kvm.mm.lru_drain(self.name)
        budget = STORM_PAGES if storm else None
        await self._reap_orphans()
        failures = 0
        while budget is None and not self._below_target() or budget:
            victims = self._candidates()
            if not victims:
                break
            vm, gfn, pfn = victims[self.choose("reclaim-victim", min(CHOICES, len(victims)))]
            await self.sleep(RECLAIM_SCAN)
            if await self._swap_out(vm, gfn, pfn):
                failures = 0
                if budget:
                    budget -= 1
            else:
                failures += 1
                self.skipped += 1
                if failures > 16:
                    break  # nothing reclaimable right now; a later fault wakes us again
            await self._reap_orphans()

    def _candidates(self) -> list[tuple[VirtualMachine, int, int]]:
        """Mapped pages of running guests that reclaim could take, oldest first (by frame number)."""
        kvm = self.kvm
        mm = kvm.mm
        out: list[tuple[int, VirtualMachine, int, int]] = []
        for vm in kvm.vms:
            if not reclaimable(vm):
                continue
            for gfn, pfn in vm.space.mappings():
                page = mm.pages.get(pfn)
                if page is None or page.free or page.pins or page.in_lru_batch or page.writeback:
                    continue
                out.append((page.born, vm, gfn, pfn))
        out.sort(key=lambda c: (c[0], c[1].name, c[2]))
        return [(vm, gfn, pfn) for _, vm, gfn, pfn in out[:CHOICES * 4]]

    # -------------------------------------------------------------- one page
    async def _swap_out(self, vm: VirtualMachine, gfn: int, pfn: int) -> bool:
        kvm = self.kvm
        mm = kvm.mm
        who = self.name
        key = mm.ptl_key(vm, gfn)
        await mm.ptl_lock(self, key)  # the scan finds the page through its mapping
        if vm.space.pfn_of(gfn) != pfn or vm.memory_released:
            mm.ptl_unlock(key, who)
            return False
        page = mm.page(pfn)
        if page.free or page.pins or page.in_lru_batch:
            mm.ptl_unlock(key, who)
            return False
        mm.get(page, who)  # isolation: a plain folio_get, the PTE lock is held
        gen = page.gen
        mm.ptl_unlock(key, who)
        self.record("reclaim", guest=vm.name, gfn=gfn, pfn=pfn)
        await self.yield_()  # shrink_folio_list runs later
        if not mm.trylock(page, who):
            mm.put(page, who)
            return False
        if page.writeback or page.pins or page.gen != gen or vm.memory_released:
            mm.unlock(page, who)
            mm.put(page, who)
            return False
        # try_to_unmap: ptep_clear_flush, exporting first in a protected mm.
        await mm.ptl_lock(self, key)
        if vm.space.pfn_of(gfn) != pfn:
            mm.ptl_unlock(key, who)
            mm.unlock(page, who)
            mm.put(page, who)
            return False
        vm.space.unmap(gfn)
        page.mapcount -= 1
        if kvm.protected_count(vm) > 0:
            await kvm.export_for_unmap(self, vm, page)
        if vm.memory_released:  # the VM went away during the export
            mm.ptl_unlock(key, who)
            mm.put(page, who)  # the mapping's reference
            mm.unlock(page, who)
            mm.put(page, who)
            return True
        slot = kvm.swap.alloc_slot()
        vm.swap_ptes[gfn] = slot
        mm.swapcache_add(page, slot)
        mm.ptl_unlock(key, who)
        mm.put(page, who)  # the mapping's reference
        # pageout: writeback starts while the page is locked, then it is unlocked.
        if not await kvm.make_accessible(self, vm, page):
            kvm._report(who, "vm-bug", f"page {pfn:#x} not accessible at writeback")  # too late to recover
        page.writeback = True
        mm.unlock(page, who)
        data = await kvm.kernel_access(self, page, lambda: kvm.memory.host_read(pfn * PAGE, PAGE))
        if data is not None:
            record_host_read(self, kvm, vm, gfn, pfn, data, reader="swap")
        await self.sleep(SWAP_WRITE)
        page.writeback = False
        if vm.memory_released:
            # The VM went away during the writeback: its slot is ours to free.
            if page.swap_slot == slot:
                mm.swapcache_del(page)
                mm.put(page, who)
            kvm.swap.free_slot(slot)
            mm.put(page, who)  # the isolation reference
            return True
        kvm.swap.write(slot, data if data is not None else bytes(PAGE))
        vm.stats.swap_outs += 1
        self.swapped_out += 1
        self.record("swap-out", guest=vm.name, gfn=gfn, slot=slot, pfn=pfn)
        return self._remove_mapping(page, slot)

    def _remove_mapping(self, page: Page, slot: int) -> bool:
        """``__remove_mapping``: free the page if only the swap cache and the isolation hold it."""
        kvm = self.kvm
        mm = kvm.mm
        who = self.name
        if mm.trylock(page, who):
            if page.mapcount == 0 and page.swap_slot == slot and mm.freeze(page, 2):
                mm.swapcache_del(page)
                mm.unfreeze(page, 1)
                mm.unlock(page, who)
                mm.put(page, who)  # the last reference: the page is free
                return True
            if page.mapcount > 0 and page.swap_slot == slot and not page.writeback:
                # Mapped again while it was written: the copy on the device is stale.
                mm.swapcache_del(page)
                kvm.swap.free_slot(slot)
                mm.put(page, who)
            mm.unlock(page, who)
        mm.put(page, who)  # the isolation reference
        return True

    async def _reap_orphans(self) -> None:
        """Free swap-cache pages nobody maps any more (a reference kept them past their writeback)."""
        mm = self.kvm.mm
        who = self.name
        for slot, page in sorted(mm.swapcache.items()):
            if page.mapcount or page.writeback or page.locked_by is not None or page.free:
                continue
            if not mm.try_get(page):
                continue
            if mm.trylock(page, who):
                if page.mapcount == 0 and page.swap_slot == slot and mm.freeze(page, 2):
                    mm.swapcache_del(page)
                    mm.unfreeze(page, 1)
                    mm.unlock(page, who)
                    mm.put(page, who)
                    continue
                mm.unlock(page, who)
            mm.put(page, who)


def reclaimable(vm: VirtualMachine) -> bool:
    """Whether the reclaim thread may take pages of ``vm`` now.

    Not while QEMU builds a secure configuration from the image in guest
    memory (it reads that memory directly, sesim's simplification), nor
    before: a secure VM once it runs secure, a regular one once its OS runs.
    """
    from ._vm import VmState

    if vm.memory_released or vm.guest is None:
        return False
    if vm.secure and vm.spec.image is not None:
        return vm.state is VmState.RUNNING
    return getattr(vm.guest, "state", "") == "running"


def record_host_read(actor: Actor, kvm: Kvm, vm: VirtualMachine, gfn: int, pfn: int, data: bytes, *, reader: str) -> None:
    """A ``host-read`` event: what the host saw of a guest page (the canary monitor checks it)."""
    actor.record(
        "host-read",
        reader=reader,
        guest=vm.name,
        gfn=gfn,
        pfn=pfn,
        state=kvm.memory.state_of(pfn).value,
        canaries=canary_tags(data),
    )


CANARY_MARK: Final = b"\xcaSESIM-CANARY:"
"""How every guest canary starts (:func:`actors._workload.canary`); the owner tag follows."""


def canary_tags(data: bytes) -> list[str]:
    """The owner tags (hex) of every canary in ``data``: whose plaintext this is."""
    tags: list[str] = []
    at = data.find(CANARY_MARK)
    while at >= 0:
        tag = data[at + len(CANARY_MARK) : at + len(CANARY_MARK) + 8].hex()
        if tag not in tags:
            tags.append(tag)
        at = data.find(CANARY_MARK, at + 1)
    return tags
