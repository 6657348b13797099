"""INIT_UV (uv-interface.md §4): once per host reset, storage above 2 GiB, 1 MiB aligned.

Every rc with one field changed at a time, the order of the checks, and the
donation becoming UV storage.
"""

from __future__ import annotations

import pytest
from uvc_conformance import GIB, MIB, PAGE, call, expect, produces

from machine._uv_conf import RC_INIT_UV_UNALIGNED
from protocol import InitUvRc, InitUvRequest, Rc, UvcCommand
from sesim.testbed import ProgramInterrupt, open_testbed

C = UvcCommand.INIT_UV


def assert_uv_storage(tb: object, origin: int, length: int) -> None:
    """Every page: host read and host write take PGM 0x3d."""
    for addr in range(origin, origin + length, PAGE):
        for access in (lambda: tb.read(addr, 8), lambda: tb.write(addr, b"\x2a")):  # type: ignore[attr-defined]
            with pytest.raises(ProgramInterrupt) as pgm:
                access()
            assert pgm.value.code == 0x3D


def assert_host_storage(tb: object, origin: int, length: int) -> None:
    for addr in range(origin, origin + length, PAGE):
        tb.read(addr, 8)  # type: ignore[attr-defined]


def storage(tb: object) -> tuple[int, int]:
    length = tb.qui().uv_base_stor_len  # type: ignore[attr-defined]
    return tb.alloc(length, align=MIB), length  # type: ignore[attr-defined]


@produces(C, Rc.EXECUTED)
async def test_init_uv_donates_its_storage_to_the_uv() -> None:
    async with open_testbed() as tb:
        origin, length = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length)), Rc.EXECUTED)
        assert origin >= 2 * GIB
        assert_uv_storage(tb, origin, length)


@produces(C, InitUvRc.ALREADY_INITIALIZED)
async def test_a_second_init_uv_answers_already_initialised() -> None:
    async with open_testbed() as tb:
        origin, length = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length)), Rc.EXECUTED)
        other, _ = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=other, stor_len=length)), InitUvRc.ALREADY_INITIALIZED)
        assert_host_storage(tb, other, length)


@produces(C, InitUvRc.MULTIPLE_CPUS_OPERATING)
async def test_init_uv_with_a_second_cpu_operating_answers_0x102() -> None:
    async with open_testbed(cpus=2) as tb:
        origin, length = storage(tb)
        request = InitUvRequest(stor_origin=origin, stor_len=length)
        await tb.start_cpu(1)
        expect(await call(tb, request), InitUvRc.MULTIPLE_CPUS_OPERATING)
        assert_host_storage(tb, origin, length)
        await tb.stop_cpu(1)
        expect(await call(tb, request), Rc.EXECUTED)


@pytest.mark.parametrize("shorter", [8, PAGE, 0x0FFF + 1])
@produces(C, InitUvRc.STOR_LEN_TOO_SMALL)
async def test_init_uv_with_too_little_storage_answers_0x103(shorter: int) -> None:
    async with open_testbed() as tb:
        origin, length = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length - shorter)), InitUvRc.STOR_LEN_TOO_SMALL)


async def test_init_uv_takes_the_length_4k_aligned() -> None:
    async with open_testbed() as tb:
        origin, length = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length + 0xFFF)), Rc.EXECUTED)
        assert_uv_storage(tb, origin, length)


@produces(C, InitUvRc.STOR_ORIGIN_OUTSIDE_MEMORY)
async def test_init_uv_with_storage_beyond_memory_answers_0x104() -> None:
    async with open_testbed() as tb:
        _, length = storage(tb)
        answer = await call(tb, InitUvRequest(stor_origin=tb.memory_size, stor_len=length))
        expect(answer, InitUvRc.STOR_ORIGIN_OUTSIDE_MEMORY)


@produces(C, InitUvRc.STOR_END_OUTSIDE_MEMORY)
async def test_init_uv_with_storage_crossing_the_end_of_memory_answers_0x105() -> None:
    async with open_testbed() as tb:
        _, length = storage(tb)
        answer = await call(tb, InitUvRequest(stor_origin=tb.memory_size - MIB, stor_len=length))
        expect(answer, InitUvRc.STOR_END_OUTSIDE_MEMORY)


@pytest.mark.parametrize("origin", [1 * GIB, 0x100000, 2 * GIB - 8 * (1 << 20)])
@produces(C, InitUvRc.STOR_BELOW_2G)
async def test_init_uv_with_storage_below_2_gib_answers_0x108(origin: int) -> None:
    async with open_testbed() as tb:
        _, length = storage(tb)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length)), InitUvRc.STOR_BELOW_2G)
        assert_host_storage(tb, origin, length)


async def test_init_uv_with_an_origin_not_1_mib_aligned_is_refused() -> None:
    """sesim's choice of rc: the reference says the origin must be 1 MiB aligned."""
    async with open_testbed() as tb:
        tb.alloc(MIB)  # room above, so that only the alignment is wrong
        origin, length = storage(tb)
        answer = await call(tb, InitUvRequest(stor_origin=origin + PAGE, stor_len=length))
        expect(answer, RC_INIT_UV_UNALIGNED)
        assert_host_storage(tb, origin + PAGE, length - PAGE)


@pytest.mark.parametrize(
    ("faults", "rc"),
    [
        (("initialised", "cpus", "length"), InitUvRc.ALREADY_INITIALIZED),
        (("cpus", "length", "outside"), InitUvRc.MULTIPLE_CPUS_OPERATING),
        (("length", "outside"), InitUvRc.STOR_LEN_TOO_SMALL),
        (("outside", "unaligned"), InitUvRc.STOR_ORIGIN_OUTSIDE_MEMORY),
        (("crossing", "below"), InitUvRc.STOR_END_OUTSIDE_MEMORY),
        (("below", "unaligned"), InitUvRc.STOR_BELOW_2G),
    ],
)
async def test_init_uv_checks_in_the_documented_order(faults: tuple[str, ...], rc: int) -> None:
    async with open_testbed(cpus=2) as tb:
        origin, length = storage(tb)
        if "initialised" in faults:
            expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=length)), Rc.EXECUTED)
            origin, _ = storage(tb)
        if "cpus" in faults:
            await tb.start_cpu(1)
        stor_len = length - PAGE if "length" in faults else length
        if "outside" in faults:
            origin = tb.memory_size + (PAGE if "unaligned" in faults else 0)
        elif "crossing" in faults:
            origin, stor_len = 1 * GIB, 2 * GIB
        elif "below" in faults:
            origin = 1 * GIB + (PAGE if "unaligned" in faults else 0)
        expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=stor_len)), rc)
