"""SET_SEC_CONF_PARAMS, UNPACK_IMG and VERIFY_IMG (uv-interface.md §4, se-format.md §6).

The image is the testbed's own, built for its server's host key; the host
side (loading, copying the header, unpacking with the IPIB's tweaks) is done
by hand here, as QEMU and KVM do it.
"""

from __future__ import annotations

from typing import Any

import pytest
from uvc_conformance import (
    PAGE,
    call,
    expect,
    prepare,
    produces,
    unpack_all,
)

from machine._uv_image import (
    RC_HEADER_CORRUPT,
    RC_HEADER_PCF,
    RC_HEADER_VERSION,
    RC_UNPACK_ADDR,
    RC_UNPACK_PAGE_STATE,
    RC_WRONG_PHASE,
    RRC_HEADER_PCF,
    RRC_HEADER_TAG,
    RRC_HEADER_VERSION,
)
from protocol import (
    CpuSetStateRequest,
    CpuState,
    Rc,
    SetSecConfParamsRc,
    SetSecConfParamsRrc,
    UnpackImgRequest,
    UvcCommand,
    VerifyImgRc,
    VerifyImgRequest,
    VerifyImgRrc,
)
from sesim.testbed import ProgramInterrupt, open_testbed

SSC = UvcCommand.SET_SEC_CONF_PARAMS
UNPACK = UvcCommand.UNPACK_IMG
VERIFY = UvcCommand.VERIFY_IMG


# -- SET_SEC_CONF_PARAMS -----------------------------------------------------------------------


@produces(SSC, Rc.EXECUTED)
async def test_set_sec_conf_params_accepts_a_header_for_this_host() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)


@produces(SSC, Rc.INV_GHANDLE)
@produces(SSC, Rc.INV_LEN)
async def test_set_sec_conf_params_checks_length_then_handle() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc(), length=0x48), Rc.INV_LEN)
        expect(await call(tb, p.ssc(guest_handle=p.handle + 1), length=0x48), Rc.INV_LEN)
        expect(await call(tb, p.ssc(guest_handle=p.handle + 1)), Rc.INV_GHANDLE)


@pytest.mark.parametrize("crossing", [False, True], ids=["on", "crossing-into"])
@produces(SSC, SetSecConfParamsRc.HEADER_INACCESSIBLE)
async def test_a_header_on_an_invalid_page_answers_0x103_not_a_program_interruption(crossing: bool) -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        pages = tb.alloc(2 * PAGE)
        origin = pages + PAGE - 0x20 if crossing else pages + PAGE
        tb.write(origin, tb.read(p.header_addr, 0x20 if crossing else p.header_len))
        tb.invalidate(pages + PAGE)
        expect(await call(tb, p.ssc(sec_header_origin=origin)), SetSecConfParamsRc.HEADER_INACCESSIBLE)


@produces(SSC, SetSecConfParamsRc.NO_KEY_SLOT)
async def test_a_header_for_another_host_answers_no_key_slot() -> None:
    async with open_testbed(seed=1) as other:
        foreign = other.build_image()
    async with open_testbed() as tb:
        p = await prepare(tb, image=foreign)
        answer = await call(tb, p.ssc())
        expect(answer, SetSecConfParamsRc.NO_KEY_SLOT)


@pytest.mark.parametrize("delta", [-8, +8, -0x10, None], ids=["shorter", "longer", "shorter-16", "zero"])
@produces(SSC, SetSecConfParamsRc.HEADER_LEN_MISMATCH, SetSecConfParamsRrc.HEADER_LEN_MISMATCH)
async def test_a_header_length_other_than_the_headers_own_answers_0x10a_0x31(delta: int | None) -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        length = 0 if delta is None else p.header_len + delta
        answer = await call(tb, p.ssc(sec_header_len=length))
        expect(answer, SetSecConfParamsRc.HEADER_LEN_MISMATCH, SetSecConfParamsRrc.HEADER_LEN_MISMATCH)


@pytest.mark.parametrize("where", ["encrypted-area", "tag", "nep", "pld"])
@produces(SSC, RC_HEADER_CORRUPT, RRC_HEADER_TAG)
async def test_a_tampered_header_is_refused_with_cc_1(where: str) -> None:
    """The rc is the UV's choice (§4); sesim answers 0x010a with its rrc 0x0036."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        offset = {"encrypted-area": p.header_len - 40, "tag": p.header_len - 1, "nep": 0x37, "pld": 0xE0}[where]
        byte = tb.read(p.header_addr + offset, 1)[0]
        tb.write(p.header_addr + offset, bytes([byte ^ 0x01]))
        answer = await call(tb, p.ssc())
        assert answer.cc == 1 and answer.rc != Rc.EXECUTED
        expect(answer, RC_HEADER_CORRUPT, RRC_HEADER_TAG)


async def test_a_failed_set_sec_conf_params_can_be_repeated_with_a_good_header() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc(sec_header_len=p.header_len - 8)), SetSecConfParamsRc.HEADER_LEN_MISMATCH)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)


@pytest.mark.parametrize(
    ("faults", "rc"),
    [
        (("handle", "invalid-page"), Rc.INV_GHANDLE),
        (("invalid-page", "foreign", "length"), SetSecConfParamsRc.HEADER_INACCESSIBLE),
        (("foreign", "length"), SetSecConfParamsRc.NO_KEY_SLOT),
    ],
)
async def test_set_sec_conf_params_checks_in_the_documented_order(faults: tuple[str, ...], rc: int) -> None:
    async with open_testbed(seed=1) as other:
        foreign = other.build_image()
    async with open_testbed() as tb:
        p = await prepare(tb, image=foreign if "foreign" in faults else None)
        change: dict[str, Any] = {}
        if "handle" in faults:
            change["guest_handle"] = p.handle ^ 2
        if "invalid-page" in faults:
            tb.invalidate(p.header_addr)
        if "length" in faults:
            change["sec_header_len"] = p.header_len + 8
        expect(await call(tb, p.ssc(**change)), rc)


async def test_set_sec_conf_params_twice_is_refused() -> None:
    """sesim's choice of rc: the generic "invalid state"."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        expect(await call(tb, p.ssc()), RC_WRONG_PHASE)


@pytest.mark.parametrize("length", [0x1F0, 0x1000, 0x2000])
async def test_bytes_that_are_no_se_header_hold_no_key_slot_for_this_host(length: int) -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        zeros = tb.alloc(2 * PAGE)
        answer = await call(tb, p.ssc(sec_header_origin=zeros, sec_header_len=length))
        expect(answer, SetSecConfParamsRc.NO_KEY_SLOT)


async def test_a_header_of_another_version_is_refused() -> None:
    """sesim's choice: the rc/rrc stage3a.c decodes as "header version mismatch"."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        tb.write(p.header_addr + 8, (0x200).to_bytes(4, "big"))
        expect(await call(tb, p.ssc()), RC_HEADER_VERSION, RRC_HEADER_VERSION)


async def test_an_unsupported_plaintext_control_flag_is_refused() -> None:
    """sesim's choice: the rc/rrc stage3a.c decodes as "unsupported PCF"."""
    async with open_testbed() as tb:
        image = tb.build_image(pcf=1 << (63 - 40))
        p = await prepare(tb, image=image)
        expect(await call(tb, p.ssc()), RC_HEADER_PCF, RRC_HEADER_PCF)


# -- UNPACK_IMG ----------------------------------------------------------------------------------


@produces(UNPACK, Rc.EXECUTED)
async def test_unpacked_pages_become_secure_storage() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        await unpack_all(tb, p)
        for gaddr, _, _ in p.pages():
            with pytest.raises(ProgramInterrupt) as pgm:
                tb.read(p.space.translate(gaddr), 8)
            assert pgm.value.code == 0x3D


@produces(UNPACK, RC_WRONG_PHASE)
async def test_unpack_before_set_sec_conf_params_is_refused() -> None:
    """uv-interface.md §4: unpack only between SET_SEC_CONF_PARAMS and VERIFY_IMG (rc: sesim's choice)."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        gaddr, prefix, offset = p.pages()[0]
        answer = await call(tb, UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset)))
        expect(answer, RC_WRONG_PHASE)
        tb.read(p.space.translate(gaddr), 8)  # still the host's


async def test_unpack_after_verify_img_is_refused() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        await unpack_all(tb, p)
        expect(await call(tb, VerifyImgRequest(handle=p.handle)), Rc.EXECUTED)
        answer = await call(tb, UnpackImgRequest(guest_handle=p.handle, gaddr=0x80000, tweak=(1, 0)))
        expect(answer, RC_WRONG_PHASE)


@produces(UNPACK, Rc.INV_GHANDLE)
async def test_unpack_with_a_bad_handle_answers_0x0020() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        answer = await call(tb, UnpackImgRequest(guest_handle=p.handle + 1, gaddr=p.pages()[0][0]))
        expect(answer, Rc.INV_GHANDLE)


async def test_unpack_of_an_unmapped_guest_page_answers_0x10a() -> None:
    """uv-semantics.md §1.2: the host faults the page in and retries."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        gaddr, prefix, offset = p.pages()[0]
        pfn = p.space.unmap(gaddr >> 12)
        request = UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset))
        expect(await call(tb, request), 0x010A)
        p.space.map(gaddr >> 12, pfn)
        expect(await call(tb, request), Rc.EXECUTED)


@pytest.mark.parametrize("gaddr", [1 << 20, (1 << 20) + PAGE, 0x80008], ids=["end", "beyond", "unaligned"])
async def test_unpack_outside_guest_memory_is_refused(gaddr: int) -> None:
    """sesim's choice of rc."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        expect(await call(tb, UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr)), RC_UNPACK_ADDR)


async def test_unpacking_a_page_twice_is_refused() -> None:
    """sesim's choice of rc."""
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        gaddr, prefix, offset = p.pages()[0]
        request = UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset))
        expect(await call(tb, request), Rc.EXECUTED)
        expect(await call(tb, request), RC_UNPACK_PAGE_STATE)


# -- VERIFY_IMG ----------------------------------------------------------------------------------


@produces(VERIFY, Rc.EXECUTED)
@produces(UvcCommand.CPU_SET_STATE, Rc.EXECUTED)
async def test_a_fully_unpacked_image_verifies_and_its_cpus_can_start() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        await unpack_all(tb, p)
        expect(await call(tb, VerifyImgRequest(handle=p.handle)), Rc.EXECUTED)
        for state in (CpuState.OPR_LOAD, CpuState.OPR):
            expect(await call(tb, CpuSetStateRequest(cpu_handle=p.cpu, state=state)), Rc.EXECUTED)


MISMATCHES = {
    "page-missing": VerifyImgRrc.PAGE_COUNT_MISMATCH,
    "page-moved": VerifyImgRrc.ALD_MISMATCH,
    "page-changed": VerifyImgRrc.PLD_MISMATCH,
    "tweak-changed": VerifyImgRrc.TLD_MISMATCH,
}


def _mismatch_claims(fn: Any) -> Any:
    for name, rrc in MISMATCHES.items():
        fn = produces(VERIFY, VerifyImgRc.MISMATCH, rrc, when={"mismatch": name})(fn)
    return fn


@pytest.mark.parametrize("mismatch", MISMATCHES)
@_mismatch_claims
async def test_verify_img_names_what_differs_from_the_header(mismatch: str) -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        pages = p.pages()
        victim = len(pages) // 2
        for i, (gaddr, prefix, offset) in enumerate(pages):
            if i == victim:
                if mismatch == "page-missing":
                    continue
                if mismatch == "page-moved":  # the same ciphertext and tweak at another address
                    moved = 0x80000
                    tb.write(p.space.translate(moved), tb.read(p.space.translate(gaddr), PAGE))
                    gaddr = moved
                if mismatch == "page-changed":
                    host = p.space.translate(gaddr)
                    tb.write(host, bytes([tb.read(host, 1)[0] ^ 0x80]))
                if mismatch == "tweak-changed":
                    offset += 1
            request = UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset))
            expect(await call(tb, request), Rc.EXECUTED)
        answer = await call(tb, VerifyImgRequest(handle=p.handle))
        expect(answer, VerifyImgRc.MISMATCH, MISMATCHES[mismatch])


async def test_an_image_that_failed_verification_never_runs() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, p.ssc()), Rc.EXECUTED)
        for gaddr, prefix, offset in p.pages()[:-1]:
            expect(await call(tb, UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset))), 1)
        expect(await call(tb, VerifyImgRequest(handle=p.handle)), VerifyImgRc.MISMATCH, VerifyImgRrc.PAGE_COUNT_MISMATCH)
        assert (await call(tb, CpuSetStateRequest(cpu_handle=p.cpu, state=CpuState.OPR_LOAD))).cc == 1
        expect(await call(tb, VerifyImgRequest(handle=p.handle)), RC_WRONG_PHASE)


@produces(VERIFY, Rc.INV_GHANDLE)
async def test_verify_img_before_set_sec_conf_params_or_with_a_bad_handle_is_refused() -> None:
    async with open_testbed() as tb:
        p = await prepare(tb)
        expect(await call(tb, VerifyImgRequest(handle=p.handle)), RC_WRONG_PHASE)
        expect(await call(tb, VerifyImgRequest(handle=p.handle ^ 4)), Rc.INV_GHANDLE)
        expect(await call(tb, VerifyImgRequest(handle=p.handle), length=0x48), Rc.INV_LEN)
