"""CPU state: PSW, registers, control registers, and the SIE state description.

For a regular guest the hypervisor owns the whole :class:`CpuState` through
the SIE block (format 0). For a secure guest it does not: the real state
lives in the ultravisor (:class:`SecureCpuState`), and the SIE block
(format 4, ``sdf = 2``) carries only a :class:`SecureSieView`: the handles,
the intercept code, the normalised instruction text, the SIDA, the registers
the intercept needs, the CPU timer and the hypervisor's own copy of the
prefix (uv-interface.md §6, uv-semantics.md §5). The two never share an
object: :meth:`SieBlock.to_secure` drops the format-0 state, so nothing the
hypervisor can reach holds a secure guest's PSW, registers or control
registers.
"""

from __future__ import annotations

import enum

from attrs import define, field, frozen

PSW_MASK_EA = 0x0000000100000000
PSW_MASK_BA = 0x0000000080000000
PSW_MASK_64 = PSW_MASK_EA | PSW_MASK_BA
CR0_RESET = 0xE0
"""Architected initial value of CR0 after an initial CPU reset."""
CR14_RESET = 0xC2000000
"""Architected initial value of CR14 after an initial CPU reset."""
SIDA_SIZE = 4096


@frozen(kw_only=True)
class Psw:
    """A program-status word: mask and instruction address."""

    mask: int = 0
    addr: int = 0


class CpuRunState(enum.Enum):
    """The architected CPU states that CPU_SET_STATE moves between."""

    STOPPED = "stopped"
    OPERATING = "operating"
    LOAD = "load"
    CHECK_STOP = "check-stop"


def _regs() -> list[int]:
    return [0] * 16


def _reset_crs() -> list[int]:
    crs = [0] * 16
    crs[0] = CR0_RESET
    crs[14] = CR14_RESET
    return crs


@define(kw_only=True)
class CpuState:
    """The full architected state of one CPU (what a guest's program sees and changes).

    ``pgm_code`` is the code of the last program interruption the guest
    took (the architecture stores it in the guest's lowcore; sesim keeps it
    here, with the rest of the guest's state).
    """

    psw: Psw = field(factory=Psw)
    gprs: list[int] = field(factory=_regs)
    crs: list[int] = field(factory=_reset_crs)
    prefix: int = 0
    cpu_timer: int = 0
    pgm_code: int = 0

    def initial_reset(self) -> None:
        """Initial CPU reset: PSW, prefix, CPU timer zero, CRs to their initial values; GPRs kept."""
        self.psw = Psw()
        self.prefix = 0
        self.cpu_timer = 0
        self.crs[:] = _reset_crs()
        self.pgm_code = 0

    def clear_reset(self) -> None:
        """Clear reset: an initial reset that also zeroes the general registers."""
        self.initial_reset()
        self.gprs[:] = _regs()


class SieFormat(enum.IntEnum):
    """``sdf``: the state-description format."""

    NORMAL = 0
    SECURE = 2  # format-4 SIE for secure CPUs


@define(kw_only=True)
class SecureSieView:
    """All the hypervisor ever sees of a secure CPU (the format-4 fields, uv-semantics.md §5).

    The ultravisor fills ``icptcode``, ``ipa``, ``ipb``, the SIDA and only
    the ``pv_grregs`` the intercepted instruction needs on each exit, and
    consumes them (results in ``pv_grregs``, an injection in ``iictl``) on
    the next entry. ``cputm`` is the CPU timer, which the hypervisor may
    lower by at most the time it kept the CPU outside SIE; ``prefix`` is
    the hypervisor's own copy, learned from SET PREFIX notifications.
    """

    pv_handle_cpu: int = 0
    pv_handle_config: int = 0
    icptcode: int = 0
    ipa: int = 0
    ipb: int = 0
    iictl: int = 0
    sida: bytearray = field(factory=lambda: bytearray(SIDA_SIZE), repr=False)
    pv_grregs: list[int] = field(factory=_regs)
    cputm: int = 0
    prefix: int = 0

    def clear_exit(self) -> None:
        """Forget the last exit's data (the UV does this before it writes a new exit)."""
        self.icptcode = self.ipa = self.ipb = 0
        self.pv_grregs[:] = _regs()
        self.sida[:] = bytes(SIDA_SIZE)


@define(kw_only=True)
class SieBlock:
    """The SIE state description of one vCPU, as the hypervisor sees it.

    Format 0 (regular guests): ``cpu`` is the guest's whole state, and
    ``icptcode``/``ipa``/``ipb`` the intercepted instruction with its real
    register numbers; ``pending_pgm`` is a program interruption the
    hypervisor delivers on the next entry. Format 4 (secure guests):
    ``cpu`` is ``None`` and ``pv`` is the :class:`SecureSieView`.
    """

    origin: int
    sdf: SieFormat = SieFormat.NORMAL
    cpu: CpuState | None = field(factory=CpuState)
    pv: SecureSieView | None = None
    icptcode: int = 0
    ipa: int = 0
    ipb: int = 0
    pending_pgm: int = 0

    def to_secure(self, *, cpu_handle: int, config_handle: int) -> None:
        """Switch to format 4 (``sdf = 2``): the format-0 state is dropped, never copied."""
        self.sdf = SieFormat.SECURE
        self.cpu = None
        self.icptcode = self.ipa = self.ipb = self.pending_pgm = 0
        self.pv = SecureSieView(pv_handle_cpu=cpu_handle, pv_handle_config=config_handle)

    def to_normal(self) -> None:
        """Back to format 0 with a fresh (clear-reset) CPU state: the secure state stays gone."""
        self.sdf = SieFormat.NORMAL
        self.pv = None
        self.cpu = CpuState()
        self.icptcode = self.ipa = self.ipb = self.pending_pgm = 0

    @property
    def pv_handle_cpu(self) -> int:
        return 0 if self.pv is None else self.pv.pv_handle_cpu

    @property
    def pv_handle_config(self) -> int:
        return 0 if self.pv is None else self.pv.pv_handle_config


@frozen(kw_only=True)
class PendingIntercept:
    """What the ultravisor must finish at the next SIE entry after an intercept.

    ``code`` is 104 or 108; ``results`` pairs a ``pv_grregs`` index with
    the guest register that receives it when a 104 completes (the
    normalised numbers mapped back to the guest's own).
    """

    code: int
    results: tuple[tuple[int, int], ...] = ()


@define(kw_only=True)
class SecureCpuState:
    """What the ultravisor keeps of a secure CPU: never visible to the hypervisor."""

    handle: int
    config_handle: int
    num: int
    state_origin: int
    stor_origin: int
    cpu: CpuState = field(factory=CpuState)
    run_state: CpuRunState = CpuRunState.STOPPED
    in_sie: bool = False
    entry_time: int = 0
    exit_timer: int | None = None
    exit_time: int = 0
    pending: PendingIntercept | None = None
    reset_blocked: bool = False  # a guest reset was asked for and its sequence has not completed
    reset_done: bool = False  # a CPU reset ran after PREPARE_RESET
    load_psw_pending: bool = False  # OPR_LOAD after a reset: load the PSW at absolute 0 at the next entry
    loaded: bool = False
