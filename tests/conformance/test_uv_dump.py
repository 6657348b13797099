"""DUMP_INIT, DUMP_CONF_STOR_STATE, DUMP_CPU, DUMP_COMPLETE (uv-semantics.md §7).

The reference leaves the layouts to ``uv.h`` and names no rc: the codes are
sesim's (``machine._uv_dump``). Generic codes (length, handles, the UV not
initialised) are covered with every other host command in
``test_uvc_mechanics.py`` and ``test_uv_secure_cpu.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from uvc_conformance import MIB, PAGE, call, expect, prepare, produces, unpack_all

from machine._uv_dump import (
    CPU_MAGIC,
    FINAL_MAGIC,
    RC_DUMP_AREA,
    RC_DUMP_GADDR,
    RC_DUMP_NOT_ALLOWED,
    RC_DUMP_STATE,
    dump_key,
    open_dump_blob,
    unpack_cpu_state,
)
from protocol import (
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    DumpCompleteRequest,
    DumpConfStorStateRequest,
    DumpCpuRequest,
    DumpInitRequest,
    Rc,
    VerificationError,
    VerifyImgRequest,
)
from protocol import UvcCommand as C
from protocol._se_header import PCF_ALLOW_DUMPING, PCF_DEFAULT
from sesim.testbed import open_testbed

DUMPABLE = PCF_DEFAULT | PCF_ALLOW_DUMPING


async def running(tb: Any, *, pcf: int = DUMPABLE) -> Any:
    """A configuration whose image verified and whose CPU was loaded."""
    p = await prepare(tb, image=tb.build_image(pcf=pcf), memory_mib=2)
    expect(await call(tb, p.ssc()), Rc.EXECUTED)
    await unpack_all(tb, p)
    expect(await call(tb, VerifyImgRequest(handle=p.handle)), Rc.EXECUTED)
    expect(await call(tb, CpuSetStateRequest(cpu_handle=p.cpu, state=CpuState.OPR_LOAD)), Rc.EXECUTED)
    return p


def _area(tb: Any) -> int:
    return tb.alloc(4 * PAGE)


def _key(tb: Any, p: Any) -> bytes:
    """The image owner's dump key (the test takes the CCK where the UV keeps it)."""
    conf = tb.uv.configs[p.handle]
    return dump_key(conf.opened.secrets.cck, conf.cuid)


# ------------------------------------------------------------------ DUMP_INIT
@produces(C.DUMP_INIT, Rc.EXECUTED)
@produces(C.DUMP_INIT, RC_DUMP_STATE)
async def test_dump_init_starts_a_dump_once() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), RC_DUMP_STATE)


@produces(C.DUMP_INIT, RC_DUMP_NOT_ALLOWED)
async def test_dump_init_is_refused_when_the_se_header_does_not_allow_dumping() -> None:
    async with open_testbed() as tb:
        p = await running(tb, pcf=PCF_DEFAULT)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), RC_DUMP_NOT_ALLOWED)
        assert not tb.uv.configs[p.handle].dumping


async def test_dump_init_is_refused_before_the_image_verified() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb, image=tb.build_image(pcf=DUMPABLE))
        expect(await call(tb, DumpInitRequest(handle=p.handle)), RC_DUMP_NOT_ALLOWED)


@produces(C.DUMP_INIT, Rc.INV_GHANDLE)
async def test_a_bad_handle_comes_before_the_pcf_check() -> None:
    async with open_testbed() as tb:
        p = await running(tb, pcf=PCF_DEFAULT)
        expect(await call(tb, DumpInitRequest(handle=p.handle ^ 2)), Rc.INV_GHANDLE)


# ------------------------------------------------------- the calls need a dump
COMMANDS = {"stor-state": C.DUMP_CONF_STOR_STATE, "cpu": C.DUMP_CPU, "complete": C.DUMP_COMPLETE}


def _each_command(rc: int) -> Any:
    """Claim ``rc`` of each command in the row that calls it."""

    def decorate(fn: Any) -> Any:
        for name, command in COMMANDS.items():
            fn = produces(command, rc, when={"command": name})(fn)
        return fn

    return decorate


@pytest.mark.parametrize("command", COMMANDS)
@_each_command(RC_DUMP_STATE)
async def test_the_dump_calls_need_a_dump_in_progress(command: str) -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        area = _area(tb)
        request: Any = {
            "stor-state": DumpConfStorStateRequest(config_handle=p.handle, dump_area_origin=area, gaddr=0),
            "cpu": DumpCpuRequest(cpu_handle=p.cpu, dump_area_origin=area),
            "complete": DumpCompleteRequest(config_handle=p.handle, dump_area_origin=area),
        }[command]
        expect(await call(tb, request), RC_DUMP_STATE)


# ---------------------------------------------------------- DUMP_CONF_STOR_STATE
@pytest.mark.parametrize("gaddr", [0x1000, MIB + 8, 2 * MIB, 64 * MIB])
@produces(C.DUMP_CONF_STOR_STATE, RC_DUMP_GADDR)
async def test_stor_state_needs_a_1_mib_aligned_address_in_guest_memory(gaddr: int) -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        request = DumpConfStorStateRequest(config_handle=p.handle, dump_area_origin=_area(tb), gaddr=gaddr)
        expect(await call(tb, request), RC_DUMP_GADDR)


def _bad_areas(tb: Any, p: Any) -> dict[str, int]:
    return {
        "beyond-memory": tb.memory_size - 16,  # runs past the end
        "uv-storage": tb.uv.base_storage[0],
        "secure-page": p.space.translate(p.pages()[0][0]),  # an unpacked image page
        "invalid-page": _invalid(tb),
    }


def _invalid(tb: Any) -> int:
    addr = tb.alloc(4 * PAGE)
    tb.invalidate(addr)
    return addr


@pytest.mark.parametrize("where", ["beyond-memory", "uv-storage", "secure-page", "invalid-page"])
@pytest.mark.parametrize("command", COMMANDS)
@_each_command(RC_DUMP_AREA)
async def test_a_dump_area_the_uv_cannot_write_is_refused(where: str, command: str) -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        area = _bad_areas(tb, p)[where]
        request: Any = {
            "stor-state": DumpConfStorStateRequest(config_handle=p.handle, dump_area_origin=area, gaddr=0),
            "cpu": DumpCpuRequest(cpu_handle=p.cpu, dump_area_origin=area),
            "complete": DumpCompleteRequest(config_handle=p.handle, dump_area_origin=area),
        }[command]
        expect(await call(tb, request), RC_DUMP_AREA)
        assert tb.uv.configs[p.handle].dumping  # a refused call does not end the dump


@produces(C.DUMP_CONF_STOR_STATE, Rc.EXECUTED)
async def test_stor_state_gives_the_tweak_of_each_exported_page_of_the_mib() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        gaddr = MIB + 5 * PAGE  # a page the guest touched: imported, then exported by the host
        expect(await call(tb, ConvToSecStorRequest(guest_handle=p.handle, gaddr=gaddr)), Rc.EXECUTED)
        expect(await call(tb, ConvFromSecStorRequest(paddr=p.space.translate(gaddr))), Rc.EXECUTED)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        area = _area(tb)
        expect(await call(tb, DumpConfStorStateRequest(config_handle=p.handle, dump_area_origin=area, gaddr=MIB)),
               Rc.EXECUTED)  # fmt: skip
        state = tb.read(area, tb.qui().conf_dump_storage_state_len)
        record = tb.uv.configs[p.handle].exports[gaddr >> 12]
        assert state[5 * 16 : 6 * 16] == record.tweak
        assert state[: 5 * 16] == bytes(5 * 16) and state[6 * 16 :] == bytes(len(state) - 6 * 16)


# ------------------------------------------------------------------ DUMP_CPU
@produces(C.DUMP_CPU, Rc.EXECUTED)
async def test_dump_cpu_writes_the_cpu_state_sealed_for_the_images_owner() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        secret = 0x5EC2E7_0000_0001
        tb.uv.cpus[p.cpu].cpu.gprs[9] = secret  # the guest's program left it there
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        area = _area(tb)
        expect(await call(tb, DumpCpuRequest(cpu_handle=p.cpu, dump_area_origin=area)), Rc.EXECUTED)
        blob = tb.read(area, tb.qui().cpu_stor_len)
        assert secret.to_bytes(8, "big") not in blob and secret.to_bytes(8, "little") not in blob
        magic, num, plain = open_dump_blob(_key(tb, p), blob)
        assert (magic, num) == (CPU_MAGIC, 0)
        state = unpack_cpu_state(plain)
        assert state.gprs[9] == secret
        assert state.psw == tb.uv.cpus[p.cpu].cpu.psw


@produces(C.DUMP_CPU, Rc.INV_CHANDLE)
async def test_dump_cpu_with_a_bad_cpu_handle_answers_0x0021_first() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpCpuRequest(cpu_handle=p.cpu ^ 8, dump_area_origin=0)), Rc.INV_CHANDLE)


# ------------------------------------------------------------------ DUMP_COMPLETE
@produces(C.DUMP_COMPLETE, Rc.EXECUTED)
async def test_dump_complete_gives_the_export_key_sealed_and_ends_the_dump() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        area = _area(tb)
        expect(await call(tb, DumpCompleteRequest(config_handle=p.handle, dump_area_origin=area)), Rc.EXECUTED)
        conf = tb.uv.configs[p.handle]
        blob = tb.read(area, tb.qui().conf_dump_finalize_len)
        assert conf.export_key[:32] not in blob
        magic, _, plain = open_dump_blob(_key(tb, p), blob)
        assert magic == FINAL_MAGIC and plain == conf.export_key + conf.cuid
        assert not conf.dumping
        expect(await call(tb, DumpCompleteRequest(config_handle=p.handle, dump_area_origin=area)), RC_DUMP_STATE)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)  # a second dump may start


async def test_a_sealed_blob_does_not_open_with_another_key() -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        area = _area(tb)
        expect(await call(tb, DumpCompleteRequest(config_handle=p.handle, dump_area_origin=area)), Rc.EXECUTED)
        with pytest.raises(VerificationError):
            open_dump_blob(bytes(32), tb.read(area, PAGE))


# ------------------------------------------------------------------ order
@pytest.mark.parametrize(
    ("faults", "rc"),
    [
        (("handle", "state", "gaddr", "area"), Rc.INV_GHANDLE),
        (("state", "gaddr", "area"), RC_DUMP_STATE),
        (("gaddr", "area"), RC_DUMP_GADDR),
        (("area",), RC_DUMP_AREA),
    ],
)
async def test_stor_state_checks_handle_then_state_then_gaddr_then_area(faults: tuple[str, ...], rc: int) -> None:
    async with open_testbed() as tb:
        p = await running(tb)
        if "state" not in faults:
            expect(await call(tb, DumpInitRequest(handle=p.handle)), Rc.EXECUTED)
        request = DumpConfStorStateRequest(
            config_handle=p.handle ^ 4 if "handle" in faults else p.handle,
            dump_area_origin=tb.uv.base_storage[0] if "area" in faults else _area(tb),
            gaddr=PAGE if "gaddr" in faults else 0,
        )
        expect(await call(tb, request), rc)
