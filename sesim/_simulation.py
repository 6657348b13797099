"""Running a simulation: configuration in, trace file and summary out.

This module only assembles what the lower layers provide: it builds the
images (with the same protocol code as ``sesim image create``), wires the
actors of :mod:`actors`, hands the fabric a trace recorder from
:mod:`traces`, and runs it under trio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
from attrs import frozen
from cryptography.hazmat.primitives.asymmetric import ec

from actors import Fabric, PctStrategy, RandomStrategy
from actors._bugs import BugSwitches
from actors._faults import NO_FAULTS, FaultPlan
from actors._host_threads import HostThread
from actors._system import System
from actors._vm import VirtualMachine, VmSpec
from actors._workload import parse_workload
from machine import UvLimits
from protocol._components import ComponentKind
from protocol._crypto import ec_private_from_scalar
from protocol._hkd import read_host_private_key
from protocol._image import ImageSpec, create_image, synthetic_kernel
from protocol._se_header import PCF_ALLOW_DUMPING, PCF_DEFAULT
from traces._monitors import Monitors, Violation
from traces._writer import TraceRecorder, header_line

from . import __version__
from ._owner import owner_material

MIB = 1 << 20


def derived_host_key(seed: int, server: str) -> ec.EllipticCurvePrivateKey:
    """A server's P-521 host key derived from the run's seed (simulated servers only)."""
    scalar = hashlib.sha512(f"sesim-host-key:{seed}:{server}".encode()).digest()[:64]
    return ec_private_from_scalar(scalar)


def build_image(
    *, seed: int, name: str, host_keys: Sequence[ec.EllipticCurvePublicKey], kernel_size: int = 0x20000,
    cmdline: bytes = b"root=/dev/vda console=ttysclp0", allow_dump: bool = False,
) -> bytes:
    """A complete SE boot image, every random input drawn from (seed, name).

    ``allow_dump`` sets PCF bit 34 (``--enable-dump``): the hypervisor may dump the guest.
    """

    def rand(label: str, n: int) -> bytes:
        return hashlib.sha512(f"sesim-image:{seed}:{name}:{label}".encode()).digest()[:n]

    xts = rand("xts-a", 32) + rand("xts-b", 32)
    spec = ImageSpec(
        kernel=synthetic_kernel(kernel_size, seed),
        cmdline=cmdline,
        host_keys=tuple(host_keys),
        cust_private_key=ec_private_from_scalar(rand("customer", 64)),
        prot_key=rand("prot", 32),
        iv=rand("iv", 12),
        cck=rand("cck", 32),
        xts_key=xts,
        tweak_randoms={kind: rand(f"tweak-{kind.name}", 6) for kind in ComponentKind},
        **({"pcf": PCF_DEFAULT | PCF_ALLOW_DUMPING} if allow_dump else {}),
    )
    return create_image(spec).data


@frozen(kw_only=True)
class GuestConfig:
    name: str
    secure: bool
    memory_mib: int
    cpus: int
    workload: tuple[str, ...]
    image_for: str = ""  # which server's host key the image is built for ("" = this server)
    image_path: str = ""  # a boot image file (from `sesim image create`) instead of a built one
    teardown: str = "sync"  # "sync", "async" (guests over 2 GiB) or "exit": how it is torn down
    dump: bool = False  # the hypervisor dumps it once while it runs (its image allows dumping)
    cleanup_delay: int = 0  # virtual ns QEMU's asynchronous cleanup thread waits before its PERFORM
    cleanup_killed_after: int | None = None  # a fatal signal kills that thread after this many pages


@frozen(kw_only=True)
class RunConfig:
    server: str = "z15-a"
    memory_mib: int = 4096
    cpus: int = 4
    guests: tuple[GuestConfig, ...] = ()
    strategy: str = "random"
    pct_depth: int = 3
    host_key_path: str = ""  # the server's private host key (PEM); "" = derived from the seed
    faults: FaultPlan = NO_FAULTS
    guest_memory_limit_kib: int = 0  # host memory for guest pages (0: no limit); beyond it the reclaim thread swaps
    bugs: tuple[str, ...] = ()  # historical kernel bugs the hypervisor re-creates (actors._bugs)
    destroy_fast: bool = True  # the UV has DESTROY_SEC_CONF_FAST (QUI bit 23)
    host_threads: tuple[HostThread, ...] = ()  # host threads racing with the guests (actors._host_threads)

    def to_json(self) -> dict[str, Any]:
        """This configuration in the TOML schema of :mod:`sesim._config` (so that
        ``parse_config(config.to_json())`` gives it back: replay relies on that)."""
        server: dict[str, Any] = {"name": self.server, "memory_mib": self.memory_mib, "cpus": self.cpus}
        if self.host_key_path:
            server["host_key"] = self.host_key_path
        if self.guest_memory_limit_kib:
            server["guest_memory_limit_kib"] = self.guest_memory_limit_kib
        if not self.destroy_fast:
            server["destroy_fast"] = False
        guests = []
        for g in self.guests:
            guest: dict[str, Any] = {
                "name": g.name,
                "secure": g.secure,
                "memory_mib": g.memory_mib,
                "cpus": g.cpus,
                "workload": list(g.workload),
            }
            if g.image_for:
                guest["image_for"] = g.image_for
            if g.image_path:
                guest["image"] = g.image_path
            if g.teardown != "sync":
                guest["teardown"] = g.teardown
            if g.dump:
                guest["dump"] = True
            if g.cleanup_delay:
                guest["cleanup_delay"] = g.cleanup_delay
            if g.cleanup_killed_after is not None:
                guest["cleanup_killed_after"] = g.cleanup_killed_after
            guests.append(guest)
        out: dict[str, Any] = {"strategy": self.strategy, "pct_depth": self.pct_depth, "server": server}
        if self.faults != NO_FAULTS:
            out["faults"] = self.faults.describe()
        if self.bugs:
            out["bugs"] = list(self.bugs)
        out["guest"] = guests
        if self.host_threads:
            out["host_thread"] = [t.describe() for t in self.host_threads]
        return out


DEMO_WORKLOAD = (
    "write 0x100000 pages=8",
    "write 0x200000 pages=4",
    "read 0x100000 pages=8",
    "compute 20000",
    "share 0x300000",
    "diag500 queue=0",
    "unshare 0x300000",
    "diag9c cpu=1",
    "reboot normal",
    "read 0x200000 pages=4",
    "write 0x100000 pages=2",
    "read 0x100000 pages=2",
)


BETA_WORKLOAD = (*DEMO_WORKLOAD, "write 0x90000000 pages=2", "read 0x90000000 pages=2")
"""The demo's large guest also uses memory above 2 GiB (its asynchronous teardown destroys it later)."""


MEMORY_WORKLOAD = (
    "write 0x400000 pages=48",
    "io-write 0 0x400000 pages=8",
    "read 0x400000 pages=48",
    "net-send 0x400000 pages=2",
    "io-read 0 0x500000 pages=8",
    "read 0x500000 pages=8",
)
"""The demo's second half: more memory than the host gives its guests, and I/O through bounce buffers."""

DEMO_GUEST_MEMORY_KIB = 512
"""The demo host's memory for guest pages: less than its guests use, so the reclaim thread swaps."""


OWNER_WORKLOAD = ("attest user=sesim-demo", "secret disk-key")
"""alpha proves what it runs to its owner and receives a secret from it (issue 10)."""


def demo_config() -> RunConfig:
    """The demo: three secure guests (one built for another server) and one regular guest."""
    return RunConfig(
        guest_memory_limit_kib=DEMO_GUEST_MEMORY_KIB,
        faults=FaultPlan(uv_busy=2, heal_at=4_000_000),  # the firmware answers busy now and then (§9)
        guests=(
            GuestConfig(
                name="alpha", secure=True, memory_mib=64, cpus=2,
                workload=(*DEMO_WORKLOAD, *MEMORY_WORKLOAD, *OWNER_WORKLOAD),
            ),
            GuestConfig(
                name="beta", secure=True, memory_mib=3072, cpus=2, workload=(*BETA_WORKLOAD, *MEMORY_WORKLOAD),
                teardown="async", dump=True,
            ),
            GuestConfig(
                name="gamma", secure=True, memory_mib=64, cpus=2, workload=DEMO_WORKLOAD, image_for="z15-b"
            ),
            GuestConfig(name="delta", secure=False, memory_mib=64, cpus=2, workload=(*DEMO_WORKLOAD, *MEMORY_WORKLOAD)),
        ),
    )


@frozen(kw_only=True)
class RunResult:
    vms: tuple[VirtualMachine, ...]
    steps: int
    virtual_ns: int
    trace: Path | None
    uv_calls: int
    uv_busy: int
    violations: tuple[Violation, ...] = ()
    memory: MemoryFigures | None = None


@frozen(kw_only=True)
class MemoryFigures:
    """Host memory under pressure: the limit, what guests used, what the reclaim thread did."""

    limit_pages: int
    peak_pages: int
    touched_pages: int
    swap_writes: int
    swap_reads: int
    reclaim_skipped: int
    virtio_requests: int
    overcommitted: int = 0  # faults that found nothing reclaimable for a while and took a page from the reserves


def _strategy(config: RunConfig, seed: int) -> Any:
    if config.strategy == "pct":
        return PctStrategy(seed, depth=config.pct_depth)
    return RandomStrategy(seed)


def run(
    config: RunConfig,
    *,
    seed: int,
    trace: Path | None,
    strategy: Any = None,
    sink: Any = None,
    max_steps: int | None = None,
    processors: Sequence[Any] = (),
    bugs: Sequence[str] = (),
    setup: Callable[[System], None] | None = None,
) -> RunResult:
    """Run ``config`` with ``seed``; write the trace to ``trace`` (if given).

    Args:
        strategy: the scheduling strategy (default: the configuration's, seeded
            with ``seed``); replay passes a :class:`actors.ReplayStrategy`.
        sink: a binary file object to write the trace to instead of ``trace``.
        max_steps: stop with :class:`actors.RunLimitReached` after this many steps.
        processors: extra trace processors (coverage counters, ...) that see every event.
        bugs: historical kernel bugs to switch on (``--inject-bug``), beside the configuration's.
        setup: called with the wired :class:`actors._system.System` before it runs (race
            tests add their actors: a hostile host thread, fault hooks of the UV).

    The monitors of :mod:`traces._monitors` always run; their violations are
    in the result (and in the trace). A run that hits ``max_steps`` raises
    :class:`actors.RunLimitReached` after the monitors wrote what was still
    outstanding (a hung vCPU) into the trace.
    """
    if bugs:
        config = attrs.evolve(config, bugs=tuple(dict.fromkeys((*config.bugs, *bugs))))
    switches = BugSwitches.from_names(config.bugs)
    if config.host_key_path:
        host_key = read_host_private_key(config.host_key_path)
    else:
        host_key = derived_host_key(seed, config.server)
    specs = []
    for g in config.guests:
        image = None
        if g.image_path:
            image = Path(g.image_path).read_bytes()
        elif g.secure:
            target = g.image_for or config.server
            key = host_key if target == config.server else derived_host_key(seed, target)
            image = build_image(seed=seed, name=g.name, host_keys=[key.public_key()], allow_dump=g.dump)
        workload = parse_workload(g.workload)
        owner = None
        if g.secure and image is not None:
            owner = owner_material(
                seed=seed, name=g.name, image=image, host_key=host_key.public_key(), workload=workload
            )
        specs.append(
            VmSpec(
                name=g.name,
                secure=g.secure,
                memory=g.memory_mib * MIB,
                cpus=g.cpus,
                workload=workload,
                owner=owner,
                image=image,
                image_name=g.image_for or config.server,
                teardown=g.teardown,
                dump=g.dump,
                cleanup_delay=g.cleanup_delay,
                cleanup_killed_after=g.cleanup_killed_after,
            )
        )
    if strategy is None:
        strategy = _strategy(config, seed)
    fabric = Fabric(strategy, max_steps=max_steps)
    own_sink = sink is None and trace is not None
    if own_sink:
        assert trace is not None
        trace.parent.mkdir(parents=True, exist_ok=True)
        sink = open(trace, "wb", buffering=1 << 20)  # noqa: SIM115  (closed below)
    if sink is not None:
        sink.write(
            header_line(sesim_version=__version__, seed=seed, strategy=strategy.describe(), config=config.to_json())
        )
    monitors = Monitors()
    recorder = None
    try:
        fabric.recorder = recorder = TraceRecorder(fabric, sink, (*processors, monitors))
        system = System(
            fabric,
            server_name=config.server,
            memory=config.memory_mib * MIB,
            cpus=config.cpus,
            host_key=host_key,
            guests=specs,
            seed=seed,
            faults=config.faults,
            bugs=switches,
            guest_memory_limit=config.guest_memory_limit_kib * 1024 or None,
            limits=None if config.destroy_fast else UvLimits(destroy_fast=False),
            host_threads=config.host_threads,
        )
        if setup is not None:
            setup(system)
        try:
            trio.run(fabric.run)
        finally:
            if recorder is not None:
                monitors.finish(fabric.step, fabric.now)
                recorder.flush(monitors)
    finally:
        if own_sink:
            sink.close()
    return RunResult(
        vms=tuple(system.vms),
        steps=fabric.step,
        virtual_ns=fabric.now,
        trace=trace,
        uv_calls=system.uv_actor.calls,
        uv_busy=system.uv_actor.busy,
        violations=tuple(monitors.violations),
        memory=_memory_figures(system),
    )


def _memory_figures(system: System) -> MemoryFigures | None:
    kvm = system.hypervisor.kvm
    if kvm is None:
        return None
    return MemoryFigures(
        limit_pages=kvm.mm.limit_pages or 0,
        peak_pages=kvm.mm.peak_guest_pages,
        touched_pages=len(kvm.mm.touched),
        swap_writes=kvm.swap.writes,
        swap_reads=kvm.swap.reads,
        reclaim_skipped=system.reclaim.skipped,
        virtio_requests=system.virtio.requests,
        overcommitted=kvm.mm.overcommitted,
    )
