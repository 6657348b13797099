"""sesim.testbed: the raw-UVCB testbed itself (the UV's answers are tested in tests/conformance/)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

import pytest

import machine
import sesim.testbed as testbed_module
from protocol import (
    ConvFromSecStorRequest,
    InitUvRequest,
    QuiRequest,
    QuiResponse,
    Rc,
    UsageError,
    UvcCommand,
)
from protocol._crypto import phkh
from protocol._se_header import parse_se_header
from sesim.testbed import GuestKilled, ProgramInterrupt, open_testbed

MIB = 1 << 20
PAGE = 4096


def rc_at(tb: Any, addr: int) -> int:
    return int.from_bytes(tb.read(addr + 4, 2), "big")


# -- the server ---------------------------------------------------------------------------------


async def test_a_testbed_is_a_fresh_server_whose_uv_is_not_initialised() -> None:
    async with open_testbed(memory_mib=2200, cpus=2) as tb:
        assert tb.memory_size == 2200 * MIB
        addr = tb.alloc(PAGE)
        tb.write(addr, UvcCommand.DESTROY_SEC_CONF.uvcb_length.to_bytes(2, "big") + b"\x01\x01" + bytes(0x3C))
        assert await tb.uvc(addr) == 1
        assert rc_at(tb, addr) == Rc.INV_STATE


def test_program_interrupt_of_the_testbed_is_the_machines() -> None:
    assert testbed_module.ProgramInterrupt is machine.ProgramInterrupt


async def test_alloc_hands_out_aligned_disjoint_memory_from_the_top() -> None:
    async with open_testbed() as tb:
        first = tb.alloc(3 * PAGE)
        second = tb.alloc(5000, align=MIB)
        assert tb.memory_size - MIB - 4 * PAGE <= first <= tb.memory_size - MIB - 3 * PAGE
        assert first % (2 * PAGE) == 0  # naturally aligned, as the kernel's page allocator
        assert second % MIB == 0 and second + 5000 <= first
        assert second >= 2 << 30


@pytest.mark.parametrize(("size", "align"), [(0, PAGE), (PAGE, 0), (PAGE, 3 * PAGE), (1 << 40, PAGE)])
async def test_alloc_refuses_impossible_requests(size: int, align: int) -> None:
    async with open_testbed(memory_mib=16) as tb:
        with pytest.raises(UsageError):
            tb.alloc(size, align)


async def test_host_reads_and_writes_round_trip() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(2 * PAGE) + PAGE - 3
        tb.write(addr, b"across a page")
        assert tb.read(addr, 13) == b"across a page"


async def test_an_invalidated_page_takes_page_translation_until_validated() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.invalidate(addr + 12)
        for access in (lambda: tb.read(addr, 1), lambda: tb.write(addr, b"x")):
            with pytest.raises(ProgramInterrupt) as pgm:
                access()
            assert pgm.value.code == 0x11
        tb.validate(addr)
        tb.write(addr, b"x")


async def test_an_access_beyond_memory_takes_addressing() -> None:
    async with open_testbed(memory_mib=16) as tb:
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(tb.memory_size, 1)
        assert pgm.value.code == 0x05


async def test_a_uvcb_in_the_first_allocated_page_may_have_any_header_length() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, QuiRequest(length=0xFFFF).pack()[:8])
        assert await tb.uvc(addr) == 0


async def test_uvc_returns_the_cc_and_leaves_rc_and_outputs_in_memory() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, QuiRequest().pack())
        assert await tb.uvc(addr) == 0
        answer = QuiResponse.parse(tb.read(addr, 0x100), cc=0)
        assert answer.rc == Rc.EXECUTED
        assert answer == tb.qui().truncated(0x100)


async def test_qui_is_the_host_view() -> None:
    async with open_testbed() as tb:
        qui = tb.qui()
        assert qui.installed(UvcCommand.INIT_UV)
        assert not qui.installed(UvcCommand.SET_SHARED_ACCESS)


@pytest.mark.parametrize("n", [-1, 2, 7])
async def test_start_and_stop_cpu_refuse_cpus_that_do_not_exist(n: int) -> None:
    async with open_testbed(cpus=2) as tb:
        with pytest.raises(UsageError):
            await tb.start_cpu(n)
        with pytest.raises(UsageError):
            await tb.stop_cpu(n)


async def test_cpu_0_runs_the_testbed_and_cannot_be_stopped() -> None:
    async with open_testbed() as tb:
        with pytest.raises(UsageError):
            await tb.stop_cpu(0)


async def test_start_cpu_makes_more_than_one_cpu_operate() -> None:
    async with open_testbed(cpus=3) as tb:
        qui = tb.qui()
        addr = tb.alloc(PAGE)
        tb.write(addr, InitUvRequest(stor_origin=tb.alloc(qui.uv_base_stor_len, MIB), stor_len=qui.uv_base_stor_len).pack())
        await tb.start_cpu(2)
        assert await tb.uvc(addr) == 1 and rc_at(tb, addr) == 0x0102
        await tb.stop_cpu(2)
        assert await tb.uvc(addr) == 0


# -- secure guests ------------------------------------------------------------------------------


async def test_secure_guest_initialises_the_uv_and_boots() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest(memory_mib=2, cpus=2)
        assert tb.uv.initialized
        assert g.memory_size == 2 * MIB
        assert len(g.cpu_handles) == 2 and g.config_handle not in g.cpu_handles
        assert set(g.donations) == {"base", "var", "cpu0", "cpu1"}
        cpus = [tb.uv.cpus[h] for h in g.cpu_handles]
        assert all(cpu.run_state is machine.CpuRunState.OPERATING for cpu in cpus)
        assert tb.uv.configs[g.config_handle].phase is machine.ConfigPhase.VERIFIED


async def test_two_secure_guests_live_side_by_side() -> None:
    async with open_testbed() as tb:
        first = await tb.secure_guest()
        second = await tb.secure_guest()
        assert first.config_handle != second.config_handle
        first.write(0xA0000, b"first")
        second.write(0xA0000, b"second")
        assert first.read(0xA0000, 5) == b"first"


async def test_secure_guest_refuses_when_init_uv_cannot_succeed() -> None:
    async with open_testbed(cpus=2) as tb:
        await tb.start_cpu(1)
        with pytest.raises(UsageError, match="INIT_UV"):
            await tb.secure_guest()


async def test_the_image_is_built_for_this_servers_host_key() -> None:
    async with open_testbed() as tb:
        image = tb.build_image()
        header = parse_se_header(image.data[image.description.hdr_addr :])
        assert header.phkhs == (phkh(tb.host_public_key),)


async def test_guest_writes_are_private_and_guest_reads_see_them() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0FF0, b"crossing two guest pages")
        assert g.read(0xA0FF0, 24) == b"crossing two guest pages"
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(g.host_addr(0xA0000), 1)
        assert pgm.value.code == 0x3D


async def test_a_guest_page_the_host_exported_comes_back_on_the_next_guest_access() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"swapped out")
        addr = tb.alloc(PAGE)
        tb.write(addr, ConvFromSecStorRequest(paddr=g.host_addr(0xA0000)).pack())
        assert await tb.uvc(addr) == 0
        assert g.read(0xA0000, 11) == b"swapped out"


async def test_a_guest_that_cannot_get_its_page_back_is_killed() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"swapped out")
        addr = tb.alloc(PAGE)
        tb.write(addr, ConvFromSecStorRequest(paddr=g.host_addr(0xA0000)).pack())
        assert await tb.uvc(addr) == 0
        tb.write(g.host_addr(0xA0000), b"tampered")
        with pytest.raises(GuestKilled) as killed:
            g.read(0xA0000, 1)
        assert killed.value.rc != 0


async def test_a_guest_access_beyond_its_memory_is_the_guests_interruption() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        with pytest.raises(ProgramInterrupt) as pgm:
            g.read(g.memory_size, 1)
        assert pgm.value.code == 0x05
        with pytest.raises(UsageError):
            g.host_addr(g.memory_size)


async def test_after_a_host_reset_the_guest_is_gone() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        await tb.host_reset()
        with pytest.raises(UsageError):
            g.read(0, 1)
        with pytest.raises(UsageError):
            await g.uvc(0x80000)


# -- determinism ---------------------------------------------------------------------------------


async def _run(seed: int) -> tuple[int, tuple[int, ...], bytes]:
    async with open_testbed(seed=seed) as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"the same every time")
        addr = tb.alloc(PAGE)
        tb.write(addr, ConvFromSecStorRequest(paddr=g.host_addr(0xA0000)).pack())
        assert await tb.uvc(addr) == 0
        return g.config_handle, g.cpu_handles, tb.read(g.host_addr(0xA0000), PAGE)


async def test_equal_seeds_give_equal_runs_and_other_seeds_other_ones() -> None:
    first = await _run(7)
    assert await _run(7) == first
    other = await _run(8)
    assert other[0] != first[0] and other[2] != first[2]


# -- the documentation ------------------------------------------------------------------------


async def test_the_module_docstring_example_runs() -> None:
    doc = testbed_module.__doc__ or ""
    match = re.search(r"Example .*?::\n\n(.*?)\n\S", doc, re.S)
    assert match is not None
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(match.group(1)), "<testbed docstring>", "exec"), namespace)  # noqa: S102
    tests = [v for k, v in namespace.items() if k.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        await test()


async def test_alloc_aligns_blocks_naturally_so_uv_donations_fit() -> None:
    async with open_testbed() as tb:
        tb.alloc(PAGE)
        qui = tb.qui()
        assert tb.alloc(qui.uv_base_stor_len) % MIB == 0
        tb.alloc(PAGE)
        assert tb.alloc(qui.conf_base_phys_stor_len) % (16 * 1024) == 0
        assert tb.alloc(3 * PAGE) % (2 * PAGE) == 0


async def test_a_guest_uvc_can_run_on_any_of_its_cpus() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest(cpus=2)
        g.write(0x80000, QuiRequest().pack())
        assert await g.uvc(0x80000, cpu=1) == 0
        with pytest.raises(UsageError):
            await g.uvc(0x80000, cpu=2)


async def test_a_guest_uvcb_may_span_many_pages_the_guest_never_touched() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xB0000, QuiRequest(length=0xFFFF).pack()[:8])
        assert await g.uvc(0xB0000) == 0
