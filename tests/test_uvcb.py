"""UVC codes and UVCB layouts against uv-interface.md §1-§4 and Linux uv.h."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from attrs import evolve
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    COMMAND_TABLE,
    NEED_DESTROY,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    Cc,
    ConvToSecStorRequest,
    ConvToSecStorResponse,
    CpuSetStateRequest,
    CpuState,
    CreateSecConfRequest,
    CreateSecConfResponse,
    CreateSecCpuRequest,
    CreateSecCpuResponse,
    DumpConfStorStateRequest,
    FormatError,
    InitUvRequest,
    ListSecretsRequest,
    PgmCode,
    QueryKeysResponse,
    QuiResponse,
    Rc,
    RetrAttestRequest,
    RetrAttestResponse,
    RetrSecretRequest,
    SetSecConfParamsRequest,
    SetSharedAccessRequest,
    UnpackImgRequest,
    UsageError,
    UvcbField,
    UvcbHeader,
    UvcCommand,
    UvcContext,
    UvcRequest,
    UvcResponse,
    VerifyImgRrc,
    parse_request,
    parse_response,
    write_rc,
)

# -- the command table, written out from uv-interface.md §3 ----------------------------

H, G, B = "host", "guest", "both"
# (name, code, QUI bit, UVCB length, context). Lengths per §3; where §3 defers
# (dumps, secrets, QUERY_KEYS) or differs (DESTROY_SEC_CONF_FAST) the value is
# sizeof() of the uv.h struct Linux sends.
SPEC_TABLE = [
    ("QUI", 0x0001, 0, 0x100, B),
    ("INIT_UV", 0x000F, 1, 0x48, H),
    ("CREATE_SEC_CONF", 0x0100, 2, 0x80, H),
    ("DESTROY_SEC_CONF", 0x0101, 3, 0x40, H),
    ("CREATE_SEC_CPU", 0x0120, 4, 0x60, H),
    ("DESTROY_SEC_CPU", 0x0121, 5, 0x40, H),
    ("CONV_TO_SEC_STOR", 0x0200, 6, 0x28, H),
    ("CONV_FROM_SEC_STOR", 0x0201, 7, 0x20, H),
    ("DESTR_SEC_STOR", 0x0202, None, 0x20, H),
    ("SET_SHARED_ACCESS", 0x1000, 8, 0x30, G),
    ("REMOVE_SHARED_ACCESS", 0x1001, 9, 0x30, G),
    ("SET_SEC_CONF_PARAMS", 0x0300, 11, 0x50, H),
    ("UNPACK_IMG", 0x0301, 13, 0x50, H),
    ("VERIFY_IMG", 0x0302, 14, 0x40, H),
    ("CPU_RESET", 0x0310, 15, 0x40, H),
    ("CPU_RESET_INITIAL", 0x0311, 16, 0x40, H),
    ("CPU_SET_STATE", 0x0330, 17, 0x50, H),
    ("PREPARE_RESET", 0x0320, 18, 0x40, H),
    ("CPU_RESET_CLEAR", 0x0321, 19, 0x40, H),
    ("SET_UNSHARE_ALL", 0x0340, 20, 0x40, H),
    ("PIN_PAGE_SHARED", 0x0341, 21, 0x20, H),
    ("UNPIN_PAGE_SHARED", 0x0342, 22, 0x28, H),
    ("DESTROY_SEC_CONF_FAST", 0x0102, 23, 0x40, H),  # §3; Linux sends sizeof(uv_cb_destroy_fast) = 0x48
    ("DUMP_INIT", 0x0400, 24, 0x40, H),
    ("DUMP_CONF_STOR_STATE", 0x0401, 25, 0x50, H),
    ("DUMP_CPU", 0x0402, 26, 0x50, H),
    ("DUMP_COMPLETE", 0x0403, 27, 0x50, H),
    ("RETR_ATTEST", 0x1020, 28, 0x188, G),
    ("ADD_SECRET", 0x1031, 29, 0x48, G),
    ("LIST_SECRETS", 0x1033, 30, 0x48, G),
    ("LOCK_SECRETS", 0x1034, 31, 0x40, G),
    ("RETR_SECRET", 0x1035, 33, 0x48, G),
    ("QUERY_KEYS", 0x0002, 34, 0x200, H),
]


@pytest.mark.parametrize(("name", "code", "bit", "length", "context"), SPEC_TABLE)
def test_command_matches_the_table(name: str, code: int, bit: int | None, length: int, context: str) -> None:
    cmd = UvcCommand[name]
    assert (int(cmd), cmd.qui_bit, cmd.uvcb_length, cmd.context) == (code, bit, length, context)


def test_table_covers_every_command() -> None:
    assert {row[0] for row in SPEC_TABLE} == {c.name for c in UvcCommand} == {c.name for c in COMMAND_TABLE}


def test_qui_bits_are_distinct() -> None:
    bits = [c.qui_bit for c in UvcCommand if c.qui_bit is not None]
    assert len(bits) == len(set(bits)) == len(UvcCommand) - 1


@pytest.mark.parametrize(
    ("cmd", "issuer", "allowed"),
    [
        (UvcCommand.QUI, UvcContext.HOST, True),
        (UvcCommand.QUI, UvcContext.GUEST, True),
        (UvcCommand.INIT_UV, UvcContext.GUEST, False),
        (UvcCommand.SET_SHARED_ACCESS, UvcContext.HOST, False),
        (UvcCommand.RETR_ATTEST, UvcContext.GUEST, True),
    ],
)
def test_allowed_in_follows_the_context(cmd: UvcCommand, issuer: UvcContext, allowed: bool) -> None:
    assert cmd.allowed_in(issuer) is allowed


def test_generic_codes_have_their_architected_values() -> None:
    assert [int(r) for r in Rc] == [0x1, 0x2, 0x3, 0x5, 0x7, 0x20, 0x21, 0x100]
    assert NEED_DESTROY == 0x8000
    assert [int(c) for c in Cc] == [0, 1, 2, 3]
    assert (CpuState.OPR, CpuState.STP, CpuState.CHKSTP, CpuState.OPR_LOAD) == (1, 2, 3, 5)


def test_pgm_codes_of_the_uvc_boundary() -> None:
    assert PgmCode.PRIVILEGED_OPERATION == 0x02
    assert PgmCode.SPECIFICATION == 0x06
    assert PgmCode.PAGE_TRANSLATION == 0x11
    assert (PgmCode.SECURE_STORAGE_ACCESS, PgmCode.NON_SECURE_STORAGE_ACCESS) == (0x3D, 0x3E)


def test_verify_img_rrcs() -> None:
    assert [int(r) for r in VerifyImgRrc] == [0x1A, 0x1B, 0x1C, 0x1D]


# -- class tables ---------------------------------------------------------------------


def _camel(cmd: UvcCommand) -> str:
    return "".join(part.capitalize() for part in cmd.name.split("_"))


@pytest.mark.parametrize("cmd", list(UvcCommand))
def test_every_command_has_request_and_response_classes(cmd: UvcCommand) -> None:
    req, resp = REQUEST_TYPES[cmd], RESPONSE_TYPES[cmd]
    assert (req.COMMAND, resp.COMMAND) == (cmd, cmd)
    assert (req.__name__, resp.__name__) == (_camel(cmd) + "Request", _camel(cmd) + "Response")


@pytest.mark.parametrize("cmd", [c for c in UvcCommand if c is not UvcCommand.QUI])
def test_request_packs_to_the_architected_length(cmd: UvcCommand) -> None:
    data = REQUEST_TYPES[cmd]().pack()
    assert len(data) == cmd.uvcb_length
    assert struct.unpack_from(">HHHH", data) == (cmd.uvcb_length, cmd, 0, 0)


def test_wrong_length_is_kept_in_the_header_only() -> None:
    data = InitUvRequest(length=0x10, stor_origin=0x100000).pack()
    assert len(data) == 0x48
    assert data[0:2] == b"\x00\x10"
    assert InitUvRequest.parse(data).length == 0x10


# -- strategies built from the field layouts ------------------------------------------

u16s = st.integers(0, 0xFFFF)


def _field(f: UvcbField) -> st.SearchStrategy[Any]:
    if f.bits is not None:
        elem: st.SearchStrategy[Any] = st.integers(0, (1 << f.bits) - 1)
    else:
        size = f.size // f.count
        elem = st.binary(min_size=size, max_size=size)
    return st.tuples(*[elem] * f.count) if f.count > 1 else elem


def instances(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any valid instance of a request or response class."""
    kw = {f.name: _field(f) for f in cls.FIELDS}
    if issubclass(cls, UvcRequest):
        return st.builds(cls, length=u16s, **kw)
    head = {"cc": st.sampled_from(Cc), "rc": u16s, "rrc": u16s}
    if cls is QuiResponse:
        full = st.builds(cls, length=st.just(0x120), **head, **kw)
        return st.tuples(full, u16s).map(lambda t: t[0].truncated(t[1]))
    return st.builds(cls, **head, **kw)


REQUESTS = list(REQUEST_TYPES.values())
RESPONSES = list(RESPONSE_TYPES.values())
any_request = st.one_of(*[instances(c) for c in REQUESTS])


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_request_round_trips(cls: type[UvcRequest], data: st.DataObject) -> None:
    x = data.draw(instances(cls))
    assert cls.parse(x.pack()) == x


@pytest.mark.parametrize("cls", RESPONSES, ids=lambda c: c.__name__)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_response_round_trips(cls: type[UvcResponse], data: st.DataObject) -> None:
    x = data.draw(instances(cls))
    assert cls.parse(x.pack(), cc=x.cc) == x
    assert parse_response(x.pack(), cc=x.cc) == x


@settings(max_examples=200, deadline=None)
@given(any_request)
def test_parse_request_dispatches_on_cmd(x: UvcRequest) -> None:
    assert parse_request(x.pack()) == x


@settings(max_examples=200, deadline=None)
@given(any_request, st.binary(max_size=64))
def test_parse_request_ignores_bytes_beyond_the_block(x: UvcRequest, tail: bytes) -> None:
    assert parse_request(x.pack() + tail) == x


codes = st.sampled_from([int(c) for c in UvcCommand]) | u16s


# Random bytes, and random bytes behind a known command code so parsing gets past dispatch.
fuzz_blocks = st.binary(max_size=0x220) | st.tuples(
    st.binary(min_size=2, max_size=2), codes, st.binary(max_size=0x200)
).map(lambda t: t[0] + t[1].to_bytes(2, "big") + t[2])


@settings(max_examples=500, deadline=None)
@given(fuzz_blocks)
def test_parse_request_raises_only_format_error(data: bytes) -> None:
    try:
        parse_request(data)
    except FormatError:
        pass


@pytest.mark.parametrize("size", [0, 7])
def test_parse_request_rejects_a_short_header(size: int) -> None:
    with pytest.raises(FormatError, match="header"):
        parse_request(bytes(size))


def test_parse_request_rejects_an_unknown_command() -> None:
    with pytest.raises(FormatError, match="unknown UVC command 0x0003"):
        parse_request(b"\x00\x40\x00\x03" + bytes(0x3C))


def test_parse_rejects_a_truncated_block() -> None:
    data = CreateSecConfRequest().pack()[:0x7F]
    with pytest.raises(FormatError, match="127 bytes"):
        parse_request(data)


def test_parse_rejects_a_block_of_another_command() -> None:
    with pytest.raises(FormatError, match="expected 0x0200"):
        ConvToSecStorRequest.parse(UnpackImgRequest().pack())


# -- exact bytes, written by hand from the reference tables ---------------------------


def _block(length: int, cmd: int, *, rc: int = 0, rrc: int = 0, **at: bytes) -> bytes:
    """A zeroed block with the header and ``at`` = {"o0x18": bytes} placed."""
    buf = bytearray(length)
    struct.pack_into(">HHHH", buf, 0, length, cmd, rc, rrc)
    for key, value in at.items():
        off = int(key[1:], 16)
        buf[off : off + len(value)] = value
    return bytes(buf)


def q(v: int) -> bytes:
    return v.to_bytes(8, "big")


LAYOUT_CASES = [
    (
        CreateSecConfRequest(
            conf_base_stor_origin=0x1111,
            conf_virt_stor_origin=0x2222,
            flags=0x0003,
            guest_stor_origin=0x3333,
            guest_stor_len=0x4444,
            guest_sca=0x5555,
            guest_asce=0x6666,
        ),
        _block(
            0x80, 0x0100,
            o20=q(0x1111), o28=q(0x2222), o36=b"\x00\x03", o38=q(0x3333),
            o40=q(0x4444), o48=q(0x5555), o50=q(0x6666),
        ),
    ),
    (CreateSecConfResponse(guest_handle=0xABCD), _block(0x80, 0x0100, rc=1, o18=q(0xABCD))),
    (
        CreateSecCpuRequest(guest_handle=1, stor_origin=2, num=0x0102, state_origin=3),
        _block(0x60, 0x0120, o20=q(1), o28=q(2), o36=b"\x01\x02", o38=q(3)),
    ),
    (
        CreateSecCpuResponse(cc=1, rc=0x104, rrc=7, cpu_handle=9),
        _block(0x60, 0x0120, rc=0x104, rrc=7, o18=q(9)),
    ),
    (
        InitUvRequest(stor_origin=0x100000, stor_len=0x2000),
        _block(0x48, 0x000F, o18=q(0x100000), o20=q(0x2000)),
    ),
    (ConvToSecStorRequest(guest_handle=5, gaddr=0x6000), _block(0x28, 0x0200, o18=q(5), o20=q(0x6000))),
    (
        SetSecConfParamsRequest(guest_handle=5, sec_header_origin=0x9000, sec_header_len=0x1234),
        _block(0x50, 0x0300, o18=q(5), o20=q(0x9000), o28=b"\x00\x00\x12\x34"),
    ),
    (
        UnpackImgRequest(guest_handle=5, gaddr=0x7000, tweak=(0xAA, 0xBB)),
        _block(0x50, 0x0301, o18=q(5), o20=q(0x7000), o28=q(0xAA), o30=q(0xBB)),
    ),
    (CpuSetStateRequest(cpu_handle=4, state=CpuState.OPR_LOAD), _block(0x50, 0x0330, o18=q(4), o27=b"\x05")),
    (SetSharedAccessRequest(paddr=0x8000), _block(0x30, 0x1000, o20=q(0x8000))),
    (
        DumpConfStorStateRequest(config_handle=1, dump_area_origin=2, gaddr=0x100000),
        _block(0x50, 0x0401, o18=q(1), o20=q(2), o28=q(0x100000)),
    ),
    (
        RetrAttestRequest(
            arcb_addr=1, cont_token=2, user_data_len=3, user_data=b"ud", meas_len=0x40,
            meas_addr=4, add_data_len=0x20, add_data_addr=5,
        ),
        _block(
            0x188, 0x1020,
            o18=q(1), o20=q(2), o2e=b"\x00\x03", o30=b"ud", o13c=b"\x00\x00\x00\x40",
            o140=q(4), o15c=b"\x00\x00\x00\x20", o160=q(5),
        ),
    ),
    (RetrAttestResponse(config_uid=bytes(range(16))), _block(0x188, 0x1020, rc=1, o148=bytes(range(16)))),
    (
        ListSecretsRequest(start_idx=0x55, list_addr=0x9000),
        _block(0x48, 0x1033, o1e=b"\x00\x55", o20=q(0x9000)),
    ),
    (
        RetrSecretRequest(secret_idx=2, buf_size=0x2000, buf_addr=0xA000),
        _block(0x48, 0x1035, o18=b"\x00\x02", o1c=b"\x00\x00\x20\x00", o20=q(0xA000)),
    ),
    (
        QueryKeysResponse(key_hashes=tuple(bytes([i]) * 32 for i in range(15))),
        _block(0x200, 0x0002, rc=1, o20=b"".join(bytes([i]) * 32 for i in range(15))),
    ),
]


@pytest.mark.parametrize(("obj", "expected"), LAYOUT_CASES, ids=lambda v: type(v).__name__)
def test_fields_land_at_their_documented_offsets(obj: Any, expected: bytes) -> None:
    assert obj.pack() == expected


@pytest.mark.parametrize(("obj", "expected"), LAYOUT_CASES, ids=lambda v: type(v).__name__)
def test_documented_bytes_parse_to_the_same_object(obj: Any, expected: bytes) -> None:
    got = type(obj).parse(expected, cc=obj.cc) if isinstance(obj, UvcResponse) else type(obj).parse(expected)
    assert got == obj


# -- write_back ---------------------------------------------------------------------------


def _pairs() -> st.SearchStrategy[tuple[UvcRequest, UvcResponse]]:
    return st.sampled_from(list(UvcCommand)).flatmap(
        lambda c: st.tuples(instances(REQUEST_TYPES[c]), instances(RESPONSE_TYPES[c]))
    )


@settings(max_examples=300, deadline=None)
@given(_pairs())
def test_write_back_keeps_inputs_and_writes_outputs(pair: tuple[UvcRequest, UvcResponse]) -> None:
    req, resp = pair
    block = req.pack()
    out = resp.write_back(block)
    assert len(out) == len(block)
    outputs = {f.name for f in resp.FIELDS if f.offset + f.size <= len(block)}
    # Fields that are both input and output (RETR_ATTEST cont_token) take the answer.
    shared = {f.name: getattr(resp, f.name) for f in req.FIELDS if f.name in outputs}
    assert type(req).parse(out) == evolve(req, **shared)
    written = {(4, 8)} | {(f.offset, f.offset + f.size) for f in resp.FIELDS if f.name in outputs}
    untouched = [i for i in range(len(block)) if not any(a <= i < b for a, b in written)]
    assert bytes(out[i] for i in untouched) == bytes(block[i] for i in untouched)
    assert struct.unpack_from(">HH", out, 4) == (resp.rc, resp.rrc)


def test_write_back_answers_create_sec_conf_in_place() -> None:
    block = CreateSecConfRequest(guest_asce=0x1234, guest_stor_len=1 << 30).pack()
    out = CreateSecConfResponse(cc=Cc.ERROR, rc=NEED_DESTROY | 0x105, guest_handle=0x77).write_back(block)
    assert out[4:8] == b"\x81\x05\x00\x00"
    assert out[0x18:0x20] == q(0x77)
    assert out[0x50:0x58] == q(0x1234)


def test_write_back_accepts_a_bytearray_and_returns_bytes() -> None:
    out = ConvToSecStorResponse(rc=0x10A).write_back(bytearray(ConvToSecStorRequest().pack()))
    assert isinstance(out, bytes) and out[4:6] == b"\x01\x0a"


def test_write_back_skips_outputs_beyond_a_short_block() -> None:
    block = CreateSecCpuRequest(length=0x18).pack()[:0x18]
    out = CreateSecCpuResponse(rc=Rc.INV_LEN, cpu_handle=5).write_back(block)
    assert out == block[:4] + b"\x00\x05\x00\x00" + block[8:]


def test_write_back_rejects_a_block_shorter_than_a_header() -> None:
    with pytest.raises(FormatError):
        ConvToSecStorResponse().write_back(b"\x00\x28\x02")


def test_write_back_rejects_a_block_of_another_command() -> None:
    with pytest.raises(UsageError, match="0x0201"):
        ConvToSecStorResponse().write_back(_block(0x20, 0x0201))


def test_write_rc_changes_only_rc_and_rrc() -> None:
    block = b"\x00\x40\x77\x77\xff\xff\xff\xff" + bytes(range(0x38))
    assert write_rc(block, Rc.INV_CMD) == b"\x00\x40\x77\x77\x00\x02\x00\x00" + bytes(range(0x38))


def test_response_pack_leaves_inputs_zero() -> None:
    data = CreateSecConfResponse(guest_handle=1).pack()
    assert data == _block(0x80, 0x0100, rc=1, o18=q(1))


# -- header ---------------------------------------------------------------------------------


def test_header_parses_an_unknown_command() -> None:
    hdr = UvcbHeader.parse(b"\x00\x40\x77\x77\x00\x00\x00\x00")
    assert (hdr.length, hdr.cmd, hdr.command) == (0x40, 0x7777, None)


def test_header_names_a_known_command() -> None:
    hdr = UvcbHeader.parse(CreateSecConfRequest().pack())
    assert hdr.command is UvcCommand.CREATE_SEC_CONF
    assert hdr.pack() == CreateSecConfRequest().pack()[:8]


def test_header_rejects_short_data() -> None:
    with pytest.raises(FormatError):
        UvcbHeader.parse(b"\x00\x40")


# -- validators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: InitUvRequest(length=0x10000), r"InitUvRequest.length must be a u16"),
        (lambda: CreateSecConfRequest(guest_asce=-1), r"guest_asce must be a u64"),
        (lambda: CreateSecConfRequest(guest_asce=1 << 64), r"guest_asce must be a u64"),
        (lambda: CreateSecCpuRequest(num=0x10000), r"num must be a u16"),
        (lambda: SetSecConfParamsRequest(sec_header_len=1 << 32), r"sec_header_len must be a u32"),
        (lambda: CpuSetStateRequest(state=256), r"state must be a u8"),
        (lambda: CpuSetStateRequest(state=True), r"state must be an int"),
        (lambda: UnpackImgRequest(tweak=(1,)), r"tweak must be 2 ints"),
        (lambda: UnpackImgRequest(tweak=(1, -2)), r"tweak must be a u64"),
        (lambda: RetrAttestRequest(user_data=bytes(257)), r"user_data must be 256 bytes"),
        (lambda: RetrAttestResponse(config_uid=bytes(15)), r"config_uid must be 16 bytes"),
        (lambda: QueryKeysResponse(key_hashes=(bytes(32),) * 14), r"key_hashes must be 15 byte strings"),
        (lambda: ConvToSecStorResponse(rc=0x10000), r"rc must be a u16"),
    ],
)
def test_out_of_range_values_are_rejected(make: Any, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        make()


def test_response_cc_must_be_a_condition_code() -> None:
    with pytest.raises(ValueError):
        ConvToSecStorResponse(cc=4)


def test_response_defaults_to_success() -> None:
    resp = ConvToSecStorResponse()
    assert (resp.cc, resp.rc, resp.rrc) == (Cc.OK, Rc.EXECUTED, 0)


def test_user_data_shorter_than_256_is_zero_padded() -> None:
    assert RetrAttestRequest(user_data=b"abc").user_data == b"abc" + bytes(253)
