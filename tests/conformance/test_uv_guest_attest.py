"""RETR_ATTEST from inside a secure guest (uv-interface.md §3, §4; se-format.md §4.2).

The guest places a real ARCB and the output buffers in its memory and issues
the UVC; the measurement it gets back is checked by recomputing it from the
guest's SE header, as ``pvattest verify`` does.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvc_conformance import expect, guest_call, guest_call_bytes, produces
from uvc_guest_requests import (
    ADD_AT,
    ARCB_AT,
    ARPK,
    CUST,
    MEAS_AT,
    MEAS_KEY,
    NONCE,
    OTHER_HOST,
    arcb_for,
    asrcb_for,
    attest_uvcb,
    guest_tags,
    retr_attest,
)
from uvc_guest_requests import add as add_secret

from machine import UvLimits
from machine._uv_guest import FIRMWARE_STATE
from protocol import (
    ATTEST_FLAG_ATTEST_PHKH,
    ATTEST_FLAG_FIRMWARE_STATE,
    ATTEST_FLAG_IMAGE_PHKH,
    ATTEST_FLAG_NONCE,
    ATTEST_FLAG_SECRET_STORE_HASH,
    AdditionalData,
    QuiRequest,
    QuiResponse,
    Rc,
    RetrAttestAccessRc,
    RetrAttestRc,
    UvcCommand,
    build_arcb,
    compute_measurement,
    measurement_items,
    secret_store_hash,
)
from protocol._crypto import phkh
from sesim._testbed_guest import boot_secure_guest
from sesim.testbed import Testbed, open_testbed

ATTEST = UvcCommand.RETR_ATTEST
ALL_ITEMS = (
    ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_ATTEST_PHKH | ATTEST_FLAG_SECRET_STORE_HASH | ATTEST_FLAG_FIRMWARE_STATE
)


@produces(ATTEST, Rc.EXECUTED)
async def test_the_measurement_is_the_hmac_over_the_guests_header_cuid_user_data_and_nonce() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await retr_attest(g, arcb_for(tb), user_data=b"hi there", user_data_len=8)
        expect(answer, Rc.EXECUTED)
        cuid = answer.block[0x148:0x158]
        assert cuid == tb.uv.configs[g.config_handle].cuid
        items = measurement_items(tags=guest_tags(g), cuid=cuid, user_data=b"hi there", nonce=NONCE)
        assert g.read(MEAS_AT, 64) == compute_measurement(MEAS_KEY, items)
        assert int.from_bytes(answer.block[0x15C:0x160], "big") == 0  # no additional data asked for


async def test_the_additional_data_holds_every_item_the_flags_ask_for_in_order() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await retr_attest(g, arcb_for(tb, flags=ATTEST_FLAG_NONCE | ALL_ITEMS))
        expect(answer, Rc.EXECUTED)
        size = int.from_bytes(answer.block[0x15C:0x160], "big")
        assert size == 32 + 32 + 64 + 320
        add = AdditionalData.parse(g.read(ADD_AT, size), ATTEST_FLAG_NONCE | ALL_ITEMS)
        host = phkh(tb.host_public_key)
        assert (add.image_phkh, add.attestation_phkh) == (host, host)
        assert add.secret_store_hash == secret_store_hash([], locked=False)
        assert add.firmware_state == FIRMWARE_STATE and add.unrecognized is None
        items = measurement_items(tags=guest_tags(g), cuid=answer.block[0x148:0x158], nonce=NONCE,
                                  additional=add.pack())  # fmt: skip
        assert g.read(MEAS_AT, 64) == compute_measurement(MEAS_KEY, items)


async def test_a_request_without_nonce_is_measured_without_one() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await retr_attest(g, arcb_for(tb, flags=0, nonce=None))
        expect(answer, Rc.EXECUTED)
        items = measurement_items(tags=guest_tags(g), cuid=answer.block[0x148:0x158])
        assert g.read(MEAS_AT, 64) == compute_measurement(MEAS_KEY, items)


async def test_the_secret_store_hash_follows_every_accepted_request_and_the_lock() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        first, second = asrcb_for(g), asrcb_for(g, iv=b"\x44" * 12)
        for request in (first, second):
            expect(await add_secret(g, request), Rc.EXECUTED)
        flags = ATTEST_FLAG_NONCE | ATTEST_FLAG_SECRET_STORE_HASH
        expect(await retr_attest(g, arcb_for(tb, flags=flags)), Rc.EXECUTED)
        assert g.read(ADD_AT, 64) == secret_store_hash([first[-16:], second[-16:]], locked=False)
        g.write(0xA0000, (0x40).to_bytes(2, "big") + int(UvcCommand.LOCK_SECRETS).to_bytes(2, "big") + bytes(60))
        assert await g.uvc(0xA0000) == 0
        expect(await retr_attest(g, arcb_for(tb, flags=flags)), Rc.EXECUTED)
        assert g.read(ADD_AT, 64) == secret_store_hash([first[-16:], second[-16:]], locked=True)


async def test_two_guests_get_different_configuration_uids() -> None:
    async with open_testbed() as tb:
        a, b = await tb.secure_guest(), await tb.secure_guest()
        cuids = {(await retr_attest(g, arcb_for(tb))).block[0x148:0x158] for g in (a, b)}
        assert len(cuids) == 2


# -- the check order of uv-interface.md §4 -----------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _m(key: str, value: Any) -> Mutation:
    def apply(state: dict[str, Any]) -> None:
        state[key] = value

    return apply


def _or_flags(bits: int) -> Mutation:
    def apply(state: dict[str, Any]) -> None:
        state["flags"] |= bits

    return apply


def _other_host(state: dict[str, Any]) -> None:
    state["phkh"] = phkh(OTHER_HOST.public_key())


ORDER: list[tuple[int, str, list[Mutation]]] = [
    (RetrAttestRc.INV_CONT_TOKEN, "token", [_m("cont_token", 1)]),
    (RetrAttestRc.USER_DATA_TOO_LONG, "user-len", [_m("user_data_len", 257)]),
    (RetrAttestRc.ARCB_INACCESSIBLE, "arcb-addr", [_m("arcb_addr", 0x100000 - 8)]),
    (RetrAttestRc.ARCB_VERSION_UNSUPPORTED, "version", [_m("version", 0x200)]),
    (RetrAttestRc.ARCB_LEN_INVALID, "rql", [_m("rql_extra", 16)]),
    (RetrAttestRc.NO_KEY_SLOT, "nks", [_m("nks", 0)]),
    (RetrAttestRc.ENCR_AREA_SIZE_INVALID, "sea", [_m("sea", 64)]),
    (RetrAttestRc.PFLAGS_UNSUPPORTED, "flags", [_or_flags(1 << 63)]),
    (RetrAttestRc.MEAS_ALG_UNSUPPORTED, "mai", [_m("mai", 2)]),
    (RetrAttestRc.MEAS_LEN_INVALID, "meas-len", [_m("meas_len", 32)]),
    (RetrAttestRc.ADD_DATA_LEN_INVALID, "add-len", [_m("add_data_len", 31)]),
    (RetrAttestAccessRc.MEAS_INACCESSIBLE, "meas-addr", [_m("meas_addr", 0x100000 - 32)]),
    (RetrAttestAccessRc.ADD_DATA_INACCESSIBLE, "add-addr", [_m("add_data_addr", 0x100000 - 16)]),
    (RetrAttestRc.ARCB_UNSEAL_FAILED, "host-key", [_other_host]),
]
"""Every check in the order the UV makes it; row i's mutation alone gives row i's rc."""


def _apply(arcb: bytes, rows: list[list[Mutation]]) -> tuple[bytes, dict[str, Any]]:
    state: dict[str, Any] = {
        "version": 0x100, "nks": 1, "sea": 80, "rql_extra": 0, "flags": ATTEST_FLAG_NONCE | ATTEST_FLAG_IMAGE_PHKH,
        "mai": 1, "phkh": arcb[0xE0:0x100], "cont_token": 0, "user_data_len": 0, "arcb_addr": ARCB_AT,
        "meas_len": 64, "meas_addr": MEAS_AT, "add_data_len": 0x1000, "add_data_addr": ADD_AT,
    }  # fmt: skip
    for mutations in rows:
        for mutation in mutations:
            mutation(state)
    out = bytearray(arcb)
    struct.pack_into(">I", out, 0x08, state["version"])
    out[0x27] = state["nks"]
    struct.pack_into(">I", out, 0x2C, state["sea"])
    struct.pack_into(">QI", out, 0x30, state["flags"], state["mai"])
    out[0xE0:0x100] = state["phkh"]
    rql = 0x40 + 160 + 80 * state["nks"] + state["sea"] + 16 + state["rql_extra"]
    struct.pack_into(">I", out, 0x0C, rql)
    fields = {k: state[k] for k in ("cont_token", "user_data_len", "arcb_addr", "meas_len", "meas_addr",
                                    "add_data_len", "add_data_addr")}  # fmt: skip
    return bytes(out.ljust(rql, b"\0")), fields


@pytest.mark.parametrize("row", range(len(ORDER)), ids=[name for _, name, _ in ORDER])
@produces(ATTEST, RetrAttestRc.INV_CONT_TOKEN, when={"row": 0})
@produces(ATTEST, RetrAttestRc.USER_DATA_TOO_LONG, when={"row": 1})
@produces(ATTEST, RetrAttestRc.ARCB_INACCESSIBLE, when={"row": 2})
@produces(ATTEST, RetrAttestRc.ARCB_VERSION_UNSUPPORTED, when={"row": 3})
@produces(ATTEST, RetrAttestRc.ARCB_LEN_INVALID, when={"row": 4})
@produces(ATTEST, RetrAttestRc.NO_KEY_SLOT, when={"row": 5})
@produces(ATTEST, RetrAttestRc.ENCR_AREA_SIZE_INVALID, when={"row": 6})
@produces(ATTEST, RetrAttestRc.PFLAGS_UNSUPPORTED, when={"row": 7})
@produces(ATTEST, RetrAttestRc.MEAS_ALG_UNSUPPORTED, when={"row": 8})
@produces(ATTEST, RetrAttestRc.MEAS_LEN_INVALID, when={"row": 9})
@produces(ATTEST, RetrAttestRc.ADD_DATA_LEN_INVALID, when={"row": 10})
@produces(ATTEST, RetrAttestAccessRc.MEAS_INACCESSIBLE, when={"row": 11})
@produces(ATTEST, RetrAttestAccessRc.ADD_DATA_INACCESSIBLE, when={"row": 12})
@produces(ATTEST, RetrAttestRc.ARCB_UNSEAL_FAILED, when={"row": 13})
async def test_each_check_wins_over_every_later_one(row: int) -> None:
    """Row i's fault with the faults of all later rows present: row i's rc (§4 order)."""
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        base = arcb_for(tb, flags=ATTEST_FLAG_NONCE | ATTEST_FLAG_IMAGE_PHKH)
        alone, fields = _apply(base, [ORDER[row][2]])
        expect(await retr_attest(g, alone, **fields), ORDER[row][0])
        together, fields = _apply(base, [m for _, _, m in ORDER[row:]])
        expect(await retr_attest(g, together, **fields), ORDER[row][0])


@produces(ATTEST, RetrAttestRc.ARCB_INACCESSIBLE)
async def test_an_arcb_whose_length_reaches_beyond_guest_memory_is_inaccessible() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        arcb = arcb_for(tb)
        at = g.memory_size - 0x100  # the header fits, the rest (400 bytes) does not
        g.write(at, arcb[:0x100])
        expect(await guest_call(g, attest_uvcb(arcb_addr=at)), RetrAttestRc.ARCB_INACCESSIBLE)


@produces(ATTEST, RetrAttestRc.ARCB_UNSEAL_FAILED)
async def test_a_tampered_request_cannot_be_unsealed() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        for offset in (0x3C, 0x50, 0x150, 0x18F):  # reserved (AAD), customer key, ciphertext, tag
            arcb = bytearray(arcb_for(tb))
            arcb[offset] ^= 0x01
            expect(await retr_attest(g, bytes(arcb)), RetrAttestRc.ARCB_UNSEAL_FAILED)


async def test_a_request_for_several_hosts_is_unsealed_with_this_hosts_slot() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        arcb = build_arcb(host_keys=[OTHER_HOST.public_key(), tb.host_public_key], cust_private_key=CUST,
                          arpk=ARPK, iv=b"\x55" * 12, flags=ATTEST_FLAG_NONCE | ATTEST_FLAG_ATTEST_PHKH,
                          measurement_key=MEAS_KEY, nonce=NONCE)  # fmt: skip
        expect(await retr_attest(g, arcb), Rc.EXECUTED)
        assert g.read(ADD_AT, 32) == phkh(tb.host_public_key)


async def test_a_failed_call_writes_no_measurement() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(MEAS_AT, b"\xee" * 64)
        expect(await retr_attest(g, arcb_for(tb, host=OTHER_HOST.public_key())), RetrAttestRc.ARCB_UNSEAL_FAILED)
        assert g.read(MEAS_AT, 64) == b"\xee" * 64


GUEST_ATTEST_CALLS = (UvcCommand.RETR_ATTEST, UvcCommand.ADD_SECRET, UvcCommand.LIST_SECRETS,
                      UvcCommand.LOCK_SECRETS, UvcCommand.RETR_SECRET)  # fmt: skip


@pytest.mark.parametrize("installed", [True, False])
async def test_the_five_calls_are_shown_and_answered_only_where_installed(installed: bool) -> None:
    """QUI bits 28-31 and 33 (§3, §5) follow ``UvLimits.attestation``; a clear bit means rc 0x0002."""
    async with open_testbed(limits=UvLimits(attestation=installed)) as tb:
        g = await tb.secure_guest()
        qui = QuiResponse.parse((await guest_call(g, QuiRequest())).block, cc=0)
        for command in GUEST_ATTEST_CALLS:
            assert qui.installed(command) == installed
            length = command.uvcb_length
            block = length.to_bytes(2, "big") + int(command).to_bytes(2, "big") + bytes(length - 4)
            answer = await guest_call_bytes(g, block)
            assert (answer.rc == Rc.INV_CMD) != installed, command.name
        assert (qui.supp_att_pflags != 0) == installed


_FUZZ: dict[str, Any] = {}


def _fuzz_guest() -> Any:
    if "guest" not in _FUZZ:
        tb = Testbed(memory_mib=2200, cpus=2)
        _FUZZ["guest"] = boot_secure_guest(tb, 1, 1)
        _FUZZ["seeds"] = [arcb_for(tb, flags=f) for f in (ATTEST_FLAG_NONCE, ATTEST_FLAG_NONCE | ALL_ITEMS)]
    return _FUZZ["guest"]


@st.composite
def _arcb_bytes(draw: st.DrawFn) -> bytes:
    _fuzz_guest()
    data = bytearray(draw(st.sampled_from(_FUZZ["seeds"])))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.one_of(st.integers(0, 0x40), st.integers(0, len(data) - 1)))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_arcb_bytes(), st.integers(0, 0x200), st.integers(0, 0x300))
def test_any_arcb_bytes_and_lengths_get_an_rc(arcb: bytes, meas_len: int, add_len: int) -> None:
    g = _fuzz_guest()
    g.write(ARCB_AT, arcb)
    g.write(0xA0000, attest_uvcb(meas_len=meas_len, add_data_len=add_len).pack())
    assert trio.run(g.uvc, 0xA0000) in (0, 1)
