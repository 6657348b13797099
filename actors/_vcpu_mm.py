"""What a vCPU thread does with the memory exceptions of a SIE exit (uv-semantics.md §3).

* a host DAT fault (PGM 0x11 at a guest address) → swap the page in, or map
  a fresh one (:meth:`Kvm.handle_dat_fault`);
* PGM 0x3e, non-secure storage access → import the page with one UVC try
  (``make_hva_secure``); -EAGAIN → re-enter SIE and fault again; -ENXIO →
  fault it in; -EINVAL → the VMM gets SIGSEGV and the guest stops;
* PGM 0x3d inside SIE → the page is still secure for an old configuration:
  destroy it, export it if that fails (``__kvm_s390_pv_destroy_page``); if
  both fail, "Secure storage violation" and SIGSEGV;
* intercept 108 for REMOVE_SHARED on a pinned page → UNPIN_PAGE_SHARED
  (:func:`unpin`).

Every exception is a ``sie-exit`` event with ``pgm``; its end is a
``vcpu-resume`` event (the vCPU enters SIE again) or a ``guest-stop`` event
naming the cause, which the progress monitor judges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from machine import PgmCode, ProgramInterrupt
from machine._costs import PAGE_FAULT_HANDLING
from machine._uv_storage import (
    RC_GADDR_ALIASED,
    RC_IMPORT_INTEGRITY,
    RC_OWNED_ELSEWHERE,
)
from protocol import UnpinPageSharedRequest

if TYPE_CHECKING:
    from ._vcpu import VcpuActor

PAGE = 4096

CAUSE_STATED: Final = "stated"
"""A stop the guest (or its program) brought about: nothing for a monitor to object to."""
CAUSE_HOST_ERROR: Final = "host-error"
"""The host failed without anybody attacking it: a host bug."""
ATTACKABLE: Final = frozenset({"integrity", "owned-elsewhere", "aliased", "import-failed", "storage-violation"})
"""Causes that are right only where a hostile host changed or remapped the guest's page."""
_IMPORT_CAUSES: Final = {
    RC_IMPORT_INTEGRITY: "integrity",
    RC_OWNED_ELSEWHERE: "owned-elsewhere",
    RC_GADDR_ALIASED: "aliased",
}


SLOW: Final = (500, 2_000, 6_000, 20_000, 50_000)
"""The ``sie_exit_delay`` fault site: the vCPU thread is late to handle an exception (it shares its host CPU)."""


def _delay(vcpu: VcpuActor) -> int:
    faults = vcpu.kvm.faults
    if faults.sie_exit_delay and faults.fires(vcpu, "sie-exit-delay", faults.sie_exit_delay):
        return SLOW[vcpu.choose("sie-exit-delay-ns", len(SLOW))]
    return 0


class GuestStop(Exception):
    """The guest cannot go on (the reason is the message; ``cause`` classifies it for the monitors)."""

    def __init__(self, reason: str, *, cause: str = CAUSE_STATED) -> None:
        super().__init__(reason)
        self.cause = cause


def _stop(vcpu: VcpuActor, reason: str, cause: str, gaddr: int) -> GuestStop:
    vcpu.record("guest-stop", guest=vcpu.vm.name, cpu=vcpu.num, cause=cause, gaddr=gaddr, reason=reason)
    return GuestStop(reason, cause=cause)


async def handle_exception(vcpu: VcpuActor, pgm: ProgramInterrupt) -> None:
    vm = vcpu.vm
    kvm = vcpu.kvm
    gaddr = pgm.address or 0
    vm.stats.exceptions[f"{pgm.code:#04x}"] += 1
    vcpu.record("sie-exit", guest=vm.name, cpu=vcpu.num, pgm=int(pgm.code), gaddr=gaddr)
    await vcpu.sleep(PAGE_FAULT_HANDLING + _delay(vcpu))
    if pgm.code == PgmCode.PAGE_TRANSLATION:
        await kvm.handle_dat_fault(vcpu, vm, gaddr >> 12)
    elif pgm.code == PgmCode.NON_SECURE_STORAGE_ACCESS:
        result = await kvm.import_page(vcpu, vm, gaddr)
        if result == "invalid":
            cause = _IMPORT_CAUSES.get(result.rc, "import-failed")
            raise _stop(
                vcpu, f"import of {gaddr:#x} failed rc {result.rc:#06x}: the VMM gets SIGSEGV", cause, gaddr
            )
    elif pgm.code == PgmCode.SECURE_STORAGE_ACCESS:
        await destroy_stale(vcpu, gaddr)
    else:
        raise _stop(vcpu, f"program interruption {pgm.code:#04x} at {gaddr:#x}", CAUSE_STATED, gaddr)
    vcpu.record("vcpu-resume", guest=vm.name, cpu=vcpu.num)


async def destroy_stale(vcpu: VcpuActor, gaddr: int) -> None:
    """0x3d inside SIE: the page is secure for an old configuration (uv-semantics.md §3.3)."""
    vm = vcpu.vm
    if not await vcpu.kvm.destroy_page(vcpu, vm, gaddr >> 12):
        raise _stop(vcpu, f"secure storage violation at {gaddr:#x}: SIGSEGV", "storage-violation", gaddr)


async def unpin(vcpu: VcpuActor, gaddr: int) -> None:
    """After intercept 108 for REMOVE_SHARED on a pinned page: UNPIN_PAGE_SHARED (§4).

    ``handle_pv_uvc``: -EINVAL and -ENXIO are ignored ("the guest will exit
    again for the UVC and we will retry the unpin"); -EAGAIN goes to
    userspace, which retries. Either way the guest issues its
    REMOVE_SHARED again.
    """
    vm = vcpu.vm
    await vcpu.kvm.make_secure(vcpu, vm, UnpinPageSharedRequest(guest_handle=vm.config_handle, gaddr=gaddr & ~0xFFF))
