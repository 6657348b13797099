"""QUI contents per context (uv-interface.md §5) and its consistency with the answers (§1)."""

from __future__ import annotations

import pytest
from uvc_conformance import (
    GUEST_ONLY,
    HOST_COMMANDS,
    NOT_INSTALLED,
    call,
    guest_call,
    guest_call_bytes,
    header_call,
    init_uv,
    produces,
)

from protocol import QUI_FULL_LENGTH, QuiRequest, QuiResponse, Rc, UvcCommand, qui_bit_mask
from sesim.testbed import open_testbed

HOST_BITS = sorted(c.qui_bit for c in HOST_COMMANDS if c.qui_bit is not None)
GUEST_BITS = [0, 8, 9, 28, 29, 30, 31, 33]
"""QUI, share, unshare, RETR_ATTEST and the four secret calls (§5)."""


def bits_of(qui: QuiResponse) -> list[int]:
    return [n for n in range(256) if qui.inst_calls_list & qui_bit_mask(n)]


def parsed(block: bytes, cc: int) -> QuiResponse:
    return QuiResponse.parse(block, cc=cc)


async def test_the_host_qui_shows_every_host_command_and_no_guest_command() -> None:
    async with open_testbed() as tb:
        answer = await call(tb, QuiRequest())
        assert bits_of(parsed(answer.block, answer.cc)) == [0, *HOST_BITS]
        assert HOST_BITS == [1, 2, 3, 4, 5, 6, 7, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]


@produces(UvcCommand.QUI, Rc.EXECUTED)
async def test_a_secure_guest_qui_shows_qui_share_unshare_attestation_and_secrets() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await guest_call(g, QuiRequest())
        assert answer.cc == 0
        assert bits_of(parsed(answer.block, answer.cc)) == GUEST_BITS


async def test_qui_is_the_same_before_and_after_init_uv() -> None:
    async with open_testbed() as tb:
        before = (await call(tb, QuiRequest(length=QUI_FULL_LENGTH))).block
        await init_uv(tb)
        assert (await call(tb, QuiRequest(length=QUI_FULL_LENGTH))).block == before


async def test_the_storage_sizes_of_qui_are_the_same_in_both_contexts() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        host = parsed((await call(tb, QuiRequest())).block, 0)
        guest = parsed((await guest_call(g, QuiRequest())).block, 0)
        for name in ("uv_base_stor_len", "conf_base_phys_stor_len", "cpu_stor_len", "max_guest_cpu_id"):
            assert getattr(host, name) == getattr(guest, name)


async def test_the_qui_fields_lie_at_their_documented_offsets() -> None:
    async with open_testbed() as tb:
        block = (await call(tb, QuiRequest())).block
        qui = tb.qui()
        for offset, size, value in (
            (0x40, 8, qui.uv_base_stor_len),
            (0x50, 8, qui.conf_base_phys_stor_len),
            (0x58, 8, qui.conf_base_virt_stor_len),
            (0x60, 8, qui.conf_virt_var_stor_len),
            (0x68, 8, qui.cpu_stor_len),
            (0x7C, 4, qui.max_num_sec_conf),
            (0x80, 8, qui.max_guest_stor_addr),
            (0x9E, 2, qui.max_guest_cpu_id),
        ):
            assert int.from_bytes(block[offset : offset + size], "big") == value
            assert value > 0


@pytest.mark.parametrize("command", [c for c in UvcCommand if c is not UvcCommand.DESTR_SEC_STOR], ids=lambda c: c.name)
async def test_in_the_host_context_a_clear_bit_means_invalid_command(command: UvcCommand) -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        shown = tb.qui().installed(command)
        answered = (await header_call(tb, command)).rc != Rc.INV_CMD
        assert shown == answered
        assert shown == (command is UvcCommand.QUI or command in HOST_COMMANDS)


async def test_in_a_guest_a_clear_bit_means_invalid_command() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        qui = parsed((await guest_call(g, QuiRequest())).block, 0)
        for command in UvcCommand:
            length = command.uvcb_length
            block = length.to_bytes(2, "big") + int(command).to_bytes(2, "big") + bytes(length - 4)
            answered = (await guest_call_bytes(g, block)).rc != Rc.INV_CMD
            assert qui.installed(command) == answered or command is UvcCommand.DESTR_SEC_STOR
            if command in (*HOST_COMMANDS, *NOT_INSTALLED):
                assert not answered, command.name
            if command in GUEST_ONLY:
                assert answered, command.name
