"""Intercepts of secure CPUs (uv-interface.md §6): 104, 108, 112, normalisation, injection.

The test plays the guest's program by setting the guest's registers in the
ultravisor's state, then executes the instruction through the machine layer,
and looks at the SIE block exactly as the hypervisor does.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sie4 import PAGE, booted

from actors._workload import Diag44, Diag288, Diag500, Reboot, parse_op
from machine import (
    PrefixIntercept,
    ValidityIntercept,
    ValidityReason,
    diag_intercept,
    spx_intercept,
)
from machine._uv_sie import (
    IICTL_OPERAND,
    IICTL_SPECIFICATION,
    PGM_OPERAND,
    PGM_SPECIFICATION,
    uvc_intercept,
)
from protocol import RemoveSharedAccessRequest, UsageError
from sesim._simulation import GuestConfig, RunConfig, run
from sesim.testbed import open_testbed

MARK = 0xC0FFEE_0000_0000


def _fill(regs, base=MARK):  # type: ignore[no-untyped-def]
    """The guest's program leaves a distinctive value in every register."""
    regs.gprs[:] = [base | n for n in range(16)]


# ------------------------------------------------------------------ 112
async def test_first_entry_with_prefix_pages_not_secure_is_intercept_112_until_both_are_imported() -> None:
    async with open_testbed() as tb:
        h = await booted(tb, ready=False)
        with pytest.raises(PrefixIntercept):
            h.enter()
        assert h.sies[0].pv.icptcode == 0x70
        h.import_page(0)
        with pytest.raises(PrefixIntercept):
            h.enter()
        h.import_page(PAGE)
        assert h.enter() is h.cpu()


async def test_set_prefix_is_108_with_the_prefix_in_the_sida_and_the_new_pages_give_112() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        assert spx_intercept(h.cpu(), h.sies[0], prefix=0x8000) == 0x6C
        h.leave()
        pv = h.sies[0].pv
        assert (pv.icptcode, pv.ipa) == (0x6C, 0xB210)
        assert pv.sida[0:4] == (0x8000).to_bytes(4, "big")
        assert h.regs().prefix == 0x8000  # the UV completed SET PREFIX itself
        with pytest.raises(PrefixIntercept):
            h.enter()
        h.import_page(0x8000)
        h.import_page(0x9000)
        h.enter()


# ------------------------------------------------------------------ DIAG
@pytest.mark.parametrize(
    ("code", "icpt"), [(0x500, 0x68), (0x288, 0x68), (0x9C, 0x6C), (0x44, 0x6C), (0x308, 0x6C), (0x258, 0x68)]
)
async def test_a_diag_shows_as_diag_0_2_0_5_with_the_code_in_register_5(code: int, icpt: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        h.regs().gprs[3] = 1  # a DIAG 308 subcode the guest may use
        assert diag_intercept(tb.uv, h.cpu(), h.sies[0], code=code, r1=7, r3=3) == icpt
        pv = h.sies[0].pv
        assert (pv.icptcode, pv.ipa, pv.ipb) == (icpt, 0x8302, 0x50000000)
        assert pv.pv_grregs[5] == code


async def test_diag_500_shows_registers_1_to_4_and_nothing_else() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x500, r1=2, r3=4)
        shown = h.sies[0].pv.pv_grregs
        assert shown[1:5] == [MARK | 1, MARK | 2, MARK | 3, MARK | 4]
        assert [v for n, v in enumerate(shown) if n not in (1, 2, 3, 4, 5)] == [0] * 11


@pytest.mark.parametrize(("r1", "r3"), [(0, 2), (4, 9), (14, 1)])
async def test_diag_288_shows_r1_r1_plus_1_and_r3_as_registers_0_1_2(r1: int, r3: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x288, r1=r1, r3=r3)
        shown = h.sies[0].pv.pv_grregs
        assert shown[0:3] == [MARK | r1, MARK | (r1 + 1), MARK | r3]
        assert shown[3:5] == [0, 0] and shown[6:] == [0] * 10


@pytest.mark.parametrize("r1", [1, 7, 14])
async def test_diag_9c_shows_the_guests_r1_in_register_0(r1: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        h.regs().gprs[r1] = 42
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x9C, r1=r1, r3=0)
        shown = h.sies[0].pv.pv_grregs
        assert shown[0] == 42 and shown[5] == 0x9C
        assert [v for n, v in enumerate(shown) if n not in (0, 5)] == [0] * 14


async def test_diag_308_shows_the_subcode_in_register_2() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        h.regs().gprs[11] = 1
        assert diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x308, r1=0, r3=11) == 0x6C
        shown = h.sies[0].pv.pv_grregs
        assert shown[2] == 1 and shown[5] == 0x308
        assert [v for n, v in enumerate(shown) if n not in (2, 5)] == [0] * 14


@pytest.mark.parametrize("subcode", [4, 7, 8, 9, 10])
async def test_diag_308_subcodes_a_secure_guest_may_not_use_are_a_specification_exception(subcode: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        h.regs().gprs[3] = subcode
        assert diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x308, r1=0, r3=3) == 0
        assert h.regs().pgm_code == PGM_SPECIFICATION
        assert h.sies[0].pv.icptcode == 0
        h.leave()
        h.enter()  # no reset was started: the CPU runs on


# --------------------------------------------------------- completion
async def test_after_a_104_the_result_in_register_2_reaches_the_guest_on_entry() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x500, r1=2, r3=4)
        h.leave()
        h.sies[0].pv.pv_grregs[2] = 42
        h.enter()
        assert h.regs().gprs[2] == 42
        assert h.sies[0].pv.pv_grregs == [0] * 16  # consumed


async def test_a_hypervisor_cannot_change_registers_the_instruction_does_not_return() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x500, r1=2, r3=4)
        h.leave()
        h.sies[0].pv.pv_grregs[:] = [0xBAD] * 16
        h.enter()
        gprs = h.regs().gprs
        assert gprs[2] == 0xBAD
        assert [g for n, g in enumerate(gprs) if n != 2] == [MARK | n for n in range(16) if n != 2]


async def test_after_a_108_nothing_comes_back_into_the_guests_registers() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _fill(h.regs())
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x9C, r1=14, r3=0)
        h.leave()
        h.sies[0].pv.pv_grregs[:] = [0xBAD] * 16
        h.enter()
        assert h.regs().gprs == [MARK | n for n in range(16)]


@pytest.mark.parametrize(("iictl", "pgm"), [(IICTL_SPECIFICATION, PGM_SPECIFICATION), (IICTL_OPERAND, PGM_OPERAND)])
@pytest.mark.parametrize("code", [0x500, 0x288])
async def test_after_a_104_an_injected_exception_is_taken_by_the_guest(iictl: int, pgm: int, code: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=code, r1=0, r3=2)
        h.leave()
        h.sies[0].pv.iictl = iictl
        h.enter()
        assert h.regs().pgm_code == pgm
        assert h.sies[0].pv.iictl == 0


@pytest.mark.parametrize("notification", ["diag9c", "diag44", "spx", "uvc"])
async def test_an_injection_after_a_108_is_a_validity_intercept(notification: str) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        cpu, sie = h.cpu(), h.sies[0]
        if notification == "spx":
            spx_intercept(cpu, sie, prefix=0)
        elif notification == "uvc":
            uvc_intercept(cpu, sie, uvcb=RemoveSharedAccessRequest(paddr=0x4000).pack())
        else:
            diag_intercept(tb.uv, cpu, sie, code=0x9C if notification == "diag9c" else 0x44, r1=0, r3=0)
        h.leave()
        sie.pv.iictl = IICTL_SPECIFICATION
        with pytest.raises(ValidityIntercept) as validity:
            h.enter()
        assert validity.value.reason == ValidityReason.INJECTION
        assert h.regs().pgm_code == 0
        sie.pv.iictl = 0
        h.enter()  # without the injection the CPU runs on


@pytest.mark.parametrize("iictl", [0x01, 0x02, 0x12, 0x7F])
async def test_only_specification_or_operand_may_be_injected_after_a_104(iictl: int) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        diag_intercept(tb.uv, h.cpu(), h.sies[0], code=0x500, r1=2, r3=4)
        h.leave()
        h.sies[0].pv.iictl = iictl
        with pytest.raises(ValidityIntercept) as validity:
            h.enter()
        assert validity.value.reason == ValidityReason.INJECTION


async def test_an_injection_without_any_intercept_is_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.run_once()
        h.sies[0].pv.iictl = IICTL_OPERAND
        with pytest.raises(ValidityIntercept) as validity:
            h.enter()
        assert validity.value.reason == ValidityReason.INJECTION


async def test_a_remove_shared_on_a_pinned_page_shows_its_uvcb_in_the_sida() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        block = RemoveSharedAccessRequest(paddr=0x5000).pack()
        assert uvc_intercept(h.cpu(), h.sies[0], uvcb=block) == 0x6C
        pv = h.sies[0].pv
        assert pv.ipa == 0xB9A4
        assert RemoveSharedAccessRequest.parse(bytes(pv.sida[: len(block)])).paddr == 0x5000
        assert pv.pv_grregs == [0] * 16


# ------------------------------------------------------------ whole runs
WORKLOAD = ("diag500 queue=2", "diag500 fn=7", "diag288 fn=9", "diag288 timeout=5", "diag288", "diag44",
            "diag9c cpu=1", "spx 0x8000", "write 0x8000 pages=2")  # fmt: skip


@pytest.fixture(name="icpt_run", scope="module")
def _icpt_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = RunConfig(
        memory_mib=3072,
        guests=(
            GuestConfig(name="alpha", secure=True, memory_mib=16, cpus=2, workload=WORKLOAD),
            GuestConfig(name="delta", secure=False, memory_mib=16, cpus=2, workload=WORKLOAD),
        ),
    )
    path = tmp_path_factory.mktemp("icpt") / "run.jsonl"
    result = run(config, seed=6, trace=path)
    events = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]
    return result, events


def _exits(events: list[dict[str, Any]], guest: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "sie-exit" and e.get("guest") == guest and "what" in e]


def test_a_secure_guest_meets_104_and_108_with_the_normalised_text(icpt_run: Any) -> None:
    result, events = icpt_run
    exits = {e["what"]: e for e in _exits(events, "alpha")}
    assert (exits["diag500"]["icpt"], exits["diag500"]["ipa"]) == (104, 0x8302)
    assert (exits["diag288"]["icpt"], exits["diag9c"]["icpt"], exits["diag44"]["icpt"]) == (104, 108, 108)
    alpha = next(vm for vm in result.vms if vm.name == "alpha")
    assert alpha.stats.intercepts["108 spx"] == 1
    assert alpha.stats.intercepts["112 prefix"] >= 2  # pages 0 and 0x8000 after the SET PREFIX
    assert alpha.state.value == "halted" and alpha.guest.corruptions == []


def test_a_regular_guest_gets_instruction_intercepts_with_its_real_registers(icpt_run: Any) -> None:
    result, events = icpt_run
    exits = {e["what"]: e for e in _exits(events, "delta")}
    assert {e["icpt"] for e in exits.values()} == {4}
    assert exits["diag500"]["ipa"] == 0x8324  # DIAG 2,4,0x500 as the guest wrote it
    assert exits["diag9c"]["ipa"] == 0x83E0  # DIAG 14,0,0x9c
    delta = next(vm for vm in result.vms if vm.name == "delta")
    assert not delta.stats.uvcs and delta.state.value == "halted"


@pytest.mark.parametrize("guest", ["alpha", "delta"])
def test_the_host_answers_bad_diag_arguments_with_a_specification_exception(icpt_run: Any, guest: str) -> None:
    result, events = icpt_run
    vm = next(vm for vm in result.vms if vm.name == guest)
    assert vm.stats.intercepts["injected specification"] == 3  # diag500 fn=7, diag288 fn=9, timeout=5
    taken = [e["code"] for e in events if e["kind"] == "guest-pgm" and e["guest"] == guest]
    assert taken == [PGM_SPECIFICATION] * 3


@pytest.mark.parametrize(
    ("text", "op"),
    [
        ("diag44", Diag44()),
        ("diag288 fn=2 timeout=60", Diag288(fn=2, timeout=60)),
        ("diag500 queue=1 fn=4", Diag500(queue=1, fn=4)),
        ("reboot clear", Reboot(kind="clear")),
        ("reboot NORMAL", Reboot(kind="normal")),
        ("reboot reipl", Reboot(kind="reipl")),
    ],
)
def test_the_workload_language_knows_the_new_operations(text: str, op: Any) -> None:
    assert parse_op(text) == op


@pytest.mark.parametrize("text", ["reboot", "reboot warm", "diag44 x=1", "diag288 timeout=soon"])
def test_malformed_new_operations_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_op(text)
