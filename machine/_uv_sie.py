"""Format-4 SIE: what the ultravisor checks on entry and shows on exit (uv-interface.md §6).

Theory of operation
===================

A secure CPU's state lives in the ultravisor (:class:`SecureCpuState`); the
hypervisor holds only the SIE block's :class:`SecureSieView`. Three moments
touch both:

* **Entry** (:func:`sie_entry`): the view must name this CPU with the
  handles the UV gave, the ASCE must be the one of CREATE_SEC_CONF, the CPU
  timer must not have been moved illegally, the CPU must be operating and
  not in the middle of a guest reset or a dump, and an injection (``iictl``)
  is accepted only as the answer to a 104. Any violation is a validity
  intercept (0x20) with a reason code 0x20xx (:class:`ValidityReason`).
  Then the CPU's two prefix pages must be secure, else intercept 112 and
  the hypervisor imports them. Only then does the UV finish what the last
  intercept left open: it copies a 104's results from ``pv_grregs`` into
  the guest's own registers, or makes the guest take the specification or
  operand exception the hypervisor chose; and after a reset it loads the
  PSW stored at the guest's absolute address 0.
* **An intercepted instruction** (:func:`diag_intercept`,
  :func:`spx_intercept`, :func:`sigp_intercept`, :func:`uvc_intercept`):
  the UV writes the intercept code, the instruction text with normalised
  register numbers (``DIAG 0,2,0(5)``: ipa 0x8302, ipb 0x50000000, the
  code in register 5), the SIDA, and only the registers that instruction
  needs, copied from the guest's registers into the normalised slots.
* **Exit** (:func:`sie_exit`): the CPU timer goes back into the view and the
  UV remembers it and the time, for the next entry's timer check.

The reason codes are sesim's (the reference gives only the 0x20xx family);
each names one condition of §6, so a test can tell them apart.
"""

from __future__ import annotations

import enum

from ._cpu import (
    PSW_MASK_64,
    CpuRunState,
    PendingIntercept,
    Psw,
    SecureCpuState,
    SecureSieView,
    SieBlock,
)
from ._memory import PAGE_SIZE, FrameState
from ._uv_core import Ultravisor

ICPT_VALIDITY = 0x20
ICPT_PV_INSTR = 0x68  # 104
ICPT_PV_NOTIFY = 0x6C  # 108
ICPT_PV_PREF = 0x70  # 112

IICTL_NONE = 0x00
IICTL_SPECIFICATION = 0x10
IICTL_OPERAND = 0x11
PGM_SPECIFICATION = 0x06
PGM_OPERAND = 0x15
INJECTABLE = {IICTL_SPECIFICATION: PGM_SPECIFICATION, IICTL_OPERAND: PGM_OPERAND}
"""``iictl`` codes a hypervisor may set after a 104, and the program interruption the guest takes."""

DIAG_IPA = 0x8302
"""``DIAG 0,2,...``: R1 = 0, R3 = 2 (uv-interface.md §6)."""
NORMALISED_IPB = 0x50000000
"""``0(5)``: base register 5, displacement 0; the code or order is in register 5."""
SPX_IPA = 0xB210
UVC_IPA = 0xB9A4
SIGP_IPA = 0xAE02
"""``SIGP 0,2,0(5)``: sesim normalises SIGP as §6 normalises DIAG (order in r5, CPU address in r2)."""

DIAG_INSTR = frozenset({0x500, 0x288})
"""DIAG codes the hypervisor emulates (intercept 104)."""
DIAG_NOTIFY = frozenset({0x44, 0x9C, 0x308})
"""DIAG codes the UV completes and only reports (intercept 108)."""
DIAG308_INTERCEPTED = frozenset({0, 1, 3, 5, 6})
"""DIAG 308 subcodes a secure guest may use; 4, 7 and 8-10 are a specification exception
(uv-semantics.md §2.4), which the UV delivers itself since a 108 allows no injection."""
_GUEST_OWN = (FrameState.SECURE, FrameState.SHARED, FrameState.SHARED_PINNED)
DIAG308_RESETS = frozenset({0, 1})
"""Subcodes that keep the guest protected: SIE entry is refused until the reset sequence ran."""


class ValidityReason(enum.IntEnum):
    """Why SIE entry was refused (intercept 0x20): sesim's codes of the UV's 0x20xx family, in check order."""

    CPU_HANDLE = 0x2001  # pv_handle_cpu names no secure CPU (a flipped bit, say)
    CONFIG_HANDLE = 0x2002  # pv_handle_config names no configuration
    FOREIGN_HANDLE = 0x2003  # the CPU belongs to another configuration than the one named
    STATE_ORIGIN = 0x2004  # the SIE block is not the one given to CREATE_SEC_CPU
    IN_USE = 0x2005  # the SIE block is already entered on another CPU
    ASCE = 0x2006  # the guest ASCE differs from the one given to CREATE_SEC_CONF
    DUMPING = 0x2007  # the configuration is being dumped
    RESET_INCOMPLETE = 0x2008  # a guest reset was asked for and its sequence has not run
    NOT_OPERATING = 0x2009  # the CPU is stopped or check-stopped
    TIMER_FORWARD = 0x200A  # the CPU timer is larger than at the last exit
    TIMER_BACK = 0x200B  # ... or smaller by more than the time spent outside SIE
    INJECTION = 0x200C  # an injection where none is allowed (no 104 before, or not 0x10/0x11)


class SieExit(Exception):
    """SIE ended before the guest ran: ``icptcode`` says why."""

    icptcode = 0


class ValidityIntercept(SieExit):
    """SIE entry refused (intercept 0x20) with a reason code 0x20xx."""

    icptcode = ICPT_VALIDITY

    def __init__(self, reason: int, why: str) -> None:
        super().__init__(f"validity {reason:#06x}: {why}")
        self.reason = reason
        self.why = why


class PrefixIntercept(SieExit):
    """Intercept 112: a prefix page of the CPU is not secure; the hypervisor imports both."""

    icptcode = ICPT_PV_PREF

    def __init__(self, prefix: int) -> None:
        super().__init__(f"intercept 112: prefix pages at {prefix:#x} are not secure")


def _refuse(reason: ValidityReason, why: str) -> ValidityIntercept:
    return ValidityIntercept(reason, why)


# ---------------------------------------------------------------- entry
def sie_entry(uv: Ultravisor, sie: SieBlock, *, asce: int, now: int) -> SecureCpuState:
    """Enter SIE with a format-4 block; the secure CPU that now runs.

    Args:
        asce: the guest ASCE the hypervisor enters with (its gmap's).
        now: virtual time, for the CPU-timer rule.

    Raises:
        ValidityIntercept: one of the conditions of uv-interface.md §6, in
            the order of :class:`ValidityReason`. Nothing changed.
        PrefixIntercept: the CPU's prefix pages are not secure (112). The
            pending completion stays pending.
    """
    pv = sie.pv
    if pv is None:
        raise _refuse(ValidityReason.CPU_HANDLE, "the SIE block is not in format 4")
    cpu = uv.cpus.get(pv.pv_handle_cpu)
    if cpu is None:
        raise _refuse(ValidityReason.CPU_HANDLE, "pv_handle_cpu names no secure CPU")
    conf = uv.configs.get(pv.pv_handle_config)
    if conf is None:
        raise _refuse(ValidityReason.CONFIG_HANDLE, "pv_handle_config names no configuration")
    if cpu.config_handle != conf.handle:
        raise _refuse(ValidityReason.FOREIGN_HANDLE, "the CPU belongs to another configuration")
    if cpu.state_origin != sie.origin:
        raise _refuse(ValidityReason.STATE_ORIGIN, "not the SIE block given to CREATE_SEC_CPU")
    if cpu.in_sie:
        raise _refuse(ValidityReason.IN_USE, "the SIE block is already entered on another CPU")
    if asce != conf.asce:
        raise _refuse(ValidityReason.ASCE, "the guest ASCE is not the one of CREATE_SEC_CONF")
    if conf.dumping:
        raise _refuse(ValidityReason.DUMPING, "the configuration is being dumped")
    if cpu.reset_blocked:
        raise _refuse(ValidityReason.RESET_INCOMPLETE, "the guest reset sequence has not completed")
    if cpu.run_state not in (CpuRunState.OPERATING, CpuRunState.LOAD):
        raise _refuse(ValidityReason.NOT_OPERATING, f"the CPU is {cpu.run_state.value}, not operating")
    if cpu.exit_timer is not None:
        if pv.cputm > cpu.exit_timer:
            raise _refuse(ValidityReason.TIMER_FORWARD, "the CPU timer is larger than at the last exit")
        if cpu.exit_timer - pv.cputm > now - cpu.exit_time:
            raise _refuse(ValidityReason.TIMER_BACK, "the CPU timer fell by more than the time outside SIE")
    if pv.iictl and (pv.iictl not in INJECTABLE or cpu.pending is None or cpu.pending.code != ICPT_PV_INSTR):
        raise _refuse(ValidityReason.INJECTION, "a program interruption may be injected only after a 104")
    prefix = cpu.cpu.prefix
    if not _prefix_secure(uv, conf.asce, conf.handle, prefix):
        pv.clear_exit()
        pv.icptcode = ICPT_PV_PREF
        cpu.exit_timer, cpu.exit_time = pv.cputm, now
        raise PrefixIntercept(prefix)
    # Accepted: the guest runs.
    cpu.in_sie = True
    cpu.entry_time = now
    cpu.cpu.cpu_timer = pv.cputm
    if cpu.load_psw_pending:
        cpu.cpu.psw = _short_psw_at_zero(uv, conf.asce)
        cpu.load_psw_pending = False
    _complete(cpu, pv)
    return cpu


def _prefix_secure(uv: Ultravisor, asce: int, handle: int, prefix: int) -> bool:
    """Whether both prefix pages are the guest's own (secure, or shared by it)."""
    space = uv.server.address_spaces.get(asce)
    if space is None:
        return False
    for gaddr in (prefix, prefix + PAGE_SIZE):
        pfn = space.pfn_of(gaddr >> 12)
        frame = None if pfn is None else uv.memory.peek(pfn)
        if frame is None or frame.owner != handle or frame.state not in _GUEST_OWN:
            return False
    return True


def _short_psw_at_zero(uv: Ultravisor, asce: int) -> Psw:
    """The PSW a load reads: the 8-byte short PSW at guest absolute 0 (uv-interface.md §6).

    Entry checked that page 0 (a prefix page after the reset) is secure, so
    the UV reads the guest's own plaintext there.
    """
    space = uv.server.address_spaces[asce]
    pfn = space.pfn_of(0)
    word = 0 if pfn is None else int.from_bytes(uv.memory.frame(pfn).read(0, 8), "big")
    return Psw(mask=PSW_MASK_64, addr=word & 0x7FFFFFFF)


def _complete(cpu: SecureCpuState, view: SecureSieView) -> None:
    """Finish the last intercept: a 104's results or injection; a 108 needs nothing."""
    pending = cpu.pending
    cpu.pending = None
    if pending is not None and pending.code == ICPT_PV_INSTR:
        if view.iictl:
            cpu.cpu.pgm_code = INJECTABLE[view.iictl]
        else:
            for slot, reg in pending.results:
                cpu.cpu.gprs[reg] = view.pv_grregs[slot]
    view.iictl = IICTL_NONE
    view.clear_exit()


# ----------------------------------------------------------------- exit
def sie_exit(uv: Ultravisor, cpu: SecureCpuState, sie: SieBlock, *, now: int) -> None:
    """Leave SIE: the CPU timer ran while the guest did; the view gets its new value."""
    if not cpu.in_sie:
        return
    cpu.in_sie = False
    cpu.cpu.cpu_timer -= now - cpu.entry_time
    cpu.exit_timer, cpu.exit_time = cpu.cpu.cpu_timer, now
    if sie.pv is not None:
        sie.pv.cputm = cpu.cpu.cpu_timer


# ------------------------------------------------------- intercepts
def _show(sie: SieBlock, code: int, ipa: int, ipb: int, regs: dict[int, int]) -> None:
    pv = sie.pv
    assert pv is not None
    pv.clear_exit()
    pv.icptcode, pv.ipa, pv.ipb = code, ipa, ipb
    for slot, value in regs.items():
        pv.pv_grregs[slot] = value


def diag_intercept(uv: Ultravisor, cpu: SecureCpuState, sie: SieBlock, *, code: int, r1: int, r3: int) -> int:
    """The guest executed ``DIAG r1,r3,code``; the intercept code shown (0 if none).

    Normalised to ``DIAG 0,2,0(5)`` with the code in register 5
    (uv-interface.md §6). DIAG 0x500 shows registers 1-4 (its fixed ABI)
    and takes register 2 back as its result; DIAG 0x288 shows R1, R1+1 and
    R3 as registers 0, 1, 2; DIAG 0x9c shows R1 in register 0; DIAG 0x308
    shows R3 (the subcode) in register 2. A DIAG 308 subcode a secure guest
    may not use is a specification exception that the UV delivers itself
    (0 is returned, ``pgm_code`` is set).
    """
    g = cpu.cpu.gprs
    regs: dict[int, int] = {5: code}
    results: tuple[tuple[int, int], ...] = ()
    if code == 0x500:
        regs.update({1: g[1], 2: g[2], 3: g[3], 4: g[4]})
        results = ((2, 2),)
    elif code == 0x288:
        regs.update({0: g[r1], 1: g[(r1 + 1) % 16], 2: g[r3]})
    elif code == 0x9C:
        regs[0] = g[r1]
    elif code == 0x308:
        subcode = g[r3]
        if subcode not in DIAG308_INTERCEPTED:
            cpu.cpu.pgm_code = PGM_SPECIFICATION
            return 0
        regs[2] = subcode
        if subcode in DIAG308_RESETS:
            conf = uv.configs[cpu.config_handle]
            for handle in conf.cpus.values():  # the whole configuration waits for the reset
                uv.cpus[handle].reset_blocked = True
    icpt = ICPT_PV_NOTIFY if code in DIAG_NOTIFY else ICPT_PV_INSTR
    _show(sie, icpt, DIAG_IPA, NORMALISED_IPB, regs)
    cpu.pending = PendingIntercept(code=icpt, results=results)
    return icpt


def spx_intercept(cpu: SecureCpuState, sie: SieBlock, *, prefix: int) -> int:
    """SET PREFIX: the UV sets the prefix itself and notifies (108, ipa 0xb210, prefix in SIDA 0-3)."""
    prefix &= 0x7FFFE000
    cpu.cpu.prefix = prefix
    _show(sie, ICPT_PV_NOTIFY, SPX_IPA, 0, {})
    assert sie.pv is not None
    sie.pv.sida[0:4] = prefix.to_bytes(4, "big")
    cpu.pending = PendingIntercept(code=ICPT_PV_NOTIFY)
    return ICPT_PV_NOTIFY


def sigp_intercept(cpu: SecureCpuState, sie: SieBlock, *, order: int, r1: int, r3: int) -> int:
    """SIGP r1,r3,order: a notification the hypervisor emulates (108, ``SIGP 0,2,0(5)``).

    Register 5 carries the order, register 2 the target CPU address (R3),
    register 1 the parameter (R1+1).
    """
    g = cpu.cpu.gprs
    _show(sie, ICPT_PV_NOTIFY, SIGP_IPA, NORMALISED_IPB, {5: order, 2: g[r3], 1: g[(r1 + 1) % 16]})
    cpu.pending = PendingIntercept(code=ICPT_PV_NOTIFY)
    return ICPT_PV_NOTIFY


def uvc_intercept(cpu: SecureCpuState, sie: SieBlock, *, uvcb: bytes) -> int:
    """A guest UVC the UV turns into notification 108 (ipa 0xb9a4), its UVCB in the SIDA (§4)."""
    _show(sie, ICPT_PV_NOTIFY, UVC_IPA, 0, {})
    assert sie.pv is not None
    sie.pv.sida[0 : len(uvcb)] = uvcb
    cpu.pending = PendingIntercept(code=ICPT_PV_NOTIFY)
    return ICPT_PV_NOTIFY
