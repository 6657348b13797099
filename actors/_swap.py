"""The swap device and the swap-in path (uv-semantics.md §3.4).

A secure page reaches the swap device only as ciphertext: the reclaim
thread exports it while it clears the PTE (``ptep_clear_flush``), then
writes it out. When the guest touches it again the CPU in SIE finds no
mapping (a host DAT fault); KVM reads the page back, still ciphertext, maps
it and re-enters SIE; the guest faults again with PGM 0x3e and the import
decrypts and checks it against the digest the UV kept. A page changed on
the device fails that check: the import answers cc 1 and the VMM gets
SIGSEGV.

The device keeps whole pages by slot; :meth:`SwapDevice.tamper` is the
hostile hypervisor's way of changing one (scenario 9 of §8).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Final, final

from machine._costs import SWAP_READ

if TYPE_CHECKING:
    from ._fabric import Actor
    from ._kvm import Kvm
    from ._vm import VirtualMachine

PAGE: Final = 4096


@final
class SwapDevice:
    """A swap partition: numbered slots of one page each."""

    def __init__(self) -> None:
        self._slots: dict[int, bytes] = {}
        self._free: list[int] = []
        self._next = 0
        self.writes = 0
        self.reads = 0

    def alloc_slot(self) -> int:
        """The lowest free slot."""
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next - 1

    def free_slot(self, slot: int) -> None:
        self._slots.pop(slot, None)
        heapq.heappush(self._free, slot)

    def write(self, slot: int, data: bytes) -> None:
        self.writes += 1
        self._slots[slot] = data

    def read(self, slot: int) -> bytes:
        self.reads += 1
        return self._slots.get(slot, bytes(PAGE))

    def tamper(self, slot: int, offset: int = 0x100) -> bool:
        """Flip one bit of a stored page (a hostile hypervisor); False if the slot holds nothing."""
        data = self._slots.get(slot)
        if data is None:
            return False
        changed = bytearray(data)
        changed[offset] ^= 0x01
        self._slots[slot] = bytes(changed)
        return True

    @property
    def used(self) -> int:
        return len(self._slots)


async def swap_in(actor: Actor, kvm: Kvm, vm: VirtualMachine, gfn: int) -> None:
    """``do_swap_page``: bring guest frame ``gfn`` back from the swap device (or the swap cache)."""
    mm = kvm.mm
    who = actor.name
    slot = vm.swap_ptes.get(gfn)
    if slot is None:
        return
    cached = mm.swapcache.get(slot)
    if cached is not None and mm.try_get(cached):
        # Still in the swap cache (its writeback may be running): map the same page.
        await mm.lock(actor, cached)
        key = mm.ptl_key(vm, gfn)
        await mm.ptl_lock(actor, key)
        if vm.swap_ptes.get(gfn) == slot and cached.swap_slot == slot:
            del vm.swap_ptes[gfn]
            cached.refcount += 1  # the mapping's reference
            kvm.map_page(vm, gfn, cached)
            mm.touch(cached)
            mm.ptl_unlock(key, who)
            if not cached.writeback:
                mm.swapcache_del(cached)  # folio_free_swap: the copy on the device is stale now
                kvm.swap.free_slot(slot)
                mm.put(cached, who)
            vm.stats.swap_ins += 1
            actor.record("swap-in", guest=vm.name, gfn=gfn, slot=slot, pfn=cached.pfn, cached=True)
        else:
            mm.ptl_unlock(key, who)
        mm.unlock(cached, who)
        mm.put(cached, who)
        return
    page = await kvm.alloc_page(actor, vm, gfn)
    await actor.sleep(SWAP_READ)
    if vm.swap_ptes.get(gfn) != slot:
        mm.put(page, who)  # another thread brought it in meanwhile
        return
    data = kvm.swap.read(slot)
    await kvm.kernel_access(actor, page, lambda: kvm.memory.host_write(page.pfn * PAGE, data))
    key = mm.ptl_key(vm, gfn)
    await mm.ptl_lock(actor, key)
    if vm.swap_ptes.get(gfn) != slot:
        mm.ptl_unlock(key, who)
        mm.put(page, who)
        return
    del vm.swap_ptes[gfn]
    kvm.map_page(vm, gfn, page)
    mm.ptl_unlock(key, who)
    kvm.swap.free_slot(slot)
    mm.lru_add(page, who)
    vm.stats.swap_ins += 1
    actor.record("swap-in", guest=vm.name, gfn=gfn, slot=slot, pfn=page.pfn, cached=False)
