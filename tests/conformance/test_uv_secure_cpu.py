"""CREATE_SEC_CPU and DESTROY_SEC_CPU (uv-interface.md §4), and handles (§2: 0x0020, 0x0021)."""

from __future__ import annotations

from typing import Any

import pytest
from uvc_conformance import (
    CONFIG_HANDLE_COMMANDS,
    CPU_HANDLE_COMMANDS,
    PAGE,
    block_with_handle,
    call,
    call_bytes,
    cpu_request,
    create_conf,
    create_cpu,
    expect,
    init_uv,
    produces,
)

from machine._uv_conf import RC_CPU_STOR_UNALIGNED
from protocol import CreateSecCpuRc, DestroySecCpuRequest, Rc, UvcCommand
from sesim.testbed import ProgramInterrupt, open_testbed

C = UvcCommand.CREATE_SEC_CPU


@produces(C, Rc.EXECUTED)
async def test_create_sec_cpu_returns_a_handle_and_takes_the_cpu_storage() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        request = cpu_request(tb, handle)
        answer = await call(tb, request)
        expect(answer, Rc.EXECUTED)
        assert answer.u64(0x18) not in (0, handle)
        for addr in range(request.stor_origin, request.stor_origin + tb.qui().cpu_stor_len, PAGE):
            with pytest.raises(ProgramInterrupt) as pgm:
                tb.read(addr, 1)
            assert pgm.value.code == 0x3D
            with pytest.raises(ProgramInterrupt) as pgm:
                tb.write(addr, b"\x01")
            assert pgm.value.code == 0x3D
        tb.read(request.state_origin, 8)  # the SIE block stays the host's


async def test_the_highest_cpu_number_qui_allows_is_accepted() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        expect(await call(tb, cpu_request(tb, handle, num=tb.qui().max_guest_cpu_id)), Rc.EXECUTED)


FAULTS: dict[str, tuple[int, Any]] = {
    "guest-handle+1": (Rc.INV_GHANDLE, lambda tb, h: {"guest_handle": h + 1}),
    "num-above-max": (CreateSecCpuRc.CPU_NUM_TOO_HIGH, lambda tb, h: {"num": tb.qui().max_guest_cpus + 1}),
    "num-one-above-max-id": (CreateSecCpuRc.CPU_NUM_TOO_HIGH, lambda tb, h: {"num": tb.qui().max_guest_cpu_id + 1}),
    "stor-beyond-memory": (CreateSecCpuRc.STOR_OUTSIDE_MEMORY, lambda tb, h: {"stor_origin": tb.memory_size + PAGE}),
    "stor-at-0": (CreateSecCpuRc.STOR_OVERLAPS_LOWCORE, lambda tb, h: {"stor_origin": 0}),
    "stor-at-0x1000": (CreateSecCpuRc.STOR_OVERLAPS_LOWCORE, lambda tb, h: {"stor_origin": 0x1000}),
    "sie-beyond-memory": (CreateSecCpuRc.STATE_ORIGIN_INACCESSIBLE, lambda tb, h: {"state_origin": tb.memory_size + PAGE}),
}  # fmt: skip


def _claims(fn: Any) -> Any:
    for name, (rc, _) in FAULTS.items():
        fn = produces(C, rc, when={"fault": name})(fn)
    return fn


@pytest.mark.parametrize("fault", FAULTS)
@_claims
async def test_create_sec_cpu_with_one_bad_field_answers_its_rc_and_no_handle(fault: str) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        rc, change = FAULTS[fault]
        good = cpu_request(tb, handle)
        block = bytearray(cpu_request(tb, handle, **change(tb, handle)).pack())
        block[0x18:0x20] = b"\x5a" * 8
        answer = await call_bytes(tb, bytes(block))
        expect(answer, rc)
        assert answer.u64(0x18) == 0
        expect(await call(tb, good), Rc.EXECUTED)


@produces(C, CreateSecCpuRc.CPU_NUM_IN_USE)
async def test_a_cpu_number_already_defined_answers_0x104() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        await create_cpu(tb, handle, num=3)
        expect(await call(tb, cpu_request(tb, handle, num=3)), CreateSecCpuRc.CPU_NUM_IN_USE)
        expect(await call(tb, cpu_request(tb, handle, num=4)), Rc.EXECUTED)


async def test_cpu_numbers_are_per_configuration() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        first, _ = await create_conf(tb)
        second, _ = await create_conf(tb)
        await create_cpu(tb, first, num=0)
        await create_cpu(tb, second, num=0)


async def test_a_sie_block_on_an_invalid_page_is_not_accessible() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        request = cpu_request(tb, handle)
        tb.invalidate(request.state_origin)
        expect(await call(tb, request), CreateSecCpuRc.STATE_ORIGIN_INACCESSIBLE)


@pytest.mark.parametrize(
    ("faults", "rc"),
    [
        (("handle", "num"), Rc.INV_GHANDLE),
        (("num", "stor-outside"), CreateSecCpuRc.CPU_NUM_TOO_HIGH),
        (("in-use", "stor-outside"), CreateSecCpuRc.CPU_NUM_IN_USE),
        (("stor-outside", "sie"), CreateSecCpuRc.STOR_OUTSIDE_MEMORY),
        (("stor-lowcore", "sie"), CreateSecCpuRc.STOR_OVERLAPS_LOWCORE),
    ],
)
async def test_create_sec_cpu_checks_in_the_documented_order(faults: tuple[str, ...], rc: int) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        await create_cpu(tb, handle, num=0)
        change: dict[str, int] = {"num": 1}
        for fault in faults:
            change.update({
                "handle": {"guest_handle": handle ^ 1},
                "num": {"num": 0xFFFF},
                "in-use": {"num": 0},
                "stor-outside": {"stor_origin": tb.memory_size},
                "stor-lowcore": {"stor_origin": 0},
                "sie": {"state_origin": tb.memory_size},
            }[fault])  # fmt: skip
        expect(await call(tb, cpu_request(tb, handle, **change)), rc)


async def test_cpu_storage_that_is_already_uv_storage_is_refused() -> None:
    """sesim's choice: 0x0105, storage the host cannot give (§4 is silent)."""
    async with open_testbed() as tb:
        uv_origin, _ = await init_uv(tb)
        handle, _ = await create_conf(tb)
        expect(await call(tb, cpu_request(tb, handle, stor_origin=uv_origin)), CreateSecCpuRc.STOR_OUTSIDE_MEMORY)


async def test_cpu_storage_not_page_aligned_is_refused() -> None:
    """sesim's choice of rc."""
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        stor = tb.alloc(tb.qui().cpu_stor_len + PAGE)
        expect(await call(tb, cpu_request(tb, handle, stor_origin=stor + 8)), RC_CPU_STOR_UNALIGNED)


# -- DESTROY_SEC_CPU ----------------------------------------------------------------------


@produces(UvcCommand.DESTROY_SEC_CPU, Rc.EXECUTED)
@produces(UvcCommand.DESTROY_SEC_CPU, Rc.INV_CHANDLE)
async def test_destroy_sec_cpu_gives_the_storage_back_zeroed() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        cpu, request = await create_cpu(tb, handle)
        expect(await call(tb, DestroySecCpuRequest(handle=cpu), length=0x38), Rc.INV_LEN)
        expect(await call(tb, DestroySecCpuRequest(handle=cpu + 1)), Rc.INV_CHANDLE)
        expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
        length = tb.qui().cpu_stor_len
        assert tb.read(request.stor_origin, length) == bytes(length)
        tb.write(request.stor_origin, b"host again")
        expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.INV_CHANDLE)


async def test_a_destroyed_cpu_number_can_be_created_again() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        cpu, request = await create_cpu(tb, handle, num=2)
        expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
        expect(await call(tb, request), Rc.EXECUTED)


# -- handles (§2) -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", CONFIG_HANDLE_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("bad", ["zero", "flipped-bit", "cpu-handle"])
@produces(None, Rc.INV_GHANDLE)
async def test_a_bad_configuration_handle_answers_0x0020(command: UvcCommand, bad: str) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        cpu, _ = await create_cpu(tb, handle)
        wrong = {"zero": 0, "flipped-bit": handle ^ (1 << 17), "cpu-handle": cpu}[bad]
        expect(await call_bytes(tb, block_with_handle(command, wrong)), Rc.INV_GHANDLE)


@pytest.mark.parametrize("command", CPU_HANDLE_COMMANDS, ids=lambda c: c.name)
@pytest.mark.parametrize("bad", ["zero", "flipped-bit", "config-handle"])
@produces(None, Rc.INV_CHANDLE)
async def test_a_bad_cpu_handle_answers_0x0021(command: UvcCommand, bad: str) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        cpu, _ = await create_cpu(tb, handle)
        wrong = {"zero": 0, "flipped-bit": cpu ^ (1 << 40), "config-handle": handle}[bad]
        expect(await call_bytes(tb, block_with_handle(command, wrong)), Rc.INV_CHANDLE)
