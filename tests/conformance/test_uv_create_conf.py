"""CREATE_SEC_CONF (uv-interface.md §4, §2 for the 0x8000 flag).

One field changed at a time from a valid request (kvm-unit-tests' setup: a
42 MiB guest at MSO 0), each in the documented order, and the donations
becoming UV storage on success only.
"""

from __future__ import annotations

from typing import Any

import pytest
from uvc_conformance import (
    ASCE_PRIVATE,
    MIB,
    PAGE,
    call,
    call_bytes,
    conf_request,
    create_conf,
    expect,
    init_uv,
    produces,
    var_stor_len,
)

from machine import UvLimits
from machine._uv_conf import (
    RC_CONF_STOR_UNALIGNED,
    RC_TOO_MANY_CONFIGS,
    RC_VAR_STOR_OUTSIDE_MEMORY,
    RC_VAR_STOR_OVERLAPS_LOWCORE,
)
from protocol import NEED_DESTROY, CreateSecConfRc, DestroySecConfRequest, Rc, UvcCommand
from sesim.testbed import ProgramInterrupt, open_testbed

C = UvcCommand.CREATE_SEC_CONF


def assert_uv_storage(tb: Any, origin: int, length: int) -> None:
    for addr in range(origin, origin + length, PAGE):
        for access in (lambda: tb.read(addr, 8), lambda: tb.write(addr, b"\x2a")):
            with pytest.raises(ProgramInterrupt) as pgm:
                access()
            assert pgm.value.code == 0x3D


def assert_host_storage(tb: Any, origin: int, length: int) -> None:
    for addr in range(origin, origin + length, PAGE):
        tb.write(addr, tb.read(addr, 8))


@produces(C, Rc.EXECUTED)
async def test_create_sec_conf_returns_a_handle_and_takes_both_donations() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        request = conf_request(tb)
        answer = await call(tb, request)
        expect(answer, Rc.EXECUTED)
        assert answer.u64(0x18) != 0
        qui = tb.qui()
        assert_uv_storage(tb, request.conf_base_stor_origin, qui.conf_base_phys_stor_len)
        assert_uv_storage(tb, request.conf_virt_stor_origin, var_stor_len(qui, request.guest_stor_len))


async def test_two_configurations_get_different_handles() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        first, _ = await create_conf(tb)
        second, _ = await create_conf(tb)
        assert first != second and 0 not in (first, second)


# -- each rc with one field changed ----------------------------------------------------------

FAULTS: dict[str, tuple[int, Any]] = {
    # name: (rc, change(tb, qui, request fields) -> changed fields)
    "mso-above-max": (CreateSecConfRc.MSO_TOO_HIGH, lambda tb, q, f: {"guest_stor_origin": q.max_guest_stor_addr + 2 * MIB + 1}),
    "mso-plus-msl-above-max": (CreateSecConfRc.MSO_MSL_TOO_HIGH, lambda tb, q, f: {"guest_stor_origin": q.max_guest_stor_addr - MIB}),
    "asce-private-bit-clear": (CreateSecConfRc.ASCE_INVALID, lambda tb, q, f: {"guest_asce": f["guest_asce"] & ~ASCE_PRIVATE}),
    "asce-bit-0x20-set": (CreateSecConfRc.ASCE_INVALID, lambda tb, q, f: {"guest_asce": f["guest_asce"] | 0x20}),
    "base-beyond-memory": (CreateSecConfRc.BASE_STOR_OUTSIDE_MEMORY, lambda tb, q, f: {"conf_base_stor_origin": tb.memory_size + 8}),
    "base-crossing-end": (CreateSecConfRc.BASE_STOR_OUTSIDE_MEMORY, lambda tb, q, f: {"conf_base_stor_origin": tb.memory_size - 4 * PAGE}),
    "base-at-0x1000": (CreateSecConfRc.BASE_STOR_OVERLAPS_LOWCORE, lambda tb, q, f: {"conf_base_stor_origin": 0x1000}),
    "base-at-0": (CreateSecConfRc.BASE_STOR_OVERLAPS_LOWCORE, lambda tb, q, f: {"conf_base_stor_origin": 0}),
    "sca-zero": (CreateSecConfRc.SCA_ORIGIN_ZERO, lambda tb, q, f: {"guest_sca": 0}),
    "sca-beyond-memory": (CreateSecConfRc.SCA_OUTSIDE_MEMORY, lambda tb, q, f: {"guest_sca": tb.memory_size + 4 * PAGE}),
}  # fmt: skip


def _claims(fn: Any) -> Any:
    for name, (rc, _) in FAULTS.items():
        fn = produces(C, rc, when={"fault": name})(fn)
    return fn


@pytest.mark.parametrize("fault", FAULTS)
@_claims
async def test_create_sec_conf_with_one_bad_field_answers_its_rc_and_no_handle(fault: str) -> None:
    async with open_testbed() as tb:
        tb.alloc(MIB)  # the top of memory stays host memory (for base-crossing-end)
        await init_uv(tb)
        qui = tb.qui()
        good = conf_request(tb)
        fields = {f: getattr(good, f) for f in ("conf_base_stor_origin", "conf_virt_stor_origin",
                  "guest_stor_origin", "guest_stor_len", "guest_sca", "guest_asce")}  # fmt: skip
        rc, change = FAULTS[fault]
        block = bytearray(conf_request(tb, **{**fields, **change(tb, qui, fields)}).pack())
        block[0x18:0x20] = b"\x5a" * 8  # whatever the caller left in the handle field
        answer = await call_bytes(tb, bytes(block))
        expect(answer, rc)
        assert answer.u64(0x18) == 0
        assert_host_storage(tb, good.conf_base_stor_origin, qui.conf_base_phys_stor_len)
        expect(await call(tb, good), Rc.EXECUTED)


@produces(C, CreateSecConfRc.STOR_OR_ASCE_IN_USE)
async def test_reusing_the_uvcb_of_a_live_configuration_answers_in_use_without_a_handle() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        _, request = await create_conf(tb)
        answer = await call(tb, request)
        assert answer.cc == 1 and answer.rc & ~NEED_DESTROY == CreateSecConfRc.STOR_OR_ASCE_IN_USE
        assert answer.u64(0x18) == 0


async def test_reusing_the_asce_of_a_live_configuration_answers_in_use_without_a_handle() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        _, first = await create_conf(tb)
        answer = await call(tb, conf_request(tb, guest_asce=first.guest_asce))
        expect(answer, CreateSecConfRc.STOR_OR_ASCE_IN_USE)
        assert answer.u64(0x18) == 0


@pytest.mark.parametrize("which", ["base", "var"])
async def test_donating_uv_storage_again_answers_in_use(which: str) -> None:
    async with open_testbed() as tb:
        uv_origin, _ = await init_uv(tb)
        field = "conf_base_stor_origin" if which == "base" else "conf_virt_stor_origin"
        expect(await call(tb, conf_request(tb, **{field: uv_origin})), CreateSecConfRc.STOR_OR_ASCE_IN_USE)


async def test_base_and_variable_storage_may_not_overlap() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        origin = tb.alloc(0x100000, align=0x10000)
        answer = await call(tb, conf_request(tb, conf_base_stor_origin=origin, conf_virt_stor_origin=origin + 0x8000))
        expect(answer, CreateSecConfRc.STOR_OR_ASCE_IN_USE)


async def test_a_destroyed_configuration_frees_its_asce_and_storage_for_reuse() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        handle, request = await create_conf(tb)
        expect(await call(tb, DestroySecConfRequest(handle=handle)), Rc.EXECUTED)
        expect(await call(tb, request), Rc.EXECUTED)


@pytest.mark.parametrize(
    ("faults", "rc"),
    [
        (("mso", "sca"), CreateSecConfRc.MSO_TOO_HIGH),
        (("msl", "asce"), CreateSecConfRc.MSO_MSL_TOO_HIGH),
        (("in-use", "asce"), CreateSecConfRc.STOR_OR_ASCE_IN_USE),
        (("asce", "base-outside"), CreateSecConfRc.ASCE_INVALID),
        (("base-outside", "sca"), CreateSecConfRc.BASE_STOR_OUTSIDE_MEMORY),
        (("base-lowcore", "sca"), CreateSecConfRc.BASE_STOR_OVERLAPS_LOWCORE),
        (("sca", "var-outside"), RC_VAR_STOR_OUTSIDE_MEMORY),
        (("in-use", "mso"), CreateSecConfRc.MSO_TOO_HIGH),
    ],
)
async def test_create_sec_conf_checks_in_the_documented_order(faults: tuple[str, ...], rc: int) -> None:
    async with open_testbed() as tb:
        uv_origin, _ = await init_uv(tb)
        qui = tb.qui()
        change: dict[str, int] = {}
        for fault in faults:
            change.update({
                "mso": {"guest_stor_origin": qui.max_guest_stor_addr + 1},
                "msl": {"guest_stor_len": qui.max_guest_stor_addr + MIB},
                "in-use": {"conf_base_stor_origin": uv_origin},
                "asce": {"guest_asce": 0x7000},
                "base-outside": {"conf_base_stor_origin": tb.memory_size},
                "base-lowcore": {"conf_base_stor_origin": 0},
                "var-outside": {"conf_virt_stor_origin": tb.memory_size},
                "sca": {"guest_sca": 0},
            }[fault])  # fmt: skip
        if "msl" in faults:
            change["conf_virt_stor_origin"] = tb.alloc(PAGE)  # the var length is never reached
        expect(await call(tb, conf_request(tb, **change)), rc)


# -- the 0x8000 flag (§2) --------------------------------------------------------------------


@produces(C, NEED_DESTROY)
async def test_an_error_with_the_0x8000_flag_returns_a_handle_that_must_be_destroyed() -> None:
    limits = UvLimits(sca_error_needs_destroy=True)
    async with open_testbed(limits=limits) as tb:
        await init_uv(tb)
        qui = tb.qui()
        request = conf_request(tb, guest_sca=0)
        answer = await call(tb, request)
        assert answer.cc == 1
        assert answer.rc == NEED_DESTROY | CreateSecConfRc.SCA_ORIGIN_ZERO
        handle = answer.u64(0x18)
        assert handle != 0
        assert_uv_storage(tb, request.conf_base_stor_origin, qui.conf_base_phys_stor_len)
        expect(await call(tb, DestroySecConfRequest(handle=handle)), Rc.EXECUTED)
        assert_host_storage(tb, request.conf_base_stor_origin, qui.conf_base_phys_stor_len)


async def test_without_the_flag_an_error_leaves_no_configuration_behind() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        request = conf_request(tb, guest_sca=0)
        answer = await call(tb, request)
        assert answer.rc == CreateSecConfRc.SCA_ORIGIN_ZERO and not answer.rc & NEED_DESTROY
        expect(await call(tb, conf_request(tb, guest_asce=request.guest_asce)), Rc.EXECUTED)


# -- sesim's choices where §4 is silent --------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "rc"),
    [
        (lambda tb: {"conf_virt_stor_origin": tb.memory_size}, RC_VAR_STOR_OUTSIDE_MEMORY),
        (lambda tb: {"conf_virt_stor_origin": 0}, RC_VAR_STOR_OVERLAPS_LOWCORE),
        (lambda tb: {"conf_base_stor_origin": tb.alloc(0x20000, align=0x10000) + PAGE}, RC_CONF_STOR_UNALIGNED),
        (lambda tb: {"conf_virt_stor_origin": tb.alloc(0x20000) + 8}, RC_CONF_STOR_UNALIGNED),
    ],
    ids=["var-beyond-memory", "var-in-lowcore", "base-not-16k-aligned", "var-not-page-aligned"],
)
async def test_sesim_answers_bad_variable_storage_and_alignment(change: Any, rc: int) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        expect(await call(tb, conf_request(tb, **change(tb))), rc)


async def test_more_configurations_than_qui_allows_are_refused() -> None:
    async with open_testbed(limits=UvLimits(max_num_sec_conf=1)) as tb:
        await init_uv(tb)
        assert tb.qui().max_num_sec_conf == 1
        await create_conf(tb)
        expect(await call(tb, conf_request(tb)), RC_TOO_MANY_CONFIGS)
