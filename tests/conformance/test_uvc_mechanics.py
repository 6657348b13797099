"""Call mechanics and generic return codes (uv-interface.md §1, §2).

The order of checks: privileged (PGM 0x02) → instruction fields (PGM 0x06)
→ UVCB access (PGM 0x11) → command known in this context (rc 0x0002) → UV
state (rc 0x0003) → header length (rc 0x0005) → handles → the command's own.
"""

from __future__ import annotations

import pytest
from uvc_conformance import (
    GUEST_ONLY,
    HOST_AFTER_INIT,
    HOST_COMMANDS,
    NOT_INSTALLED,
    PAGE,
    call,
    call_bytes,
    expect,
    header_call,
    init_uv,
    produces,
)

from protocol import CreateSecConfRequest, DestroySecConfRequest, QuiRequest, Rc, UvcCommand
from sesim.testbed import ProgramInterrupt, open_testbed

ALL_HOST = (UvcCommand.QUI, *HOST_COMMANDS)


def header(command: int, length: int) -> bytes:
    return length.to_bytes(2, "big") + command.to_bytes(2, "big") + bytes(4)


# -- program interruptions -------------------------------------------------------------------


@pytest.mark.parametrize("command", ALL_HOST, ids=lambda c: c.name)
async def test_uvc_in_problem_state_takes_privileged_operation(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, header(command, command.uvcb_length))
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr, problem_state=True)
        assert pgm.value.code == 0x02


async def test_nonzero_instruction_bits_16_to_23_take_specification() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, header(UvcCommand.INIT_UV, 0x48))
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr, instruction_bits=0x42)
        assert pgm.value.code == 0x06


@pytest.mark.parametrize("command", ALL_HOST, ids=lambda c: c.name)
async def test_uvcb_on_an_invalid_page_takes_page_translation(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, header(command, command.uvcb_length))
        tb.invalidate(addr)
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr)
        assert pgm.value.code == 0x11


@pytest.mark.parametrize("command", ALL_HOST, ids=lambda c: c.name)
async def test_uvcb_crossing_into_an_invalid_page_takes_page_translation(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        pages = tb.alloc(2 * PAGE)
        addr = pages + PAGE - 8  # the header is readable, everything after it is not
        tb.write(addr, header(command, command.uvcb_length))
        tb.invalidate(pages + PAGE)
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr)
        assert pgm.value.code == 0x11


async def test_a_uvcb_that_cannot_be_read_gets_no_rc_written() -> None:
    async with open_testbed() as tb:
        pages = tb.alloc(2 * PAGE)
        addr = pages + PAGE - 8
        tb.write(addr, header(UvcCommand.QUI, 0x100))
        tb.invalidate(pages + PAGE)
        with pytest.raises(ProgramInterrupt):
            await tb.uvc(addr)
        assert tb.read(addr, 8) == header(UvcCommand.QUI, 0x100)


@pytest.mark.parametrize(
    ("problem_state", "bits", "invalid", "code"),
    [
        (True, 0x42, True, 0x02),  # privileged first
        (True, 0, True, 0x02),
        (False, 0x42, True, 0x06),  # then the instruction fields
        (False, 0, True, 0x11),  # then the UVCB access
    ],
)
async def test_program_interruptions_come_in_the_documented_order(
    problem_state: bool, bits: int, invalid: bool, code: int
) -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, header(0x4242, 8))
        if invalid:
            tb.invalidate(addr)
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr, problem_state, instruction_bits=bits)
        assert pgm.value.code == code


async def test_uvcb_access_is_checked_before_the_command_is_known() -> None:
    async with open_testbed() as tb:
        pages = tb.alloc(2 * PAGE)
        addr = pages + PAGE - 8
        tb.write(addr, header(0x4242, 0x40))
        tb.invalidate(pages + PAGE)
        with pytest.raises(ProgramInterrupt) as pgm:
            await tb.uvc(addr)
        assert pgm.value.code == 0x11


# -- rc 0x0002: unknown, or not available in this context ------------------------------------


@produces(None, Rc.INV_CMD)
async def test_an_unknown_command_answers_invalid_command() -> None:
    async with open_testbed() as tb:
        expect(await call_bytes(tb, header(0x4242, 8)), Rc.INV_CMD)


@pytest.mark.parametrize("command", GUEST_ONLY, ids=lambda c: c.name)
@produces(None, Rc.INV_CMD)
async def test_a_guest_command_from_the_host_answers_invalid_command_and_is_not_shown(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        expect(await header_call(tb, command), Rc.INV_CMD)
        assert not tb.qui().installed(command)


@pytest.mark.parametrize("command", NOT_INSTALLED, ids=lambda c: c.name)
async def test_a_command_not_installed_answers_invalid_command_and_is_not_shown(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        expect(await header_call(tb, command), Rc.INV_CMD)
        assert not tb.qui().installed(command)


async def test_invalid_command_comes_before_invalid_state() -> None:
    async with open_testbed() as tb:  # not initialised
        expect(await header_call(tb, UvcCommand.SET_SHARED_ACCESS), Rc.INV_CMD)
        expect(await header_call(tb, UvcCommand.SET_SHARED_ACCESS, length=8), Rc.INV_CMD)


# -- rc 0x0003: the UV is not initialised ------------------------------------------------------


@pytest.mark.parametrize("command", HOST_AFTER_INIT, ids=lambda c: c.name)
@produces(None, Rc.INV_STATE)
async def test_a_host_command_before_init_uv_answers_invalid_state(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        expect(await header_call(tb, command), Rc.INV_STATE)


async def test_invalid_state_comes_before_invalid_length() -> None:
    async with open_testbed() as tb:
        answer = await call(tb, DestroySecConfRequest(handle=1), length=0x38)
        expect(answer, Rc.INV_STATE)


@produces(UvcCommand.QUI, Rc.EXECUTED)
async def test_qui_works_before_init_uv() -> None:
    async with open_testbed() as tb:
        expect(await call(tb, QuiRequest()), Rc.EXECUTED)


# -- rc 0x0005: header length --------------------------------------------------------------------


@pytest.mark.parametrize("delta", [-8, +8], ids=["shorter", "longer"])
@pytest.mark.parametrize("command", HOST_COMMANDS, ids=lambda c: c.name)
@produces(None, Rc.INV_LEN)
async def test_a_wrong_header_length_answers_invalid_length(command: UvcCommand, delta: int) -> None:
    async with open_testbed() as tb:
        if command is not UvcCommand.INIT_UV:
            await init_uv(tb)
        expect(await header_call(tb, command, command.uvcb_length + delta), Rc.INV_LEN)


async def test_invalid_length_comes_before_a_bad_handle() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        expect(await call(tb, DestroySecConfRequest(handle=0x1234), length=0x38), Rc.INV_LEN)


async def test_an_error_leaves_the_input_fields_alone_and_zeroes_the_outputs() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        request = CreateSecConfRequest(guest_stor_len=1 << 20, guest_sca=0x1234, guest_asce=0x5100)
        block = bytearray(request.pack())
        block[0:2] = (0x78).to_bytes(2, "big")
        block[0x18:0x20] = b"\xff" * 8  # guest_handle (output)
        answer = await call_bytes(tb, bytes(block))
        expect(answer, Rc.INV_LEN)
        assert answer.u64(0x18) == 0
        assert answer.block[0x38:0x58] == bytes(block[0x38:0x58])


# -- QUI lengths (§3: 0x100; 0xA8 and up accepted; below 0x100 "more data") -----------------


@pytest.mark.parametrize(
    ("length", "cc", "rc"),
    [(0x08, 1, 0x0005), (0xA0, 1, 0x0005), (0xA7, 1, 0x0005), (0xA8, 1, 0x0100), (0xF8, 1, 0x0100),
     (0x100, 0, 0x0001), (0x120, 0, 0x0001)],
)  # fmt: skip
async def test_qui_answers_by_block_length(length: int, cc: int, rc: int) -> None:
    async with open_testbed() as tb:
        answer = await call(tb, QuiRequest(length=length))
        assert (answer.cc, answer.rc) == (cc, rc)


@produces(UvcCommand.QUI, Rc.MORE_DATA)
async def test_a_qui_block_of_0xa8_bytes_answers_more_data() -> None:
    async with open_testbed() as tb:
        expect(await call(tb, QuiRequest(length=0xA8)), Rc.MORE_DATA)


@produces(UvcCommand.QUI, Rc.INV_LEN)
async def test_a_qui_block_shorter_than_0xa8_answers_invalid_length() -> None:
    async with open_testbed() as tb:
        expect(await call(tb, QuiRequest(length=0xA0)), Rc.INV_LEN)


async def test_a_short_qui_block_gets_only_what_fits() -> None:
    async with open_testbed() as tb:
        addr = tb.alloc(PAGE)
        tb.write(addr, b"\xee" * 0x100)
        tb.write(addr, QuiRequest(length=0xA8).pack())
        assert await tb.uvc(addr) == 1
        block = tb.read(addr, 0x100)
        assert block[0xA8:] == b"\xee" * (0x100 - 0xA8)
        assert int.from_bytes(block[0x40:0x48], "big") == tb.qui().uv_base_stor_len


@pytest.mark.parametrize("command", ALL_HOST, ids=lambda c: c.name)
async def test_a_host_command_shown_in_qui_is_answered_with_something_else_than_invalid_command(
    command: UvcCommand,
) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        assert tb.qui().installed(command)
        assert (await header_call(tb, command)).rc != Rc.INV_CMD
