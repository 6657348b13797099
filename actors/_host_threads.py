"""Host threads that race with the guest: the actors of uv-semantics.md §8's stress scenarios.

Each is a thread a real host runs beside a secure guest and that a run
configuration can ask for (``[[host_thread]]``), so that a race scenario is
a configuration like any other: a campaign can generate it, and a trace
header alone replays it.

``reader``
    a QEMU thread reading guest pages (every read of a secure page exports it);
``ref-noise``
    short-lived page references (``get_user_pages`` users, LRU batches of
    other CPUs) that make the import's reference-count freeze fail;
``pinner``
    a device pinning a page the guest shared (FOLL_PIN → PIN_PAGE_SHARED)
    and holding it a while;
``tamperer``
    a hostile host flipping a bit of a guest page on the swap device.

Every timing and every pick is a scheduler choice (``Actor.choose``), so it
is recorded and replayed exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from attrs import field, frozen

from machine import FrameState
from protocol import UsageError

from ._fabric import Actor

PAGE = 4096
HOST_THREAD_KINDS: Final = ("reader", "ref-noise", "pinner", "tamperer")
DEFAULT_ROUNDS: Final = {"reader": 6, "ref-noise": 20, "pinner": 1, "tamperer": 400}


@frozen(kw_only=True)
class HostThread:
    """One host thread of a run configuration.

    ``addresses`` are guest addresses: the pages a reader reads, the page a
    pinner pins (the first), the pages a tamperer may tamper with (a
    ref-noise thread takes whatever the guest has mapped and needs none).
    ``rounds``: reads, reference rounds, or polls of the swap device.
    """

    kind: str
    guest: str
    addresses: tuple[int, ...] = ()
    rounds: int = field(default=0)

    def __attrs_post_init__(self) -> None:
        if self.kind not in HOST_THREAD_KINDS:
            raise UsageError(f"unknown host thread {self.kind!r} (known: {', '.join(HOST_THREAD_KINDS)})")
        if self.kind != "ref-noise" and not self.addresses:
            raise UsageError(f"a {self.kind} host thread needs at least one guest address")
        if any(a % PAGE for a in self.addresses):
            raise UsageError(f"host thread addresses must be page-aligned, got {[hex(a) for a in self.addresses]}")

    @property
    def gfns(self) -> tuple[int, ...]:
        return tuple(a // PAGE for a in self.addresses)

    @property
    def effective_rounds(self) -> int:
        return self.rounds or DEFAULT_ROUNDS[self.kind]

    def describe(self) -> dict[str, Any]:
        """The TOML table of :mod:`sesim._config` (``[[host_thread]]``)."""
        out: dict[str, Any] = {"kind": self.kind, "guest": self.guest}
        if self.addresses:
            out["addresses"] = list(self.addresses)
        if self.rounds:
            out["rounds"] = self.rounds
        return out


def start_host_threads(system: Any, threads: tuple[HostThread, ...]) -> list[Actor]:
    """Create the actors of ``threads`` on a wired system (before it runs)."""
    names: dict[str, int] = {}
    actors: list[Actor] = []
    for spec in threads:
        base = "qemu-reader" if spec.kind == "reader" else spec.kind
        names[base] = names.get(base, 0) + 1
        name = base if names[base] == 1 else f"{base}{names[base]}"
        actors.append(_MAKERS[spec.kind](system, spec, name))
    return actors


async def wait_running(actor: Actor, system: Any, name: str) -> Any:
    """Poll until guest ``name`` runs its workload; ``None`` if it never does."""
    while True:
        vm = next((vm for vm in system.vms if vm.name == name), None)
        if vm is not None:
            state = vm.guest.state if vm.guest is not None else "booting"
            if state == "running":
                return vm
            if state != "booting" or vm.state.value in ("refused", "halted", "stopped", "torn-down"):
                return None  # the guest never ran, or is gone: nothing to race with
        await actor.sleep(20_000)


class HostReader(Actor):
    """A QEMU thread reading guest pages again and again (each read of a secure page exports it)."""

    def __init__(self, system: Any, guest: str, gfns: tuple[int, ...], reads: int, name: str = "qemu-reader") -> None:
        super().__init__(system.fabric, name)
        self.system, self.guest, self.gfns, self.reads = system, guest, gfns, reads
        self.done = 0

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        for _ in range(self.reads):
            await self.sleep(1_000 + 1_000 * self.choose("reader-pause", 6))
            if vm.memory_released:
                return
            gfn = self.gfns[self.choose("reader-page", len(self.gfns))]
            if await kvm.user_access(self, vm, gfn, reader=self.name) is not None:
                self.done += 1


class RefNoise(Actor):
    """Short-lived page references (``get_user_pages`` FOLL_GET users, LRU batches of other CPUs)."""

    def __init__(self, system: Any, guest: str, rounds: int, name: str = "ref-noise") -> None:
        super().__init__(system.fabric, name)
        self.system, self.guest, self.rounds = system, guest, rounds

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        if vm is None:
            return
        mm = self.system.hypervisor.kvm.mm
        for _ in range(self.rounds):
            await self.sleep(500 + 500 * self.choose("noise-pause", 4))
            mapped = list(vm.space.mappings())
            if not mapped or vm.memory_released:
                return
            _, pfn = mapped[self.choose("noise-page", len(mapped))]
            page = mm.page(pfn)
            if mm.try_get(page):
                await self.sleep(1_000 + 2_000 * self.choose("noise-hold", 3))
                mm.put(page, self.name)


class Pinner(Actor):
    """A device that pins a page the guest shared (FOLL_PIN → PIN_PAGE_SHARED) and holds it a while."""

    def __init__(self, system: Any, guest: str, gfn: int, name: str = "pinner") -> None:
        super().__init__(system.fabric, name)
        self.system, self.guest, self.gfn = system, guest, gfn
        self.pinned = False

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        memory = self.system.server.memory
        for _ in range(200):
            pfn = vm.space.pfn_of(self.gfn)
            if pfn is not None and memory.state_of(pfn) is FrameState.SHARED:
                break
            await self.sleep(500)
        else:
            return
        page = await kvm.gup_pin(self, vm, self.gfn)
        if page is None:
            return
        self.pinned = True
        await self.sleep(2_000 + 8_000 * self.choose("pin-hold", 6))
        kvm.gup_unpin(self, page)


class Tamperer(Actor):
    """A hostile host: flips a bit of one of the guest's pages on the swap device."""

    def __init__(self, system: Any, guest: str, gfns: tuple[int, ...], polls: int = 400, name: str = "tamperer") -> None:
        super().__init__(system.fabric, name)
        self.system, self.guest, self.gfns, self.polls = system, guest, gfns, polls
        self.tampered: int | None = None

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        for _ in range(self.polls):
            await self.sleep(2_000)
            if vm.memory_released:
                return
            for gfn in self.gfns:
                slot = vm.swap_ptes.get(gfn)
                if slot is not None and slot not in kvm.mm.swapcache and kvm.swap.tamper(slot):
                    self.tampered = gfn
                    self.record("tamper", guest=vm.name, gfn=gfn, slot=slot)
                    return


_MAKERS: Final[dict[str, Callable[[Any, HostThread, str], Actor]]] = {
    "reader": lambda s, t, n: HostReader(s, t.guest, t.gfns, t.effective_rounds, n),
    "ref-noise": lambda s, t, n: RefNoise(s, t.guest, t.effective_rounds, n),
    "pinner": lambda s, t, n: Pinner(s, t.guest, t.gfns[0], n),
    "tamperer": lambda s, t, n: Tamperer(s, t.guest, t.gfns, t.effective_rounds, n),
}
