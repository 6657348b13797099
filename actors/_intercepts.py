"""KVM's intercept handlers: what the host does with a SIE exit for an instruction.

The handlers read the intercept from the SIE block only. For a secure guest
that is the :class:`machine.SecureSieView`: the intercept code, the
normalised instruction text, the SIDA and ``pv_grregs``, which hold only the
registers the instruction needs; KVM's code is the same as for a regular
guest because the UV normalised the register numbers (``DIAG 0,2,0(5)``:
R1 = 0, R3 = 2, the code in register 5; uv-interface.md §6). For a regular
guest it is the format-0 block with the guest's real registers. Results go
back into those registers; a program interruption the host chooses goes
into ``iictl`` (secure, only after a 104) or ``pending_pgm`` (regular).

=========  ==================================  ==================================
exit       instruction                          what the host does
=========  ==================================  ==================================
104 / 4    DIAG 0x500 (virtio notify)           QEMU notifies the queue; r2 = 0.
                                                A function code other than 3 is a
                                                specification exception
104 / 4    DIAG 0x288 (watchdog)                QEMU's watchdog; a bad function or
                                                a timeout below 15 s is a
                                                specification exception
104 / 4    any other DIAG                       specification exception
108 / 4    DIAG 0x9c, 0x44 (yield)              yield the host CPU
108 / 4    DIAG 0x308 subcode 0, 1, 3           QEMU resets or re-IPLs the machine
                                                (:mod:`actors._reset`)
108        SET PREFIX (ipa 0xb210)              KVM's prefix copy from SIDA 0-3
108        UVC (ipa 0xb9a4)                     UNPIN_PAGE_SHARED for the
                                                REMOVE_SHARED in the SIDA (§4)
108 / 4    SIGP START                           start the target vCPU
112        prefix pages not secure              import both prefix pages (§3.2)
=========  ==================================  ==================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from machine._uv_sie import (
    DIAG_IPA,
    ICPT_PV_INSTR,
    ICPT_PV_NOTIFY,
    IICTL_SPECIFICATION,
    PGM_SPECIFICATION,
    SIGP_IPA,
    SPX_IPA,
    UVC_IPA,
)
from protocol import (
    Cc,
    CpuSetStateRequest,
    CpuState,
    RemoveSharedAccessRequest,
    UvcCommand,
)

from ._messages import Diag308, VirtioNotify
from ._vcpu_mm import GuestStop, unpin

if TYPE_CHECKING:
    from ._vcpu import VcpuActor

PAGE = 4096
ICPT_INSTRUCTION = 0x04
SIGP_START = 0x04
VIRTIO_CCW_NOTIFY = 3
WDT_FUNCTIONS = (0, 1, 2)  # init, change, cancel
WDT_MIN_TIMEOUT = 15


class GuestExit(Exception):
    """The CPU left SIE for an intercept; the host reads the SIE block to learn which.

    ``again``: nothing to handle, the guest re-executes (a busy guest UVC).
    """

    def __init__(self, *, again: bool = False) -> None:
        super().__init__("intercept")
        self.again = again


class _Regs:
    """The registers an intercept handler may use: ``pv_grregs`` (secure) or the guest's own (regular)."""

    def __init__(self, vcpu: VcpuActor) -> None:
        sie = vcpu.sie
        self.secure = sie.pv is not None
        if sie.pv is not None:
            self.code, self.ipa, self.ipb, self.gprs = sie.pv.icptcode, sie.pv.ipa, sie.pv.ipb, sie.pv.pv_grregs
        else:
            assert sie.cpu is not None
            self.code, self.ipa, self.ipb, self.gprs = sie.icptcode, sie.ipa, sie.ipb, sie.cpu.gprs
        self.r1 = (self.ipa >> 4) & 0xF
        self.r3 = self.ipa & 0xF

    def operand(self) -> int:
        """The base-displacement operand ``D2(B2)`` (the DIAG code, the SIGP order)."""
        b2, d2 = self.ipb >> 28, (self.ipb >> 16) & 0xFFF
        return (d2 + (self.gprs[b2] if b2 else 0)) & 0xFFFF


async def handle_intercept(vcpu: VcpuActor, exit: Any) -> None:
    """Handle the intercept that ended the last SIE pass; the vCPU then enters SIE again."""
    if exit.again:
        return
    regs = _Regs(vcpu)
    opcode = regs.ipa >> 8
    if regs.code == ICPT_PV_NOTIFY and regs.ipa == SPX_IPA:
        await _spx(vcpu)
    elif regs.code == ICPT_PV_NOTIFY and regs.ipa == UVC_IPA:
        await _uvc_notification(vcpu)
    elif opcode == DIAG_IPA >> 8:
        await _diag(vcpu, regs)
    elif opcode == SIGP_IPA >> 8:
        await _sigp(vcpu, regs)
    else:
        raise GuestStop(f"intercept {regs.code} for an instruction KVM does not handle (ipa {regs.ipa:#06x})")


def _count(vcpu: VcpuActor, regs: _Regs, what: str, **detail: Any) -> None:
    vm = vcpu.vm
    label = f"{regs.code} {what}" if regs.secure else what
    vm.stats.intercepts[label] += 1
    vcpu.record("sie-exit", guest=vm.name, cpu=vcpu.num, icpt=regs.code, ipa=regs.ipa, what=what, **detail)


def _inject_specification(vcpu: VcpuActor, regs: _Regs) -> None:
    """A specification exception for the guest: ``iictl`` after a 104, or KVM's own delivery."""
    sie = vcpu.sie
    if sie.pv is not None:
        if regs.code != ICPT_PV_INSTR:
            raise GuestStop("KVM may not inject a program interruption after a notification")
        sie.pv.iictl = IICTL_SPECIFICATION
    else:
        sie.pending_pgm = PGM_SPECIFICATION
    vcpu.vm.stats.intercepts["injected specification"] += 1


async def _diag(vcpu: VcpuActor, regs: _Regs) -> None:
    code = regs.operand()
    g = regs.gprs
    if code == 0x500:
        _count(vcpu, regs, "diag500", queue=g[3])
        if g[1] != VIRTIO_CCW_NOTIFY:
            _inject_specification(vcpu, regs)
            return
        await vcpu.call(vcpu.hv, VirtioNotify(guest=vcpu.vm.name, queue=g[3]))
        g[2] = 0  # the notification's return value (the new cookie)
    elif code == 0x288:
        fn, timeout = g[regs.r1], g[(regs.r1 + 1) % 16]
        _count(vcpu, regs, "diag288", fn=fn)
        if fn not in WDT_FUNCTIONS or (fn != 2 and timeout < WDT_MIN_TIMEOUT):
            _inject_specification(vcpu, regs)
    elif code in (0x9C, 0x44):
        _count(vcpu, regs, f"diag{code:x}")
        await vcpu.yield_()  # give the host CPU to another thread (directed yield: to g[r1])
    elif code == 0x308:
        subcode = g[regs.r3]
        _count(vcpu, regs, "diag308", subcode=subcode)
        if subcode in (0, 1, 3):
            result = await vcpu.call(vcpu.hv, Diag308(guest=vcpu.vm.name, cpu=vcpu.num, subcode=subcode))
            if result.rc != 0x0001:
                raise GuestStop(f"DIAG 308 subcode {subcode} failed: {result.detail}")
    else:
        _count(vcpu, regs, f"diag{code:x}")
        if regs.code == ICPT_PV_INSTR or not regs.secure:
            _inject_specification(vcpu, regs)


async def _spx(vcpu: VcpuActor) -> None:
    """SET PREFIX notification: ``kvm_s390_set_prefix`` with the value from SIDA bytes 0-3."""
    pv = vcpu.sie.pv
    assert pv is not None
    pv.prefix = int.from_bytes(pv.sida[0:4], "big")
    vcpu.vm.stats.intercepts["108 spx"] += 1
    vcpu.record("sie-exit", guest=vcpu.vm.name, cpu=vcpu.num, icpt=ICPT_PV_NOTIFY, ipa=SPX_IPA, prefix=pv.prefix)


async def _uvc_notification(vcpu: VcpuActor) -> None:
    """``handle_pv_uvc``: the guest's UVCB from the SIDA; a REMOVE_SHARED on a pinned page is unpinned."""
    pv = vcpu.sie.pv
    assert pv is not None
    cmd = int.from_bytes(pv.sida[2:4], "big")
    vcpu.vm.stats.intercepts["108 uvc"] += 1
    vcpu.record("sie-exit", guest=vcpu.vm.name, cpu=vcpu.num, icpt=ICPT_PV_NOTIFY, ipa=UVC_IPA, cmd=cmd)
    if cmd == UvcCommand.REMOVE_SHARED_ACCESS:
        request = RemoveSharedAccessRequest.parse(bytes(pv.sida[: UvcCommand.REMOVE_SHARED_ACCESS.uvcb_length]))
        await unpin(vcpu, request.paddr)


async def _sigp(vcpu: VcpuActor, regs: _Regs) -> None:
    order, target = regs.operand(), regs.gprs[regs.r3]
    _count(vcpu, regs, "sigp", order=order, target=target)
    vm = vcpu.vm
    if order != SIGP_START or not 0 <= target < len(vm.vcpus):
        return  # other orders (and absent CPUs) are not modelled: the guest sees cc 0
    if vm.protected:  # kvm_s390_vcpu_start → CPU_SET_STATE OPR
        request = CpuSetStateRequest(cpu_handle=vm.cpu_handles[target], state=CpuState.OPR)
        response = await vcpu.kvm.uvc(vcpu, vm, request)
        if response.cc != Cc.OK:
            raise GuestStop(f"SIGP START of CPU {target}: CPU_SET_STATE rc {response.rc:#06x}")
    vm.stopped.discard(target)


async def handle_prefix(vcpu: VcpuActor) -> None:
    """Intercept 112: import both prefix pages at KVM's copy of the prefix (uv-semantics.md §3.2)."""
    vm = vcpu.vm
    pv = vcpu.sie.pv
    assert pv is not None
    vm.stats.intercepts["112 prefix"] += 1
    vcpu.record("sie-exit", guest=vm.name, cpu=vcpu.num, icpt=0x70, prefix=pv.prefix)
    for gaddr in (pv.prefix, pv.prefix + PAGE):
        result = await vcpu.kvm.import_page(vcpu, vm, gaddr)
        if result == "invalid":
            raise GuestStop(f"import of prefix page {gaddr:#x} failed: the VMM gets SIGSEGV")
