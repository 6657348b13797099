"""What a vCPU thread does with the memory exceptions of a SIE exit (uv-semantics.md §3).

* a host DAT fault (PGM 0x11 at a guest address) → fault the page in;
* PGM 0x3e, non-secure storage access → import the page with one UVC try
  (``make_hva_secure``); busy → -EAGAIN → re-enter SIE and fault again; any
  other error → -EINVAL → the VMM gets SIGSEGV and the guest stops;
* PGM 0x3d inside SIE → the page is still secure for an old configuration:
  destroy it, export it if that fails (``__kvm_s390_pv_destroy_page``);
* intercept 108 for REMOVE_SHARED on a pinned page → UNPIN_PAGE_SHARED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from machine import PgmCode, ProgramInterrupt
from machine._costs import PAGE_FAULT_HANDLING
from protocol import Cc, ConvFromSecStorRequest, DestrSecStorRequest, UnpinPageSharedRequest

if TYPE_CHECKING:
    from ._vcpu import VcpuActor

PAGE = 4096


class GuestStop(Exception):
    """The guest cannot go on (the reason is the message)."""


async def handle_exception(vcpu: VcpuActor, pgm: ProgramInterrupt) -> None:
    vm = vcpu.vm
    kvm = vcpu.kvm
    gaddr = pgm.address or 0
    vm.stats.exceptions[f"{pgm.code:#04x}"] += 1
    vcpu.record("sie-exit", guest=vm.name, cpu=vcpu.num, pgm=int(pgm.code), gaddr=gaddr)
    await vcpu.sleep(PAGE_FAULT_HANDLING)
    if pgm.code == PgmCode.PAGE_TRANSLATION:
        kvm.fault_in(vm, gaddr >> 12)
    elif pgm.code == PgmCode.NON_SECURE_STORAGE_ACCESS:
        result = await kvm.import_page(vcpu, vm, gaddr)
        if result == "invalid":
            raise GuestStop(f"import of {gaddr:#x} failed: the VMM gets SIGSEGV")
    elif pgm.code == PgmCode.SECURE_STORAGE_ACCESS:
        await destroy_stale(vcpu, gaddr)
    else:
        raise GuestStop(f"program interruption {pgm.code:#04x} at {gaddr:#x}")


async def destroy_stale(vcpu: VcpuActor, gaddr: int) -> None:
    """0x3d inside SIE: the page is secure for an old configuration (uv-semantics.md §3.3)."""
    vm = vcpu.vm
    pfn = vm.space.pfn_of(gaddr >> 12)
    if pfn is None:
        return
    response = await vcpu.kvm.uvc(vcpu, vm, DestrSecStorRequest(paddr=pfn * PAGE))
    if response.cc != Cc.OK:
        response = await vcpu.kvm.uvc(vcpu, vm, ConvFromSecStorRequest(paddr=pfn * PAGE))
        if response.cc != Cc.OK:
            raise GuestStop(f"secure storage violation at {gaddr:#x}")


async def unpin(vcpu: VcpuActor, gaddr: int) -> None:
    """After intercept 108 for REMOVE_SHARED on a pinned page: UNPIN_PAGE_SHARED (§4)."""
    vm = vcpu.vm
    await vcpu.kvm.make_secure(vcpu, vm, UnpinPageSharedRequest(guest_handle=vm.config_handle, gaddr=gaddr))

