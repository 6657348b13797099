"""The guest operating system: boot, then the workload on its vCPUs.

A secure guest boots as its image says (se-format.md §6): the loader
(stage3a) stores the IPL block and asks for the switch into secure mode with
DIAG 308 subcodes 8 and 10; if the hypervisor reports an error the guest
stops there. In secure mode the loader (stage3b) finds the kernel and the
command line through its arguments, in secure memory. Then the guest hands
its workload to its vCPUs, an operation to each idle vCPU, never two
operations on the same page at once (two reads may share pages; I/O runs as a
chain of steps on one vCPU, :mod:`actors._guest_io`), and checks every page it reads against
what it wrote (the self-checking page format of :mod:`actors._workload`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, final

from ._fabric import Actor, Fabric
from ._guest_io import IO_OPS, GuestIo, digest
from ._guest_reboot import reboot
from ._guest_regs import GuestRegisterFile
from ._messages import Diag308, OpDone, RunOp, Shutdown
from ._vm import VirtualMachine
from ._workload import Attest, Halt, Read, Reboot, ReceiveSecret, Stage3b, check_page, make_page, pages_of

PAGE = 4096


@final
class GuestActor(Actor):
    """The OS inside one configuration (secure or regular)."""

    kind = "guest"

    def __init__(self, fabric: Fabric, name: str, vm: VirtualMachine) -> None:
        super().__init__(fabric, name)
        self.vm = vm
        self.versions: dict[int, int] = {}
        self.origin: dict[int, int] = {}  # gaddr -> where the page it holds was written (an io-read moves pages)
        self.corruptions: list[str] = []
        self.attestations: list[tuple[bool, str]] = []
        self.secrets: list[tuple[str, bool, str]] = []
        self.secrets_added: set[str] = set()  # the driver issues ADD_SECRET once per secret, on any vCPU
        self.io = GuestIo(self) if any(isinstance(op, IO_OPS) for op in vm.spec.workload) else None
        self.io_tasks: dict[int, Any] = {}
        self.state = "booting"
        self.reason = ""
        self.cmdline = b""
        self.registers = GuestRegisterFile(vm.name)  # what its program leaves in its CPUs' registers

    def page_for_write(self, gaddr: int) -> bytes:
        """Called by a vCPU in SIE when it writes ``gaddr``: the next version of that page."""
        version = self.versions.get(gaddr, 0) + 1
        self.versions[gaddr] = version
        self.origin.pop(gaddr, None)
        page = make_page(self.vm.name, gaddr, version)
        self.record("guest-write", guest=self.vm.name, gaddr=gaddr, version=version, digest=digest(page))
        return page

    async def main(self) -> None:
        vcpus = self.vm.vcpus
        if self.vm.spec.image is not None and self.vm.secure:
            if not await self._boot_secure(vcpus[0]):
                await self._halt(vcpus[0])
                await self._wait_shutdown()
                return
        self.state = "running"
        self.record("guest-running", guest=self.vm.name)
        if self.io is not None and not await self.io.share_pool():  # swiotlb: the bounce buffers are shared
            await self._halt(vcpus[0])
            await self._wait_shutdown()
            return
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
            while ops and idle and not _conflicts(ops[0], busy_pages, pending):
                if isinstance(ops[0], Reboot):  # a barrier: the guest reboots with nothing else in flight
                    if pending:
                        break
                    op = ops.popleft()
                    if not await reboot(self, op):
                        ops.clear()
                        continue
                    if op.subcode == 3:
                        self.origin.clear()
                    # The reset made every shared page private (SET_UNSHARE_ALL): share the pool again.
                    if self.io is not None and not await self.io.share_pool():
                        ops.clear()
                    continue
                task = None
                if isinstance(ops[0], IO_OPS):
                    assert self.io is not None
                    task = self.io.plan(ops[0])
                    if task is None:
                        break  # every bounce buffer is in use: wait for an I/O to finish
                op = ops.popleft()
                seq += 1
                vcpu = idle.popleft()
                pending[seq] = (op, vcpu)
                busy_pages[seq] = set(pages_of(op))
                if task is not None:
                    self.io_tasks[seq] = task
                    self.send(vcpu, RunOp(seq=seq, op=self.io.next_step(task)))  # type: ignore[union-attr]
                else:
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
            task = self.io_tasks.get(msg.seq)
            if task is not None and msg.ok:
                assert self.io is not None
                step, error = self.io.on_done(task, msg.value)
                if step is not None:
                    self.send(pending[msg.seq][1], RunOp(seq=msg.seq, op=step))  # the same vCPU goes on
                    continue
                if error:
                    msg = OpDone(seq=msg.seq, cpu=msg.cpu, ok=False, error=error)
            if task is not None:
                del self.io_tasks[msg.seq]
                self.io.release(task)  # type: ignore[union-attr]
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
            elif isinstance(op, Attest):
                self._check_attestation(op, msg.value)
            elif isinstance(op, ReceiveSecret):
                self._check_secret(op, msg.value)
        if self.state == "running" and self.corruptions:
            self.state = "corrupted"
            self.reason = self.corruptions[0]

    def _check_attestation(self, op: Attest, response: Any) -> None:
        """The owner checks the measurement against the image's header and its ARPK (``pvattest verify``)."""
        owner = self.vm.spec.owner
        if isinstance(response, str):
            ok, detail = False, response
        else:
            from protocol import BootHdrTags, parse_se_header, verify_attestation

            header = parse_se_header(owner.header)
            try:
                verify_attestation(response, header_phkhs=header.phkhs,
                                   tags=BootHdrTags.from_image_or_header(owner.header), arpk=owner.arpk)
                ok, detail = True, f"measurement verified, config uid {response.cuid.hex()}"
            except Exception as exc:  # a verification failure is the finding, reported by name
                ok, detail = False, str(exc)
        self.attestations.append((ok, detail))
        self.record("attestation", guest=self.vm.name, ok=ok, detail=detail)

    def _check_secret(self, op: ReceiveSecret, value: Any) -> None:
        """The guest uses its secret: here, it must be exactly what the owner sent."""
        owner = self.vm.spec.owner
        expected = owner.secret(op.name).value if owner is not None and owner.secret(op.name) else None
        if isinstance(value, str):
            ok, detail = False, value
        else:
            ok = expected is not None and value == expected
            detail = f"{len(value)} bytes received" if ok else "the retrieved value is not what the owner sent"
        self.secrets.append((op.name, ok, detail))
        self.record("secret", guest=self.vm.name, name=op.name, ok=ok, detail=detail)

    def _check(self, op: Read, pages: list[bytes]) -> None:
        image = self.vm.spec.image
        loaded = len(image) if image is not None and self.vm.secure else 0
        for i, data in enumerate(pages):
            gaddr = op.addr + i * PAGE
            version = self.versions.get(gaddr, 0)
            if version == 0 and gaddr < loaded:
                continue  # the guest's own boot image lies there (kernel, loaders): not zeros
            self.record("guest-read", guest=self.vm.name, gaddr=gaddr, version=version, digest=digest(data))
            why = check_page(self.vm.name, self.origin.get(gaddr, gaddr), version, data)
            if why:
                self.corruptions.append(f"{gaddr:#x}: {why}")
                self.record("corruption", guest=self.vm.name, gaddr=gaddr, why=why)


def _conflicts(op: Any, busy_pages: dict[int, set[int]], pending: dict[int, Any]) -> bool:
    """Whether ``op`` touches a page an operation in flight touches (two reads may share pages)."""
    pages = set(pages_of(op))
    if not pages:
        return False
    for seq, busy in busy_pages.items():
        if pages & busy and not (isinstance(op, Read) and isinstance(pending[seq][0], Read)):
            return True
    return False
