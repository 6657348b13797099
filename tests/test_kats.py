"""Known-answer tests from ``derived/kats.json`` (s390-tools upstream values).

Inputs and expected values are read from the manifest, never copied here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import ASSETS, VECTORS
from cryptography import x509

from protocol._components import PageDigests, encrypt_page, page_tweak, secure_component_chunks
from protocol._components import tweak_prefix, xts_algorithm
from protocol._crypto import (
    derive_kek,
    ec_private_from_scalar,
    ec_public_coords,
    phkh,
    wrap_key_slot,
)
from protocol._ipib import ImageMetadata
from protocol._request import RequestHeader
from protocol._se_header import build_se_header, find_se_header, parse_se_header

KATS: dict[str, dict[str, Any]] = {
    kat["name"]: kat for kat in json.loads((VECTORS / "derived" / "kats.json").read_text())["kats"]
}


def _asset(rel: str) -> Path:
    """A manifest path: relative to the assets dir or to the vectors root."""
    for base in (ASSETS, VECTORS):
        if (base / rel).is_file():
            return base / rel
    raise FileNotFoundError(rel)


def _private(rel: str):  # type: ignore[no-untyped-def]
    return ec_private_from_scalar(_asset(rel).read_bytes())


def _host_public(rel: str):  # type: ignore[no-untyped-def]
    return x509.load_pem_x509_certificate(_asset(rel).read_bytes()).public_key()


def _expected_bytes(kat: dict[str, Any]) -> bytes:
    if "expected_file" in kat:
        return _asset(kat["expected_file"]).read_bytes()
    return bytes.fromhex(kat["expected"])


def _repeat(spec: str) -> bytes:
    """``"01 * 0x3400"`` → 0x3400 bytes of 0x01."""
    byte, count = (part.strip() for part in spec.split("*"))
    return bytes.fromhex(byte) * int(count, 0)


def test_ecdh_kdf_matches_upstream() -> None:
    kat = KATS["ecdh_kdf"]
    kek = derive_kek(_private(kat["inputs"]["priv"]), _host_public(kat["inputs"]["peer"]))
    assert kek == _expected_bytes(kat)


def test_keyslot_v1_matches_upstream() -> None:
    kat = KATS["keyslot_v1"]
    inputs = kat["inputs"]
    slot = wrap_key_slot(
        _private(inputs["priv"]), _host_public(inputs["host"]), bytes.fromhex(inputs["prot_key"])
    )
    assert slot == _expected_bytes(kat)


def test_cust_pub_coord_sha256_matches_upstream() -> None:
    cust = _private(KATS["ecdh_kdf"]["inputs"]["priv"])
    assert phkh(cust.public_key()) == _expected_bytes(KATS["cust_pub_coord_sha256"])
    assert hashlib.sha256(_asset("keys/public_cust.bin").read_bytes()).digest() == phkh(
        cust.public_key()
    )


def test_host_pub_coords_and_phkh_match_upstream() -> None:
    kat = KATS["host_pub_coords"]
    host = _host_public(KATS["keyslot_v1"]["inputs"]["host"])
    assert ec_public_coords(host) == bytes.fromhex(kat["expected"])
    assert phkh(host) == bytes.fromhex(kat["phkh"])


def test_se_header_builder_reproduces_upstream_header_byte_for_byte() -> None:
    kat = KATS["se_header_v1_builder"]
    i = kat["inputs"]
    hdr = build_se_header(
        cust_private_key=_private(i["cust_priv"]),
        host_keys=[_host_public(p) for p in i["host_keys"]],
        prot_key=bytes.fromhex(i["hdr_prot_key"]),
        iv=bytes.fromhex(i["iv"]),
        cck=bytes.fromhex(i["cck"]),
        xts_key=bytes.fromhex(i["xts_key"]),
        psw_mask=i["psw_mask"],
        psw_addr=i["psw_addr"],
        pcf=i["pcf"],
        scf=i["scf"],
        nep=i["nep"],
        pld=bytes.fromhex(i["pld"]),
        ald=bytes.fromhex(i["ald"]),
        tld=bytes.fromhex(i["tld"]),
    )
    assert hdr == _expected_bytes(kat)


def _check_real_header_fields(data: bytes) -> None:
    kat = KATS["se_header_real_parse"]
    exp = kat["expected"]
    hdr = parse_se_header(data)
    assert hdr.pld.hex().startswith(exp["pld_prefix"])
    assert hdr.ald.hex().startswith(exp["ald_prefix"])
    assert hdr.tld.hex().startswith(exp["tld_prefix"])
    assert hdr.tag.hex() == exp["tag"]
    assert (hdr.nks, hdr.sehs, hdr.nep) == (exp["nks"], exp["sehs"], exp["nep"])


def test_real_se_header_parses_with_expected_fields() -> None:
    _check_real_header_fields(_asset(KATS["se_header_real_parse"]["inputs"]["file"]).read_bytes())


def test_real_se_header_is_found_at_0x12000_of_a_zero_image() -> None:
    hdr = _asset(KATS["se_header_real_parse"]["inputs"]["file"]).read_bytes()
    image = bytearray(0x13000)
    image[0x12000 : 0x12000 + len(hdr)] = hdr
    offset = find_se_header(bytes(image))
    assert offset == 0x12000
    _check_real_header_fields(bytes(image[offset:]))


def test_secured_components_digests_match_upstream() -> None:
    kat = KATS["secured_components_xts"]
    alg = xts_algorithm(bytes.fromhex(kat["inputs"]["xts_key"]))
    digests = PageDigests()
    for comp in kat["inputs"]["components"]:
        prefix = int.from_bytes(bytes.fromhex(comp["tweak"])[:8], "big")
        data = _repeat(comp["data"])
        for _chunk in secure_component_chunks(
            data, addr=int(comp["addr"], 0), prefix=prefix, alg=alg, digests=digests, chunk_pages=2
        ):
            pass
    exp = kat["expected"]
    assert digests.nep == exp["nep"]
    assert digests.ald.hex() == exp["ald"]
    assert digests.pld.hex() == exp["pld"]
    assert digests.tld.hex() == exp["tld"]


def test_secured_components_digests_match_upstream_page_by_page() -> None:
    """The same KAT through the per-page API the ultravisor model uses."""
    kat = KATS["secured_components_xts"]
    key = bytes.fromhex(kat["inputs"]["xts_key"])
    digests = PageDigests()
    for comp in kat["inputs"]["components"]:
        prefix = int.from_bytes(bytes.fromhex(comp["tweak"])[:8], "big")
        data = _repeat(comp["data"])
        data += bytes(-len(data) % 4096)
        for offset in range(0, len(data), 4096):
            tweak = page_tweak(prefix, offset)
            page = encrypt_page(key, tweak, data[offset : offset + 4096])
            digests.update(int(comp["addr"], 0) + offset, tweak, page)
    final = digests.finish()
    assert (final.nep, final.pld.hex()) == (kat["expected"]["nep"], kat["expected"]["pld"])


def test_se_img_metadata_v1_matches_upstream() -> None:
    kat = KATS["se_img_metadata_v1"]
    meta = ImageMetadata(
        hdr_offset=int(kat["inputs"]["hdr_off"], 0), ipib_offset=int(kat["inputs"]["ipib_off"], 0)
    )
    assert meta.pack() == _expected_bytes(kat)
    assert ImageMetadata.parse(_expected_bytes(kat)) == meta


def test_comp_tweak_v1_matches_upstream() -> None:
    kat = KATS["comp_tweak_v1"]
    prefix = tweak_prefix(kat["inputs"]["comp_prefix"], bytes.fromhex(kat["inputs"]["rand"]))
    assert prefix == kat["u64_prefix"]
    assert page_tweak(prefix, 0) == _expected_bytes(kat)


@pytest.mark.parametrize("direction", ["pack", "parse"])
def test_request_header_matches_upstream(direction: str) -> None:
    kat = KATS["request_header"]
    i = kat["inputs"]
    header = RequestHeader(
        magic=bytes.fromhex(i["magic"]), version=int(i["rqvn"], 0), rql=int(i["rql"], 0),
        iv=bytes.fromhex(i["iv"]), nks=i["nks"], sea=i["sea"],
    )  # fmt: skip
    if direction == "pack":
        assert header.pack() == _expected_bytes(kat)
    else:
        assert RequestHeader.parse(_expected_bytes(kat)) == header
