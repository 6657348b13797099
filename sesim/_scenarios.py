"""The stress scenarios of uv-semantics.md §8 as run configurations.

Each scenario is a small configuration (one guest, little memory, a few
operations) with the host threads, fault sites and QEMU behaviour that make
its race likely, and varies with the seed where the scenario asks for it.
Being plain configurations, they run like any other: ``sesim stress
--scenario NAME`` runs one over a range of seeds, their traces replay from
the header alone (the regression corpus holds one per scenario), and
``tests/test_races.py`` checks each over many seeds.

Besides the ten scenarios of §8 there are two configurations that exist to
catch historical bugs (:mod:`actors._bugs`): an import busy storm and a guest
thrashing against a tight memory limit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from attrs import evolve, frozen

from actors._faults import FaultPlan
from actors._host_threads import HostThread
from protocol import UsageError

from ._simulation import GuestConfig, RunConfig

JITTER: Final = FaultPlan(sie_exit_delay=50, heal_at=1 << 50)
"""Vary the timing between seeds: half the exceptions are handled late (0.5-50 µs)."""

CLEANUP_DELAY: Final = 5_000_000
"""QEMU's cleanup thread starts its PERFORM 5 ms late: the new guest meets the old pages first."""


def _guest(workload: list[str], *, cpus: int = 2, memory_mib: int = 4, **kw: object) -> GuestConfig:
    return GuestConfig(name="a", secure=True, memory_mib=memory_mib, cpus=cpus, workload=tuple(workload), **kw)  # type: ignore[arg-type]


def _config(
    guest: GuestConfig,
    *,
    limit_kib: int = 0,
    faults: FaultPlan = JITTER,
    threads: tuple[HostThread, ...] = (),
    destroy_fast: bool = True,
) -> RunConfig:
    return RunConfig(
        memory_mib=3072,
        cpus=4,
        guests=(guest,),
        guest_memory_limit_kib=limit_kib,
        faults=faults,
        host_threads=threads,
        destroy_fast=destroy_fast,
    )


def one_page(seed: int) -> RunConfig:
    """§8 #1-like: four vCPUs fault the same pages while a QEMU thread reads (exports) them."""
    workload = ["write 0x100000 pages=2", *["read 0x100000 pages=2"] * 4, "write 0x101000", *["read 0x100000 pages=2"] * 3]
    reader = HostThread(kind="reader", guest="a", addresses=(0x100000, 0x101000), rounds=6)
    return _config(_guest(workload, cpus=4), threads=(reader,))


def random_busy(seed: int) -> RunConfig:
    """The UV answers busy (any UVC) and partial (host UVCs that may end partial) at random."""
    workload = ["write 0x100000 pages=2", "share 0x200000", "io-write 0 0x100000 pages=2", "unshare 0x200000",
                "io-read 0 0x104000 pages=2", "read 0x100000 pages=2"]  # fmt: skip
    return _config(_guest(workload), faults=evolve(JITTER, uv_busy=15, uv_partial=10))


def reference_noise(seed: int) -> RunConfig:
    """Short-lived references make the import's refcount freeze fail (-EBUSY) under memory pressure."""
    workload = ["write 0x100000 pages=6", "read 0x100000 pages=6", "write 0x100000 pages=6", "read 0x100000 pages=6"]
    noise = HostThread(kind="ref-noise", guest="a", rounds=30)
    return _config(_guest(workload), limit_kib=160, threads=(noise,))


def async_reboot(seed: int, *, fast: bool | None = None) -> RunConfig:
    """A re-IPL leaves a secure and a shared page above 2 GiB to a slow cleanup thread; odd seeds
    (or ``fast=False``) run on firmware without DESTROY_SEC_CONF_FAST."""
    workload = ["write 0x90000000 pages=3", "share 0x90004000", "reboot reipl",
                "write 0x90000000 pages=2", "read 0x90000000 pages=3", "read 0x90004000"]  # fmt: skip
    guest = _guest(workload, memory_mib=3072, teardown="async", cleanup_delay=CLEANUP_DELAY)
    return _config(guest, destroy_fast=seed % 2 == 0 if fast is None else fast)


def second_cpu(seed: int) -> RunConfig:
    """After a re-IPL a second vCPU meets an old page it cannot destroy (the old configuration
    still has CPUs) and must export it instead."""
    workload = ["write 0x90000000", "reboot reipl", "read 0x90000000", "read 0x90000000"]
    return _config(_guest(workload, memory_mib=3072, teardown="async", cleanup_delay=CLEANUP_DELAY))


def perform_killed(seed: int) -> RunConfig:
    """QEMU is killed during its PERFORM, after ``seed % 4`` pages; the VM's destroy finishes."""
    workload = ["write 0x90000000 pages=4", "reboot reipl", "read 0x100000"]
    return _config(_guest(workload, memory_mib=3072, teardown="async", cleanup_killed_after=seed % 4))


def create_cpu_fails(seed: int) -> RunConfig:
    """CREATE_SEC_CPU fails for one vCPU; on every third seed the first DESTROY_SEC_CPU fails too (a leak)."""
    fails = (f"CREATE_SEC_CPU:{2 + seed % 2}", *(["DESTROY_SEC_CPU:1"] if seed % 3 == 0 else []))
    return _config(_guest(["write 0x100000", "read 0x100000"], cpus=3), faults=evolve(JITTER, fail_uvcs=fails))


def pinned_shared(seed: int) -> RunConfig:
    """A device pins a page the guest shared while the guest takes it back (REMOVE_SHARED → 108)."""
    workload = ["write 0x100000", "share 0x100000", "compute 20000", "unshare 0x100000", "read 0x100000"]
    pinner = HostThread(kind="pinner", guest="a", addresses=(0x100000,))
    return _config(_guest(workload, cpus=1), threads=(pinner,))


def tampered_swap(seed: int) -> RunConfig:
    """A hostile host flips a bit of a swapped-out page; the import must refuse it."""
    pairs = [f"0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(3)]
    workload = [*(f"write {p}" for p in pairs), "compute 150000", *(f"read {p}" for p in pairs)]
    tamperer = HostThread(kind="tamperer", guest="a", addresses=tuple(range(0x100000, 0x106000, 0x1000)))
    return _config(_guest(workload, cpus=1), limit_kib=32, threads=(tamperer,))


def dump_running(seed: int) -> RunConfig:
    """The hypervisor dumps the guest while its vCPUs run (KVM_RUN is refused meanwhile)."""
    workload = ["write 0x100000 pages=2", *["compute 25000", "read 0x100000 pages=2"] * 4]
    return _config(_guest(workload, dump=True), limit_kib=160)


def import_storm(seed: int) -> RunConfig:
    """Two vCPUs import pages of one page table while the UV answers every import busy (§8 #1)."""
    workload = ["write 0x100000 pages=3", "write 0x110000 pages=3", "read 0x100000 pages=3", "read 0x110000 pages=3"]
    # From about when the guest runs (its boot takes ~450 µs) for 300 µs: a storm during the
    # boot only meets the boot's own imports, one vCPU, nobody to spin on its lock.
    return _config(_guest(workload), faults=evolve(JITTER, import_busy=100, start_at=460_000, heal_at=760_000))


def thrash(seed: int) -> RunConfig:
    """Guest memory far below the working set: the reclaim thread takes pages the vCPUs are importing."""
    pairs = [f"0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(6)]
    workload = [*(f"write {p}" for p in pairs), *(f"read {p}" for p in pairs), *(f"write {p}" for p in pairs[::2]),
                *(f"read {p}" for p in pairs)]  # fmt: skip
    return _config(_guest(workload), limit_kib=48, threads=(HostThread(kind="ref-noise", guest="a", rounds=20),))


@frozen(kw_only=True)
class Scenario:
    name: str
    build: Callable[[int], RunConfig]
    race: str
    """What the scenario's race is (for ``--scenario`` listings)."""


SCENARIOS: Final[tuple[Scenario, ...]] = (
    Scenario(name="one-page", build=one_page, race="vCPUs fault one page while the host exports it"),
    Scenario(name="random-busy", build=random_busy, race="the UV answers busy and partial at random"),
    Scenario(name="reference-noise", build=reference_noise, race="reference noise makes the freeze fail"),
    Scenario(name="async-reboot", build=async_reboot, race="the new guest meets the old configuration's pages"),
    Scenario(name="second-cpu", build=second_cpu, race="a second vCPU cannot destroy an old page and exports it"),
    Scenario(name="perform-killed", build=perform_killed, race="a fatal signal during PERFORM"),
    Scenario(name="create-cpu-fails", build=create_cpu_fails, race="CREATE_SEC_CPU fails"),
    Scenario(name="pinned-shared", build=pinned_shared, race="REMOVE_SHARED on a pinned page"),
    Scenario(name="tampered-swap", build=tampered_swap, race="a tampered swap page"),
    Scenario(name="dump-running", build=dump_running, race="a dump while the vCPUs run"),
    Scenario(name="import-storm", build=import_storm, race="every import busy for a while (bug hunt)"),
    Scenario(name="thrash", build=thrash, race="reclaim takes pages being imported (bug hunt)"),
)
SCENARIO_NAMES: Final = tuple(s.name for s in SCENARIOS)
_BY_NAME: Final = {s.name: s for s in SCENARIOS}


def scenario(name: str) -> Scenario:
    """The scenario called ``name``.

    Raises:
        UsageError: no such scenario.
    """
    found = _BY_NAME.get(name)
    if found is None:
        raise UsageError(f"unknown scenario {name!r} (known: {', '.join(SCENARIO_NAMES)})")
    return found
