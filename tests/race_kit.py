"""Seeded race scenarios of uv-semantics.md §8 ("Suggested stress scenarios"), for tests/test_races.py.

Each scenario is a small configuration (one guest, small memory, a few
operations), an optional *setup* that adds host threads to the wired system
(a QEMU thread reading guest memory, a source of reference-count noise, a
pin held by a device, a hostile host tampering with the swap device, a
firmware that answers busy), and a *check* of one run. The monitors of
:mod:`traces._monitors` run in every run; a run also fails on a hang.

Images and the host key are built once per process and given to the runs as
files, so a run costs only the simulation (a few milliseconds).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization

from actors import Actor, RunLimitReached
from actors._faults import FaultPlan
from actors._system import System
from actors._teardown import CleanupActor
from machine import FrameState
from protocol import Cc, UvcCommand
from sesim._simulation import (
    GuestConfig,
    RunConfig,
    RunResult,
    build_image,
    derived_host_key,
    run,
)

PAGE = 4096
MAX_STEPS = 60_000
KERNEL_SIZE = 0x11000
"""A small synthetic kernel (68 KiB; stage3b's S390EP marker sits at 0x10008): short boots."""
IMPORT_LIKE = frozenset({UvcCommand.CONV_TO_SEC_STOR, UvcCommand.UNPACK_IMG, UvcCommand.UNPIN_PAGE_SHARED})


@functools.cache
def _assets() -> Path:
    """A host key and one image per guest name, written once per process."""
    base = Path(tempfile.mkdtemp(prefix="sesim-races-"))
    key = derived_host_key(0, "z15-a")
    (base / "host.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for name in ("a", "b"):
        for dump in (False, True):
            image = build_image(
                seed=0, name=name, host_keys=[key.public_key()], allow_dump=dump, kernel_size=KERNEL_SIZE
            )
            (base / f"{name}{'-dump' if dump else ''}.img").write_bytes(image)
    return base


def guest(
    name: str,
    workload: Iterable[str],
    *,
    secure: bool = True,
    cpus: int = 2,
    memory_mib: int = 4,
    teardown: str = "sync",
    dump: bool = False,
) -> GuestConfig:
    image = str(_assets() / f"{name}{'-dump' if dump else ''}.img") if secure else ""
    return GuestConfig(
        name=name, secure=secure, memory_mib=memory_mib, cpus=cpus, workload=tuple(workload), image_path=image,
        teardown=teardown, dump=dump,
    )


JITTER = FaultPlan(sie_exit_delay=50, heal_at=1 << 50)
"""Vary the timing between seeds: half the exceptions are handled late (0.5-50 µs)."""


def config(*guests: GuestConfig, limit_kib: int = 0, faults: FaultPlan = JITTER) -> RunConfig:
    return RunConfig(
        memory_mib=3072,
        cpus=4,
        guests=guests,
        host_key_path=str(_assets() / "host.pem"),
        guest_memory_limit_kib=limit_kib,
        faults=faults,
    )


# ----------------------------------------------------------------- runs
@attrs.define
class Outcome:
    """One seed's run: the result (``None`` if it hung), what went wrong, and the system for checks."""

    seed: int
    result: RunResult | None
    system: System
    failures: list[str]
    events: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return not self.failures

    def vm(self, name: str) -> Any:
        return next(vm for vm in self.system.vms if vm.name == name)

    def count(self, kind: str, **match: Any) -> int:
        return sum(1 for e in self.events if e["kind"] == kind and all(e.get(k) == v for k, v in match.items()))


class _Keep:
    """A trace processor keeping the events of the given kinds (plain fields only)."""

    def __init__(self, kinds: frozenset[str]) -> None:
        self.kinds = kinds
        self.events: list[dict[str, Any]] = []

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event["kind"] in self.kinds:
            self.events.append({k: v for k, v in event.items() if k != "msg"})
        return event


KEPT = frozenset(
    {
        "swap-out", "swap-in", "host-read", "host-bug", "violation", "guest-stop", "tamper", "kvm-run",
        "dump-start", "dump-complete", "cleanup-interrupted", "cleanup-leftover", "virtio", "sie-exit",
        "uvc-fault",
    }
)


def run_seed(
    cfg: RunConfig,
    seed: int,
    *,
    bugs: Iterable[str] = (),
    setup: Callable[[System], None] | None = None,
    max_steps: int = MAX_STEPS,
) -> Outcome:
    """Run ``cfg`` with ``seed``; failures are monitor violations and a hang."""
    keep = _Keep(KEPT)
    holder: list[System] = []

    def wire(system: System) -> None:
        holder.append(system)
        # A smaller UV base donation (1 MiB instead of 8): nothing here needs more, and it is cheaper.
        system.uv.limits = attrs.evolve(system.uv.limits, uv_base_stor_len=1 << 20)
        if setup is not None:
            setup(system)

    result: RunResult | None = None
    failures: list[str] = []
    try:
        result = run(cfg, seed=seed, trace=None, max_steps=max_steps, processors=(keep,), bugs=tuple(bugs), setup=wire)
        failures = [str(v) for v in result.violations]
    except RunLimitReached as exc:
        failures = [f"hang: {exc}"] + [f"{e['monitor']}: {e['detail']}" for e in keep.events if e["kind"] == "violation"]
    return Outcome(seed=seed, result=result, system=holder[0], failures=failures, events=keep.events)


# ------------------------------------------------------------- host threads
async def wait_running(actor: Actor, system: System, name: str) -> Any:
    """Poll until guest ``name`` runs its workload; ``None`` if it never does."""
    while True:
        vm = next((vm for vm in system.vms if vm.name == name), None)
        if vm is not None and vm.guest is not None and vm.guest.state == "running":
            return vm
        if vm is not None and vm.guest is not None and vm.guest.state in ("refused", "stopped"):
            return None
        await actor.sleep(20_000)


class HostReader(Actor):
    """A QEMU thread reading guest pages again and again (each read of a secure page exports it)."""

    def __init__(self, system: System, guest: str, gfns: tuple[int, ...], reads: int) -> None:
        super().__init__(system.fabric, "qemu-reader")
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
            if await kvm.user_access(self, vm, gfn, reader="qemu-reader") is not None:
                self.done += 1


class RefNoise(Actor):
    """Short-lived page references (``get_user_pages`` FOLL_GET users, LRU batches of other CPUs)."""

    def __init__(self, system: System, guest: str, rounds: int) -> None:
        super().__init__(system.fabric, "ref-noise")
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

    def __init__(self, system: System, guest: str, gfn: int) -> None:
        super().__init__(system.fabric, "pinner")
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

    def __init__(self, system: System, guest: str, gfns: range) -> None:
        super().__init__(system.fabric, "tamperer")
        self.system, self.guest, self.gfns = system, guest, gfns
        self.tampered: int | None = None

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        for _ in range(400):
            await self.sleep(2_000)
            if vm.memory_released:
                return
            for gfn in self.gfns:
                slot = vm.swap_ptes.get(gfn)
                if slot is not None and slot not in kvm.mm.swapcache and kvm.swap.tamper(slot):
                    self.tampered = gfn
                    self.record("tamper", guest=vm.name, gfn=gfn, slot=slot)
                    return


def import_busy_storm(system: System, *, length: int) -> None:
    """From the moment the guest runs, the UV answers every import busy for ``length`` ns (an overloaded firmware, §8 #1)."""
    uv_actor = system.uv_actor
    started: list[int] = []

    def fault(command: UvcCommand) -> bool:
        if command is not UvcCommand.CONV_TO_SEC_STOR:
            return False
        if not started:
            vm = system.vms[0] if system.vms else None
            if vm is None or vm.guest is None or vm.guest.state != "running":
                return False
            started.append(uv_actor.now)
        return uv_actor.now < started[0] + length

    uv_actor.busy_fault = fault


def random_busy(system: System, *, busy: int, partial: int) -> None:
    """The UV answers busy (any command) or partial (host commands that may end partial) at random."""
    uv_actor = system.uv_actor
    partial_ok = IMPORT_LIKE | {UvcCommand.CONV_FROM_SEC_STOR, UvcCommand.PIN_PAGE_SHARED, UvcCommand.DESTR_SEC_STOR}

    def fault(command: UvcCommand) -> Any:
        roll = uv_actor.choose("uv-random-busy", 100)
        if roll < busy:
            return True
        if command in partial_ok and roll < busy + partial:
            return Cc.PARTIAL
        return False

    uv_actor.busy_fault = fault


def fail_uvcs(system: System, failing: dict[UvcCommand, Callable[[Any], bool]], rc: int = 0x0106) -> None:
    """Make the named UVCs fail (cc 1) when their predicate says so (a firmware error)."""
    uv = system.uv
    execute = uv.execute

    def faulty(caller: Any, request: Any) -> Any:
        predicate = failing.get(request.COMMAND)
        if predicate is not None and predicate(request):
            from protocol import RESPONSE_TYPES

            system.fabric.record("uv", "uvc-fault", {"command": request.COMMAND.name, "rc": rc})
            return RESPONSE_TYPES[request.COMMAND](cc=Cc.ERROR, rc=rc, rrc=0)
        return execute(caller, request)

    uv.execute = faulty  # type: ignore[method-assign]


def stop_cleanup_after(pages: int | None) -> None:
    """A fatal signal kills QEMU's cleanup thread after ``pages`` pages of its PERFORM."""
    CleanupActor.stop_after = pages


def free_frames_not_host(system: System) -> list[int]:
    """Frames on the allocator's free list that are not plain host memory (never allowed)."""
    memory = system.server.memory
    free = system.allocator._free
    return sorted(pfn for pfn in free if memory.state_of(pfn) not in (FrameState.HOST,))


def without_destroy_fast(system: System) -> None:
    """Firmware without DESTROY_SEC_CONF_FAST: a configuration set aside lives on until its PERFORM."""
    from machine._uv_core import HANDLERS

    uv = system.uv
    uv.limits = attrs.evolve(uv.limits, destroy_fast=False)
    uv.host_installed = uv.limits.host_commands() & HANDLERS.keys()


class Probe(Actor):
    """A host thread that runs ``fn(probe, system, vm)`` once guest ``name`` runs its workload.

    Exceptions are kept in :attr:`errors` (an assertion inside ``fn`` fails the test after the run).
    """

    def __init__(self, system: System, name: str, fn: Callable[..., Any]) -> None:
        super().__init__(system.fabric, "probe")
        self.system, self.guest, self.fn = system, name, fn
        self.errors: list[BaseException] = []
        self.done = False

    async def main(self) -> None:
        vm = await wait_running(self, self.system, self.guest)
        try:
            await self.fn(self, self.system, vm)
        except Exception as exc:  # noqa: BLE001  (reported by the test)
            self.errors.append(exc)
        self.done = True


def probe_run(cfg: RunConfig, fn: Callable[..., Any], *, seed: int = 0, setup: Callable[[System], None] | None = None,
              bugs: Iterable[str] = ()) -> tuple[Outcome, Probe]:
    """Run ``cfg`` with a :class:`Probe` on guest ``a``; re-raise what the probe raised."""
    probes: list[Probe] = []

    def wire(system: System) -> None:
        probes.append(Probe(system, "a", fn))
        if setup is not None:
            setup(system)

    outcome = run_seed(cfg, seed, setup=wire, bugs=bugs)
    probe = probes[0]
    if probe.errors:
        raise probe.errors[0]
    assert probe.done, "the probe never ran"
    return outcome, probe


async def wait_state(actor: Actor, system: System, vm: Any, gfn: int, state: FrameState) -> None:
    """Poll until guest frame ``gfn`` of ``vm`` is in ``state`` (the guest's workload got there)."""
    memory = system.server.memory
    for _ in range(10_000):
        pfn = vm.space.pfn_of(gfn)
        if pfn is not None and memory.state_of(pfn) is state:
            return
        await actor.sleep(1_000)
    raise AssertionError(f"guest frame {gfn:#x} never became {state.value}")
