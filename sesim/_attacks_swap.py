"""Attacks on swapped-out pages: tamper, replay, move (uv-semantics.md §3.4).

The victim writes, reads and rewrites sixteen pages, one an operation, on a
host that gives its guests 48 KiB, so the reclaim thread exports and swaps
them out again and again. A hostile host thread changes what lies on the
swap device; the guest's next touch imports the page and the UV checks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors import Actor
from actors._system import System

from ._attacks_base import attack
from ._attacks_sim import RC_INTEGRITY, VICTIM, SimArena, alive, fired_any, running_victim, victim_config


class _SwapAttacker(Actor):
    """A hostile host thread that changes the victim's pages on the swap device (``act`` decides how)."""

    def __init__(self, system: System, arena: SimArena, act: Callable[[_SwapAttacker, Any], bool]) -> None:
        super().__init__(system.fabric, "swap-attacker")
        self.system, self.arena, self.act = system, arena, act
        self.kept: dict[int, bytes] = {}

    def swapped(self, vm: Any) -> list[tuple[int, int]]:
        """(gfn, slot) of the workload's pages that are on the device only (not in the swap cache)."""
        cache = self.system.hypervisor.kvm.mm.swapcache
        return [(gfn, slot) for gfn, slot in sorted(vm.swap_ptes.items()) if slot not in cache and gfn in SWAP_PAGES]

    async def main(self) -> None:
        vm = await running_victim(self, self.system)
        if vm is None:
            return
        for _ in range(600):
            await self.sleep(2_000)
            if not alive(vm):
                return
            if self.act(self, vm):
                self.arena.performed = True
                return


SWAP_LIMIT_KIB = 48
"""Host memory for guest pages in the swap attacks: less than the guest uses, so its pages go to the device."""
SWAP_PAGES = range(0x100, 0x110)
"""The guest frames the swap attacks' workload writes, reads, rewrites and reads again (one page an operation)."""


def _pages_workload(rounds: int) -> tuple[str, ...]:
    ops: list[str] = []
    for _ in range(rounds):
        ops += [f"write {gfn << 12:#x}" for gfn in SWAP_PAGES]
        ops.append("compute 100000")
        ops += [f"read {gfn << 12:#x}" for gfn in SWAP_PAGES]
    return tuple(ops)


SWAP_WORKLOAD = _pages_workload(2)


def _tamper(att: _SwapAttacker, vm: Any) -> bool:
    swap = att.system.hypervisor.kvm.swap
    for gfn, slot in att.swapped(vm):
        if swap.tamper(slot):
            att.record("tamper", guest=VICTIM, gfn=gfn, slot=slot, how="bit flipped on the swap device")
            return True
    return False


def _replay(att: _SwapAttacker, vm: Any) -> bool:
    swap = att.system.hypervisor.kvm.swap
    for gfn, slot in att.swapped(vm):
        data = swap.read(slot)
        old = att.kept.setdefault(gfn, data)
        if old != data:
            swap.write(slot, old)
            att.record("tamper", guest=VICTIM, gfn=gfn, slot=slot, how="an older swapped copy written back")
            return True
    return False


def _move(att: _SwapAttacker, vm: Any) -> bool:
    swap = att.system.hypervisor.kvm.swap
    pages = att.swapped(vm)
    if len(pages) < 2:
        return False
    (gfn_a, slot_a), (gfn_b, slot_b) = pages[0], pages[1]
    swap.write(slot_b, swap.read(slot_a))
    att.record("tamper", guest=VICTIM, gfn=gfn_b, slot=slot_b, how=f"guest page {gfn_a:#x} moved here")
    return True


def _swap_attack(s: SimArena, act: Callable[[_SwapAttacker, Any], bool], workload: tuple[str, ...], step: str) -> None:
    s.run(victim_config(workload, limit_kib=SWAP_LIMIT_KIB), lambda system, arena: _SwapAttacker(system, arena, act))
    fired = RC_INTEGRITY if s.performed and s.stops("integrity") and fired_any(s, RC_INTEGRITY) else None
    s.host.expect(step, RC_INTEGRITY, fired)


@attack(
    "swap-tamper", area="swap & I/O", runner="actors", title="flip a bit of a page on the swap device",
    defence="swap-in imports the page; the UV checks it against the digest of its export: rc 0x0107, "
            "the VMM gets SIGSEGV", expected=(RC_INTEGRITY,),
)  # fmt: skip
def swap_tamper(s: SimArena) -> None:
    """The victim writes 16 pages, reads them, and does it again, on a host that gives its guests
    48 KiB: the reclaim thread swaps them out (export, then write to the device). The hostile host
    flips a bit of one on the device; the guest reads it back."""
    _swap_attack(s, _tamper, SWAP_WORKLOAD, "the guest reads the tampered page back")


@attack(
    "swap-replay", area="swap & I/O", runner="actors", title="replay an old swapped-out copy of a page",
    defence="the UV keeps the digest of the latest export only: rc 0x0107", expected=(RC_INTEGRITY,),
)  # fmt: skip
def swap_replay(s: SimArena) -> None:
    """Under memory pressure the victim writes, reads and rewrites its pages, so they are swapped out
    more than once. The hostile host keeps the first copy of each swapped page and, when the page is
    on the device again with other contents, writes the old copy back."""
    _swap_attack(s, _replay, SWAP_WORKLOAD, "the guest reads the replayed page back")


@attack(
    "swap-move", area="swap & I/O", runner="actors", title="move a swapped page to another guest address",
    defence="the digest the UV kept belongs to one guest page: rc 0x0107", expected=(RC_INTEGRITY,),
)  # fmt: skip
def swap_move(s: SimArena) -> None:
    """When two of the victim's pages are on the swap device, copy the first over the second; the
    guest reads its pages back."""
    _swap_attack(s, _move, SWAP_WORKLOAD, "the guest reads the moved page back")
