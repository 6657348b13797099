"""A vCPU: KVM's vCPU thread and the CPU that runs the guest inside SIE.

``_run`` is the SIE loop of ``__vcpu_run``: enter SIE, let the guest execute
its operation, and on every exit handle what the exit asks for, then enter
again. The guest never sees the exits that the host handles (a host page
fault, PGM 0x3e, a busy import, a prefix page to import): it executes the
same operation again. An intercepted instruction is completed by the next
entry (for a secure guest by the ultravisor, uv-interface.md §6), and the
operation goes on from there.

Two roles live here, kept apart on purpose:

* the **CPU in SIE** (``_execute`` and what it calls) runs the guest's
  program: for a secure guest on the state the ultravisor returns from
  :func:`machine.sie_entry`, which is never stored anywhere the host can
  reach; for a regular guest on the SIE block's format-0 state;
* the **host** (``_enter``/``_leave`` bookkeeping, :mod:`actors._intercepts`,
  :mod:`actors._vcpu_mm`) sees only the SIE block: for a secure guest its
  :class:`machine.SecureSieView`.

Exits handled (uv-semantics.md §3, §4, §5): host DAT fault, PGM 0x3e, PGM
0x3d in SIE, validity (the guest stops), intercept 104 (DIAG 0x500, 0x288),
108 (DIAG 0x9c, 0x44, 0x308, SET PREFIX, SIGP, a REMOVE_SHARED on a pinned
page) and 112 (prefix pages not secure); a regular guest's intercepts are
instruction intercepts (4) with its real register numbers.
"""

from __future__ import annotations

from typing import Any, final

from machine import (
    Caller,
    CpuState,
    PrefixIntercept,
    ProgramInterrupt,
    Psw,
    ValidityIntercept,
    diag_intercept,
    guest_frame,
    sie_entry,
    sie_exit,
    sigp_intercept,
    spx_intercept,
    uvc_intercept,
)
from machine._costs import GUEST_PAGE_READ, GUEST_PAGE_WRITE
from machine._cpu import PSW_MASK_64
from protocol import (
    Cc,
    QuiRequest,
    RemoveSharedAccessRequest,
    SetSharedAccessRequest,
    UvcContext,
)
from protocol._stage3 import KERNEL_ENTRY, parse_stage3b, short_psw

from ._fabric import Actor, Fabric
from ._guest_io import IO_STEPS, execute_io
from ._intercepts import (
    ICPT_INSTRUCTION,
    SIGP_START,
    GuestExit,
    handle_intercept,
    handle_prefix,
)
from ._messages import (
    Diag308,
    GuestException,
    GuestHalted,
    Intercept108,
    OpDone,
    RunOp,
    Shutdown,
    Uvc,
)
from ._guest_attest import attest, receive_secret
from ._vcpu_mm import GuestStop, handle_exception
from ._vm import VirtualMachine
from ._workload import (
    Attest,
    ReceiveSecret,
    Compute,
    Diag9c,
    Diag44,
    Diag288,
    Diag500,
    GuestQui,
    Halt,
    Read,
    Reboot,
    SetPrefix,
    Share,
    SigpStart,
    Stage3b,
    Unshare,
    Write,
)

PAGE = 4096
MAX_EXITS_PER_OP = 10_000
DUMP_POLL_NS = 5_000
"""How long a vCPU thread waits before it tries KVM_RUN again while a dump blocks it."""
VIRTIO_SCHID = 0x0001_0000
"""The subchannel id a guest passes to DIAG 0x500 (the "one" bit, subchannel 0)."""


class _Progress:
    """How far one operation got: whether its intercepted instruction was issued."""

    __slots__ = ("issued", "started")

    def __init__(self) -> None:
        self.started = False
        self.issued = False


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
        self.in_sie = False  # KVM's PROG_IN_SIE: what kvm_s390_vcpu_block_all waits for
        self.exit_at = 0  # when this vCPU last left SIE (CPU-timer accounting)

    @property
    def kvm(self) -> Any:
        return self.hv.kvm

    @property
    def uv(self) -> Any:
        """The firmware the CPU's SIE instruction talks to (not a host object)."""
        return self.kvm.uv_actor.uv

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
        progress = _Progress()
        for _ in range(MAX_EXITS_PER_OP):
            await self._run_fence()
            try:
                regs = self._enter()
            except PrefixIntercept:
                await handle_prefix(self)
                continue
            outcome: BaseException | None = None
            try:
                value = await self._execute(op, regs, progress)
            except (ProgramInterrupt, GuestExit) as exc:
                outcome = exc
            finally:
                self._leave()
            if outcome is None:
                return value
            if isinstance(outcome, ProgramInterrupt):
                await handle_exception(self, outcome)
            else:
                await handle_intercept(self, outcome)
        raise GuestStop(f"vCPU {self.num}: no progress after {MAX_EXITS_PER_OP} SIE exits")

    async def _run_fence(self) -> None:
        """KVM_RUN answers -EINVAL while the VM is being dumped (uv-semantics.md §2.3, §7)."""
        vm = self.vm
        if vm.dumping:
            vm.stats.intercepts["KVM_RUN -EINVAL (dump)"] += 1
            self.record("kvm-run", guest=vm.name, cpu=self.num, rc="-EINVAL", why="dumping")
            while vm.dumping:
                await self.sleep(DUMP_POLL_NS)
        if self.num in vm.stopped:
            raise GuestStop(f"vCPU {self.num} is stopped")

    def _enter(self) -> CpuState:
        """SIE entry: the state the CPU runs (the guest's; for a secure guest the UV's copy)."""
        vm, sie, now = self.vm, self.sie, self.now
        outside = now - self.exit_at  # KVM accounts time outside SIE to the guest's CPU timer
        self.exit_at = now
        if not vm.protected:
            assert sie.cpu is not None
            sie.cpu.cpu_timer -= outside
            if sie.pending_pgm:  # KVM delivers the program interruption it chose
                sie.cpu.pgm_code, sie.pending_pgm = sie.pending_pgm, 0
            self.in_sie = True
            return sie.cpu
        assert sie.pv is not None
        sie.pv.cputm -= outside
        try:
            cpu = sie_entry(self.uv, sie, asce=vm.space.asce, now=now)
        except ValidityIntercept as validity:
            vm.stats.intercepts["validity"] += 1
            self.record("sie-exit", guest=vm.name, cpu=self.num, icpt=0x20, reason=validity.reason)
            raise GuestStop(f"validity intercept {validity.reason:#06x}: {validity.why}") from None
        self.in_sie = True
        return cpu.cpu

    def _leave(self) -> None:
        now = self.now
        if self.in_sie:
            if self.vm.protected:
                cpu = self.uv.cpus.get(self.sie.pv_handle_cpu)
                if cpu is not None:
                    sie_exit(self.uv, cpu, self.sie, now=now)
            elif self.sie.cpu is not None:
                self.sie.cpu.cpu_timer -= now - self.exit_at
        self.in_sie = False
        self.exit_at = now

    # ------------------------------------------------------ in SIE: the guest
    def _program_step(self, regs: CpuState) -> None:
        """What the guest's program leaves in its registers as it runs (:mod:`actors._guest_regs`)."""
        file = self.vm.guest.registers
        if regs.crs[1] == 0:
            regs.crs[1], regs.crs[7], regs.crs[13] = file.control(self.num)
        regs.gprs[6:14] = file.scratch(self.num)
        regs.psw = Psw(mask=PSW_MASK_64, addr=file.code_address(self.num))

    async def _execute(self, op: Any, regs: CpuState, progress: _Progress) -> Any:
        vm = self.vm
        config = vm.config_handle
        memory = self.kvm.memory
        if isinstance(op, Stage3b):
            return self._stage3b(regs)
        if not progress.started:
            self._program_step(regs)
            progress.started = True
        if isinstance(op, IO_STEPS):  # a step of a guest I/O (actors._guest_io)
            return await execute_io(self, op)
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
        if isinstance(op, Attest | ReceiveSecret):
            if not vm.protected:
                return "a regular guest has no ultravisor"
            if isinstance(op, Attest):
                return await attest(self, op.user.encode())
            return await receive_secret(self, op.name, vm.guest.secrets_added)
        if isinstance(op, Share | Unshare | GuestQui):
            if not isinstance(op, GuestQui):
                guest_frame(memory, vm.space, config, op.addr)  # the guest touches the page first
            return await self._guest_uvc(op, regs)
        if progress.issued:  # the intercepted instruction completed on this entry
            return self._completed(op, regs)
        if isinstance(op, Diag500):
            regs.gprs[1:5] = [op.fn, VIRTIO_SCHID, op.queue, 0]  # function, subchannel, queue, cookie
            return self._diag(regs, op, progress, code=0x500, r1=2, r3=4)
        if isinstance(op, Diag288):
            regs.gprs[0:3] = [op.fn, op.timeout, 0]  # function, timeout, action
            return self._diag(regs, op, progress, code=0x288, r1=0, r3=2)
        if isinstance(op, Diag9c):
            regs.gprs[14] = op.cpu
            return self._diag(regs, op, progress, code=0x9C, r1=14, r3=0)
        if isinstance(op, Diag44):
            return self._diag(regs, op, progress, code=0x44, r1=0, r3=0)
        if isinstance(op, Reboot):
            if op.subcode != 3:  # the restart PSW for a load-normal or modified-clear reset
                guest_frame(memory, vm.space, config, 0).write(0, short_psw(KERNEL_ENTRY))
            regs.gprs[3] = op.subcode
            return self._diag(regs, op, progress, code=0x308, r1=0, r3=3)
        if isinstance(op, SetPrefix):
            if not vm.protected:  # SIE interprets a regular guest's SET PREFIX
                regs.prefix = op.addr
                return None
            self._issue(regs, progress)
            spx_intercept(self._secure_cpu(), self.sie, prefix=op.addr)
            raise GuestExit()
        if isinstance(op, SigpStart):
            regs.gprs[14] = op.cpu
            self._issue(regs, progress)
            if vm.protected:
                sigp_intercept(self._secure_cpu(), self.sie, order=SIGP_START, r1=0, r3=14)
            else:
                self._instruction_intercept(0xAE00 | 14, SIGP_START << 16)
            raise GuestExit()
        raise GuestStop(f"operation {type(op).__name__} cannot run on a vCPU")

    def _secure_cpu(self) -> Any:
        return self.uv.cpus[self.sie.pv_handle_cpu]

    def _instruction_intercept(self, ipa: int, ipb: int) -> None:
        """A regular guest's instruction intercept (4): the real register numbers in ipa/ipb."""
        sie = self.sie
        sie.icptcode, sie.ipa, sie.ipb = ICPT_INSTRUCTION, ipa, ipb

    @staticmethod
    def _issue(regs: CpuState, progress: _Progress) -> None:
        """The intercepted instruction executes now (every access before it succeeded)."""
        progress.issued = True
        regs.pgm_code = 0

    def _diag(self, regs: CpuState, op: Any, progress: _Progress, *, code: int, r1: int, r3: int) -> Any:
        """The guest executes ``DIAG r1,r3,code`` (base register 0, the code as displacement)."""
        self._issue(regs, progress)
        if self.vm.protected:
            if not diag_intercept(self.uv, self._secure_cpu(), self.sie, code=code, r1=r1, r3=r3):
                return self._completed(op, regs)  # the UV itself answered (a specification exception)
        else:
            self._instruction_intercept(0x8300 | r1 << 4 | r3, code << 16)
        raise GuestExit()

    def _completed(self, op: Any, regs: CpuState) -> Any:
        """The operation after its instruction completed (on the entry that follows the intercept)."""
        if regs.pgm_code:
            self.record("guest-pgm", guest=self.vm.name, cpu=self.num, code=regs.pgm_code)
            return f"program interruption {regs.pgm_code:#04x}"
        if isinstance(op, Diag500):
            return regs.gprs[2]
        if isinstance(op, Reboot):
            if op.subcode == 3:
                return "re-ipl"
            return f"restarted at {regs.psw.addr:#x}"
        return None

    def _stage3b(self, regs: CpuState) -> bytes:
        """The stage3b loader (se-format.md §6 step 4), reading only secure guest memory.

        The CPU starts at the PSW from the SE header, which only the UV knows:
        that is where stage3b lies. Its arguments locate the kernel and the
        command line; the kernel must carry ``S390EP`` at 0x10008.
        """
        vm = self.vm
        memory = self.kvm.memory
        blob = guest_frame(memory, vm.space, vm.config_handle, regs.psw.addr & ~0xFFF).read()
        args = parse_stage3b(blob)
        marker = guest_frame(memory, vm.space, vm.config_handle, args.kernel.src + 0x10000).read(8, 6)
        if marker != b"S390EP":
            raise GuestStop("stage3b: no S390EP marker in the kernel")
        cmdline = b""
        if args.cmdline.size:
            start = args.cmdline.src
            cmdline = guest_frame(memory, vm.space, vm.config_handle, start).read(0, min(args.cmdline.size, PAGE))
        return cmdline.rstrip(b"\0")

    async def guest_call(self, request: Any) -> Any:
        """A UVC the guest executes inside SIE; the response (cc 0 or 1).

        A program interruption of the call, an intercept 108 and a busy answer
        leave SIE (the guest executes the UVC again after the host is done).
        """
        vm = self.vm
        caller = Caller(context=UvcContext.GUEST, config_handle=vm.config_handle, cpu_handle=self.sie.pv_handle_cpu)
        response = await self.call(self.kvm.uv_actor, Uvc(caller=caller, request=request))
        if isinstance(response, GuestException):
            raise ProgramInterrupt(response.code, response.address)
        if isinstance(response, Intercept108):
            # The UV shows the UVCB in the SIDA (ipa 0xb9a4); the guest executes the UVC again.
            uvc_intercept(self._secure_cpu(), self.sie, uvcb=request.pack())
            raise GuestExit()
        vm.stats.uvcs[(f"guest {request.COMMAND.name}", response.rc if response.cc != Cc.BUSY else -2)] += 1
        if response.cc == Cc.BUSY:
            raise GuestExit(again=True)
        return response

    async def _guest_uvc(self, op: Any, regs: CpuState) -> Any:
        vm = self.vm
        if not vm.protected:
            return None  # a regular guest has no ultravisor: SET/REMOVE_SHARED are no-ops for it
        if isinstance(op, Share):
            request: Any = SetSharedAccessRequest(paddr=op.addr)
        elif isinstance(op, Unshare):
            request = RemoveSharedAccessRequest(paddr=op.addr)
        else:
            request = QuiRequest()
        response = await self.guest_call(request)
        if response.cc != Cc.OK and isinstance(op, Share | Unshare):
            # Linux panics rather than go on with private data exposed (uv-semantics.md §4).
            raise GuestStop(f"{request.COMMAND.name} failed rc {response.rc:#06x}: the guest stops")
        return response.rc
