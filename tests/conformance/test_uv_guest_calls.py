"""UVCs from inside a secure guest (uv-interface.md §1, §4, §5; kvm-unit-tests uv-guest.c).

The UVCB lies in guest memory and the call runs in guest context: QUI,
SET_SHARED_ACCESS and REMOVE_SHARED_ACCESS work, every host command answers
rc 0x0002.
"""

from __future__ import annotations

import pytest
from uvc_conformance import (
    GUEST_UVCB,
    HOST_COMMANDS,
    PAGE,
    call,
    expect,
    guest_call,
    guest_call_bytes,
    produces,
)

from protocol import (
    PinPageSharedRequest,
    QuiRequest,
    Rc,
    RemoveSharedAccessRequest,
    SetSharedAccessRequest,
    SharedAccessRc,
    UvcCommand,
)
from sesim.testbed import ProgramInterrupt, open_testbed

SHARE = UvcCommand.SET_SHARED_ACCESS
UNSHARE = UvcCommand.REMOVE_SHARED_ACCESS


@produces(SHARE, Rc.EXECUTED)
@produces(SHARE, Rc.INV_LEN)
@produces(SHARE, SharedAccessRc.ADDR_OUTSIDE_MEMORY)
@produces(UNSHARE, Rc.EXECUTED)
@produces(UNSHARE, Rc.INV_LEN)
async def test_share_and_unshare_as_kvm_unit_tests_does() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        page = 0xA0000
        expect(await guest_call(g, SetSharedAccessRequest(paddr=page), length=0x28), Rc.INV_LEN)
        expect(await guest_call(g, SetSharedAccessRequest(paddr=page)), Rc.EXECUTED)
        beyond = g.memory_size + PAGE
        expect(await guest_call(g, SetSharedAccessRequest(paddr=beyond)), SharedAccessRc.ADDR_OUTSIDE_MEMORY)
        expect(await guest_call(g, RemoveSharedAccessRequest(paddr=page), length=0x28), Rc.INV_LEN)
        expect(await guest_call(g, RemoveSharedAccessRequest(paddr=page)), Rc.EXECUTED)


@produces(UNSHARE, SharedAccessRc.ADDR_OUTSIDE_MEMORY)
async def test_unsharing_beyond_guest_memory_answers_0x101() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await guest_call(g, RemoveSharedAccessRequest(paddr=g.memory_size))
        expect(answer, SharedAccessRc.ADDR_OUTSIDE_MEMORY)


async def test_a_shared_page_is_seen_by_both_sides_and_an_unshared_one_by_the_guest_only() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"private first")
        expect(await guest_call(g, SetSharedAccessRequest(paddr=0xA0000)), Rc.EXECUTED)
        host = g.host_addr(0xA0000)
        assert tb.read(host, 13) == b"private first"  # sharing keeps the contents
        tb.write(host, b"from the host")
        assert g.read(0xA0000, 13) == b"from the host"
        expect(await guest_call(g, RemoveSharedAccessRequest(paddr=0xA0000)), Rc.EXECUTED)
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(host, 1)
        assert pgm.value.code == 0x3D
        assert g.read(0xA0000, 13) == b"from the host"


async def test_sharing_a_page_the_guest_never_touched_works() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await guest_call(g, SetSharedAccessRequest(paddr=0xC0000)), Rc.EXECUTED)
        assert tb.read(g.host_addr(0xC0000), 8) == bytes(8)


async def test_unsharing_a_page_the_host_pinned_works_once_the_host_unpins_it() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await guest_call(g, SetSharedAccessRequest(paddr=0xA0000)), Rc.EXECUTED)
        expect(await call(tb, PinPageSharedRequest(paddr=g.host_addr(0xA0000))), Rc.EXECUTED)
        expect(await guest_call(g, RemoveSharedAccessRequest(paddr=0xA0000)), Rc.EXECUTED)
        with pytest.raises(ProgramInterrupt):
            tb.read(g.host_addr(0xA0000), 1)


@pytest.mark.parametrize("command", [*HOST_COMMANDS, 0x4242], ids=lambda c: getattr(c, "name", hex(c)))
@produces(None, Rc.INV_CMD)
async def test_a_host_command_from_a_guest_answers_invalid_command(command: int) -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        length = UvcCommand(command).uvcb_length if command in UvcCommand._value2member_map_ else 8
        block = length.to_bytes(2, "big") + int(command).to_bytes(2, "big") + bytes(length - 4)
        expect(await guest_call_bytes(g, block), Rc.INV_CMD)


async def test_guest_qui_lengths_are_those_of_the_host() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await guest_call(g, QuiRequest(length=0xA0)), Rc.INV_LEN)
        expect(await guest_call(g, QuiRequest(length=0xA8)), Rc.MORE_DATA)
        expect(await guest_call(g, QuiRequest()), Rc.EXECUTED)


@pytest.mark.parametrize("command", [UvcCommand.QUI, SHARE, UNSHARE], ids=lambda c: c.name)
async def test_a_guest_uvc_in_problem_state_takes_privileged_operation(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(GUEST_UVCB, command.uvcb_length.to_bytes(2, "big") + int(command).to_bytes(2, "big") + bytes(4))
        with pytest.raises(ProgramInterrupt) as pgm:
            await g.uvc(GUEST_UVCB, problem_state=True)
        assert pgm.value.code == 0x02


async def test_a_guest_uvcb_beyond_guest_memory_cannot_be_read() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(g.memory_size - 8, (0x100).to_bytes(2, "big") + int(UvcCommand.QUI).to_bytes(2, "big") + bytes(4))
        for addr in (g.memory_size - 8, g.memory_size):  # crossing the end, and beyond it
            with pytest.raises(ProgramInterrupt) as pgm:
                await g.uvc(addr)
            assert pgm.value.code == 0x11


async def test_a_guest_uvcb_in_a_page_the_guest_never_touched_is_read_as_zeros() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        assert await g.uvc(0xD0000) == 1  # an all-zero header: command 0 is unknown
        assert g.read(0xD0004, 2) == Rc.INV_CMD.to_bytes(2, "big")
