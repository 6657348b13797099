"""QUI: the installed-calls bitmap, the field offsets, short blocks (uv-interface.md §3, §5)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    QUI_FULL_LENGTH,
    QUI_LENGTH,
    QUI_MIN_LENGTH,
    Cc,
    FormatError,
    QuiRequest,
    QuiResponse,
    Rc,
    UsageError,
    UvcCommand,
    UvcContext,
    UvFeature,
    feature_indications_of,
    inst_calls_list_of,
    parse_request,
    qui_bit_mask,
)

BITMAP = slice(0x10, 0x30)


def dword(block: bytes, n: int) -> int:
    """Double word n of the inst_calls_list in a packed block."""
    return int.from_bytes(block[0x10 + 8 * n : 0x18 + 8 * n], "big")


# -- bit numbering: bit n is bit (63 - n % 64) of double word n / 64 (§3) ----------------


@pytest.mark.parametrize(
    ("bit", "dw", "dw_value"),
    [(0, 0, 1 << 63), (1, 0, 1 << 62), (34, 0, 1 << 29), (63, 0, 1), (64, 1, 1 << 63), (255, 3, 1)],
)
def test_bit_numbering_is_msb0_per_double_word(bit: int, dw: int, dw_value: int) -> None:
    block = QuiResponse(inst_calls_list=qui_bit_mask(bit)).pack()
    assert [dword(block, i) for i in range(4)] == [dw_value if i == dw else 0 for i in range(4)]


@given(st.integers(0, 255))
def test_every_bit_follows_the_architected_formula(bit: int) -> None:
    block = QuiResponse(inst_calls_list=qui_bit_mask(bit)).pack()
    assert dword(block, bit // 64) == 1 << (63 - bit % 64)


def test_qui_bit_zero_is_the_first_bit_of_byte_0x10() -> None:
    block = QuiResponse.with_commands([UvcCommand.QUI]).pack()
    assert block[BITMAP] == b"\x80" + bytes(31)


def test_linux_host_bits_land_where_test_bit_inv_looks() -> None:
    # QUERY_KEYS (34) and RETR_SECRET (33) sit in double word 0 at bits 29 and 30.
    block = QuiResponse.with_commands([UvcCommand.QUERY_KEYS, UvcCommand.RETR_SECRET]).pack()
    assert dword(block, 0) == (1 << 29) | (1 << 30)


@pytest.mark.parametrize("cmd", [c for c in UvcCommand if c.qui_bit is not None])
def test_installed_shows_exactly_the_commands_given(cmd: UvcCommand) -> None:
    qui = QuiResponse.with_commands([cmd])
    assert [c for c in UvcCommand if c.qui_bit is not None and qui.installed(c)] == [cmd]


@given(st.frozensets(st.sampled_from([c for c in UvcCommand if c.qui_bit is not None])))
def test_installed_commands_round_trip(cmds: frozenset[UvcCommand]) -> None:
    qui = QuiResponse.parse(QuiResponse.with_commands(cmds).pack(), cc=0)
    assert qui.installed_commands == cmds


def test_destr_sec_stor_has_no_bit() -> None:
    with pytest.raises(UsageError, match="DESTR_SEC_STOR has no QUI bit"):
        inst_calls_list_of([UvcCommand.DESTR_SEC_STOR])


def test_destr_sec_stor_counts_as_installed() -> None:
    assert QuiResponse().installed(UvcCommand.DESTR_SEC_STOR)


def test_host_and_guest_bitmaps_are_disjoint_but_for_qui() -> None:
    with_bit = [c for c in UvcCommand if c.qui_bit is not None]
    host = inst_calls_list_of(c for c in with_bit if c.allowed_in(UvcContext.HOST))
    guest = inst_calls_list_of(c for c in with_bit if c.allowed_in(UvcContext.GUEST))
    assert host & guest == qui_bit_mask(0)


@pytest.mark.parametrize("bit", [-1, 256])
def test_qui_bit_mask_rejects_bits_outside_the_list(bit: int) -> None:
    with pytest.raises(UsageError):
        qui_bit_mask(bit)


# -- features -----------------------------------------------------------------------------


def test_feature_bits_are_msb0() -> None:
    assert feature_indications_of([UvFeature.MISC]) == 1 << 63
    assert feature_indications_of([UvFeature.AP_INTR]) == 1 << 58


@pytest.mark.parametrize("feature", list(UvFeature))
def test_has_feature_reads_its_own_bit(feature: UvFeature) -> None:
    qui = QuiResponse(uv_feature_indications=feature_indications_of([feature]))
    assert [f for f in UvFeature if qui.has_feature(f)] == [feature]


# -- field offsets (§5) ---------------------------------------------------------------------

OFFSETS = [
    ("uv_base_stor_len", 0x40, 8),
    ("conf_base_phys_stor_len", 0x50, 8),
    ("conf_base_virt_stor_len", 0x58, 8),
    ("conf_virt_var_stor_len", 0x60, 8),
    ("cpu_stor_len", 0x68, 8),
    ("max_num_sec_conf", 0x7C, 4),
    ("max_guest_stor_addr", 0x80, 8),
    ("max_guest_cpu_id", 0x9E, 2),
    ("uv_feature_indications", 0xA0, 8),
    ("supp_se_hdr_versions", 0xB0, 8),
    ("supp_se_hdr_pcf", 0xB8, 8),
    ("conf_dump_storage_state_len", 0xC8, 8),
    ("conf_dump_finalize_len", 0xD0, 8),
    ("supp_att_req_hdr_ver", 0xE0, 8),
    ("supp_att_pflags", 0xE8, 8),
    ("supp_add_secret_req_ver", 0xF8, 8),
    ("supp_add_secret_pcf", 0x100, 8),
    ("supp_secret_types", 0x108, 8),
    ("max_assoc_secrets", 0x110, 2),
    ("max_retr_secrets", 0x112, 2),
]


def test_qui_fields_land_at_their_documented_offsets() -> None:
    values = {name: 0x10 + i for i, (name, _, _) in enumerate(OFFSETS)}
    block = QuiResponse(length=QUI_FULL_LENGTH, rc=Rc.EXECUTED, **values).pack()
    expected = bytearray(QUI_FULL_LENGTH)
    struct.pack_into(">HHHH", expected, 0, QUI_FULL_LENGTH, 0x0001, 1, 0)
    for name, offset, size in OFFSETS:
        expected[offset : offset + size] = values[name].to_bytes(size, "big")
    assert block == bytes(expected)


def test_max_guest_cpus_is_id_plus_one() -> None:
    assert QuiResponse(max_guest_cpu_id=247).max_guest_cpus == 248


# -- lengths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "size"), [(QUI_LENGTH, 0x100), (QUI_FULL_LENGTH, 0x120), (QUI_MIN_LENGTH, 0xA8), (0, 8)]
)
def test_request_packs_to_its_own_length(length: int, size: int) -> None:
    data = QuiRequest(length=length).pack()
    assert len(data) == size and data[:4] == length.to_bytes(2, "big") + b"\x00\x01"


def test_request_defaults_to_the_architected_length() -> None:
    assert QuiRequest().length == 0x100
    assert parse_request(QuiRequest().pack()) == QuiRequest()


def test_a_short_answer_holds_only_what_fits() -> None:
    qui = QuiResponse(
        length=QUI_MIN_LENGTH, cc=Cc.ERROR, rc=Rc.MORE_DATA, uv_feature_indications=1, max_guest_cpu_id=3
    )
    data = qui.pack()
    assert len(data) == 0xA8
    assert QuiResponse.parse(data, cc=Cc.ERROR) == qui


def test_fields_beyond_the_length_must_be_zero() -> None:
    with pytest.raises(UsageError, match="supp_se_hdr_versions .* 0xa8-byte"):
        QuiResponse(length=QUI_MIN_LENGTH, supp_se_hdr_versions=1)


def test_the_architected_length_has_no_room_for_secret_limits() -> None:
    with pytest.raises(UsageError, match="max_retr_secrets"):
        QuiResponse(max_retr_secrets=1)


def test_truncated_zeroes_what_does_not_fit() -> None:
    full = QuiResponse(length=QUI_FULL_LENGTH, supp_se_hdr_versions=1, max_retr_secrets=2, cpu_stor_len=3)
    short = full.truncated(QUI_MIN_LENGTH)
    got = (short.length, short.supp_se_hdr_versions, short.max_retr_secrets, short.cpu_stor_len)
    assert got == (0xA8, 0, 0, 3)


def test_write_back_fills_only_the_callers_block() -> None:
    full = QuiResponse(
        length=QUI_FULL_LENGTH,
        cc=Cc.ERROR,
        rc=Rc.MORE_DATA,
        cpu_stor_len=0x1000,
        supp_se_hdr_versions=2,
        max_retr_secrets=7,
    )
    block = QuiRequest(length=QUI_MIN_LENGTH).pack()
    out = full.write_back(block)
    assert len(out) == 0xA8
    assert QuiResponse.parse(out, cc=Cc.ERROR) == full.truncated(QUI_MIN_LENGTH)


def test_write_back_into_a_full_block_fills_the_secret_limits() -> None:
    full = QuiResponse(length=QUI_FULL_LENGTH, max_assoc_secrets=5, max_retr_secrets=7)
    out = full.write_back(QuiRequest(length=QUI_FULL_LENGTH).pack())
    assert out[0x110:0x114] == b"\x00\x05\x00\x07"


def test_parse_ignores_bytes_beyond_the_length() -> None:
    data = QuiResponse(length=QUI_MIN_LENGTH).pack() + b"\xff" * 0x78
    assert QuiResponse.parse(data, cc=0) == QuiResponse(length=QUI_MIN_LENGTH)


def test_parse_rejects_a_block_shorter_than_its_length() -> None:
    with pytest.raises(FormatError, match="len 0x100"):
        QuiResponse.parse(QuiResponse().pack()[:0xA8], cc=0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, (1 << 256) - 1), st.integers(0, (1 << 16) - 1))
def test_any_length_round_trips(length: int, bitmap: int, secrets: int) -> None:
    full = QuiResponse(
        length=QUI_FULL_LENGTH, inst_calls_list=bitmap, max_retr_secrets=secrets, cpu_stor_len=9
    )
    qui = full.truncated(length)
    data = qui.pack()
    assert len(data) == max(8, length)
    assert QuiResponse.parse(data, cc=0) == qui
