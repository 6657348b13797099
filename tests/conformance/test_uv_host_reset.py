"""Host reset, DIAG 308 subcode 1 (uv-interface.md §6; kvm-unit-tests uv-host.c ``test_clear``).

Every donation comes back zeroed and readable, and the UV is uninitialised
again: host commands answer rc 0x0003 until the next INIT_UV.
"""

from __future__ import annotations

import pytest
from uvc_conformance import (
    HOST_AFTER_INIT,
    PAGE,
    call,
    create_conf,
    create_cpu,
    expect,
    header_call,
    init_uv,
)

from protocol import InitUvRequest, QuiRequest, Rc, UvcCommand
from sesim.testbed import ProgramInterrupt, open_testbed


async def test_host_reset_returns_every_donation_zeroed_and_readable() -> None:
    async with open_testbed() as tb:
        uv_origin, uv_len = await init_uv(tb)
        handle, conf = await create_conf(tb)
        _, cpu = await create_cpu(tb, handle)
        g = await tb.secure_guest()
        g.write(0xA0000, b"guest data")
        qui = tb.qui()
        donations = [
            (uv_origin, uv_len),
            (conf.conf_base_stor_origin, qui.conf_base_phys_stor_len),
            (conf.conf_virt_stor_origin, PAGE),
            (cpu.stor_origin, qui.cpu_stor_len),
            *g.donations.values(),
            (g.host_addr(0xA0000), PAGE),
        ]
        for origin, _ in donations:
            with pytest.raises(ProgramInterrupt):
                tb.read(origin, 1)
        await tb.host_reset()
        for origin, length in donations:
            for addr in range(origin, origin + length, PAGE):
                assert tb.read(addr, PAGE) == bytes(PAGE)
                tb.write(addr, b"host")


@pytest.mark.parametrize("command", HOST_AFTER_INIT, ids=lambda c: c.name)
async def test_after_a_host_reset_host_commands_answer_invalid_state(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        await tb.host_reset()
        expect(await header_call(tb, command), Rc.INV_STATE)


async def test_after_a_host_reset_qui_works_and_init_uv_can_be_repeated_on_the_same_storage() -> None:
    async with open_testbed() as tb:
        origin, length = await init_uv(tb)
        await tb.host_reset()
        expect(await call(tb, QuiRequest()), Rc.EXECUTED)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length)), Rc.EXECUTED)
        handle, _ = await create_conf(tb)
        assert handle != 0


async def test_a_host_reset_leaves_only_the_ipl_cpu_operating() -> None:
    async with open_testbed(cpus=2) as tb:
        await tb.start_cpu(1)
        await tb.host_reset()
        origin = tb.alloc(tb.qui().uv_base_stor_len, align=1 << 20)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=tb.qui().uv_base_stor_len)), Rc.EXECUTED)
