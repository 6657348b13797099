"""Secure CPUs: CPU_SET_STATE, the resets, and SIE entry for format-4 CPUs.

uv-interface.md §6 and uv-semantics.md §2.2-§2.4: OPR_LOAD must come before
OPR at IPL; after the guest-reset sequence (STP, SET_UNSHARE_ALL,
PREPARE_RESET, a CPU reset, OPR_LOAD) the guest restarts at the PSW stored
at its absolute address 0; SIE entry is refused with a validity intercept
while a CPU is not operating or its handles are wrong.
"""

from __future__ import annotations

from protocol._uvc_codes import CpuState as CpuStateCode
from protocol._uvc_codes import Rc, UvcCommand
from protocol._uvcb_base import UvcResponse

from ._cpu import PSW_MASK_64, CpuRunState, Psw, SecureCpuState, SieBlock
from ._uv_core import Caller, ConfigPhase, Ultravisor, fail, handles, ok

RC_BAD_CPU_STATE = 0x0101
"""CPU_SET_STATE with a state code that does not exist (sesim's choice)."""
RC_NOT_LOADED = 0x0102
"""CPU_SET_STATE OPR before OPR_LOAD (sesim's choice)."""

VALIDITY_HANDLE = 0x2001
VALIDITY_NOT_OPERATING = 0x2002
VALIDITY_IN_USE = 0x2003
VALIDITY_RESET_INCOMPLETE = 0x2004


class ValidityIntercept(Exception):
    """SIE entry refused (intercept 0x20) with a reason code 0x20xx."""

    def __init__(self, reason: int, why: str) -> None:
        super().__init__(f"validity {reason:#06x}: {why}")
        self.reason = reason
        self.why = why


@handles(UvcCommand.CPU_SET_STATE)
def _cpu_set_state(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    cpu = uv.cpu(request.cpu_handle)  # type: ignore[attr-defined]
    state: int = request.state  # type: ignore[attr-defined]
    conf = uv.configs.get(cpu.config_handle)
    if state not in (CpuStateCode.OPR, CpuStateCode.STP, CpuStateCode.CHKSTP, CpuStateCode.OPR_LOAD):
        fail(RC_BAD_CPU_STATE)
    if state == CpuStateCode.OPR_LOAD:
        if conf is None or conf.phase is not ConfigPhase.VERIFIED:
            fail(Rc.INV_STATE)
        if cpu.reset_pending or conf.reset_prepared:
            # After a guest reset: restart at the PSW at absolute 0 (uv-interface.md §6).
            cpu.cpu.psw = conf.restart_psw
        else:
            secrets = conf.opened.secrets
            cpu.cpu.psw = Psw(mask=secrets.psw_mask, addr=secrets.psw_addr)
        cpu.reset_pending = False
        conf.reset_prepared = False
        cpu.run_state = CpuRunState.LOAD
    elif state == CpuStateCode.OPR:
        if cpu.run_state not in (CpuRunState.LOAD, CpuRunState.STOPPED, CpuRunState.OPERATING) or not cpu.loaded:
            fail(RC_NOT_LOADED)
        cpu.run_state = CpuRunState.OPERATING
    elif state == CpuStateCode.STP:
        cpu.run_state = CpuRunState.STOPPED
    else:
        cpu.run_state = CpuRunState.CHECK_STOP
    if state == CpuStateCode.OPR_LOAD:
        cpu.loaded = True
    return ok(request)  # type: ignore[arg-type]


def _reset(uv: Ultravisor, request: object, *, clear: bool) -> UvcResponse:
    cpu = uv.cpu(request.handle)  # type: ignore[attr-defined]
    if clear:
        cpu.cpu.clear()
    else:
        cpu.cpu.psw = Psw()
        cpu.cpu.prefix = 0
    cpu.run_state = CpuRunState.STOPPED
    cpu.loaded = False
    cpu.reset_pending = True
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.CPU_RESET)
def _cpu_reset(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, clear=False)


@handles(UvcCommand.CPU_RESET_INITIAL)
def _cpu_reset_initial(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, clear=False)


@handles(UvcCommand.CPU_RESET_CLEAR)
def _cpu_reset_clear(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, clear=True)


@handles(UvcCommand.PREPARE_RESET)
def _prepare_reset(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if any(uv.cpus[h].run_state is CpuRunState.OPERATING for h in conf.cpus.values()):
        fail(Rc.INV_STATE)  # unsharing and reset need every CPU stopped (uv-semantics.md §2.4)
    conf.reset_prepared = True
    conf.restart_psw = _short_psw_at_zero(uv, conf)
    return ok(request)  # type: ignore[arg-type]


def _short_psw_at_zero(uv: Ultravisor, conf: object) -> Psw:
    """The restart PSW: the 8-byte short PSW at guest absolute 0 (ESA format, bit 12 set)."""
    space = uv.server.address_spaces.get(conf.asce)  # type: ignore[attr-defined]
    pfn = None if space is None else space.pfn_of(0)
    word = 0 if pfn is None else int.from_bytes(uv.memory.frame(pfn).read(0, 8), "big")
    return Psw(mask=PSW_MASK_64, addr=word & 0x7FFFFFFF)


def sie_entry(uv: Ultravisor, sie: SieBlock) -> SecureCpuState:
    """Check a format-4 SIE block on entry; the secure CPU it names.

    Raises:
        ValidityIntercept: a handle is wrong or belongs to another
            configuration, the block is in use on another CPU, or the CPU is
            not operating (uv-interface.md §6).
    """
    cpu = uv.cpus.get(sie.pv_handle_cpu)
    if cpu is None or cpu.config_handle != sie.pv_handle_config or cpu.state_origin != sie.origin:
        raise ValidityIntercept(VALIDITY_HANDLE, "SIE block handles do not name a secure CPU of this configuration")
    if cpu.in_sie:
        raise ValidityIntercept(VALIDITY_IN_USE, "the SIE block is already entered on another CPU")
    if cpu.run_state is not CpuRunState.OPERATING:
        raise ValidityIntercept(VALIDITY_NOT_OPERATING, f"the CPU is {cpu.run_state.value}, not operating")
    cpu.in_sie = True
    return cpu


def sie_exit(uv: Ultravisor, cpu: SecureCpuState) -> None:
    cpu.in_sie = False
