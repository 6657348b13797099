"""QEMU's machine resets for a guest's DIAG 308 (``s390_machine_reset``).

uv-semantics.md §2.4 and uv-interface.md §6.

* **Subcode 0 (modified clear) and 1 (load normal)**: the guest stays what
  it is. For a secure guest ``s390_pv_prepare_reset`` stops every CPU
  (CPU_SET_STATE STP), unshares all memory (SET_UNSHARE_ALL) and prepares
  the reset (PREPARE_RESET); then every CPU is reset (CPU_RESET_CLEAR for
  subcode 0; for subcode 1 CPU_RESET_INITIAL on the CPU that issued the
  DIAG and CPU_RESET on the others); then the issuing CPU is loaded
  (CPU_SET_STATE OPR_LOAD) and started (OPR). Until that load the UV
  refuses SIE entry. The CPU restarts at the PSW the guest stored at its
  absolute address 0; memory is kept. The other CPUs stay stopped until
  the guest starts them (SIGP START). A regular guest gets the same resets
  on the CPU state the hypervisor holds, and QEMU loads the restart PSW
  from guest memory itself.
* **Subcode 3 (re-IPL)**: the configuration is torn down
  (``s390_machine_unprotect``: asynchronously for guests over 2 GiB where
  the guest's teardown mode asks for it) and the machine IPLs the image
  again in non-secure mode; the guest's loader then asks for a new secure
  configuration (DIAG 308 subcodes 8 and 10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machine import PgmCode, ProgramInterrupt, Psw
from machine._cpu import PSW_MASK_64
from protocol import (
    Cc,
    CpuResetClearRequest,
    CpuResetInitialRequest,
    CpuResetRequest,
    CpuSetStateRequest,
    CpuState,
    PrepareResetRequest,
    SetUnshareAllRequest,
)

from ._messages import Diag308Result
from ._teardown import unprotect
from ._vm import VmState

if TYPE_CHECKING:
    from ._vm import VirtualMachine

PAGE = 4096
DIAG308_RC_OK = 0x0001


async def guest_reset(hv: Any, vm: VirtualMachine, subcode: int, ipl_cpu: int) -> Diag308Result:
    """DIAG 308 subcode 0, 1 or 3 from CPU ``ipl_cpu``; what the guest's CPU learns."""
    vm.stats.reboots += 1
    hv.record("guest-reset", guest=vm.name, subcode=subcode, cpu=ipl_cpu, secure=vm.protected)
    if subcode == 3:
        return await _reipl(hv, vm, ipl_cpu)
    if vm.protected:
        error = await _secure_reset(hv, vm, subcode, ipl_cpu)
        if error:
            hv.record("guest-reset-failed", guest=vm.name, why=error)
            return Diag308Result(rc=0x0102, secure=True, detail=error)
    else:
        _regular_reset(hv, vm, subcode, ipl_cpu)
    vm.stopped = {n for n in range(len(vm.vcpus)) if n != ipl_cpu}
    return Diag308Result(rc=DIAG308_RC_OK, secure=vm.protected, detail=f"reset (subcode {subcode})")


async def _secure_reset(hv: Any, vm: VirtualMachine, subcode: int, ipl_cpu: int) -> str:
    """The UVC sequence of uv-interface.md §6; an error text, or ''."""
    kvm = hv.kvm
    handle = vm.config_handle
    steps: list[Any] = [CpuSetStateRequest(cpu_handle=h, state=CpuState.STP) for h in vm.cpu_handles]
    steps += [SetUnshareAllRequest(handle=handle), PrepareResetRequest(handle=handle)]
    for num, cpu in enumerate(vm.cpu_handles):
        if subcode == 0:
            steps.append(CpuResetClearRequest(handle=cpu))
        elif num == ipl_cpu:
            steps.append(CpuResetInitialRequest(handle=cpu))
        else:
            steps.append(CpuResetRequest(handle=cpu))
    ipl = vm.cpu_handles[ipl_cpu]
    steps += [CpuSetStateRequest(cpu_handle=ipl, state=CpuState.OPR_LOAD)]
    steps += [CpuSetStateRequest(cpu_handle=ipl, state=CpuState.OPR)]
    for request in steps:
        response = await kvm.uvc(hv, vm, request)
        if response.cc != Cc.OK:
            return f"{request.COMMAND.name} rc {response.rc:#06x}"
    # KVM's own copies follow the CPU resets: the prefix and (initial, clear) the CPU timer.
    for num, sie in enumerate(vm.sie_blocks):
        assert sie.pv is not None
        if subcode == 0 or num == ipl_cpu:
            sie.pv.prefix = 0
            sie.pv.cputm = 0
    return ""


def _regular_reset(hv: Any, vm: VirtualMachine, subcode: int, ipl_cpu: int) -> None:
    """The same resets on state the hypervisor holds; QEMU loads the PSW at absolute 0 itself."""
    for num, sie in enumerate(vm.sie_blocks):
        assert sie.cpu is not None
        if subcode == 0:
            sie.cpu.clear_reset()
        elif num == ipl_cpu:
            sie.cpu.initial_reset()
    cpu = vm.sie_blocks[ipl_cpu].cpu
    assert cpu is not None
    cpu.psw = _psw_at_zero(hv, vm)


def _psw_at_zero(hv: Any, vm: VirtualMachine) -> Psw:
    pfn = vm.space.pfn_of(0)
    word = 0
    if pfn is not None:
        try:
            word = int.from_bytes(hv.server.memory.host_read(pfn * PAGE, 8), "big")
        except ProgramInterrupt as pgm:  # never for a regular guest's own memory
            if pgm.code != PgmCode.SECURE_STORAGE_ACCESS:
                raise
    return Psw(mask=PSW_MASK_64, addr=word & 0x7FFFFFFF)


async def _reipl(hv: Any, vm: VirtualMachine, ipl_cpu: int) -> Diag308Result:
    """Subcode 3: unprotect, then IPL the image again in non-secure mode."""
    how = await unprotect(hv, vm, vm.spec.teardown if vm.spec.teardown != "exit" else "sync")
    if how != "none":
        vm.stats.teardown = how
    hv.record("reipl", guest=vm.name, teardown=how)
    for sie in vm.sie_blocks:
        sie.to_normal()
    if vm.spec.image is not None:
        hv.load_image(vm, vm.spec.image)
    cpu = vm.sie_blocks[ipl_cpu].cpu
    assert cpu is not None
    cpu.psw = _psw_at_zero(hv, vm)
    vm.stopped = {n for n in range(len(vm.vcpus)) if n != ipl_cpu}
    vm.state = VmState.BOOTING
    return Diag308Result(rc=DIAG308_RC_OK, secure=False, detail="re-ipl")
