"""Guest reboot: DIAG 308 subcodes 0, 1 and 3 (uv-interface.md §6, uv-semantics.md §2.4).

First the ultravisor's side, step by step as kvm-unit-tests' ``pv-ipl`` drives
it; then whole runs in which secure and regular guests reboot and go on.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sie4 import booted

from machine import (
    CpuRunState,
    ValidityIntercept,
    ValidityReason,
    diag_intercept,
    spx_intercept,
)
from machine._uv_cpu import RC_RESET_INCOMPLETE, RC_SHARED_REMAIN
from protocol import (
    CpuResetClearRequest,
    CpuResetInitialRequest,
    CpuResetRequest,
    CpuState,
    PrepareResetRequest,
    Rc,
    SetSharedAccessRequest,
    SetUnshareAllRequest,
)
from protocol._stage3 import short_psw
from sesim._simulation import GuestConfig, RunConfig, run
from sesim.testbed import ProgramInterrupt, open_testbed

MARK = 0xFACE_0000_0000_0000
RESTART = 0x12340


def _refused(h: Any, reason: ValidityReason = ValidityReason.RESET_INCOMPLETE, n: int = 0) -> None:
    with pytest.raises(ValidityIntercept) as validity:
        h.enter(n)
    assert validity.value.reason == reason


async def _request_reset(h: Any, subcode: int) -> None:
    """The guest stores its restart PSW at absolute 0 and issues DIAG 308 (a 108)."""
    h.g.write(0, short_psw(RESTART))
    h.enter()
    h.regs().gprs[:] = [MARK | n for n in range(16)]
    h.regs().gprs[3] = subcode
    assert diag_intercept(h.uv, h.cpu(), h.sies[0], code=0x308, r1=0, r3=3) == 0x6C
    h.leave()


def _handle(h: Any) -> int:
    return h.g.config_handle


# ------------------------------------------------------------ the UV's side
@pytest.mark.parametrize("subcode", [0, 1])
async def test_entry_is_refused_after_every_step_until_the_load_then_the_cpu_restarts_at_the_psw_at_0(
    subcode: int,
) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        await _request_reset(h, subcode)
        _refused(h)  # no action yet
        h.set_state(0, CpuState.STP)
        _refused(h)
        h.host(SetUnshareAllRequest(handle=_handle(h)))
        _refused(h)
        h.host(PrepareResetRequest(handle=_handle(h)))
        _refused(h)
        reset = CpuResetClearRequest if subcode == 0 else CpuResetInitialRequest
        h.host(reset(handle=h.g.cpu_handles[0]))
        _refused(h)
        assert h.set_state(0, CpuState.OPR_LOAD).cc == 0
        h.enter()
        assert h.regs().psw.addr == RESTART
        cleared = [0] * 16 if subcode == 0 else [MARK | n for n in range(16) if n != 3]
        assert [g for n, g in enumerate(h.regs().gprs) if subcode == 0 or n != 3] == cleared


async def test_a_load_before_prepare_reset_and_the_cpu_reset_is_refused() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        await _request_reset(h, 1)
        h.set_state(0, CpuState.STP)
        assert h.set_state(0, CpuState.OPR_LOAD).rc == RC_RESET_INCOMPLETE
        h.host(PrepareResetRequest(handle=_handle(h)))
        assert h.set_state(0, CpuState.OPR_LOAD).rc == RC_RESET_INCOMPLETE
        h.host(CpuResetInitialRequest(handle=h.g.cpu_handles[0]))
        assert h.set_state(0, CpuState.OPR_LOAD).rc == Rc.EXECUTED


async def test_prepare_reset_needs_every_cpu_stopped() -> None:
    async with open_testbed() as tb:
        h = await booted(tb, cpus=2)
        h.set_state(0, CpuState.STP)
        assert tb.host_call(PrepareResetRequest(handle=_handle(h))).rc == Rc.INV_STATE
        h.set_state(1, CpuState.STP)
        assert tb.host_call(PrepareResetRequest(handle=_handle(h))).rc == Rc.EXECUTED


async def test_prepare_reset_needs_the_shared_pages_unshared_first() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.g.write(0x8000, SetSharedAccessRequest(paddr=0x9000).pack())
        assert await h.g.uvc(0x8000) == 0
        h.set_state(0, CpuState.STP)
        assert tb.host_call(PrepareResetRequest(handle=_handle(h))).rc == RC_SHARED_REMAIN
        h.host(SetUnshareAllRequest(handle=_handle(h)))
        assert tb.host_call(PrepareResetRequest(handle=_handle(h))).rc == Rc.EXECUTED


async def test_memory_stays_secure_with_its_contents_across_the_reset() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.g.write(0x5000, b"kept across reboot")
        await _request_reset(h, 0)
        h.set_state(0, CpuState.STP)
        for request in (
            SetUnshareAllRequest(handle=_handle(h)),
            PrepareResetRequest(handle=_handle(h)),
            CpuResetClearRequest(handle=h.g.cpu_handles[0]),
        ):
            h.host(request)
        h.set_state(0, CpuState.OPR_LOAD)
        h.enter()
        assert h.g.read(0x5000, 18) == b"kept across reboot"
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(h.g.host_addr(0x5000), 8)
        assert pgm.value.code == 0x3D


async def test_the_other_cpus_stay_stopped_until_they_are_started() -> None:
    async with open_testbed() as tb:
        h = await booted(tb, cpus=2)
        await _request_reset(h, 1)
        _refused(h, n=1)  # the whole configuration waits for the reset
        h.set_state(0, CpuState.STP)
        h.set_state(1, CpuState.STP)
        h.host(SetUnshareAllRequest(handle=_handle(h)))
        h.host(PrepareResetRequest(handle=_handle(h)))
        h.host(CpuResetInitialRequest(handle=h.g.cpu_handles[0]))
        h.host(CpuResetRequest(handle=h.g.cpu_handles[1]))
        h.set_state(0, CpuState.OPR_LOAD)
        h.set_state(0, CpuState.OPR)
        h.run_once(0)
        _refused(h, ValidityReason.NOT_OPERATING, n=1)
        assert h.set_state(1, CpuState.OPR).cc == 0  # SIGP START: no load of its own needed
        assert h.cpu(1).run_state is CpuRunState.OPERATING
        h.run_once(1)


async def test_a_reset_the_host_starts_without_a_diag_also_refuses_entry_until_the_load() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.g.write(0, short_psw(RESTART))
        h.set_state(0, CpuState.STP)
        h.host(PrepareResetRequest(handle=_handle(h)))
        h.set_state(0, CpuState.OPR)
        _refused(h)
        h.host(CpuResetRequest(handle=h.g.cpu_handles[0]))
        h.set_state(0, CpuState.OPR_LOAD)
        h.enter()
        assert h.regs().psw.addr == RESTART


async def test_after_a_reset_the_first_entry_needs_the_prefix_pages_at_0() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        spx_intercept(h.cpu(), h.sies[0], prefix=0x8000)
        h.leave()
        h.import_page(0x8000)
        h.import_page(0x9000)
        h.run_once()
        await _request_reset(h, 0)
        h.set_state(0, CpuState.STP)
        h.host(PrepareResetRequest(handle=_handle(h)))
        h.host(CpuResetClearRequest(handle=h.g.cpu_handles[0]))
        h.set_state(0, CpuState.OPR_LOAD)
        assert h.regs().prefix == 0
        h.enter()  # pages 0 and 4096 are still secure
        assert h.regs().psw.addr == RESTART


# ------------------------------------------------------------ whole runs
WORKLOAD = (
    "write 0x100000 pages=2",
    "diag500",
    "reboot normal",
    "read 0x100000 pages=2",
    "write 0x200000",
    "reboot clear",
    "read 0x200000",
    "read 0x100000 pages=2",
    "diag9c cpu=1",
)


def _events(path: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]


def _host_uvcs(events: list[dict[str, Any]], guest_cpus: int = 2) -> list[str]:
    """The commands the hypervisor's actors sent to the UV, in order."""
    return [
        e["msg"]["request"]["type"].removesuffix("Request")
        for e in events
        if e["actor"] == "uv" and e["kind"] == "recv" and e["msg"].get("type") == "Uvc"
        and e["msg"]["caller"]["context"] == "host"
    ]  # fmt: skip


@pytest.fixture(name="reboot_run", scope="module")
def _reboot_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = RunConfig(
        memory_mib=3072,
        guests=(
            GuestConfig(name="alpha", secure=True, memory_mib=16, cpus=2, workload=WORKLOAD),
            GuestConfig(name="delta", secure=False, memory_mib=16, cpus=2, workload=WORKLOAD),
        ),
    )
    path = tmp_path_factory.mktemp("reboot") / "run.jsonl"
    return run(config, seed=3, trace=path), _events(path)


def _vm(result: Any, name: str) -> Any:
    return next(vm for vm in result.vms if vm.name == name)


def test_a_secure_guest_reboots_twice_keeps_its_memory_and_finishes(reboot_run: Any) -> None:
    result, _ = reboot_run
    alpha = _vm(result, "alpha")
    assert alpha.state.value == "halted", alpha.reason
    assert alpha.guest.corruptions == []
    assert alpha.stats.reboots == 2
    assert alpha.stats.intercepts["108 diag308"] == 2
    assert alpha.stats.uvcs[("CREATE_SEC_CONF", 1)] == 1  # the same configuration all along


def test_the_reset_runs_the_sequence_of_uv_interface_6_in_order(reboot_run: Any) -> None:
    _, events = reboot_run
    commands = _host_uvcs(events)
    normal = ["CpuSetState", "CpuSetState", "SetUnshareAll", "PrepareReset", "CpuResetInitial", "CpuReset",
              "CpuSetState", "CpuSetState"]  # fmt: skip
    clear = ["CpuSetState", "CpuSetState", "SetUnshareAll", "PrepareReset", "CpuResetClear", "CpuResetClear",
             "CpuSetState", "CpuSetState"]  # fmt: skip
    text = ",".join(commands)
    assert ",".join(normal) in text
    assert ",".join(clear) in text
    resets = [e for e in events if e["kind"] == "guest-reset" and e["guest"] == "alpha"]
    assert [e["subcode"] for e in resets] == [1, 0]


def test_after_the_reboot_the_guest_starts_its_other_cpu_with_sigp(reboot_run: Any) -> None:
    result, events = reboot_run
    alpha = _vm(result, "alpha")
    assert alpha.stats.intercepts["108 sigp"] == 2
    rebooted = [e for e in events if e["kind"] == "guest-rebooted" and e["guest"] == "alpha"]
    assert [e["detail"] for e in rebooted] == ["restarted at 0x10000"] * 2


def test_a_regular_guest_reboots_too_without_the_ultravisor(reboot_run: Any) -> None:
    result, events = reboot_run
    delta = _vm(result, "delta")
    assert delta.state.value == "halted" and delta.guest.corruptions == []
    assert delta.stats.reboots == 2 and not delta.stats.uvcs
    assert delta.stats.intercepts["diag308"] == 2
    rebooted = [e for e in events if e["kind"] == "guest-rebooted" and e["guest"] == "delta"]
    assert [e["detail"] for e in rebooted] == ["restarted at 0x10000"] * 2


def test_a_re_ipl_builds_a_new_configuration_from_the_image_and_the_old_memory_is_gone(tmp_path: Any) -> None:
    workload = ("write 0x100000", "reboot reipl", "read 0x100000", "write 0x100000", "read 0x100000", "diag500")
    config = RunConfig(
        memory_mib=3072, guests=(GuestConfig(name="alpha", secure=True, memory_mib=16, cpus=2, workload=workload),)
    )
    result = run(config, seed=4, trace=tmp_path / "t.jsonl")
    alpha = _vm(result, "alpha")
    assert alpha.state.value == "halted", alpha.reason
    assert alpha.guest.corruptions == []  # the first read after the re-IPL saw zeros
    assert alpha.stats.uvcs[("CREATE_SEC_CONF", 1)] == 2
    assert alpha.stats.uvcs[("VERIFY_IMG", 1)] == 2
    assert alpha.stats.teardown == "sync"
