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

from machine import AddressSpace, Server, SieBlock
from machine._alloc import FrameAllocator
from protocol import QuiRequest

from ._dump import DUMP_DELAY_NS, DumpRequest, dump_guest
from ._fabric import Actor, Fabric
from ._hv_pv import diag308, teardown
from ._kvm import Kvm
from ._ultravisor import uvc_retry
from ._messages import Ack, Diag308, GuestHalted, Shutdown, VirtioNotify
from ._vm import VirtualMachine, VmSpec

PAGE = 4096
ASCE_BASE = 0x1000_0000_0000
ASCE_PRIVATE = 0x100


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
        self.kvm_options: dict[str, Any] = {}  # Kvm's keyword arguments (bugs, memory limit, helper threads)
        self._asce = ASCE_BASE

    async def main(self) -> None:
        await self.receive()  # Start from the LPAR
        qui = await uvc_retry(self, self.uv_actor, QuiRequest())
        self.kvm = kvm = Kvm(self.server, self.allocator, self.uv_actor, qui, **self.kvm_options)
        for spec in self.specs:
            kvm.vms.append(self._create_vm(spec))
        live = len(kvm.vms)
        while live:
            env = await self.receive()
            msg = env.msg
            if isinstance(msg, Diag308):
                self.reply(env, await diag308(self, self._vm(msg.guest), msg))
            elif isinstance(msg, VirtioNotify):
                if kvm.virtio is not None:
                    kvm.virtio.submit(env)  # type: ignore[attr-defined]  # the device answers the vCPU
                else:
                    self.reply(env, Ack(detail="notified"))
            elif isinstance(msg, GuestHalted):
                vm = self._vm(msg.guest)
                self.reply(env, Ack())
                await teardown(self, vm, msg.reason)
                live -= 1
            elif isinstance(msg, DumpRequest):
                vm = self._vm(msg.guest)
                if vm.protected:
                    await dump_guest(self, vm)
        for helper in (kvm.reclaimer, kvm.virtio):
            if helper is not None:
                self.send(helper, Shutdown())
        self.send(self.uv_actor, Shutdown())

    def schedule_dump(self, vm: VirtualMachine) -> None:
        """Dump ``vm`` a little after it started running (actors._dump)."""
        self.send_after(DUMP_DELAY_NS, self, DumpRequest(guest=vm.name))

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
            self.load_image(vm, spec.image)
        for num in range(spec.cpus):
            origin = self.kvm.alloc_contiguous(None, PAGE)
            vm.own_storage.append((origin, PAGE))  # freed when the VM is destroyed
            vm.sie_blocks.append(SieBlock(origin=origin))
            vm.vcpus.append(self._make_vcpu(self, vm, num))
        vm.guest = self._make_guest(self, vm)
        return vm

    def load_image(self, vm: VirtualMachine, image: bytes) -> None:
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
    # ------------------------------------------------------------ teardown
