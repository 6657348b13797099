"""A vCPU: KVM's vCPU thread and the CPU that runs the guest inside SIE.

``_run`` is the SIE loop of ``__vcpu_run``: enter SIE, let the guest execute
its operation, and on every exit handle what the exit asks for, then enter
again. The guest never sees the exits that the host handles (a host page
fault, PGM 0x3e, a busy import): it simply executes the same operation again.

Exits handled here (uv-semantics.md §3.2, §3.3, §4, §5):

* host DAT fault → fault the page in;
* PGM 0x3e (non-secure storage access) → import the page, one UVC try,
  -EAGAIN → re-enter and fault again;
* PGM 0x3d inside SIE (a page still secure for an old configuration) →
  destroy it, or export it if that fails;
* intercept 104 (DIAG 0x500) → QEMU's virtio notification;
* intercept 108 (DIAG 0x9c yield, SET PREFIX, a REMOVE_SHARED on a pinned
  page) → yield, read the prefix from the SIDA, or unpin.
"""

from __future__ import annotations

from typing import Any, final

from machine import (
    Caller,
    ProgramInterrupt,
    ValidityIntercept,
    guest_frame,
    sie_entry,
    sie_exit,
)
from machine._costs import GUEST_PAGE_READ, GUEST_PAGE_WRITE, INTERCEPT_HANDLING
from protocol import (
    Cc,
    QuiRequest,
    RemoveSharedAccessRequest,
    SetSharedAccessRequest,
    UvcContext,
)

from protocol._stage3 import parse_stage3b

from ._fabric import Actor, Fabric
from ._messages import GuestException, Diag308, GuestHalted, Intercept108, OpDone, RunOp, Shutdown, Uvc, VirtioNotify
from ._vcpu_mm import GuestStop, handle_exception, unpin
from ._vm import VirtualMachine
from ._workload import Compute, Diag9c, Diag500, GuestQui, Halt, Read, SetPrefix, Share, Stage3b, Unshare, Write

PAGE = 4096
MAX_EXITS_PER_OP = 10_000


@final
class VcpuActor(Actor):
    """One virtual CPU of one guest."""

    kind = "vcpu"

    def __init__(self, fabric: Fabric, name: str, hypervisor: Any, vm: VirtualMachine, num: int) -> None:
        super().__init__(fabric, name)
        self.hv = hypervisor
        self.vm = vm
        self.num = num
        self.sie = vm.sie_blocks[num]

    @property
    def kvm(self) -> Any:
        return self.hv.kvm

    async def main(self) -> None:
        while True:
            env = await self.receive()
            msg = env.msg
            if isinstance(msg, Shutdown):
                return
            if isinstance(msg, RunOp):
                try:
                    value = await self._run(msg.op)
                except GuestStop as stop:
                    self.send(env.sender, OpDone(seq=msg.seq, cpu=self.num, ok=False, error=str(stop)))
                else:
                    self.send(env.sender, OpDone(seq=msg.seq, cpu=self.num, ok=True, value=value))
            elif isinstance(msg, (Diag308, Halt)):  # boot and halt requests from the guest OS
                self.reply(env, await self._host_request(msg))

    async def _host_request(self, msg: Any) -> Any:
        if isinstance(msg, Halt):
            await self.call(self.hv, GuestHalted(guest=self.vm.name, reason="halt"))
            return OpDone(seq=-1, cpu=self.num, ok=True)
        self.vm.stats.intercepts["diag308"] += 1
        return await self.call(self.hv, msg)

    # ------------------------------------------------------------ SIE loop
    async def _run(self, op: Any) -> Any:
        """Execute one guest operation, handling every SIE exit on the way."""
        for _ in range(MAX_EXITS_PER_OP):
            try:
                self._enter()
                try:
                    return await self._execute(op)
                finally:
                    self._leave()
            except ProgramInterrupt as pgm:
                await handle_exception(self, pgm)
            except _Intercept as icpt:
                if icpt.done:
                    return icpt.value
        raise GuestStop(f"vCPU {self.num}: no progress after {MAX_EXITS_PER_OP} SIE exits")

    def _enter(self) -> None:
        vm = self.vm
        if vm.protected:
            try:
                sie_entry(self.kvm_uv(), self.sie)
            except ValidityIntercept as validity:
                vm.stats.intercepts["validity"] += 1
                self.record("sie-exit", guest=vm.name, cpu=self.num, icpt="validity", reason=validity.reason)
                raise GuestStop(f"validity intercept {validity.reason:#06x}: {validity.why}") from None

    def _leave(self) -> None:
        if self.vm.protected:
            cpu = self.kvm_uv().cpus.get(self.sie.pv_handle_cpu)
            if cpu is not None:
                sie_exit(self.kvm_uv(), cpu)

    def kvm_uv(self) -> Any:
        return self.kvm.uv_actor.uv

    # ------------------------------------------------------ in SIE: the guest
    async def _execute(self, op: Any) -> Any:
        vm = self.vm
        config = vm.config_handle
        memory = self.kvm.memory
        if isinstance(op, Write):
            guest = vm.guest
            for i in range(op.pages):
                gaddr = op.addr + i * PAGE
                frame = guest_frame(memory, vm.space, config, gaddr)
                frame.fill(guest.page_for_write(gaddr))
                vm.stats.pages_written += 1
            await self.sleep(GUEST_PAGE_WRITE * op.pages)
            return None
        if isinstance(op, Read):
            out = []
            for i in range(op.pages):
                gaddr = op.addr + i * PAGE
                out.append(guest_frame(memory, vm.space, config, gaddr).read())
                vm.stats.pages_read += 1
            await self.sleep(GUEST_PAGE_READ * op.pages)
            return out
        if isinstance(op, Compute):
            await self.sleep(op.ns)
            return None
        if isinstance(op, Diag500):
            return await self._intercept("104 diag500", VirtioNotify(guest=vm.name, queue=op.queue))
        if isinstance(op, Diag9c):
            vm.stats.intercepts["108 diag9c" if vm.protected else "diag9c"] += 1
            self.record("sie-exit", guest=vm.name, cpu=self.num, icpt=108 if vm.protected else 4, diag=0x9C)
            await self.yield_()
            raise _Intercept(done=True)
        if isinstance(op, SetPrefix):
            for gaddr in (op.addr, op.addr + PAGE):
                guest_frame(memory, vm.space, config, gaddr)  # prefix pages must be accessible
            vm.stats.intercepts["108 spx" if vm.protected else "spx"] += 1
            self.record("sie-exit", guest=vm.name, cpu=self.num, icpt=108 if vm.protected else 4, ipa=0xB210)
            raise _Intercept(done=True)
        if isinstance(op, Share | Unshare):
            guest_frame(memory, vm.space, config, op.addr)  # the guest touches the page first
            return await self._guest_uvc(op)
        if isinstance(op, GuestQui):
            return await self._guest_uvc(op)
        if isinstance(op, Stage3b):
            return self._stage3b()
        raise GuestStop(f"operation {type(op).__name__} cannot run on a vCPU")

    def _stage3b(self) -> bytes:
        """The stage3b loader (se-format.md §6 step 4), reading only secure guest memory.

        The CPU starts at the PSW from the SE header, which only the UV knows:
        that is where stage3b lies. Its arguments locate the kernel and the
        command line; the kernel must carry ``S390EP`` at 0x10008.
        """
        vm = self.vm
        memory = self.kvm.memory
        psw = self.kvm_uv().cpus[self.sie.pv_handle_cpu].cpu.psw
        blob = guest_frame(memory, vm.space, vm.config_handle, psw.addr & ~0xFFF).read()
        args = parse_stage3b(blob)
        marker = guest_frame(memory, vm.space, vm.config_handle, args.kernel.src + 0x10000).read(8, 6)
        if marker != b"S390EP":
            raise GuestStop("stage3b: no S390EP marker in the kernel")
        cmdline = b""
        if args.cmdline.size:
            start = args.cmdline.src
            cmdline = guest_frame(memory, vm.space, vm.config_handle, start).read(0, min(args.cmdline.size, PAGE))
        return cmdline.rstrip(b"\0")

    async def _guest_uvc(self, op: Any) -> Any:
        vm = self.vm
        if not vm.protected:
            return None  # a regular guest has no ultravisor: SET/REMOVE_SHARED are no-ops for it
        if isinstance(op, Share):
            request: Any = SetSharedAccessRequest(paddr=op.addr)
        elif isinstance(op, Unshare):
            request = RemoveSharedAccessRequest(paddr=op.addr)
        else:
            request = QuiRequest()
        caller = Caller(context=UvcContext.GUEST, config_handle=vm.config_handle, cpu_handle=self.sie.pv_handle_cpu)
        response = await self.call(self.kvm.uv_actor, Uvc(caller=caller, request=request))
        if isinstance(response, GuestException):
            raise ProgramInterrupt(response.code, response.address)
        if isinstance(response, Intercept108):
            vm.stats.intercepts["108 uvc"] += 1
            self.record("sie-exit", guest=vm.name, cpu=self.num, icpt=108, ipa=0xB9A4)
            await unpin(self, op.addr)
            raise _Intercept(done=False)  # the guest executes the UVC again
        vm.stats.uvcs[(f"guest {request.COMMAND.name}", response.rc)] += 1
        if response.cc == Cc.BUSY:
            raise _Intercept(done=False)
        if response.cc != Cc.OK and isinstance(op, Share | Unshare):
            # Linux panics rather than go on with private data exposed (uv-semantics.md §4).
            raise GuestStop(f"{request.COMMAND.name} failed rc {response.rc:#06x}: the guest stops")
        return response.rc

    async def _intercept(self, label: str, message: Any) -> Any:
        vm = self.vm
        vm.stats.intercepts[label if vm.protected else label.split()[-1]] += 1
        self.record("sie-exit", guest=vm.name, cpu=self.num, icpt=104 if vm.protected else 4, what=label)
        await self.sleep(INTERCEPT_HANDLING)
        reply = await self.call(self.hv, message)
        raise _Intercept(done=True, value=getattr(reply, "detail", None))


class _Intercept(Exception):
    """An intercept ended this SIE pass; ``done`` says whether the operation completed."""

    def __init__(self, *, done: bool, value: Any = None) -> None:
        self.done = done
        self.value = value
