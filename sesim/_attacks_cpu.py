"""Attacks on a secure CPU through its format-4 SIE block (uv-interface.md §6, uv-semantics.md §5).

The hostile host holds the SIE blocks (:class:`sesim._attacks_arena.SieRig`)
and changes what it may write: the handles, the ASCE it enters with, the
CPU timer, ``iictl``, the registers of ``pv_grregs``, the SIDA. The attack
plays the guest's program through the UV's CPU state, as the intercept tests
do. The victim's program keeps secret values in its registers; everything
the SIE block shows after an exit is obtained and scanned.
"""

from __future__ import annotations

from machine import ValidityReason, diag_intercept, spx_intercept
from machine._uv_sie import IICTL_OPERAND, IICTL_SPECIFICATION

from ._attacks_arena import PAGE, Arena, Victim
from ._attacks_base import attack
from ._attacks_rigs import SieRig
from ._hostile import Defence

RESULTS_ONLY = Defence.check("results-only")
"""After an intercept the UV takes back only the registers the intercepted instruction returns."""
PREFIX_KEPT = Defence.check("prefix-kept")


def _v(reason: ValidityReason) -> Defence:
    return Defence.validity(reason)


async def _rig(a: Arena, *, registers: bool = True) -> tuple[Victim, SieRig]:
    v = await a.victim(registers=registers)
    return v, SieRig(a, v)


def _diag500_arguments(rig: SieRig, v: Victim) -> None:
    """The guest loads DIAG 0x500's arguments into r1-r4: it shows those to the host on purpose."""
    assert v.registers is not None
    regs = rig.cpu().cpu.gprs
    for n in range(1, 5):
        regs[n] = v.registers[n] = 0x1000 + n
        v.public_registers.add(n)


def _run_once(rig: SieRig) -> None:
    """The honest round: enter, the guest runs a little, exit."""
    assert rig.enter() is None, "an honest SIE entry was refused"
    rig.leave()


@attack(
    "change-sie-handles", area="cpu", title="change the SIE block's CPU and configuration handles",
    defence="the UV checks both handles, that they belong together and to this SIE block: validity 0x2001-0x2004",
    expected=(_v(ValidityReason.CPU_HANDLE), _v(ValidityReason.CONFIG_HANDLE), _v(ValidityReason.FOREIGN_HANDLE),
              _v(ValidityReason.STATE_ORIGIN)),
)  # fmt: skip
async def change_sie_handles(a: Arena) -> None:
    """Enter the victim's SIE block with one bit of ``pv_handle_cpu`` flipped; with one bit of
    ``pv_handle_config`` flipped; with the attacker's own guest's configuration handle; with both
    handles of the attacker's CPU (to run the attacker's CPU on the victim's block)."""
    _, rig = await _rig(a)
    b = await a.accomplice()
    pv = rig.sies[0].pv
    assert pv is not None
    cpu, conf = pv.pv_handle_cpu, pv.pv_handle_config
    for what, new_cpu, new_conf, reason in (
        ("pv_handle_cpu with a bit flipped", cpu ^ 1 << 17, conf, ValidityReason.CPU_HANDLE),
        ("pv_handle_config with a bit flipped", cpu, conf ^ 1 << 40, ValidityReason.CONFIG_HANDLE),
        ("the attacker's configuration handle", cpu, b.config_handle, ValidityReason.FOREIGN_HANDLE),
        ("the attacker's CPU and configuration handles", b.cpu_handles[0], b.config_handle,
         ValidityReason.STATE_ORIGIN),
    ):  # fmt: skip
        pv.pv_handle_cpu, pv.pv_handle_config = new_cpu, new_conf
        a.host.expect(f"SIE entry with {what}", _v(reason), rig.enter())
    pv.pv_handle_cpu, pv.pv_handle_config = cpu, conf
    _run_once(rig)


@attack(
    "sie-block-on-two-cpus", area="cpu", title="enter one SIE block on two host CPUs at once",
    defence="a secure CPU runs on one host CPU at a time: validity 0x2005",
    expected=(_v(ValidityReason.IN_USE),),
)  # fmt: skip
async def sie_block_on_two_cpus(a: Arena) -> None:
    """Enter the victim's SIE block, and while the guest runs enter the same block again (a second
    host CPU): two copies of one CPU would let the host fork its state."""
    _, rig = await _rig(a)
    assert rig.enter() is None
    a.host.expect("enter the same SIE block again", _v(ValidityReason.IN_USE), rig.enter())
    rig.leave()


@attack(
    "change-guest-asce", area="cpu", title="run the guest on other DAT tables (change the guest ASCE)",
    defence="the ASCE must be the one given to CREATE_SEC_CONF: validity 0x2006",
    expected=(_v(ValidityReason.ASCE),),
)  # fmt: skip
async def change_guest_asce(a: Arena) -> None:
    """Enter the victim's SIE block with the attacker's guest's ASCE, then with a copy of the
    victim's tables at another origin."""
    _, rig = await _rig(a)
    b = await a.accomplice()
    a.host.expect("SIE entry with the attacker's ASCE", _v(ValidityReason.ASCE), rig.enter(asce=b.asce))
    copy = a.tb.alloc(4 * PAGE, align=4 * PAGE) | 0x100
    a.host.expect("SIE entry with a copy of the tables", _v(ValidityReason.ASCE), rig.enter(asce=copy))
    _run_once(rig)


@attack(
    "inject-pgm-after-notification", area="cpu", title="inject a program interruption after a notification",
    defence="an injection is allowed only as the answer to a 104, and only 0x10/0x11: validity 0x200c",
    expected=(_v(ValidityReason.INJECTION),),
)  # fmt: skip
async def inject_pgm_after_notification(a: Arena) -> None:
    """The guest executes DIAG 0x44 (notification 108); the host sets ``iictl`` to a specification
    exception and enters. Then, after a DIAG 0x500 (104), an ``iictl`` that is not 0x10 or 0x11."""
    v, rig = await _rig(a)
    pv = rig.sies[0].pv
    assert pv is not None and rig.enter() is None
    assert diag_intercept(rig.uv, rig.cpu(), rig.sies[0], code=0x44, r1=0, r3=0) == 0x6C
    rig.leave()
    pv.iictl = IICTL_SPECIFICATION
    a.host.expect("inject after intercept 108", _v(ValidityReason.INJECTION), rig.enter())
    pv.iictl = 0
    assert rig.enter() is None and v.registers is not None
    _diag500_arguments(rig, v)
    assert diag_intercept(rig.uv, rig.cpu(), rig.sies[0], code=0x500, r1=0, r3=0) == 0x68
    rig.leave()
    pv.iictl = IICTL_OPERAND + 0x20
    a.host.expect("inject an addressing-like code after 104", _v(ValidityReason.INJECTION), rig.enter())
    pv.iictl = 0
    _run_once(rig)
    v.registers[2] = rig.cpu().cpu.gprs[2]  # DIAG 0x500 returns its result in r2 (what the host gave)


@attack(
    "fake-intercept-registers", area="cpu", title="fake intercept data to change the guest's registers and prefix",
    defence="the UV copies back only the result registers of a 104, nothing after a 108, and sets the prefix itself",
    expected=(RESULTS_ONLY, PREFIX_KEPT),
)  # fmt: skip
async def fake_intercept_registers(a: Arena) -> None:
    """The guest (secret values in its registers) executes DIAG 0x500 with its arguments in r1-r4
    (intercept 104); the host writes all 16 ``pv_grregs`` and enters. Then DIAG 0x9c (108), all 16
    again. Then SET PREFIX (108, prefix in the SIDA): the host writes another prefix into the SIDA."""
    v, rig = await _rig(a)
    assert v.registers is not None
    pv = rig.sies[0].pv
    assert pv is not None and rig.enter() is None
    _diag500_arguments(rig, v)
    assert diag_intercept(rig.uv, rig.cpu(), rig.sies[0], code=0x500, r1=0, r3=0) == 0x68
    rig.leave()
    pv.pv_grregs[:] = [0xBAD0_0000_0000_0000 | n for n in range(16)]
    assert rig.enter() is None
    v.registers[2] = 0xBAD0_0000_0000_0002  # r2 is DIAG 0x500's result: the host's to give
    v.public_registers.add(2)
    a.host.expect("104 completed with all 16 registers faked", RESULTS_ONLY,
                  RESULTS_ONLY if list(rig.cpu().cpu.gprs) == v.registers else None)  # fmt: skip
    assert diag_intercept(rig.uv, rig.cpu(), rig.sies[0], code=0x9C, r1=1, r3=0) == 0x6C  # yield to CPU r1
    rig.leave()
    pv.pv_grregs[:] = [0xBAD1_0000_0000_0000 | n for n in range(16)]
    assert rig.enter() is None
    a.host.expect("108 completed with all 16 registers faked", RESULTS_ONLY,
                  RESULTS_ONLY if list(rig.cpu().cpu.gprs) == v.registers else None)  # fmt: skip
    prefix = rig.cpu().cpu.prefix
    assert spx_intercept(rig.cpu(), rig.sies[0], prefix=prefix) == 0x6C
    rig.leave()
    pv.sida[0:4] = (0x8000).to_bytes(4, "big")
    assert rig.enter() is None
    a.host.expect("SET PREFIX completed with a faked SIDA", PREFIX_KEPT,
                  PREFIX_KEPT if rig.cpu().cpu.prefix == prefix else None)  # fmt: skip
    rig.leave()


@attack(
    "cpu-timer-tamper", area="cpu", title="move the guest's CPU timer",
    defence="the timer may only fall by the time spent outside SIE: validity 0x200a / 0x200b",
    expected=(_v(ValidityReason.TIMER_FORWARD), _v(ValidityReason.TIMER_BACK)),
)  # fmt: skip
async def cpu_timer_tamper(a: Arena) -> None:
    """After an exit, enter with the CPU timer set forward (the guest would wait forever), then
    with the timer set back by much more than the time outside SIE (its timeouts would fire)."""
    _, rig = await _rig(a)
    _run_once(rig)
    pv = rig.sies[0].pv
    assert pv is not None
    honest = pv.cputm
    pv.cputm = honest + 1_000_000
    a.host.expect("SIE entry with the timer set forward", _v(ValidityReason.TIMER_FORWARD), rig.enter())
    pv.cputm = honest - 1_000_000_000
    a.host.expect("SIE entry with the timer set far back", _v(ValidityReason.TIMER_BACK), rig.enter())
    pv.cputm = honest
    _run_once(rig)


@attack(
    "skip-guest-reset", area="cpu", title="resume a guest that asked for a reset without running the reset",
    defence="after DIAG 308 subcode 0/1 the UV refuses SIE entry (validity 0x2008) and the load (rc 0x0103) "
            "until the whole reset sequence ran",
    expected=(_v(ValidityReason.RESET_INCOMPLETE), Defence.rc("CPU_SET_STATE", 0x0103)),
)  # fmt: skip
async def skip_guest_reset(a: Arena) -> None:
    """The guest executes DIAG 308 subcode 1 (load normal: clear its state and reboot); the host
    enters SIE again at once, then tries CPU_SET_STATE OPR_LOAD without the reset sequence."""
    from protocol import CpuSetStateRequest, CpuState

    v, rig = await _rig(a, registers=False)
    assert rig.enter() is None
    regs = rig.cpu().cpu.gprs
    regs[3] = 1
    assert diag_intercept(rig.uv, rig.cpu(), rig.sies[0], code=0x308, r1=2, r3=3) == 0x6C
    rig.leave()
    a.host.expect("SIE entry after the reset request", _v(ValidityReason.RESET_INCOMPLETE), rig.enter())
    assert v.guest is not None
    fired = a.host.call(CpuSetStateRequest(cpu_handle=v.guest.cpu_handles[0], state=CpuState.OPR_LOAD))[1]
    a.host.expect("OPR_LOAD without the reset sequence", Defence.rc("CPU_SET_STATE", 0x0103), fired)
