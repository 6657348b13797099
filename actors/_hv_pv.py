"""The hypervisor's secure-mode work: the PV switch at IPL, DIAG 308, and the teardown.

``diag308`` answers a guest's DIAG 308: subcode 10 runs
``s390_machine_protect`` (uv-semantics.md §2.2): CREATE_SEC_CONF with storage
sized from QUI, CREATE_SEC_CPU per vCPU, SET_SEC_CONF_PARAMS with the header
that stage3a's arguments point at, UNPACK_IMG page by page in IPIB order with
the real tweaks, VERIFY_IMG, then CPU_SET_STATE OPR_LOAD and OPR. Any error
unprotects the VM again and the guest learns rc 0x0a02. Subcodes 0, 1 and 3
are the guest's resets and re-IPL (:mod:`actors._reset`). ``teardown`` tears
a halted guest down the way its specification says (:mod:`actors._teardown`:
synchronously, asynchronously, or as at process exit), then destroys the VM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import (
    NEED_DESTROY,
    Cc,
    CpuSetStateRequest,
    CpuState,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    VerifyImgRequest,
)
from protocol._ipib import Ipib
from protocol._stage3 import STAGE3A_ARGS_ADDR, Stage3aArgs

from ._messages import Diag308, Diag308Result, Shutdown
from ._reclaim import record_host_read
from ._reset import guest_reset
from ._teardown import destroy_vm, release, unprotect
from ._vm import VirtualMachine, VmState

if TYPE_CHECKING:
    from ._hypervisor import HypervisorActor

PAGE = 4096
DIAG308_RC_OK = 0x0001
DIAG308_RC_INVAL_FOR_PV = 0x0A02


async def diag308(hv: HypervisorActor, vm: VirtualMachine, msg: Diag308) -> Diag308Result:
    if msg.subcode in (0, 1, 3):
        return await guest_reset(hv, vm, msg.subcode, msg.cpu)
    if msg.subcode == 8:
        return Diag308Result(rc=DIAG308_RC_OK, secure=False, detail="IPIB stored")
    if msg.subcode != 10:
        return Diag308Result(rc=DIAG308_RC_INVAL_FOR_PV, secure=vm.protected, detail="subcode not supported")
    vm.state = VmState.BOOTING
    error = await protect(hv, vm)
    if error:
        vm.state = VmState.REFUSED
        vm.reason = error
        hv.record("pv-refused", guest=vm.name, reason=error)
        await unprotect(hv, vm)
        return Diag308Result(rc=DIAG308_RC_INVAL_FOR_PV, secure=False, detail=error)
    vm.state = VmState.RUNNING
    hv.record("pv-running", guest=vm.name)
    if vm.spec.dump and not vm.stats.dumps:
        hv.schedule_dump(vm)
    return Diag308Result(rc=DIAG308_RC_OK, secure=True)


async def protect(hv: HypervisorActor, vm: VirtualMachine) -> str:
    """``s390_machine_protect``: the whole switch into secure mode; an error text, or ''."""
    kvm = hv.kvm
    assert kvm is not None
    qui = kvm.qui
    memory = hv.server.memory
    # KVM_PV_ENABLE: CREATE_SEC_CONF with storage sized from QUI (uv-semantics.md §1.4).
    var_len = ((qui.conf_virt_var_stor_len * (vm.spec.memory >> 20) + PAGE - 1) & ~(PAGE - 1)) + (
        qui.conf_base_virt_stor_len
    )
    base = kvm.alloc_contiguous(vm, qui.conf_base_phys_stor_len, align=16 * 1024)
    var = kvm.alloc_contiguous(vm, var_len)
    sca = kvm.alloc_contiguous(vm, PAGE)
    response = await kvm.uvc(
        hv,
        vm,
        CreateSecConfRequest(
            conf_base_stor_origin=base,
            conf_virt_stor_origin=var,
            guest_stor_origin=0,
            guest_stor_len=vm.spec.memory,
            guest_sca=sca,
            guest_asce=vm.space.asce,
        ),
    )
    vm.own_storage.append((sca, PAGE))
    if response.cc != Cc.OK:
        if response.rc & NEED_DESTROY:  # the UV kept the storage: destroy the handle before freeing it
            vm.config_handle = response.guest_handle
            vm.conf_storage = [(base, qui.conf_base_phys_stor_len), (var, var_len)]
        else:
            release(hv, vm, base, qui.conf_base_phys_stor_len)
            release(hv, vm, var, var_len)
        return f"CREATE_SEC_CONF rc {response.rc:#06x}"
    vm.config_handle = response.guest_handle
    vm.conf_storage = [(base, qui.conf_base_phys_stor_len), (var, var_len)]
    for num, sie in enumerate(vm.sie_blocks):
        stor = kvm.alloc_contiguous(vm, qui.cpu_stor_len)
        response = await kvm.uvc(
            hv,
            vm,
            CreateSecCpuRequest(guest_handle=vm.config_handle, num=num, stor_origin=stor, state_origin=sie.origin),
        )
        if response.cc != Cc.OK:
            release(hv, vm, stor, qui.cpu_stor_len)
            return f"CREATE_SEC_CPU rc {response.rc:#06x}"
        vm.cpu_handles.append(response.cpu_handle)
        vm.cpu_storage[num] = (stor, qui.cpu_stor_len)
        sie.to_secure(cpu_handle=response.cpu_handle, config_handle=vm.config_handle)
    # stage3a's arguments tell where the header and the IPIB are (se-format.md §6).
    args_pfn = vm.space.pfn_of(STAGE3A_ARGS_ADDR >> 12)
    if args_pfn is None:
        return "no stage3a arguments in guest memory"
    args_addr = args_pfn * PAGE + (STAGE3A_ARGS_ADDR & 0xFFF)
    args = Stage3aArgs.parse(memory.host_read(args_addr, 24))
    hdr_gaddr, ipib_gaddr = args.hdr_addr(), args.ipib_addr()
    header = guest_bytes(hv, vm, hdr_gaddr, args.hdr_size)
    ipib = Ipib.parse(guest_bytes(hv, vm, ipib_gaddr, 0x88 + 24 * 8)[: 0x88 + 24 * 8])
    # KVM copies the header into its own memory for SET_SEC_CONF_PARAMS.
    hdr_copy = kvm.alloc_contiguous(vm, len(header))
    memory.host_write(hdr_copy, header)
    response = await kvm.uvc(
        hv,
        vm,
        SetSecConfParamsRequest(
            guest_handle=vm.config_handle, sec_header_origin=hdr_copy, sec_header_len=len(header)
        ),
    )
    release(hv, vm, hdr_copy, len(header))  # KVM's copy is freed once the UV has read it
    if response.cc != Cc.OK:
        why = "no key slot for this host" if response.rc == 0x0108 else "header refused"
        return f"SET_SEC_CONF_PARAMS rc {response.rc:#06x} rrc {response.rrc:#06x} ({why})"
    # Unpack every component page by page, in IPIB order (kvm_s390_pv_unpack).
    for comp in ipib.components:
        for offset in range(0, comp.length, PAGE):
            request = UnpackImgRequest(
                guest_handle=vm.config_handle, gaddr=comp.addr + offset, tweak=(comp.tweak_prefix, offset)
            )
            while True:
                result = await kvm.make_secure(hv, vm, request)
                if result == "ok":
                    vm.stats.pages_unpacked += 1
                    break
                if result == "fault":
                    kvm.fault_in(vm, request.gaddr >> 12)
                elif result == "invalid":
                    return f"UNPACK_IMG failed at {request.gaddr:#x}"
    response = await kvm.uvc(hv, vm, VerifyImgRequest(handle=vm.config_handle))
    if response.cc != Cc.OK:
        return f"VERIFY_IMG rc {response.rc:#06x} rrc {response.rrc:#06x} (image does not match its header)"
    # s390_do_cpu_load_normal: LOAD, then OPERATING (uv-semantics.md §2.2 step 3).
    for handle in vm.cpu_handles:
        for state in (CpuState.OPR_LOAD, CpuState.OPR):
            response = await kvm.uvc(hv, vm, CpuSetStateRequest(cpu_handle=handle, state=state))
            if response.cc != Cc.OK:
                return f"CPU_SET_STATE rc {response.rc:#06x}"
    vm.stopped.clear()
    return ""


def guest_bytes(hv: HypervisorActor, vm: VirtualMachine, gaddr: int, length: int) -> bytes:
    """QEMU reading non-secure guest memory (the image's loader area)."""
    out = bytearray()
    memory = hv.server.memory
    while length > 0:
        off = gaddr & 0xFFF
        chunk = min(length, PAGE - off)
        pfn = vm.space.pfn_of(gaddr >> 12)
        if pfn is None:
            out += bytes(chunk)
        else:
            data = memory.host_read(pfn * PAGE + off, chunk)
            record_host_read(hv, hv.kvm, vm, gaddr >> 12, pfn, data, reader="qemu")  # the canary monitor
            out += data
        gaddr += chunk
        length -= chunk
    return bytes(out)


async def teardown(hv: HypervisorActor, vm: VirtualMachine, reason: str) -> None:
    """The guest halted: stop its CPUs, tear its configuration down, destroy the VM (§2.5)."""
    if vm.state not in (VmState.REFUSED,):
        vm.state = VmState.HALTED if not reason.startswith("error") else VmState.STOPPED
    if not vm.reason:
        vm.reason = reason
    if vm.protected:
        for handle in vm.cpu_handles:  # QEMU stops every vCPU first
            await hv.kvm.uvc(hv, vm, CpuSetStateRequest(cpu_handle=handle, state=CpuState.STP))
        vm.stats.teardown = await unprotect(hv, vm, vm.spec.teardown)
        hv.record("teardown", guest=vm.name, mode=vm.stats.teardown)
    for vcpu in vm.vcpus:
        hv.send(vcpu, Shutdown())
    hv.send(vm.guest, Shutdown())
    await destroy_vm(hv, vm)
    hv.record("vm-destroy", guest=vm.name, state=vm.state.value, reason=vm.reason, leaked=vm.stats.leaked_pages)
