"""Attacks on the running guest through QEMU and its devices: reads, forged completions, shares, dumps.

uv-semantics.md §3.3, §4, §7. A hostile thread of QEMU (or a device model)
joins the actor system; see :mod:`sesim._attacks_sim`.
"""

from __future__ import annotations

from typing import Any

from actors import Actor
from actors._system import System
from actors._workload import canary, make_page
from machine import ProgramInterrupt
from machine._uv_dump import dump_key, open_dump_blob
from protocol import RESPONSE_TYPES, Cc, PgmCode, UvcCommand, VerificationError

from ._attacks_base import attack
from ._attacks_sim import (
    EXPORT_ENCRYPTS,
    PAGE,
    RC_INTEGRITY,
    VICTIM,
    SimArena,
    alive,
    fired_any,
    running_victim,
    victim_config,
    wait_for_pages,
)
from ._hostile import Defence, PlaintextScanner


class _QemuReader(Actor):
    """QEMU reads the victim's private pages: first straight from the frame, then through its mapping."""

    def __init__(self, system: System, arena: SimArena, pages: int) -> None:
        super().__init__(system.fabric, "qemu-hostile")
        self.system, self.arena, self.pages = system, arena, pages

    async def main(self) -> None:
        vm = await running_victim(self, self.system)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        host = self.arena.host
        if not await wait_for_pages(self, vm, self.pages):
            return
        for gaddr in sorted(vm.guest.versions):
            pfn = vm.space.pfn_of(gaddr >> 12)
            if pfn is not None:
                try:
                    host.obtain(f"raw read of guest page {gaddr:#x}", kvm.memory.host_read(pfn * PAGE, PAGE))
                    fired = None
                except ProgramInterrupt as pgm:
                    fired = host.saw(Defence.pgm(pgm.code))
                host.expect(f"read the frame of guest page {gaddr:#x}", Defence.pgm(PgmCode.SECURE_STORAGE_ACCESS),
                            fired)  # fmt: skip
            data = await kvm.user_access(self, vm, gaddr >> 12, reader="qemu-hostile")
            if data is not None:
                host.obtain(f"QEMU read of guest page {gaddr:#x}", data)
                plain = make_page(VICTIM, gaddr, vm.guest.versions[gaddr])
                ok = data != plain and PlaintextScanner([plain], [canary(VICTIM)]).count(data) == 0
                host.expect(f"QEMU reads guest page {gaddr:#x}", EXPORT_ENCRYPTS, EXPORT_ENCRYPTS if ok else None)
                self.arena.performed = True


@attack(
    "qemu-reads-guest-memory", area="swap & I/O", runner="actors",
    title="QEMU reads the running guest's private pages",
    defence="a direct read takes PGM 0x3d; the kernel's 0x3d handler exports the page, so QEMU gets ciphertext",
    expected=(Defence.pgm(PgmCode.SECURE_STORAGE_ACCESS), EXPORT_ENCRYPTS),
)  # fmt: skip
def qemu_reads_guest_memory(s: SimArena) -> None:
    """While the victim works on eight pages, a QEMU thread reads each one: from the host frame
    (the CPU refuses), then through QEMU's mapping (the kernel makes it accessible). The guest
    reads its pages afterwards."""
    workload = ("write 0x100000 pages=8", "compute 400000", "read 0x100000 pages=8", "write 0x100000 pages=8",
                "read 0x100000 pages=8")  # fmt: skip
    s.run(victim_config(workload), lambda system, arena: _QemuReader(system, arena, 8))


class _Forger(Actor):
    """A device model that "completes" a request by writing a forged page into private guest memory."""

    def __init__(self, system: System, arena: SimArena) -> None:
        super().__init__(system.fabric, "virtio-hostile")
        self.system, self.arena = system, arena

    async def main(self) -> None:
        vm = await running_victim(self, self.system)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        if not await wait_for_pages(self, vm, 4):
            return
        gaddr = 0x100000
        version = vm.guest.versions.get(gaddr, 0)
        forged = make_page(VICTIM, gaddr, version + 1)  # a well-formed page the guest would accept
        if await kvm.user_access(self, vm, gaddr >> 12, forged, reader="virtio-hostile") is not None:
            self.record("tamper", guest=VICTIM, gfn=gaddr >> 12, how="a forged completion written into private memory")
            self.arena.performed = True


@attack(
    "fake-virtio-completion", area="swap & I/O", runner="actors",
    title="fake a virtio completion into a private page",
    defence="the page is exported before the host may write it; its import checks the UV's digest: rc 0x0107",
    expected=(RC_INTEGRITY,),
)  # fmt: skip
def fake_virtio_completion(s: SimArena) -> None:
    """The victim writes four pages and reads them back later. The device model writes a forged page
    (well formed, the next version) into the first one, as if a read request had completed there."""
    workload = ("write 0x100000 pages=4", "compute 300000", "read 0x100000 pages=4")
    s.run(victim_config(workload), lambda system, arena: _Forger(system, arena))
    fired = RC_INTEGRITY if s.performed and s.stops("integrity") and fired_any(s, RC_INTEGRITY) else None
    s.host.expect("the guest reads the page the device wrote", RC_INTEGRITY, fired)


@attack(
    "share-fails", area="swap & I/O", runner="actors", title="make SET_SHARED_ACCESS fail",
    defence="the guest stops rather than go on with I/O through a page it could not share (Linux panics)",
    expected=(Defence.check("guest-stops"),),
)  # fmt: skip
def share_fails(s: SimArena) -> None:
    """The victim does disk I/O, so at boot it shares its virtio rings and bounce buffers. The host
    makes every SET_SHARED_ACCESS answer cc 1 (a forged answer, or a firmware fault it provoked)."""

    def hook(caller: Any, request: Any) -> Any:
        if caller.is_guest and request.COMMAND is UvcCommand.SET_SHARED_ACCESS:
            s.performed = True
            return RESPONSE_TYPES[request.COMMAND](cc=Cc.ERROR, rc=0x0101, rrc=0)
        return None

    workload = ("write 0x100000 pages=4", "io-write 0 0x100000 pages=4", "read 0x100000 pages=4")
    s.run(victim_config(workload), uv_hook=hook)
    guest = s.vm().guest
    stopped = guest.state == "stopped" and "not shared" in guest.reason and not s.vm().stats.io_requests
    s.host.expect("the guest's SET_SHARED_ACCESS fails", Defence.check("guest-stops"),
                  s.host.saw(Defence.check("guest-stops")) if stopped else None)  # fmt: skip


@attack(
    "read-during-running-dump", area="swap & I/O", runner="actors",
    title="dump a running guest and read its pages while the dump runs",
    defence="dumped pages are exported (ciphertext); CPU states and the export key are sealed with the "
            "customer's CCK (check dump-seal)",
    expected=(EXPORT_ENCRYPTS, Defence.check("dump-seal")),
)  # fmt: skip
def read_during_running_dump(s: SimArena) -> None:
    """The victim's image allows dumping; the hypervisor dumps it while it runs (KVM_PV_DUMP) and
    QEMU reads its pages meanwhile. The dump is then searched for plaintext and its sealed parts
    are opened with a key the host can make."""
    workload = ("write 0x100000 pages=6", "compute 300000", "read 0x100000 pages=6")
    s.run(victim_config(workload, dump=True), lambda system, arena: _QemuReader(system, arena, 6))
    dumps = [d for d in s.vm().dumps if not d.refused]
    if not dumps:
        return
    s.performed = True
    scanner = s.scanner()
    clean = all(scanner.count(page) == 0 for page in dumps[0].memory.values())
    s.host.expect("search the dumped memory", EXPORT_ENCRYPTS, EXPORT_ENCRYPTS if clean and dumps[0].memory else None)
    try:
        open_dump_blob(dump_key(bytes(32), bytes(16)), dumps[0].cpus[0])
        fired = None
    except VerificationError as exc:
        fired = s.host.saw(Defence.check(exc.check))
    s.host.expect("open the dumped CPU state without the CCK", Defence.check("dump-seal"), fired)


# ------------------------------------------------------------------ control
class _SharedReader(Actor):
    """QEMU reads a page once the guest has shared it (the guest gave it away: plaintext)."""

    def __init__(self, system: System, arena: SimArena, gfn: int) -> None:
        super().__init__(system.fabric, "qemu-control")
        self.system, self.arena, self.gfn = system, arena, gfn

    async def main(self) -> None:
        vm = await running_victim(self, self.system)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        for _ in range(1_000):
            pfn = vm.space.pfn_of(self.gfn)
            if pfn is not None and kvm.memory.state_of(pfn).value == "shared":
                data = await kvm.user_access(self, vm, self.gfn, reader="qemu-control")
                if data is not None:
                    self.arena.host.obtain(f"QEMU read of shared guest page {self.gfn << 12:#x}", data)
                    self.arena.performed = True
                return
            if not alive(vm):
                return
            await self.sleep(2_000)


@attack(
    "control-shared-page-sim", area="control", runner="actors", control=True,
    title="(control) the running guest shares a page holding its data; QEMU reads it",
    defence="none: the guest gave the page away, so the counter must find plaintext", expected=(),
)  # fmt: skip
def control_shared_page_sim(s: SimArena) -> None:
    """The victim writes a page, then shares it (SET_SHARED_ACCESS) and computes; a QEMU thread reads
    the page once it is shared. The plaintext counter must count the page."""
    workload = ("write 0x100000", "share 0x100000", "compute 200000", "unshare 0x100000")
    s.run(victim_config(workload), lambda system, arena: _SharedReader(system, arena, 0x100))
