"""DESTROY_SEC_CONF and DESTROY_SEC_CONF_FAST (uv-interface.md §3, §4; uv-semantics.md §2.5).

Donations come back zeroed and readable; a configuration with secure CPUs
is not destroyed; the fast variant leaves the guest's pages secure until the
host destroys them one by one. sesim can end a long destroy with cc 3
(partial), and answers rc 0x0007 ("no resume") to anything but the
re-issued destroy in between.
"""

from __future__ import annotations

from typing import Any

import pytest
from uvc_conformance import (
    PAGE,
    call,
    create_conf,
    create_cpu,
    expect,
    init_uv,
    produces,
    var_stor_len,
)

from machine import UvLimits
from machine._uv_conf import RC_CPUS_REMAIN
from protocol import (
    CreateSecCpuRequest,
    DestrSecStorRequest,
    DestroySecConfFastRequest,
    DestroySecConfRequest,
    DestroySecCpuRequest,
    PrepareResetRequest,
    Rc,
    UvcCommand,
    VerifyImgRequest,
)
from sesim.testbed import ProgramInterrupt, open_testbed

D = UvcCommand.DESTROY_SEC_CONF
F = UvcCommand.DESTROY_SEC_CONF_FAST


def assert_zero_and_host(tb: Any, origin: int, length: int) -> None:
    assert tb.read(origin, length) == bytes(length)
    tb.write(origin, b"mine again")


@produces(D, Rc.EXECUTED)
@produces(D, Rc.INV_GHANDLE)
async def test_destroy_sec_conf_gives_both_donations_back_zeroed() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, request = await create_conf(tb)
        expect(await call(tb, DestroySecConfRequest(handle=handle), length=0x38), Rc.INV_LEN)
        expect(await call(tb, DestroySecConfRequest(handle=handle + 1)), Rc.INV_GHANDLE)
        expect(await call(tb, DestroySecConfRequest(handle=handle)), Rc.EXECUTED)
        qui = tb.qui()
        assert_zero_and_host(tb, request.conf_base_stor_origin, qui.conf_base_phys_stor_len)
        assert_zero_and_host(tb, request.conf_virt_stor_origin, var_stor_len(qui, request.guest_stor_len))
        expect(await call(tb, DestroySecConfRequest(handle=handle)), Rc.INV_GHANDLE)


@produces(D, RC_CPUS_REMAIN)
async def test_a_configuration_with_secure_cpus_is_not_destroyed() -> None:
    """§4: "a configuration that still has secure CPUs is not destroyed" (rc: sesim's choice)."""
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, request = await create_conf(tb)
        cpu, _ = await create_cpu(tb, handle)
        expect(await call(tb, DestroySecConfRequest(handle=handle)), RC_CPUS_REMAIN)
        with pytest.raises(ProgramInterrupt):
            tb.read(request.conf_base_stor_origin, 8)
        expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
        expect(await call(tb, DestroySecConfRequest(handle=handle)), Rc.EXECUTED)


async def test_destroying_a_booted_guest_clears_and_returns_its_pages() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0x90000, b"secret")
        for cpu in g.cpu_handles:
            expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
        expect(await call(tb, DestroySecConfRequest(handle=g.config_handle)), Rc.EXECUTED)
        assert tb.read(g.host_addr(0x90000), PAGE) == bytes(PAGE)
        for origin, length in g.donations.values():
            assert_zero_and_host(tb, origin, length)


# -- DESTROY_SEC_CONF_FAST -------------------------------------------------------------------


@produces(F, Rc.EXECUTED)
@produces(F, Rc.INV_GHANDLE)
async def test_destroy_fast_forgets_the_configuration_and_leaves_its_pages_secure() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0x90000, b"secret")
        for cpu in g.cpu_handles:
            expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
        expect(await call(tb, DestroySecConfFastRequest(handle=g.config_handle ^ 1)), Rc.INV_GHANDLE)
        expect(await call(tb, DestroySecConfFastRequest(handle=g.config_handle)), Rc.EXECUTED)
        for origin, length in g.donations.values():
            assert_zero_and_host(tb, origin, length)
        page = g.host_addr(0x90000)
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(page, 8)
        assert pgm.value.code == 0x3D
        expect(await call(tb, DestrSecStorRequest(paddr=page)), Rc.EXECUTED)
        assert tb.read(page, PAGE) == bytes(PAGE)
        expect(await call(tb, DestroySecConfRequest(handle=g.config_handle)), Rc.INV_GHANDLE)


async def test_destroy_fast_has_the_documented_length_0x40() -> None:
    """uv-interface.md §3 (Linux sends 0x48; the reference is the authority here)."""
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        expect(await call(tb, DestroySecConfFastRequest(handle=handle), length=0x48), Rc.INV_LEN)
        expect(await call(tb, DestroySecConfFastRequest(handle=handle)), Rc.EXECUTED)


async def test_destroy_fast_also_refuses_a_configuration_with_cpus() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, _ = await create_conf(tb)
        await create_cpu(tb, handle)
        expect(await call(tb, DestroySecConfFastRequest(handle=handle)), RC_CPUS_REMAIN)


# -- partial completion (cc 3) and rc 0x0007 ----------------------------------------------------


async def _guest_without_cpus(tb: Any) -> Any:
    g = await tb.secure_guest()
    for cpu in g.cpu_handles:
        expect(await call(tb, DestroySecCpuRequest(handle=cpu)), Rc.EXECUTED)
    return g


async def test_a_long_destroy_ends_partial_and_completes_when_re_issued() -> None:
    async with open_testbed(limits=UvLimits(destroy_pages_per_call=4)) as tb:
        g = await _guest_without_cpus(tb)
        addr = tb.alloc(PAGE)
        tb.write(addr, DestroySecConfRequest(handle=g.config_handle).pack())
        ccs = [await tb.uvc(addr)]
        while ccs[-1] == 3:
            ccs.append(await tb.uvc(addr))  # the same UVCB, as uv_call() re-issues it
        assert ccs[0] == 3 and ccs[-1] == 0 and len(ccs) > 2
        assert int.from_bytes(tb.read(addr + 4, 2), "big") == Rc.EXECUTED
        for origin, length in g.donations.values():
            assert_zero_and_host(tb, origin, length)


@pytest.mark.parametrize(
    "other",
    [
        lambda g: DestroySecConfFastRequest(handle=g.config_handle),
        lambda g: VerifyImgRequest(handle=g.config_handle),
        lambda g: PrepareResetRequest(handle=g.config_handle),
        lambda g: CreateSecCpuRequest(guest_handle=g.config_handle, stor_origin=0x7000_0000, state_origin=0x7001_0000),
    ],
    ids=["destroy-fast", "verify", "prepare-reset", "create-cpu"],
)
@produces(None, Rc.NO_RESUME)
async def test_a_configuration_whose_destroy_is_partial_answers_no_resume_to_other_calls(other: Any) -> None:
    async with open_testbed(limits=UvLimits(destroy_pages_per_call=4)) as tb:
        g = await _guest_without_cpus(tb)
        answer = await call(tb, DestroySecConfRequest(handle=g.config_handle))
        assert answer.cc == 3
        expect(await call(tb, other(g)), Rc.NO_RESUME)
        while (await call(tb, DestroySecConfRequest(handle=g.config_handle))).cc == 3:
            pass
        expect(await call(tb, other(g)), Rc.INV_GHANDLE)
