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
    teardown: str = "sync"
    """How a secure guest is torn down when it halts: "sync" (KVM_PV_DISABLE), "async"
    (prepare + perform from a cleanup thread; guests over 2 GiB) or "exit" (process exit)."""
    dump: bool = False
    """The hypervisor dumps the guest once, while it runs (actors._dump)."""
    cleanup_delay: int = 0
    """Virtual ns the asynchronous cleanup thread waits before its PERFORM (QEMU's thread is slow to run)."""
    cleanup_killed_after: int | None = None
    """A fatal signal kills the cleanup thread after that many pages of its PERFORM (``None``: never)."""
    owner: Any = field(default=None, repr=False)
    """What the guest's owner prepared for attestation and secrets (actors._guest_attest.OwnerMaterial)."""


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
    reboots: int = 0
    dumps: int = 0
    teardown: str = ""
    leaked_pages: int = 0
    # -- memory under pressure and I/O (actors._kvm, _reclaim, _swap, _virtio, _guest_io) --
    swap_outs: int = 0
    swap_ins: int = 0
    ebusy: int = 0  # imports that found the page busy (writeback, extra references)
    eagain: int = 0  # imports answered -EAGAIN (the vCPU re-entered SIE and tried again)
    io_requests: int = 0
    io_pages: int = 0
    io_errors: int = 0
    io_retries: int = 0
    bounce_pins: int = 0  # bounce-buffer pages the devices pinned (FOLL_PIN) for a request


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
    # -- KVM's bookkeeping for teardown, reboot and dump (actors._teardown, _reset, _dump) --
    conf_storage: list[tuple[int, int]] = field(factory=list)  # base and variable storage of the configuration
    cpu_storage: dict[int, tuple[int, int]] = field(factory=dict)  # vCPU number -> its secure CPU's storage
    own_storage: list[tuple[int, int]] = field(factory=list)  # KVM's own buffers (SCA, header copy)
    leaked: list[tuple[int, int]] = field(factory=list)  # storage the UV may still own: never freed
    set_aside: Any = None  # the configuration an asynchronous teardown left behind
    need_cleanup: list[Any] = field(factory=list)  # leftovers a cleanup could not finish
    cleaners: list[Any] = field(factory=list)  # cleanup threads started for this VM
    stopped: set[int] = field(factory=set)  # vCPUs a reset stopped (until SIGP START)
    dumping: bool = False  # kvm->arch.pv.dumping: KVM_RUN answers -EINVAL
    dumps: list[Any] = field(factory=list)  # what the dumps produced (host data: ciphertext)
    # -- host memory management (actors._kvm, _swap, _virtio) --
    swap_ptes: dict[int, int] = field(factory=dict)  # gfn -> swap slot: swapped-out pages
    memory_released: bool = False  # exit_mmap ran: no page of this VM is the host's to touch
    virtio_ready: bool = False  # the guest shared its rings and bounce buffers
    protected_count: int = 0  # configurations left in this mm besides the current one (async teardown)

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
