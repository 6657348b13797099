"""The SE header: build, parse, find and open (se-format.md §1, §2)."""

from __future__ import annotations

import struct

import pytest
from conftest import CERTS, EXP
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import FormatError, UsageError, VerificationError
from protocol._crypto import ec_private_from_scalar
from protocol._ipib import ImageMetadata
from protocol._se_header import (
    HDR_FIXED_LEN,
    PCF_DEFAULT,
    PCF_NAMES,
    build_se_header,
    find_se_header,
    flag_names,
    header_size,
    open_se_header,
    parse_se_header,
)

HOST_PUB = x509.load_pem_x509_certificate((CERTS / "host.crt").read_bytes()).public_key()
HOST_PRIV = serialization.load_pem_private_key((CERTS / "host.key").read_bytes(), None)
HOST2_PRIV = serialization.load_pem_private_key((CERTS / "host2.key").read_bytes(), None)
CUST = ec_private_from_scalar(bytes(65) + b"\x07")
OTHER_KEYS = [ec_private_from_scalar(b"\x01" + bytes([i + 1]) * 65).public_key() for i in range(95)]
PROT = bytes(range(32))

INPUTS = dict(
    cust_private_key=CUST, prot_key=PROT, iv=b"\x33" * 12, cck=b"\x31" * 32,
    xts_key=b"\x42" * 32 + b"\x43" * 32, psw_mask=0x180000000, psw_addr=0x16000,
    pcf=PCF_DEFAULT, scf=1 << 61, nep=7, pld=b"\x02" * 64, ald=b"\x01" * 64, tld=b"\x03" * 64,
)  # fmt: skip
HEADER = build_se_header(host_keys=[HOST_PUB], **INPUTS)


def _with(**changes: object) -> dict[str, object]:
    return {**INPUTS, **changes}


def test_header_with_one_slot_is_640_bytes() -> None:
    assert len(HEADER) == header_size(1) == 640


def test_header_with_95_slots_is_8160_bytes() -> None:
    assert header_size(95) == 8160


def test_round_trip_opens_with_the_host_private_key() -> None:
    opened = open_se_header(HEADER, HOST_PRIV)
    s = opened.secrets
    assert (s.cck, s.xts_key, s.psw_mask, s.psw_addr, s.scf, s.noi) == (
        INPUTS["cck"], INPUTS["xts_key"], 0x180000000, 0x16000, 1 << 61, 0,
    )  # fmt: skip
    assert opened.key_slot_index == 0
    assert opened.header.nep == 7 and opened.header.pcf == PCF_DEFAULT


def test_round_trip_with_95_slots_finds_the_host_among_them() -> None:
    keys = OTHER_KEYS[:50] + [HOST_PUB] + OTHER_KEYS[50:94]
    header = build_se_header(host_keys=keys, **INPUTS)
    assert len(header) == 8160
    opened = open_se_header(header, HOST_PRIV)
    assert opened.key_slot_index == 50
    assert opened.header.nks == 95


def test_a_96th_key_slot_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="95"):
        build_se_header(host_keys=[HOST_PUB] + OTHER_KEYS, **INPUTS)


def test_no_host_key_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        build_se_header(host_keys=[], **INPUTS)


@pytest.mark.parametrize(
    "changes",
    [
        {"prot_key": b"\0" * 31},
        {"iv": b"\0" * 16},
        {"cck": b"\0" * 33},
        {"xts_key": b"\0" * 32},
        {"pld": b"\0" * 63},
        {"nep": -1},
        {"pcf": 1 << 64},
        {"psw_addr": "0x10000"},
        {"cust_private_key": ec.generate_private_key(ec.SECP256R1())},
    ],
    ids=lambda c: next(iter(c)),
)
def test_builder_rejects_wrong_inputs(changes: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        build_se_header(host_keys=[HOST_PUB], **_with(**changes))


def test_builder_rejects_a_host_key_not_on_p521() -> None:
    with pytest.raises(UsageError, match="P-521"):
        build_se_header(host_keys=[ec.generate_private_key(ec.SECP384R1()).public_key()], **INPUTS)


def test_open_without_a_slot_for_this_host_is_no_key_slot() -> None:
    with pytest.raises(VerificationError) as err:
        open_se_header(HEADER, HOST2_PRIV)
    assert err.value.check == "no-key-slot"


@pytest.mark.parametrize(
    ("offset", "check"),
    [
        (HDR_FIXED_LEN, "no-key-slot"),  # phkh of the only slot
        (HDR_FIXED_LEN + 40, "key-slot-tag"),  # wrapped protection key
        (HDR_FIXED_LEN + 80 + 5, "header-tag"),  # encrypted CCK
        (0x30, "header-tag"),  # nep (authenticated plaintext)
        (640 - 1, "header-tag"),  # the tag itself
    ],
)
def test_a_flipped_byte_names_the_failing_check(offset: int, check: str) -> None:
    data = bytearray(HEADER)
    data[offset] ^= 0x01
    with pytest.raises(VerificationError) as err:
        open_se_header(bytes(data), HOST_PRIV)
    assert err.value.check == check


@settings(max_examples=150, deadline=None)
@given(bit=st.integers(min_value=0, max_value=len(HEADER) * 8 - 1))
def test_any_flipped_bit_makes_open_fail_cleanly(bit: int) -> None:
    data = bytearray(HEADER)
    data[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises((FormatError, VerificationError)):
        open_se_header(bytes(data), HOST_PRIV)


def test_optional_items_are_rejected_even_when_authentic() -> None:
    # Re-encrypt the secret area with noi = 1 under the known protection key.
    e = HDR_FIXED_LEN + 80
    plain = bytearray(AESGCM(PROT).decrypt(HEADER[16:28], HEADER[e:], HEADER[:e]))
    plain[0x78:0x7C] = (1).to_bytes(4, "big")
    forged = HEADER[:e] + AESGCM(PROT).encrypt(HEADER[16:28], bytes(plain), HEADER[:e])
    with pytest.raises(VerificationError) as err:
        open_se_header(forged, HOST_PRIV)
    assert err.value.check == "header-optional-items"


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (HEADER[:15], "truncated"),
        (b"IBMSecEy" + HEADER[8:], "magic"),
        (_patch(HEADER, 8, ">I", 0x200), "version"),
        (_patch(HEADER, 12, ">I", 16), "out of range"),
        (_patch(HEADER, 12, ">I", 1024 * 4096 + 1), "out of range"),
        (_patch(HEADER, 12, ">I", 0x100), "fixed part"),
        (HEADER[:639], "truncated"),
        (_patch(HEADER, 0x20, ">Q", 0), "no key slot"),
        (_patch(HEADER, 0x20, ">Q", 2), "does not match"),
        (_patch(HEADER, 0x28, ">Q", 0x40), "smaller than"),
        (_patch(HEADER, 0x28, ">Q", 0x90), "does not match"),
    ],
    ids=["short", "magic", "version", "sehs-16", "sehs-huge", "sehs-small", "truncated",
         "nks-0", "nks-mismatch", "sea-small", "sea-mismatch"],  # fmt: skip
)
def test_parse_rejects_malformed_headers(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_se_header(data)


def test_parse_ignores_bytes_after_sehs() -> None:
    assert parse_se_header(HEADER + b"\xff" * 100).raw == HEADER


def test_parse_exposes_the_plaintext_fields() -> None:
    hdr = parse_se_header(HEADER)
    assert (hdr.version, hdr.sehs, hdr.nks, hdr.sea, hdr.nep) == (0x100, 640, 1, 0x80, 7)
    assert hdr.iv == INPUTS["iv"] and hdr.pld == INPUTS["pld"] and hdr.ald == INPUTS["ald"]
    assert len(hdr.encrypted) == 0x80 and hdr.tag == HEADER[-16:]
    assert hdr.aad == HEADER[: HDR_FIXED_LEN + 80]


def test_find_uses_the_image_metadata() -> None:
    image = bytearray(0x20000)
    image[0xC000 : 0xC000 + 28] = ImageMetadata(hdr_offset=0x1A000, ipib_offset=0x1F000).pack()
    image[0x1A000 : 0x1A000 + 640] = HEADER
    image[0x3000 : 0x3000 + 640] = HEADER  # a decoy at a page start: metadata wins
    assert find_se_header(bytes(image)) == 0x1A000


def test_find_fails_when_the_metadata_points_elsewhere() -> None:
    image = bytearray(0x20000)
    image[0xC000 : 0xC000 + 28] = ImageMetadata(hdr_offset=0x1B000, ipib_offset=0x1F000).pack()
    image[0x1A000 : 0x1A000 + 640] = HEADER
    with pytest.raises(FormatError, match="metadata"):
        find_se_header(bytes(image))


def test_find_probes_only_page_starts() -> None:
    image = bytearray(0x1000)
    image[8 : 8 + 640] = HEADER
    with pytest.raises(FormatError, match="no SE header"):
        find_se_header(bytes(image))


def test_find_probes_at_most_0x15_pages() -> None:
    image = bytearray(0x16000)
    image[0x15000 : 0x15000 + 640] = HEADER
    with pytest.raises(FormatError):
        find_se_header(bytes(image))


def test_flag_names_decode_the_default_pcf() -> None:
    assert flag_names(PCF_DEFAULT, PCF_NAMES) == ("pckmo-dea-tdea", "pckmo-aes", "pckmo-ecc")
    assert flag_names(1, PCF_NAMES) == ("bit 63",)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=1200))
def test_parse_of_arbitrary_bytes_raises_only_format_error(data: bytes) -> None:
    try:
        parse_se_header(data)
    except FormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 639), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.integers(0, 700),
)
def test_parse_of_mutated_headers_raises_only_format_error(
    edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(HEADER)
    for pos, value in edits:
        data[pos] = value
    try:
        parse_se_header(bytes(data[:cut]))
    except FormatError:
        pass


def test_real_upstream_header_cannot_be_opened_by_the_test_host() -> None:
    with pytest.raises(VerificationError) as err:
        open_se_header((EXP / "secure_guest.hdr").read_bytes(), HOST_PRIV)
    assert err.value.check == "no-key-slot"
