"""Secure CPUs: CPU_SET_STATE, the CPU resets and PREPARE_RESET.

uv-interface.md §6 and uv-semantics.md §2.2-§2.4:

* At IPL, OPR_LOAD comes before OPR ("firmware requires us to set the load
  state before we set the cpu to operating"); the CPU starts at the PSW of
  the SE header. A CPU of a configuration that was loaded may be started
  (OPR) without a load of its own: that is SIGP START of a secondary CPU.
* A guest reset (DIAG 308 subcode 0 or 1, or a reset the host starts) runs
  CPU_SET_STATE STP on every CPU → SET_UNSHARE_ALL → PREPARE_RESET →
  CPU_RESET_CLEAR (subcode 0) or CPU_RESET_INITIAL (subcode 1; the other
  CPUs get CPU_RESET) → CPU_SET_STATE OPR_LOAD on the IPL CPU. Until that
  load, SIE entry of any CPU of the configuration is refused (validity
  0x2008, :mod:`machine._uv_sie`). After it the CPU restarts at the short
  PSW the guest stored at its absolute address 0, read at the next SIE
  entry (when the prefix pages, 0 and 4096 after the reset, are secure).
* Guest memory is not cleared by either reset: it stays secure, with its
  contents (QEMU's modified-clear and load-normal resets keep memory; the
  kvm-unit-tests ``pv-ipl`` guest continues at its reset PSW after both).
  CPU_RESET_CLEAR clears the CPU's registers too, CPU_RESET_INITIAL its
  PSW, prefix, CPU timer and control registers, CPU_RESET nothing but the
  run state.

Return codes not given by the reference are sesim's choices, named below.
"""

from __future__ import annotations

from protocol._uvc_codes import CpuState as CpuStateCode
from protocol._uvc_codes import Rc, UvcCommand
from protocol._uvcb_base import UvcResponse

from ._cpu import CpuRunState, Psw, SecureCpuState
from ._memory import FrameState
from ._uv_core import Caller, ConfigPhase, SecureConfig, Ultravisor, fail, handles, ok

RC_BAD_CPU_STATE = 0x0101
"""CPU_SET_STATE with a state code that does not exist (sesim's choice)."""
RC_NOT_LOADED = 0x0102
"""CPU_SET_STATE OPR on a configuration none of whose CPUs was loaded (sesim's choice)."""
RC_RESET_INCOMPLETE = 0x0103
"""CPU_SET_STATE OPR_LOAD during a guest reset before PREPARE_RESET and this CPU's reset (sesim's choice)."""
RC_SHARED_REMAIN = 0x0101
"""PREPARE_RESET while the guest still shares pages: SET_UNSHARE_ALL comes first (sesim's choice)."""

_SHARED = (FrameState.SHARED, FrameState.SHARED_PINNED)


def _cpus_of(uv: Ultravisor, conf: SecureConfig) -> list[SecureCpuState]:
    return [uv.cpus[h] for _, h in sorted(conf.cpus.items())]


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
        if cpu.reset_blocked:
            if not (conf.reset_prepared and cpu.reset_done):
                fail(RC_RESET_INCOMPLETE)
            # After a guest reset: restart at the PSW at absolute 0 (uv-interface.md §6).
            cpu.load_psw_pending = True
            for other in _cpus_of(uv, conf):
                other.reset_blocked = False
                other.reset_done = False
            conf.reset_prepared = False
        else:
            secrets = conf.opened.secrets
            cpu.cpu.psw = Psw(mask=secrets.psw_mask, addr=secrets.psw_addr)
        cpu.loaded = True
        cpu.run_state = CpuRunState.LOAD
    elif state == CpuStateCode.OPR:
        if conf is None or not any(c.loaded for c in _cpus_of(uv, conf)):
            fail(RC_NOT_LOADED)
        cpu.run_state = CpuRunState.OPERATING
    elif state == CpuStateCode.STP:
        cpu.run_state = CpuRunState.STOPPED
    else:
        cpu.run_state = CpuRunState.CHECK_STOP
    return ok(request)  # type: ignore[arg-type]


def _reset(uv: Ultravisor, request: object, how: str) -> UvcResponse:
    cpu = uv.cpu(request.handle)  # type: ignore[attr-defined]
    if how == "clear":
        cpu.cpu.clear_reset()
    elif how == "initial":
        cpu.cpu.initial_reset()
    if how != "normal":
        cpu.exit_timer = None  # the CPU timer was reset: no earlier exit value binds the next entry
    cpu.pending = None
    cpu.run_state = CpuRunState.STOPPED
    cpu.loaded = False
    conf = uv.configs.get(cpu.config_handle)
    if conf is not None and conf.reset_prepared:
        cpu.reset_done = True
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.CPU_RESET)
def _cpu_reset(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, "normal")


@handles(UvcCommand.CPU_RESET_INITIAL)
def _cpu_reset_initial(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, "initial")


@handles(UvcCommand.CPU_RESET_CLEAR)
def _cpu_reset_clear(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return _reset(uv, request, "clear")


@handles(UvcCommand.PREPARE_RESET)
def _prepare_reset(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Prepare a guest reset: every CPU stopped, nothing shared; entry is refused until the load."""
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    cpus = _cpus_of(uv, conf)
    if any(c.run_state is CpuRunState.OPERATING or c.in_sie for c in cpus):
        fail(Rc.INV_STATE)  # unsharing and reset need every CPU stopped (uv-semantics.md §2.4)
    if any(uv.memory.frame(pfn).state in _SHARED for pfn in sorted(conf.secure_frames)):
        fail(RC_SHARED_REMAIN)
    conf.reset_prepared = True
    for cpu in cpus:
        cpu.reset_blocked = True
        cpu.reset_done = False
    return ok(request)  # type: ignore[arg-type]
