"""CPU state: PSW, registers, control registers, and the SIE state description.

For a regular guest the hypervisor owns the whole :class:`CpuState` through
the SIE block. For a secure guest it does not: the real state lives in the
ultravisor (:class:`SecureCpuState`), and the SIE block (format 4,
``sdf = 2``) shows only handles, the intercept code, the normalised
instruction text, the SIDA and the registers the intercept needs
(uv-interface.md §6, uv-semantics.md §5).
"""

from __future__ import annotations

import enum

from attrs import define, field, frozen

PSW_MASK_EA = 0x0000000100000000
PSW_MASK_BA = 0x0000000080000000
PSW_MASK_64 = PSW_MASK_EA | PSW_MASK_BA


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


@define(kw_only=True)
class CpuState:
    """The full architected state of one CPU."""

    psw: Psw = field(factory=Psw)
    gprs: list[int] = field(factory=lambda: [0] * 16)
    crs: list[int] = field(factory=lambda: [0] * 16)
    prefix: int = 0
    cpu_timer: int = 0

    def clear(self) -> None:
        """Clear reset: everything zero."""
        self.psw = Psw()
        self.gprs[:] = [0] * 16
        self.crs[:] = [0] * 16
        self.prefix = 0
        self.cpu_timer = 0


class SieFormat(enum.IntEnum):
    """``sdf``: the state-description format."""

    NORMAL = 0
    SECURE = 2  # format-4 SIE for secure CPUs


@define(kw_only=True)
class SieBlock:
    """The SIE state description of one vCPU, as the hypervisor sees it.

    For a secure CPU only the fields below the banner are meaningful; the
    ultravisor fills ``icptcode``, ``ipa``, ``ipb``, ``sida`` and the needed
    ``pv_grregs`` on each exit and reads them back on the next entry.
    """

    origin: int
    sdf: SieFormat = SieFormat.NORMAL
    # --- regular guests: the whole CPU state -----------------------------
    cpu: CpuState = field(factory=CpuState)
    # --- secure guests (format 4) ----------------------------------------
    pv_handle_cpu: int = 0
    pv_handle_config: int = 0
    icptcode: int = 0
    ipa: int = 0
    ipb: int = 0
    iictl: int = 0
    sida: bytearray = field(factory=lambda: bytearray(4096))
    pv_grregs: list[int] = field(factory=lambda: [0] * 16)
    gpsw_cc: int = 0
    cpu_timer: int = 0


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
    last_exit_timer: int | None = None
    reset_pending: bool = False
    loaded: bool = False
