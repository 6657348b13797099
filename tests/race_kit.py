"""Helpers for the race and memory tests: small configurations, one seeded run, its outcome.

The §8 scenarios themselves are run configurations (:mod:`sesim._scenarios`,
with host threads and fault sites of :mod:`actors._host_threads` and
:mod:`actors._faults`); here is what tests add around them: a run that keeps
the events a check needs and the wired system, checks of one run, and a
few test-only hooks (a :class:`Probe` thread).
The monitors of :mod:`traces._monitors` run in every run; a run also fails
on a hang.

Images and the host key of :func:`config` are built once per process and
given to the runs as files, so a run costs only the simulation.
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
from actors._host_threads import HostThread, wait_running
from actors._system import System
from machine import FrameState
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
    cleanup_delay: int = 0,
    cleanup_killed_after: int | None = None,
) -> GuestConfig:
    image = str(_assets() / f"{name}{'-dump' if dump else ''}.img") if secure else ""
    return GuestConfig(
        name=name, secure=secure, memory_mib=memory_mib, cpus=cpus, workload=tuple(workload), image_path=image,
        teardown=teardown, dump=dump, cleanup_delay=cleanup_delay, cleanup_killed_after=cleanup_killed_after,
    )


JITTER = FaultPlan(sie_exit_delay=50, heal_at=1 << 50)
"""Vary the timing between seeds: half the exceptions are handled late (0.5-50 µs)."""


def config(
    *guests: GuestConfig,
    limit_kib: int = 0,
    faults: FaultPlan = JITTER,
    host_threads: Iterable[HostThread] = (),
    destroy_fast: bool = True,
) -> RunConfig:
    return RunConfig(
        memory_mib=3072,
        cpus=4,
        guests=guests,
        host_key_path=str(_assets() / "host.pem"),
        guest_memory_limit_kib=limit_kib,
        faults=faults,
        host_threads=tuple(host_threads),
        destroy_fast=destroy_fast,
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


# ------------------------------------------------------------- checks and probes
def free_frames_not_host(system: System) -> list[int]:
    """Frames on the allocator's free list that are not plain host memory (never allowed)."""
    memory = system.server.memory
    free = system.allocator._free
    return sorted(pfn for pfn in free if memory.state_of(pfn) not in (FrameState.HOST,))


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
