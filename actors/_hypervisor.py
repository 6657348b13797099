"""The hypervisor: KVM with its QEMU side, following the Linux rules.

One actor plays QEMU's main loop and KVM's VM-level ioctls: it creates the
guests, loads their images, performs the switch into secure mode when a
guest's stage3a asks for it (DIAG 308 subcode 10: uv-semantics.md §2.2),
and tears guests down when they stop (§2.5). The vCPU threads (see
:mod:`actors._vcpu`) run the SIE loop and handle intercepts and exceptions
with the helpers of :class:`Kvm`, issuing their own UVCs concurrently.
"""

from __future__ import annotations

from typing import Any, final

from machine import AddressSpace, FrameState, Server, SieBlock, SieFormat
from machine._alloc import FrameAllocator
from protocol import (
    Cc,
    ConvToSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    DestrSecStorRequest,
    DestroySecConfRequest,
    DestroySecCpuRequest,
    ImportRc,
    QuiRequest,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    VerifyImgRequest,
)
from protocol._ipib import Ipib
from protocol._stage3 import STAGE3A_ARGS_ADDR, Stage3aArgs

from ._fabric import Actor, Fabric
from ._messages import Diag308, Diag308Result, GuestHalted, Intercept108, Shutdown, Start, Uvc, VirtioNotify, Ack
from ._vm import VirtualMachine, VmSpec, VmState

PAGE = 4096
DIAG308_RC_OK = 0x0001
DIAG308_RC_INVAL_FOR_PV = 0x0A02
ASCE_BASE = 0x1000_0000_0000
ASCE_PRIVATE = 0x100


class Kvm:
    """Host-side helpers shared by the hypervisor actor and its vCPU threads."""

    def __init__(self, server: Server, allocator: FrameAllocator, uv_actor: Actor, qui: Any) -> None:
        self.server = server
        self.memory = server.memory
        self.allocator = allocator
        self.uv_actor = uv_actor
        self.qui = qui
        self.vms: list[VirtualMachine] = []

    async def uvc(self, actor: Actor, vm: VirtualMachine | None, request: Any, *, retry: bool = True) -> Any:
        """A host UVC; with ``retry`` loop on busy (``uv_call``), else one try (``__uv_call``)."""
        from machine import HOST

        while True:
            response = await actor.call(self.uv_actor, Uvc(caller=HOST, request=request))
            if vm is not None:
                vm.stats.uvcs[(request.COMMAND.name, response.rc if response.cc != Cc.BUSY else -2)] += 1
                if response.cc == Cc.BUSY:
                    vm.stats.busy += 1
            if not retry or response.cc < Cc.BUSY:
                return response

    def fault_in(self, vm: VirtualMachine, gfn: int) -> int:
        """Map a fresh host frame behind guest frame ``gfn`` (a host DAT fault)."""
        pfn = vm.space.pfn_of(gfn)
        if pfn is None:
            pfn = self.allocator.alloc()
            vm.space.map(gfn, pfn)
        return pfn

    async def make_secure(self, actor: Actor, vm: VirtualMachine, request: Any) -> str:
        """Linux ``make_hva_secure`` for an import-like UVC: a single try, under the page lock.

        Returns ``"ok"``, ``"again"`` (busy or partial: retry later), ``"fault"``
        (not mapped: fault the page in and retry), or ``"invalid"`` (-EINVAL:
        the VMM gets SIGSEGV) — uv-semantics.md §3.5.
        """
        gfn = request.gaddr >> 12
        if vm.space.pfn_of(gfn) is None:
            return "fault"
        vm.maybe_secure.add(gfn)  # PG_arch_1 is set before the UVC
        response = await self.uvc(actor, vm, request, retry=False)
        if response.cc == Cc.OK:
            return "ok"
        if response.cc >= Cc.BUSY:
            return "again"
        if response.rc == ImportRc.GADDR_NOT_MAPPED:
            return "fault"
        return "invalid"

    async def import_page(self, actor: Actor, vm: VirtualMachine, gaddr: int) -> str:
        """Handle PGM 0x3e: import the page (CONV_TO_SEC_STOR), faulting it in first if needed."""
        while True:
            result = await self.make_secure(
                actor, vm, ConvToSecStorRequest(guest_handle=vm.config_handle, gaddr=gaddr & ~0xFFF)
            )
            if result == "fault":
                self.fault_in(vm, gaddr >> 12)
                continue
            return result

    def alloc_contiguous(self, vm: VirtualMachine | None, length: int, align: int = PAGE) -> int:
        pages = (length + PAGE - 1) // PAGE
        pfn = self.allocator.alloc_contiguous(pages, max(1, align // PAGE))
        if vm is not None:
            vm.donations.append((pfn * PAGE, pages * PAGE))
        return pfn * PAGE


@final
class HypervisorActor(Actor):
    """QEMU plus KVM's VM-level work for every guest of one server."""

    kind = "hypervisor"

    def __init__(
        self,
        fabric: Fabric,
        name: str,
        server: Server,
        allocator: FrameAllocator,
        uv_actor: Actor,
        specs: list[VmSpec],
        make_vcpu: Any,
        make_guest: Any,
    ) -> None:
        super().__init__(fabric, name)
        self.server = server
        self.allocator = allocator
        self.uv_actor = uv_actor
        self.specs = specs
        self._make_vcpu = make_vcpu
        self._make_guest = make_guest
        self.kvm: Kvm | None = None
        self._asce = ASCE_BASE

    async def main(self) -> None:
        await self.receive()  # Start from the LPAR
        qui = await self.call(self.uv_actor, Uvc(caller=_host(), request=QuiRequest()))
        self.kvm = kvm = Kvm(self.server, self.allocator, self.uv_actor, qui)
        for spec in self.specs:
            kvm.vms.append(self._create_vm(spec))
        live = len(kvm.vms)
        while live:
            env = await self.receive()
            msg = env.msg
            if isinstance(msg, Diag308):
                self.reply(env, await self._diag308(self._vm(msg.guest), msg))
            elif isinstance(msg, VirtioNotify):
                self.reply(env, Ack(detail="notified"))
            elif isinstance(msg, GuestHalted):
                vm = self._vm(msg.guest)
                self.reply(env, Ack())
                await self._teardown(vm, msg.reason)
                live -= 1
        self.send(self.uv_actor, Shutdown())

    def _vm(self, name: str) -> VirtualMachine:
        assert self.kvm is not None
        return next(vm for vm in self.kvm.vms if vm.name == name)

    # ------------------------------------------------------------ creation
    def _create_vm(self, spec: VmSpec) -> VirtualMachine:
        assert self.kvm is not None
        self._asce += 0x1000_0000
        space = AddressSpace(self._asce | ASCE_PRIVATE, spec.memory)
        self.server.add_address_space(space)
        vm = VirtualMachine(spec=spec, space=space)
        self.record("vm-create", guest=spec.name, secure=spec.secure, memory=spec.memory, cpus=spec.cpus)
        if spec.image is not None:
            self._load_image(vm, spec.image)
        for num in range(spec.cpus):
            origin = self.kvm.alloc_contiguous(None, PAGE)
            vm.sie_blocks.append(SieBlock(origin=origin))
            vm.vcpus.append(self._make_vcpu(self, vm, num))
        vm.guest = self._make_guest(self, vm)
        return vm

    def _load_image(self, vm: VirtualMachine, image: bytes) -> None:
        """QEMU loads the image file at guest address 0 (file offset = guest address)."""
        assert self.kvm is not None
        memory = self.server.memory
        zero = bytes(PAGE)
        for offset in range(0, len(image), PAGE):
            page = image[offset : offset + PAGE]
            if page.rstrip(b"\0") == b"" and page.ljust(PAGE, b"\0") == zero:
                continue  # sparse: gaps in the image stay unmapped zero pages
            pfn = self.kvm.fault_in(vm, offset // PAGE)
            memory.host_write(pfn * PAGE, page)
        self.record("image-load", guest=vm.name, bytes=len(image))

    # ---------------------------------------------------- the PV switch
    async def _diag308(self, vm: VirtualMachine, msg: Diag308) -> Diag308Result:
        if msg.subcode == 8:
            return Diag308Result(rc=DIAG308_RC_OK, secure=False, detail="IPIB stored")
        if msg.subcode != 10:
            return Diag308Result(rc=DIAG308_RC_INVAL_FOR_PV, secure=vm.protected, detail="subcode not supported")
        vm.state = VmState.BOOTING
        error = await self._protect(vm)
        if error:
            vm.state = VmState.REFUSED
            vm.reason = error
            self.record("pv-refused", guest=vm.name, reason=error)
            await self._unprotect(vm)
            return Diag308Result(rc=DIAG308_RC_INVAL_FOR_PV, secure=False, detail=error)
        vm.state = VmState.RUNNING
        self.record("pv-running", guest=vm.name)
        return Diag308Result(rc=DIAG308_RC_OK, secure=True)

    async def _protect(self, vm: VirtualMachine) -> str:
        """``s390_machine_protect``: the whole switch into secure mode; an error text, or ''."""
        kvm = self.kvm
        assert kvm is not None
        qui = kvm.qui
        memory = self.server.memory
        # KVM_PV_ENABLE: CREATE_SEC_CONF with storage sized from QUI (uv-semantics.md §1.4).
        var_len = ((qui.conf_virt_var_stor_len * (vm.spec.memory >> 20) + PAGE - 1) & ~(PAGE - 1)) + (
            qui.conf_base_virt_stor_len
        )
        base = kvm.alloc_contiguous(vm, qui.conf_base_phys_stor_len, align=16 * 1024)
        var = kvm.alloc_contiguous(vm, var_len)
        sca = kvm.alloc_contiguous(vm, PAGE)
        response = await kvm.uvc(
            self,
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
        if response.cc != Cc.OK:
            return f"CREATE_SEC_CONF rc {response.rc:#06x}"
        vm.config_handle = response.guest_handle
        for num, sie in enumerate(vm.sie_blocks):
            stor = kvm.alloc_contiguous(vm, qui.cpu_stor_len)
            response = await kvm.uvc(
                self,
                vm,
                CreateSecCpuRequest(guest_handle=vm.config_handle, num=num, stor_origin=stor, state_origin=sie.origin),
            )
            if response.cc != Cc.OK:
                return f"CREATE_SEC_CPU rc {response.rc:#06x}"
            vm.cpu_handles.append(response.cpu_handle)
            sie.sdf = SieFormat.SECURE
            sie.pv_handle_cpu = response.cpu_handle
            sie.pv_handle_config = vm.config_handle
        # stage3a's arguments tell where the header and the IPIB are (se-format.md §6).
        args_pfn = vm.space.pfn_of(STAGE3A_ARGS_ADDR >> 12)
        if args_pfn is None:
            return "no stage3a arguments in guest memory"
        args_addr = args_pfn * PAGE + (STAGE3A_ARGS_ADDR & 0xFFF)
        args = Stage3aArgs.parse(memory.host_read(args_addr, 24))
        hdr_gaddr, ipib_gaddr = args.hdr_addr(), args.ipib_addr()
        header = self._guest_bytes(vm, hdr_gaddr, args.hdr_size)
        ipib = Ipib.parse(self._guest_bytes(vm, ipib_gaddr, 0x88 + 24 * 8)[: 0x88 + 24 * 8])
        # KVM copies the header into its own memory for SET_SEC_CONF_PARAMS.
        hdr_copy = kvm.alloc_contiguous(vm, len(header))
        memory.host_write(hdr_copy, header)
        response = await kvm.uvc(
            self,
            vm,
            SetSecConfParamsRequest(
                guest_handle=vm.config_handle, sec_header_origin=hdr_copy, sec_header_len=len(header)
            ),
        )
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
                    result = await kvm.make_secure(self, vm, request)
                    if result == "ok":
                        vm.stats.pages_unpacked += 1
                        break
                    if result == "fault":
                        kvm.fault_in(vm, request.gaddr >> 12)
                    elif result == "invalid":
                        return f"UNPACK_IMG failed at {request.gaddr:#x}"
        response = await kvm.uvc(self, vm, VerifyImgRequest(handle=vm.config_handle))
        if response.cc != Cc.OK:
            return f"VERIFY_IMG rc {response.rc:#06x} rrc {response.rrc:#06x} (image does not match its header)"
        # s390_do_cpu_load_normal: LOAD, then OPERATING (uv-semantics.md §2.2 step 3).
        for handle in vm.cpu_handles:
            for state in (CpuState.OPR_LOAD, CpuState.OPR):
                response = await kvm.uvc(self, vm, CpuSetStateRequest(cpu_handle=handle, state=state))
                if response.cc != Cc.OK:
                    return f"CPU_SET_STATE rc {response.rc:#06x}"
        return ""

    def _guest_bytes(self, vm: VirtualMachine, gaddr: int, length: int) -> bytes:
        """QEMU reading non-secure guest memory (the image's loader area)."""
        out = bytearray()
        memory = self.server.memory
        while length > 0:
            off = gaddr & 0xFFF
            chunk = min(length, PAGE - off)
            pfn = vm.space.pfn_of(gaddr >> 12)
            out += bytes(chunk) if pfn is None else memory.host_read(pfn * PAGE + off, chunk)
            gaddr += chunk
            length -= chunk
        return bytes(out)

    # ------------------------------------------------------------ teardown
    async def _unprotect(self, vm: VirtualMachine) -> None:
        """``KVM_PV_DISABLE``: CPUs, then the configuration, then the pages (uv-semantics.md §2.5)."""
        kvm = self.kvm
        assert kvm is not None
        cpus_ok = True
        for handle in vm.cpu_handles:
            response = await kvm.uvc(self, vm, DestroySecCpuRequest(handle=handle))
            cpus_ok &= response.cc == Cc.OK
        vm.cpu_handles.clear()
        conf_ok = False
        if vm.config_handle and cpus_ok:
            response = await kvm.uvc(self, vm, DestroySecConfRequest(handle=vm.config_handle))
            conf_ok = response.cc == Cc.OK
        if vm.config_handle and not conf_ok:
            # Never free memory the UV may still own: leak the donations on purpose.
            self.record("leak", guest=vm.name, donations=len(vm.donations))
            vm.donations.clear()
        vm.config_handle = 0
        for sie in vm.sie_blocks:
            sie.sdf = SieFormat.NORMAL
            sie.pv_handle_cpu = sie.pv_handle_config = 0
        # s390_uv_destroy_range: every page that may still be secure.
        for gfn in sorted(vm.maybe_secure):
            pfn = vm.space.pfn_of(gfn)
            if pfn is not None:
                await kvm.uvc(self, vm, DestrSecStorRequest(paddr=pfn * PAGE))
        vm.maybe_secure.clear()

    async def _teardown(self, vm: VirtualMachine, reason: str) -> None:
        if vm.state not in (VmState.REFUSED,):
            vm.state = VmState.HALTED if not reason.startswith("error") else VmState.STOPPED
        if not vm.reason:
            vm.reason = reason
        if vm.protected:
            for handle in vm.cpu_handles:
                await self.kvm.uvc(self, vm, CpuSetStateRequest(cpu_handle=handle, state=CpuState.STP))  # type: ignore[union-attr]
            await self._unprotect(vm)
        for vcpu in vm.vcpus:
            self.send(vcpu, Shutdown())
        self.send(vm.guest, Shutdown())
        # Give the guest's memory back to the host.
        for gfn, pfn in list(vm.space.mappings()):
            vm.space.unmap(gfn)
            if self.server.memory.state_of(pfn) is FrameState.HOST:
                self.server.memory.frame(pfn).fill(None)
                self.allocator.free(pfn)
        self.server.remove_address_space(vm.space.asce)
        self.record("vm-destroy", guest=vm.name, state=vm.state.value, reason=vm.reason)


def _host() -> Any:
    from machine import HOST

    return HOST


__all__ = ["HypervisorActor", "Kvm", "Intercept108"]
