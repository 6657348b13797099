"""Running a simulation: configuration in, trace file and summary out.

This module only assembles what the lower layers provide: it builds the
images (with the same protocol code as ``sesim image create``), wires the
actors of :mod:`actors`, hands the fabric a trace recorder from
:mod:`traces`, and runs it under trio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio
from attrs import frozen
from cryptography.hazmat.primitives.asymmetric import ec

from actors import Fabric, PctStrategy, RandomStrategy
from actors._faults import NO_FAULTS, FaultPlan
from actors._system import System
from actors._vm import VirtualMachine, VmSpec
from actors._workload import parse_workload
from protocol._components import ComponentKind
from protocol._crypto import ec_private_from_scalar
from protocol._hkd import read_host_private_key
from protocol._image import ImageSpec, create_image, synthetic_kernel
from traces._writer import TraceRecorder, header_line

from . import __version__

MIB = 1 << 20


def derived_host_key(seed: int, server: str) -> ec.EllipticCurvePrivateKey:
    """A server's P-521 host key derived from the run's seed (simulated servers only)."""
    scalar = hashlib.sha512(f"sesim-host-key:{seed}:{server}".encode()).digest()[:64]
    return ec_private_from_scalar(scalar)


def build_image(
    *, seed: int, name: str, host_keys: Sequence[ec.EllipticCurvePublicKey], kernel_size: int = 0x20000,
    cmdline: bytes = b"root=/dev/vda console=ttysclp0",
) -> bytes:
    """A complete SE boot image, every random input drawn from (seed, name)."""

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

    def to_json(self) -> dict[str, Any]:
        """This configuration in the TOML schema of :mod:`sesim._config` (so that
        ``parse_config(config.to_json())`` gives it back: replay relies on that)."""
        server: dict[str, Any] = {"name": self.server, "memory_mib": self.memory_mib, "cpus": self.cpus}
        if self.host_key_path:
            server["host_key"] = self.host_key_path
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
            guests.append(guest)
        out: dict[str, Any] = {"strategy": self.strategy, "pct_depth": self.pct_depth, "server": server}
        if self.faults != NO_FAULTS:
            out["faults"] = self.faults.describe()
        out["guest"] = guests
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
    "read 0x200000 pages=4",
    "write 0x100000 pages=2",
    "read 0x100000 pages=2",
)


def demo_config() -> RunConfig:
    """The demo: three secure guests (one built for another server) and one regular guest."""
    return RunConfig(
        guests=(
            GuestConfig(name="alpha", secure=True, memory_mib=64, cpus=2, workload=DEMO_WORKLOAD),
            GuestConfig(name="beta", secure=True, memory_mib=64, cpus=2, workload=DEMO_WORKLOAD),
            GuestConfig(
                name="gamma", secure=True, memory_mib=64, cpus=2, workload=DEMO_WORKLOAD, image_for="z15-b"
            ),
            GuestConfig(name="delta", secure=False, memory_mib=64, cpus=2, workload=DEMO_WORKLOAD),
        )
    )


@frozen(kw_only=True)
class RunResult:
    vms: tuple[VirtualMachine, ...]
    steps: int
    virtual_ns: int
    trace: Path | None
    uv_calls: int
    uv_busy: int


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
) -> RunResult:
    """Run ``config`` with ``seed``; write the trace to ``trace`` (if given).

    Args:
        strategy: the scheduling strategy (default: the configuration's, seeded
            with ``seed``); replay passes a :class:`actors.ReplayStrategy`.
        sink: a binary file object to write the trace to instead of ``trace``.
        max_steps: stop with :class:`actors.RunLimitReached` after this many steps.
        processors: extra trace processors (coverage counters, ...) that see every event.
    """
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
            image = build_image(seed=seed, name=g.name, host_keys=[key.public_key()])
        specs.append(
            VmSpec(
                name=g.name,
                secure=g.secure,
                memory=g.memory_mib * MIB,
                cpus=g.cpus,
                workload=parse_workload(g.workload),
                image=image,
                image_name=g.image_for or config.server,
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
    try:
        fabric.recorder = TraceRecorder(fabric, sink, processors)
        system = System(
            fabric,
            server_name=config.server,
            memory=config.memory_mib * MIB,
            cpus=config.cpus,
            host_key=host_key,
            guests=specs,
            seed=seed,
            faults=config.faults,
        )
        trio.run(fabric.run)
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
    )
