"""Secure CPU state stays in the ultravisor (uv-interface.md §6, uv-semantics.md §5).

Two parts: every validity condition of §6 on SIE entry, each with its own
reason code; and a whole run in which the secure guests' programs plant
distinctive register values that must never show up in anything the
hypervisor can reach, nor in the trace.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import pytest
from sie4 import booted

from machine import (
    CpuRunState,
    SieBlock,
    SieFormat,
    ValidityIntercept,
    ValidityReason,
    sie_entry,
)
from protocol import CpuState
from sesim.testbed import open_testbed


def _refused(h: Any, reason: ValidityReason, n: int = 0, **kw: Any) -> None:
    with pytest.raises(ValidityIntercept) as validity:
        h.enter(n, **kw)
    assert validity.value.reason == reason, validity.value


# ------------------------------------------------------------ handles
@pytest.mark.parametrize("field", ["pv_handle_cpu", "pv_handle_config"])
async def test_a_handle_with_any_single_bit_flipped_is_a_validity_intercept(field: str) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        pv = h.sies[0].pv
        good = getattr(pv, field)
        want = ValidityReason.CPU_HANDLE if field == "pv_handle_cpu" else ValidityReason.CONFIG_HANDLE
        for bit in range(64):
            setattr(pv, field, good ^ (1 << bit))
            _refused(h, want)
        setattr(pv, field, good)
        h.run_once()


@pytest.mark.parametrize("field", ["pv_handle_cpu", "pv_handle_config"])
async def test_a_handle_of_another_configuration_is_a_validity_intercept(field: str) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        other = await booted(tb)
        setattr(h.sies[0].pv, field, getattr(other.sies[0].pv, field))
        _refused(h, ValidityReason.FOREIGN_HANDLE)


async def test_the_handles_in_another_sie_block_are_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        stranger = SieBlock(origin=tb.alloc(4096))
        stranger.to_secure(cpu_handle=h.g.cpu_handles[0], config_handle=h.g.config_handle)
        _refused(h, ValidityReason.STATE_ORIGIN, sie=stranger)


async def test_a_format_0_block_is_not_a_secure_cpu() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.sies[0].to_normal()
        assert h.sies[0].sdf is SieFormat.NORMAL
        _refused(h, ValidityReason.CPU_HANDLE)


async def test_the_same_sie_block_entered_on_two_cpus_at_once_is_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.enter()
        _refused(h, ValidityReason.IN_USE)
        h.leave()
        h.run_once()


async def test_a_guest_asce_other_than_create_sec_confs_is_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        _refused(h, ValidityReason.ASCE, asce=h.g.asce ^ 0x1000)
        h.run_once()


@pytest.mark.parametrize("state", [CpuState.STP, CpuState.CHKSTP])
async def test_a_cpu_that_is_not_operating_is_a_validity_intercept(state: CpuState) -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        assert h.set_state(0, state).cc == 0
        _refused(h, ValidityReason.NOT_OPERATING)
        h.set_state(0, CpuState.OPR)
        h.run_once()


async def test_a_cpu_in_the_load_state_may_enter() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.set_state(0, CpuState.OPR_LOAD)
        assert h.cpu().run_state is CpuRunState.LOAD
        h.run_once()


# ------------------------------------------------------------ CPU timer
async def test_the_cpu_timer_runs_while_the_guest_runs_and_the_exit_shows_it() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        pv = h.sies[0].pv
        pv.cputm = 1_000_000
        h.enter()
        h.leave(spent=700)
        assert pv.cputm == 1_000_000 - 700


async def test_a_cpu_timer_larger_than_at_the_last_exit_is_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.run_once()
        h.sies[0].pv.cputm += 1
        _refused(h, ValidityReason.TIMER_FORWARD)


async def test_the_cpu_timer_may_fall_by_the_time_spent_outside_sie_but_not_more() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        pv = h.sies[0].pv
        h.run_once()
        exit_value, exit_time = pv.cputm, h.now
        outside = (h.now + 100) - exit_time  # enter() advances the clock by 100
        pv.cputm = exit_value - outside - 1
        _refused(h, ValidityReason.TIMER_BACK)
        h.now -= 100  # the refused attempt took no time on the guest's clock
        pv.cputm = exit_value - outside
        h.enter()


# ------------------------------------------------------------ order
async def test_handle_errors_are_reported_before_a_stopped_cpu() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        h.set_state(0, CpuState.STP)
        h.sies[0].pv.pv_handle_cpu ^= 1
        _refused(h, ValidityReason.CPU_HANDLE)


async def test_a_refused_entry_changes_nothing() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        before = (h.cpu().in_sie, h.cpu().exit_timer, list(h.regs().gprs))
        _refused(h, ValidityReason.ASCE, asce=0)
        assert (h.cpu().in_sie, h.cpu().exit_timer, list(h.regs().gprs)) == before


async def test_sie_entry_returns_the_ultravisors_own_state_which_the_block_never_holds() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        sie = h.sies[0]
        state = sie_entry(tb.uv, sie, asce=h.g.asce, now=5_000)
        assert sie.cpu is None
        assert state is tb.uv.cpus[h.g.cpu_handles[0]]
        held = [getattr(sie, a.name) for a in type(sie).__attrs_attrs__]
        held += [getattr(sie.pv, a.name) for a in type(sie.pv).__attrs_attrs__]
        assert not any(v is state or v is state.cpu or v is state.cpu.gprs for v in held)


# ---------------------------------------------------- nothing leaks (whole run)
def _system_run() -> tuple[Any, Any, bytes, list[str]]:
    """A small server with two secure guests and one regular guest, walked at every intercept."""
    import trio

    from actors import Fabric, RandomStrategy
    from actors._system import System
    from actors._vm import VmSpec
    from actors._workload import parse_workload
    from sesim._simulation import build_image, derived_host_key
    from traces._writer import TraceRecorder

    workload = parse_workload(
        [
            "write 0x100000 pages=2",
            "diag500 queue=1",
            "diag9c cpu=1",
            "diag288 timeout=30",
            "diag44",
            "spx 0x8000",
            "share 0x300000",
            "unshare 0x300000",
            "reboot normal",
            "read 0x100000 pages=2",
            "diag500 fn=9",
            "reboot clear",
            "diag500",
        ]
    )
    key = derived_host_key(7, "s")
    specs = [
        VmSpec(name=n, secure=True, memory=16 << 20, cpus=2, workload=workload,
               image=build_image(seed=7, name=n, host_keys=[key.public_key()]))
        for n in ("alpha", "beta")
    ] + [VmSpec(name="delta", secure=False, memory=16 << 20, cpus=2, workload=workload)]  # fmt: skip
    sink = io.BytesIO()
    fabric = Fabric(RandomStrategy(7))
    recorder = TraceRecorder(fabric, sink)
    findings: list[str] = []
    system = System(fabric, server_name="s", memory=3 << 30, cpus=2, host_key=key, guests=specs, seed=7)

    def spy(actor: str, kind: str, payload: dict[str, Any]) -> None:
        recorder(actor, kind, payload)
        if kind == "sie-exit" and payload.get("guest") in ("alpha", "beta"):
            findings.extend(_walk_host(system, _secure_markers(system)))

    fabric.recorder = spy
    trio.run(fabric.run)
    return system, recorder, sink.getvalue(), findings


def _secure_markers(system: Any) -> set[int]:
    return {m for vm in system.vms if vm.secure for m in vm.guest.registers.planted}


def _walk_host(system: Any, markers: set[int]) -> list[str]:
    """Every place reachable from the hypervisor holding a marker, as an attribute path.

    The walk starts at the hypervisor actor and follows attributes and
    containers of sesim's own objects: KVM, every VirtualMachine, SIE block
    and vCPU thread, messages in mailboxes, dumps. It does not pass through
    the ultravisor (actor or machine), a guest OS actor (the guest's own
    inside) or the fabric (which knows every actor). Of host memory it looks
    at the frames a host access can read (not secure, not donated), for
    aligned doublewords in either byte order.
    """
    from actors._fabric import Fabric
    from actors._guest import GuestActor
    from actors._ultravisor import UltravisorActor
    from machine import Frame, FrameState, HostMemory, Ultravisor

    readable = (FrameState.HOST, FrameState.EXPORTED, FrameState.SHARED, FrameState.SHARED_PINNED)
    skip = (UltravisorActor, Ultravisor, GuestActor, Fabric)
    seen: set[int] = set()
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("hypervisor", system.hypervisor)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, bool) or obj is None:
            continue
        if isinstance(obj, int):
            if obj in markers:
                found.append(path)
            continue
        if isinstance(obj, str):
            if any(str(m) in obj or f"{m:x}" in obj for m in markers):
                found.append(path)
            continue
        if isinstance(obj, (bytes, bytearray, memoryview)):
            data = bytes(obj)
            if len(data) >= 8:  # a register stored to memory: an aligned doubleword, either byte order
                words = len(data) // 8
                head = data[: words * 8]
                values = set(struct.unpack(f">{words}Q", head)) | set(struct.unpack(f"<{words}Q", head))
                if values & markers:
                    found.append(path)
            continue
        if isinstance(obj, HostMemory):
            for frame in obj.frames():
                if frame.state in readable and frame.data is not None:
                    stack.append((f"{path}.frame[{frame.pfn:#x}]", bytes(frame.data)))
            continue
        if isinstance(obj, Frame):
            continue
        if isinstance(obj, dict):
            for k, v in obj.items():
                stack.append((f"{path}[{k!r}]", k))
                stack.append((f"{path}[{k!r}]", v))
            continue
        if isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
            for i, v in enumerate(obj):
                stack.append((f"{path}[{i}]", v))
            continue
        module = type(obj).__module__.split(".")[0]
        if module not in ("actors", "machine", "protocol", "traces", "sesim"):
            continue
        names = list(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            names += [s for s in getattr(cls, "__slots__", ()) if s != "__weakref__"]
        for name in names:
            if hasattr(obj, name):
                stack.append((f"{path}.{name}", getattr(obj, name)))
    return found


@pytest.fixture(name="leak_run", scope="module")
def _leak_run() -> tuple[Any, Any, bytes, list[str]]:
    return _system_run()


def test_the_guests_really_ran_planted_their_registers_and_met_104_108_and_112(leak_run: Any) -> None:
    system, _, _, _ = leak_run
    for vm in system.vms:
        assert vm.guest.corruptions == [] and vm.state.value == "halted", (vm.name, vm.reason)
        assert len(vm.guest.registers.planted) > 50
    alpha = next(vm for vm in system.vms if vm.name == "alpha")
    for label in ("104 diag500", "108 diag9c", "104 diag288", "108 diag44", "108 spx", "108 diag308", "112 prefix"):
        assert alpha.stats.intercepts[label] > 0, label
    assert alpha.stats.intercepts["injected specification"] == 1


def test_no_register_of_a_secure_guest_reaches_anything_the_hypervisor_can_reach(leak_run: Any) -> None:
    system, _, _, findings = leak_run
    assert findings == []
    assert _walk_host(system, _secure_markers(system)) == []


def test_no_register_of_a_secure_guest_is_in_the_trace(leak_run: Any) -> None:
    system, _, trace, _ = leak_run
    text = trace.decode()
    leaked = [m for m in _secure_markers(system) if str(m) in text or f"{m:x}" in text]
    assert leaked == []


def test_the_walk_finds_a_regular_guests_registers_in_its_sie_block(leak_run: Any) -> None:
    """The control: the same walk sees a regular guest's state, which the hypervisor holds."""
    system, _, _, _ = leak_run
    delta = next(vm for vm in system.vms if vm.name == "delta")
    found = _walk_host(system, delta.guest.registers.planted)
    assert any(".cpu.gprs" in path for path in found)
    assert any(".cpu.crs" in path for path in found)
