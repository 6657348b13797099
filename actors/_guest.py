"""The guest operating system: boot, then the workload on its vCPUs.

A secure guest boots as its image says (se-format.md §6): the loader
(stage3a) stores the IPL block and asks for the switch into secure mode with
DIAG 308 subcodes 8 and 10; if the hypervisor reports an error the guest
stops there. In secure mode the loader (stage3b) finds the kernel and the
command line through its arguments, in secure memory. Then the guest hands
its workload to its vCPUs, an operation to each idle vCPU, never two
operations on the same page at once, and checks every page it reads against
what it wrote (the self-checking page format of :mod:`actors._workload`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, final

from ._fabric import Actor, Fabric
from ._messages import Diag308, OpDone, RunOp, Shutdown
from ._vm import VirtualMachine
from ._workload import Halt, Read, Stage3b, Write, check_page, make_page, pages_of

PAGE = 4096


@final
class GuestActor(Actor):
    """The OS inside one configuration (secure or regular)."""

    kind = "guest"

    def __init__(self, fabric: Fabric, name: str, vm: VirtualMachine) -> None:
        super().__init__(fabric, name)
        self.vm = vm
        self.versions: dict[int, int] = {}
        self.corruptions: list[str] = []
        self.state = "booting"
        self.reason = ""
        self.cmdline = b""

    def page_for_write(self, gaddr: int) -> bytes:
        """Called by a vCPU in SIE when it writes ``gaddr``: the next version of that page."""
        version = self.versions.get(gaddr, 0) + 1
        self.versions[gaddr] = version
        return make_page(self.vm.name, gaddr, version)

    async def main(self) -> None:
        vcpus = self.vm.vcpus
        if self.vm.spec.image is not None and self.vm.secure:
            if not await self._boot_secure(vcpus[0]):
                await self._halt(vcpus[0])
                await self._wait_shutdown()
                return
        self.state = "running"
        self.record("guest-running", guest=self.vm.name)
        await self._run_workload()
        await self._halt(vcpus[0])
        await self._wait_shutdown()

    async def _wait_shutdown(self) -> None:
        while True:
            env = await self.receive()
            if isinstance(env.msg, Shutdown):
                return

    async def _halt(self, vcpu: Actor) -> None:
        self.record("guest-halt", guest=self.vm.name, state=self.state, reason=self.reason)
        await self.call(vcpu, Halt())

    # ----------------------------------------------------------------- boot
    async def _boot_secure(self, vcpu: Actor) -> bool:
        vm = self.vm
        for subcode in (8, 10):
            result = await self.call(vcpu, Diag308(guest=vm.name, cpu=0, subcode=subcode))
            if result.rc != 0x0001:
                self.state = "refused"
                self.reason = f"secure boot refused: {result.detail}"
                return False
        # stage3b, now in secure memory: find the kernel and the command line.
        done = await self._run_one(vcpu, Stage3b())
        if not done.ok:
            self.state = "stopped"
            self.reason = f"stage3b: {done.error}"
            return False
        self.cmdline = done.value
        self.record("guest-booted", guest=vm.name, cmdline=self.cmdline.decode(errors="replace"))
        return True

    async def _run_one(self, vcpu: Actor, op: Any) -> OpDone:
        self.send(vcpu, RunOp(seq=0, op=op))
        while True:
            env = await self.receive()
            if isinstance(env.msg, OpDone) and env.msg.seq == 0:
                return env.msg

    # ------------------------------------------------------------- workload
    async def _run_workload(self) -> None:
        ops = deque(op for op in self.vm.spec.workload if not isinstance(op, Halt))
        idle = deque(self.vm.vcpus)
        busy_pages: dict[int, set[int]] = {}
        pending: dict[int, Any] = {}
        seq = 0
        while ops or pending:
            # Dispatch while an idle vCPU exists and the next op's pages are free.
            while ops and idle and not (set(pages_of(ops[0])) & set().union(*busy_pages.values())):
                op = ops.popleft()
                seq += 1
                vcpu = idle.popleft()
                pending[seq] = (op, vcpu)
                busy_pages[seq] = set(pages_of(op))
                self.send(vcpu, RunOp(seq=seq, op=op))
            if not pending:
                break
            env = await self.receive()
            msg = env.msg
            if isinstance(msg, Shutdown):
                self.state = "stopped"
                return
            if not isinstance(msg, OpDone):
                continue
            op, vcpu = pending.pop(msg.seq)
            busy_pages.pop(msg.seq)
            idle.append(vcpu)
            self.vm.stats.ops_done += 1
            if not msg.ok:
                self.state = "stopped"
                self.reason = msg.error
                # Wait for the others, then stop.
                ops.clear()
                continue
            if isinstance(op, Read):
                self._check(op, msg.value)
            elif isinstance(op, Write):
                pass
        if self.state == "running" and self.corruptions:
            self.state = "corrupted"
            self.reason = self.corruptions[0]

    def _check(self, op: Read, pages: list[bytes]) -> None:
        image = self.vm.spec.image
        loaded = len(image) if image is not None and self.vm.secure else 0
        for i, data in enumerate(pages):
            gaddr = op.addr + i * PAGE
            version = self.versions.get(gaddr, 0)
            if version == 0 and gaddr < loaded:
                continue  # the guest's own boot image lies there (kernel, loaders): not zeros
            why = check_page(self.vm.name, gaddr, version, data)
            if why:
                self.corruptions.append(f"{gaddr:#x}: {why}")
                self.record("corruption", guest=self.vm.name, gaddr=gaddr, why=why)

