"""Attestation formats: ARCB, measurement, additional data, exchange files, verification.

Against the s390-tools vectors (``exp/arcb.bin``, ``exchange/*.bin``) and the
KATs of ``derived/kats.json`` (se-format.md §4.1, §4.2).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CERTS, EXP, KEYS, VECTORS
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    ATTEST_FLAG_ATTEST_PHKH,
    ATTEST_FLAG_FIRMWARE_STATE,
    ATTEST_FLAG_IMAGE_PHKH,
    ATTEST_FLAG_NONCE,
    ATTEST_FLAG_SECRET_STORE_HASH,
    AdditionalData,
    Arcb,
    BootHdrTags,
    ExchangeRequest,
    ExchangeResponse,
    FormatError,
    RequestHeader,
    UsageError,
    VerificationError,
    additional_data_size,
    build_arcb,
    compute_measurement,
    measurement_items,
    parse_exchange,
    read_host_key_document,
    read_host_private_key,
    verify_attestation,
)
from protocol._crypto import ec_private_from_scalar, phkh

KATS = {k["name"]: k for k in json.loads((VECTORS / "derived" / "kats.json").read_text())["kats"]}
EXCHANGE = VECTORS / "rust" / "pvattest" / "tests" / "assets" / "exp" / "exchange"
CUST = ec_private_from_scalar((KEYS / "private_cust.bin").read_bytes())
HOST_PUB = read_host_key_document(KEYS / "host.pem.crt").public_key
TEST_HOST = read_host_private_key(CERTS / "host.key")  # cert/host.crt's key: the one HKD whose key is known
TEST_HOST2 = read_host_private_key(CERTS / "host2.key")
ARPK, MEAS_KEY, NONCE = b"\x17" * 32, b"\x77" * 64, b"\xab" * 16


def _arcb(flags: int = ATTEST_FLAG_NONCE, host: object = None) -> bytes:
    return build_arcb(
        host_keys=[HOST_PUB if host is None else host], cust_private_key=CUST, arpk=ARPK, iv=b"\x55" * 12,
        flags=flags, measurement_key=MEAS_KEY, nonce=NONCE if flags & ATTEST_FLAG_NONCE else None,
    )  # fmt: skip


# -- ARCB ----------------------------------------------------------------------------------------


def test_build_arcb_reproduces_exp_arcb() -> None:
    kat = KATS["arcb_v1"]["inputs"]
    arcb = build_arcb(
        host_keys=[HOST_PUB], cust_private_key=CUST, arpk=bytes.fromhex(kat["arpk"]), iv=bytes.fromhex(kat["iv"]),
        flags=int(kat["flags"], 16), measurement_key=bytes.fromhex(kat["meas_key"]), nonce=bytes.fromhex(kat["nonce"]),
    )  # fmt: skip
    assert arcb == (EXP / "arcb.bin").read_bytes()


def test_exp_arcb_parses_and_opens_with_the_arpk() -> None:
    arcb = Arcb.parse((EXP / "arcb.bin").read_bytes())
    assert (arcb.flags, arcb.mai, arcb.nks, arcb.version) == (0x7000000000000000, 1, 1, 0x100)
    assert arcb.phkhs == (phkh(HOST_PUB),)
    assert arcb.expected_additional_size == 64
    secrets = arcb.open(ARPK)
    assert (secrets.measurement_key, secrets.nonce) == (MEAS_KEY, NONCE)


def test_the_auth_area_sits_at_0x30() -> None:
    # rust/pv/src/uvattest/arcb.rs::auth_bin: flags ‖ MAI ‖ reserved at 0x30..0x40.
    assert (EXP / "arcb.bin").read_bytes()[0x30:0x40] == bytes.fromhex("70000000000000000000000100000000")


def test_an_arcb_opens_for_its_host_and_not_for_another() -> None:
    arcb = Arcb.parse(_arcb(host=TEST_HOST.public_key()))
    secrets, index = arcb.open_for_host(TEST_HOST)
    assert (secrets.measurement_key, index) == (MEAS_KEY, 0)
    with pytest.raises(VerificationError) as err:
        arcb.open_for_host(TEST_HOST2)
    assert err.value.check == "no-key-slot"


def test_a_wrong_arpk_does_not_open_the_arcb() -> None:
    with pytest.raises(VerificationError) as err:
        Arcb.parse(_arcb()).open(b"\x18" * 32)
    assert err.value.check == "request-tag"


def test_request_header_kat() -> None:
    kat = KATS["request_header"]
    i = kat["inputs"]
    header = RequestHeader(magic=bytes.fromhex(i["magic"]), version=int(i["rqvn"], 16), rql=int(i["rql"], 16),
                           iv=bytes.fromhex(i["iv"]), nks=i["nks"], sea=i["sea"])  # fmt: skip
    assert header.pack().hex() == kat["expected"]
    assert RequestHeader.parse(bytes.fromhex(kat["expected"])) == header


def _patch(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_patch((EXP / "arcb.bin").read_bytes(), 0, b"\x11"), "magic"),
        (_patch((EXP / "arcb.bin").read_bytes(), 8, b"\x00\x00\x02\x00"), "version"),
        (_patch((EXP / "arcb.bin").read_bytes(), 0x3B, b"\x11"), "measurement algorithm"),
        (_patch((EXP / "arcb.bin").read_bytes(), 0x3C, b"\x01"), "reserved"),
        (_patch((EXP / "arcb.bin").read_bytes(), 0x30, b"\x30"), "encrypted area"),  # nonce bit cleared
        (_patch((EXP / "arcb.bin").read_bytes(), 0x27, b"\x00"), "no key slot"),
        ((EXP / "arcb.bin").read_bytes()[:399], "truncated"),
        (b"\0" * 30, "header needs"),
    ],
    ids=["magic", "version", "mai", "reserved", "sea", "nks", "truncated", "short"],
)
def test_malformed_arcbs_are_format_errors(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        Arcb.parse(data)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nonce": None}, "nonce"),
        ({"flags": 0}, "nonce"),
        ({"measurement_key": b"\1" * 32}, "measurement key"),
        ({"arpk": b"\1" * 16}, "protection key"),
        ({"host_keys": []}, "1 to 255"),
    ],
)
def test_build_arcb_refuses_impossible_inputs(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"host_keys": [HOST_PUB], "cust_private_key": CUST, "arpk": ARPK, "iv": b"\x55" * 12,
                               "flags": ATTEST_FLAG_NONCE, "measurement_key": MEAS_KEY, "nonce": NONCE}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(UsageError, match=message):
        build_arcb(**args)  # type: ignore[arg-type]


# -- measurement and additional data --------------------------------------------------------------


@pytest.mark.parametrize("name", ["all", "user_add", "add", "minimal"])
def test_measurement_matches_the_kat(name: str) -> None:
    kat = KATS[f"attestation_measurement_{name}"]
    i = {k: (bytes.fromhex(v) if isinstance(v, str) else v) for k, v in kat["inputs"].items()}
    tags = BootHdrTags(pld=i["pld"], ald=i["ald"], tld=i["tld"], tag=i["hdr_tag"])
    items = measurement_items(tags=tags, cuid=i["cuid"], user_data=i["user"], nonce=i["nonce"],
                              additional=i["additional"])  # fmt: skip
    assert compute_measurement(i["meas_key"], items).hex() == kat["expected"]


@pytest.mark.parametrize(
    ("flags", "size"),
    [
        (ATTEST_FLAG_NONCE, 0),
        (ATTEST_FLAG_IMAGE_PHKH, 32),
        (ATTEST_FLAG_ATTEST_PHKH, 32),
        (ATTEST_FLAG_SECRET_STORE_HASH, 64),
        (ATTEST_FLAG_FIRMWARE_STATE, 320),
        (ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_ATTEST_PHKH | ATTEST_FLAG_SECRET_STORE_HASH
         | ATTEST_FLAG_FIRMWARE_STATE, 448),
    ],
)  # fmt: skip
def test_additional_data_size_per_flag(flags: int, size: int) -> None:
    assert additional_data_size(flags) == size


def test_additional_data_is_split_in_flag_order() -> None:
    flags = ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_SECRET_STORE_HASH
    data = b"\1" * 32 + b"\2" * 64 + b"\3" * 5
    parsed = AdditionalData.parse(data, flags)
    assert (parsed.image_phkh, parsed.attestation_phkh, parsed.secret_store_hash) == (b"\1" * 32, None, b"\2" * 64)
    assert parsed.unrecognized == b"\3" * 5 and parsed.pack() == data


def test_additional_data_missing_an_item_is_a_format_error() -> None:
    with pytest.raises(FormatError, match="secret store hash"):
        AdditionalData.parse(b"\1" * 40, ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_SECRET_STORE_HASH)


# -- exchange format ------------------------------------------------------------------------------

ARCB_X, MEAS_X, ADD_X, CUID_X, USER_X = b"\x11" * 16, b"\x12" * 64, b"\x13" * 32, b"\x14" * 16, b"\x15" * 256


@pytest.mark.parametrize(("name", "additional"), [("full_req", 32), ("add_req", 32), ("min_req", 0)])
def test_exchange_requests_are_reproduced_and_parsed(name: str, additional: int) -> None:
    data = (EXCHANGE / f"{name}.bin").read_bytes()
    request = ExchangeRequest(arcb=ARCB_X, measurement_size=64, additional_size=additional)
    assert request.pack() == data
    assert ExchangeRequest.parse(data) == request


@pytest.mark.parametrize(
    ("name", "additional", "user"),
    [("full_resp", ADD_X, USER_X), ("full", ADD_X, USER_X), ("add_resp", ADD_X, None), ("user_resp", None, USER_X),
     ("min_resp", None, None)],
)  # fmt: skip
def test_exchange_responses_are_reproduced_and_parsed(name: str, additional: bytes | None, user: bytes | None) -> None:
    data = (EXCHANGE / f"{name}.bin").read_bytes()
    response = ExchangeResponse(arcb=ARCB_X, measurement=MEAS_X, additional=additional, user_data=user, cuid=CUID_X)
    assert response.pack() == data
    assert ExchangeResponse.parse(data) == response


def test_every_exchange_vector_parses() -> None:
    files = sorted(EXCHANGE.glob("*.bin")) + [EXP / "exchange.bin"]
    assert len(files) == 10
    for path in files:
        entries = parse_exchange(path.read_bytes()).entries
        assert entries["arcb"].data == ARCB_X, path.name
    old_request = parse_exchange((EXCHANGE / "user_req.bin").read_bytes())  # an older request with user data
    assert old_request.entries["user"].data == USER_X and old_request.entries["measurement"].size == 64
    assert ExchangeRequest.parse((EXCHANGE / "user_req.bin").read_bytes()).additional_size == 0


def _tampered(name: str, offset: int, value: bytes, cut: int = 0) -> bytes:
    data = _patch((EXCHANGE / f"{name}.bin").read_bytes(), offset, value)
    return data[: len(data) - cut]


@pytest.mark.parametrize(
    ("data", "message", "kind"),
    [
        ((EXCHANGE / "min_req.bin").read_bytes(), "measurement missing", ExchangeResponse),  # resp_no_cuid
        (_tampered("min_req", 0, b"\x8f"), "magic", ExchangeResponse),  # resp_inv_magic
        (_tampered("min_req", 0x18, bytes(8)), "no attestation request", ExchangeRequest),  # no_arcb
        (_tampered("min_req", 0, b"p", cut=1), "header says", ExchangeRequest),  # small
        (b"pvattest\x01\x02\x03\x04", "shorter than the 64-byte header", ExchangeRequest),  # hdr
        (_tampered("min_req", 8, b"\xff"), "version", ExchangeRequest),  # version
        (_tampered("min_resp", 0x3B, b"\x0f"), "configuration UID is 15 bytes", ExchangeResponse),  # cuid_size
        (_tampered("min_req", 0x1C, b"\x00\x00\x00\x10"), "inside the header", ExchangeRequest),
        (_tampered("min_req", 0x20, b"\x00\x00\x00\x00"), "measurement size must be", ExchangeRequest),
        (_tampered("min_req", 0x18, b"\x00\x00\x01\x00"), "beyond the end", ExchangeRequest),
    ],
    ids=["resp-no-cuid", "magic", "no-arcb", "small", "hdr", "version", "cuid-size", "offset", "meas-0", "beyond"],
)
def test_bad_exchange_files_are_refused_like_pvattest(data: bytes, message: str, kind: type) -> None:
    with pytest.raises(FormatError, match=message):
        kind.parse(data)


def test_a_request_for_an_arcb_expects_the_sizes_of_its_flags() -> None:
    request = ExchangeRequest.for_arcb(_arcb(ATTEST_FLAG_NONCE | ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_ATTEST_PHKH))
    assert (request.measurement_size, request.additional_size) == (64, 64)


# -- verification ---------------------------------------------------------------------------------

TAGS = BootHdrTags(pld=b"\1" * 64, ald=b"\2" * 64, tld=b"\3" * 64, tag=b"\4" * 16)
CUID = b"\5" * 16
FLAGS = ATTEST_FLAG_NONCE | ATTEST_FLAG_IMAGE_PHKH | ATTEST_FLAG_ATTEST_PHKH
GOOD_ADD = phkh(HOST_PUB) + phkh(HOST_PUB)


def _response(**changes: object) -> ExchangeResponse:
    """A response the UV of HOST_PUB would give for an image whose header has HOST_PUB's slot."""
    arcb = _arcb(FLAGS)
    fields: dict[str, object] = {"arcb": arcb, "additional": GOOD_ADD, "user_data": b"user", "cuid": CUID}
    fields.update(changes)
    items = measurement_items(tags=TAGS, cuid=CUID, user_data=b"user", nonce=NONCE, additional=GOOD_ADD)
    fields.setdefault("measurement", compute_measurement(MEAS_KEY, items))
    return ExchangeResponse(**fields)  # type: ignore[arg-type]


def test_a_genuine_response_verifies() -> None:
    result = verify_attestation(_response(), header_phkhs=(phkh(HOST_PUB),), tags=TAGS, arpk=ARPK,
                                request_arcb=_arcb(FLAGS))  # fmt: skip
    assert result.cuid == CUID and result.user_data == b"user"
    assert result.additional is not None and result.additional.image_phkh == phkh(HOST_PUB)


OTHER_TAGS = BootHdrTags(pld=b"\1" * 64, ald=b"\2" * 64, tld=b"\3" * 64, tag=b"\5" * 16)


@pytest.mark.parametrize(
    ("response", "kwargs", "check"),
    [
        (_response(arcb=b"\0" * 16), {}, "arcb"),
        (_response(), {"request_arcb": _arcb(ATTEST_FLAG_NONCE)}, "request"),
        (_response(), {"arpk": b"\x18" * 32}, "arpk"),
        (_response(measurement=b"\0" * 32), {}, "measurement-size"),
        (_response(additional=GOOD_ADD[:32]), {}, "additional-size"),
        (_response(additional=phkh(HOST_PUB) + b"\0" * 32), {}, "attestation-phkh"),
        (_response(), {"header_phkhs": (b"\7" * 32,)}, "image-phkh"),
        (_response(), {"tags": OTHER_TAGS}, "measurement"),
        (_response(user_data=b"resu"), {}, "measurement"),
        (_response(cuid=b"\6" * 16), {}, "measurement"),
        (_response(measurement=b"\0" * 64), {}, "measurement"),
    ],
    ids=["arcb", "request", "arpk", "meas-size", "add-size", "att-phkh", "img-phkh", "image", "user", "cuid",
         "tampered"],
)  # fmt: skip
def test_a_wrong_response_names_the_failed_check(response: ExchangeResponse, kwargs: dict, check: str) -> None:
    args = {"header_phkhs": (phkh(HOST_PUB),), "tags": TAGS, "arpk": ARPK} | kwargs
    with pytest.raises(VerificationError) as err:
        verify_attestation(response, **args)
    assert err.value.check == check


# -- fuzzing: only FormatError escapes the parsers ------------------------------------------------

SEEDS = [(EXP / "arcb.bin").read_bytes(), *(p.read_bytes() for p in sorted(EXCHANGE.glob("*.bin")))]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_mutated(), st.binary(max_size=600)))
def test_attestation_parsers_raise_only_format_errors(data: bytes) -> None:
    for parse in (Arcb.parse, ExchangeRequest.parse, ExchangeResponse.parse, parse_exchange):
        try:
            parse(data)
        except FormatError:
            pass


def test_kat_inputs_used_here_exist() -> None:
    assert Path(EXP / "arcb.bin").stat().st_size == 400
