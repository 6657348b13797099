"""Swarm testing: each seed also picks the topology, the workloads and the faults.

Swarm testing (Groce et al., ISSTA 2012) finds more bugs than one big
configuration because each run leaves some features out, so the ones that
stay get exercised harder. Here a seed decides how many guests there are,
which are secure, how many vCPUs and how much memory each has, what each
workload does, and which fault sites are active in the safety phase.

The generator uses its own :class:`random.Random` seeded with the seed (never
the global one), so the same seed always gives the same configuration.
"""

from __future__ import annotations

import random

from attrs import evolve

from actors._faults import FaultPlan
from actors._host_threads import HostThread

from ._scenarios import SCENARIOS
from ._simulation import GuestConfig, RunConfig

PAGE = 4096
SCENARIO_SHARE = 0.15
"""The share of swarm seeds that run one of the race scenarios of :mod:`sesim._scenarios`."""
SWARM_SCENARIOS = tuple(s for s in SCENARIOS if s.name != "thrash")
"""All but ``thrash``: 12 pages for two vCPUs is below the swarm's memory floor (see
:func:`_memory_limit`), and about 2 % of its seeds thrash without progress, which is not a finding."""


HIGH = 0x90000000
"""Where a big guest's workload also goes: above 2 GiB, the pages an asynchronous teardown
leaves to QEMU's cleanup thread (the new configuration after a re-IPL meets them)."""


def _workload(rng: random.Random, memory_mib: int, steps: int, *, io: bool, reboot: bool) -> tuple[str, ...]:
    # The top of guest memory holds the I/O rings and bounce buffers; stay below them.
    top = min(memory_mib << 20, 16 << 20) - (64 << 12)
    high = memory_mib << 20 > HIGH + (16 << 20) and rng.random() < 0.7
    kinds = ["write", "read", "compute", "diag500", "diag9c", "share", "unshare"]
    weights = [6, 5, 2, 1, 1, 1, 1]
    if io:
        kinds += ["io-write", "io-read"]
        weights += [2, 2]
    ops: list[str] = []
    shared: list[int] = []
    for _ in range(steps):
        kind = rng.choices(kinds, weights=weights)[0]
        pages = rng.randint(1, 4)
        addr = rng.randrange(0x100, (top // PAGE) - pages) * PAGE  # above the boot image
        if high and rng.random() < 0.5:
            addr = HIGH + rng.randrange(64) * PAGE  # a few pages, so that later ops meet them again
        if kind in ("write", "read"):
            ops.append(f"{kind} {addr:#x} pages={pages}")
        elif kind in ("io-write", "io-read"):
            ops.append(f"{kind} {rng.randrange(64)} {addr:#x} pages={pages}")
        elif kind == "compute":
            ops.append(f"compute {rng.randint(1, 50) * 1000}")
        elif kind == "diag500":
            ops.append(f"diag500 queue={rng.randint(0, 1)}")
        elif kind == "diag9c":
            ops.append("diag9c")
        elif kind == "share":
            shared.append(addr)
            ops.append(f"share {addr:#x}")
        elif shared:
            ops.append(f"unshare {shared.pop():#x}")
    ops.extend(f"unshare {addr:#x}" for addr in shared)
    if reboot and ops:
        at = rng.randrange(len(ops))
        # A big guest mostly re-IPLs: that is where its asynchronous teardown meets the new guest.
        kind = rng.choice(["normal", "clear", "reipl", "reipl", "reipl"] if high else ["normal", "normal", "clear", "reipl", "reipl"])
        after: list[str] = []
        if kind == "reipl":
            # Right after a re-IPL two vCPUs touch the pages the old configuration left behind.
            touched = [op.split()[1] for op in ops[:at] if op.startswith("write ")]
            touched.sort(key=lambda a: int(a, 16) < HIGH)  # pages above 2 GiB first: the old guest's leftovers
            for addr in touched[:3]:
                after += [f"read {addr}", f"read {addr}"]
        ops[at:at] = [f"reboot {kind}", *after]
    return tuple(ops)


def _memory_limit(rng: random.Random, guests: list[GuestConfig]) -> int:
    """Host memory for guest pages: none, or tight but enough for every vCPU's pages at once.

    Below that (a few pages for many vCPUs) the reclaim thread and the vCPUs
    only take pages from each other and nobody progresses: thrashing, which a
    real host answers with the OOM killer, not something a campaign should
    report as a bug.
    """
    choice = rng.choice([0, 0, 1, 2, 4])
    if not choice:
        return 0
    floor = 4 * (8 * sum(g.cpus for g in guests) + 16)
    return floor * choice


def swarm_config(seed: int, *, strategy: str = "random", depth: int = 3, faults: bool = True) -> RunConfig:
    """The configuration that ``seed`` picks in swarm mode.

    Besides the topology and the workloads a seed decides which features are
    in play: host memory pressure (a guest-page limit that makes the reclaim
    thread swap), guest I/O through bounce buffers, reboots (including a
    re-IPL into a new configuration), teardown modes (a guest over 2 GiB may be
    torn down asynchronously, by a cleanup thread that may start late, and
    uses memory above 2 GiB), host threads racing with a guest (QEMU reading
    its pages, reference noise, a device pinning a shared page), and the
    fault sites of the safety phase. A share of the seeds (with faults on)
    runs one of the §8 race scenarios instead, with the seed's schedule.
    """
    rng = random.Random(f"sesim-swarm:{seed}")
    if faults and rng.random() < SCENARIO_SHARE:
        # A §8 scenario: the feature combinations known to matter, each a narrow race that a
        # random configuration meets only rarely (a re-IPL of a guest over 2 GiB with a slow
        # cleanup thread and both vCPUs touching the old pages at once, ...).
        picked = rng.choice(SWARM_SCENARIOS)
        return evolve(picked.build(seed), strategy=strategy, pct_depth=depth)
    count = rng.randint(1, 4)
    io = rng.random() < 0.4
    reboots = rng.random() < 0.3
    guests = []
    for i in range(count):
        secure = rng.random() < 0.75
        big = secure and rng.random() < 0.15
        memory = 3072 if big else rng.choice([4, 8, 16])
        guests.append(
            GuestConfig(
                name=f"g{i}",
                secure=secure,
                memory_mib=memory,
                cpus=rng.randint(1, 3),
                workload=_workload(
                    rng, memory, rng.randint(2, 12), io=io, reboot=(reboots and rng.random() < 0.5) or (big and rng.random() < 0.6)
                ),
                image_for="elsewhere" if secure and rng.random() < 0.1 else "",
                teardown=("async" if big and rng.random() < 0.7 else rng.choice(["sync", "sync", "exit"])),
            )
        )
        if guests[-1].teardown == "async":
            # QEMU's cleanup thread may be slow to start its PERFORM (§8 #4, #5).
            delay = rng.choice([0, 1_000_000, 5_000_000, 5_000_000])
            guests[-1] = evolve(guests[-1], cleanup_delay=delay)
    threads = _host_threads(rng, guests) if rng.random() < 0.3 else ()
    plan = FaultPlan()
    if faults:
        storm = rng.random() < 0.15  # every UVC busy for a while: the import path must not spin (§8 #1)
        start = rng.choice([0, 1_000_000, 2_000_000, 3_000_000]) if storm else 0
        plan = FaultPlan(
            start_at=start,
            uv_busy=rng.choice([0, 0, 5, 20]),
            import_busy=100 if storm else 0,
            sie_exit_delay=rng.choice([0, 0, 10, 40]),
            io_error=rng.choice([0, 0, 5]) if io else 0,
            reclaim_storm=0 if storm else rng.choice([0, 0, 25]),
            heal_at=start + rng.choice([300_000, 600_000]) if storm else rng.choice([200_000, 1_000_000, 5_000_000]),
        )
    return RunConfig(
        memory_mib=3072 + 1024 * sum(g.memory_mib >= 3072 for g in guests),
        cpus=4,
        guests=tuple(guests),
        strategy=strategy,
        pct_depth=depth,
        faults=plan,
        # An import storm makes every vCPU retry its imports for a while; with reclaim
        # contending for the same page-table locks too, a 100 µs wait is ordinary
        # thrashing, not the spin of §8 #1, so storms run without memory pressure.
        guest_memory_limit_kib=0 if plan.import_busy else _memory_limit(rng, guests),
        destroy_fast=rng.random() < 0.6,  # without it an async teardown leaves a CPU-less configuration behind
        host_threads=threads,
    )


def _host_threads(rng: random.Random, guests: list[GuestConfig]) -> tuple[HostThread, ...]:
    """Host threads racing with a secure guest: QEMU reading its pages, reference noise, a pinning device.

    (Never a tamperer: a hostile host stops the guest on purpose, which is not a finding.)
    """
    secure = [g for g in guests if g.secure and not g.image_for]
    if not secure:
        return ()
    threads = []
    for _ in range(rng.randint(1, 2)):
        g = rng.choice(secure)
        pages = sorted({int(op.split()[1], 16) for op in g.workload if op.startswith(("write ", "read "))})
        shared = sorted({int(op.split()[1], 16) for op in g.workload if op.startswith("share ")})
        kind = rng.choice(["reader", "reader", "ref-noise", "pinner"])
        if kind == "pinner" and shared:
            threads.append(HostThread(kind="pinner", guest=g.name, addresses=(rng.choice(shared),)))
        elif kind == "reader" and pages:
            picked = tuple(rng.sample(pages, min(len(pages), 3)))
            threads.append(HostThread(kind="reader", guest=g.name, addresses=picked, rounds=rng.randint(2, 8)))
        else:
            threads.append(HostThread(kind="ref-noise", guest=g.name, rounds=rng.randint(5, 30)))
    return tuple(threads)


def standard_config(*, strategy: str = "random", depth: int = 3) -> RunConfig:
    """The non-swarm campaign: two secure guests and a regular one, busy answers in the safety phase."""
    workload = (
        "write 0x100000 pages=4",
        "share 0x300000",
        "read 0x100000 pages=4",
        "diag500",
        "unshare 0x300000",
        "write 0x100000 pages=2",
        "diag9c",
        "read 0x100000 pages=2",
    )
    return RunConfig(
        memory_mib=3072,
        cpus=4,
        strategy=strategy,
        pct_depth=depth,
        faults=FaultPlan(uv_busy=10, heal_at=1_000_000),
        guests=(
            GuestConfig(name="alpha", secure=True, memory_mib=8, cpus=2, workload=workload),
            GuestConfig(name="beta", secure=True, memory_mib=8, cpus=2, workload=workload),
            GuestConfig(name="delta", secure=False, memory_mib=8, cpus=1, workload=workload[:4]),
        ),
    )
