"""What the hypervisor knows of one guest (KVM's ``struct kvm`` and QEMU's machine).

This is host-side state: guest memory mappings, the SIE blocks, the handles
the UV returned, counters for the summary. It never holds a secure guest's
plaintext or CPU state; those stay in the ultravisor.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any

from attrs import define, field, frozen

from machine import AddressSpace, SieBlock


class VmState(enum.Enum):
    """Where a guest is in its life, as the hypervisor sees it."""

    CREATED = "created"
    BOOTING = "booting"
    RUNNING = "running"
    REFUSED = "refused"
    HALTED = "halted"
    STOPPED = "stopped"
    TORN_DOWN = "torn-down"


@frozen(kw_only=True)
class VmSpec:
    """A guest as the run configuration describes it."""

    name: str
    secure: bool
    memory: int
    cpus: int
    workload: tuple[Any, ...]
    image: bytes | None = field(default=None, repr=False)
    image_name: str = ""


@define(kw_only=True, eq=False)
class VmStats:
    """Per-guest counters for the demo's summary table."""

    pages_unpacked: int = 0
    uvcs: Counter[tuple[str, int]] = field(factory=Counter)
    exceptions: Counter[str] = field(factory=Counter)
    intercepts: Counter[str] = field(factory=Counter)
    ops_done: int = 0
    pages_written: int = 0
    pages_read: int = 0
    busy: int = 0


@define(kw_only=True, eq=False)
class VirtualMachine:
    """One guest on the hypervisor."""

    spec: VmSpec
    space: AddressSpace
    state: VmState = VmState.CREATED
    reason: str = ""
    config_handle: int = 0
    cpu_handles: list[int] = field(factory=list)
    sie_blocks: list[SieBlock] = field(factory=list)
    donations: list[tuple[int, int]] = field(factory=list)
    maybe_secure: set[int] = field(factory=set)  # gfns with PG_arch_1 set (over-indicating)
    stats: VmStats = field(factory=VmStats)
    vcpus: list[Any] = field(factory=list)
    guest: Any = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def secure(self) -> bool:
        return self.spec.secure

    @property
    def protected(self) -> bool:
        """Whether the VM currently runs as a secure configuration."""
        return self.config_handle != 0
