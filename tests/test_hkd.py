"""Host-key document reading and verification against the s390-tools certificate assets.

The big table has one row per case of upstream ``rust/pv/src/verify/test.rs``
(mocked CRL download resolving bare file names inside ``cert/``) and
``rust/pv/tests/cert_verifier.rs`` (an integration test: the real downloader,
for which the bare-name distribution points never resolve), plus sesim's own
rows so that every file of ``cert/`` is exercised. Chain verdicts of the extra
rows were checked against ``openssl verify`` 3.0 with pvimg's flags.
"""

from __future__ import annotations

import http.server
import threading
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ASSETS, CERTS, KEYS, VECTORS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    CertificateOptions,
    CertVerifier,
    FormatError,
    HostKeyDocumentWarning,
    UsageError,
    VerificationError,
    fetch_crl_http,
    load_host_keys,
    parse_host_key_document,
    read_host_key_document,
    read_host_private_key,
)
from protocol._hkd_io import SourcedCert, read_certificates, read_crls
from protocol._hkd_verify import is_ibm_signing_cert
from protocol._hkd_x509 import authority_key_id, crl_distribution_uris

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
ROOT = "root_ca.chained.crt"


def mock_fetch(uri: str) -> bytes | None:
    """Upstream ``verify/test.rs::download_first_crl_from_x509``: the URI is a file in cert/."""
    path = CERTS / uri
    return path.read_bytes() if path.is_file() else None


def no_fetch(uri: str) -> bytes | None:
    """The real downloader on bare file names (``cert_verifier.rs``): nothing resolves."""
    return None


FETCHERS: dict[str, Callable[[str], bytes | None]] = {"mock": mock_fetch, "none": no_fetch}

# (id, hkd or None (verifier only), certs, crls, root CA, offline, fetcher, verdict, detail)
Row = tuple[str, str | None, tuple[str, ...], tuple[str, ...], str | None, bool, str, str, str]


def _upstream_verify_rows() -> list[Row]:
    """verify/test.rs ``verify(offline, ibm_crt, ibm_crl, hkd)``: 8 tests x 3 documents."""
    rows: list[Row] = []
    combos = [
        ("verify", "ibm.crt", "ibm.crl", "host.crt"),
        ("verify_armonk_crt", "ibm_armonk.crt", "ibm.crl", "host.crt"),
        ("verify_armonk_crl", "ibm_armonk.crt", "ibm_armonk.crl", "host.crt"),
        ("verify_armonk_hkd", "ibm_armonk.crt", "ibm_armonk.crl", "host_armonk.crt"),
    ]
    for name, ibm_crt, ibm_crl, hkd in combos:
        for offline in (False, True):
            mode = "offline" if offline else "online"
            crls = (ibm_crl, "inter_ca.crl") if offline else ()
            certs = (ibm_crt, "inter_ca.crt")
            rows += [
                (f"{name}_{mode}-good", hkd, certs, crls, ROOT, offline, "mock", "ok", ""),
                (f"{name}_{mode}-revoked", "host_rev.crt", certs, crls, ROOT, offline, "mock", "hkd-revoked", ""),
                (f"{name}_{mode}-expired", "host_crt_expired.crt", certs, crls, ROOT, offline, "mock",
                 "hkd-expired", ""),
            ]
    return rows


ROWS: list[Row] = [
    # --- rust/pv/src/verify/test.rs (mocked downloader) ---
    ("verify_chain_online", None, ("ibm.crt", "inter_ca.crt"), (), ROOT, False, "mock", "ok", ""),
    ("verify_chain_offline", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.crl",), ROOT, True, "mock", "ok", ""),
    *_upstream_verify_rows(),
    # older verify/test.rs: host signed by the wrong-subject key (now an AKID mismatch)
    ("verify_offline-invalid_signing_key", "host_invalid_signing_key.crt", ("ibm.crt", "inter_ca.crt"),
     ("ibm.crl", "inter_ca.crl", "ibm_wrong_subject.crl"), ROOT, True, "mock", "hkd-akid", ""),
    # --- rust/pv/src/verify/helper.rs get_ibm_z_sign_key ---
    ("sign_key-twice", None, ("ibm.crt", "ibm.crt"), (), ROOT, True, "none", "many-ibm-signing-keys", ""),
    ("sign_key-wrong_subject", None, ("ibm_wrong_subject.crt",), (), ROOT, True, "none", "no-ibm-signing-key", ""),
    ("sign_key-inter_only", None, ("inter_ca.crt",), (), ROOT, True, "none", "no-ibm-signing-key", ""),
    # --- rust/pv/tests/cert_verifier.rs (real downloader: bare names never resolve) ---
    ("too_many_signing_keys", None, ("ibm.crt", "ibm_rev.crt"), (), None, True, "none", "many-ibm-signing-keys", ""),
    ("no_crl_for_root", None, ("inter_ca.crt", "ibm.crt"), ("inter_ca.crl",), "root_ca.crt", False, "none",
     "no-crl", "error 3 "),
    ("no_crl_at_all", None, ("inter_ca.crt", "ibm.crt"), (), ROOT, False, "none", "no-crl", "error 3 "),
    ("wrong_intermediate", None, ("fake_inter_ca.crt", "ibm.crt"), ("fake_inter_ca.crl",), ROOT, True, "none",
     "chain", "error 20 "),
    ("wrong_root_ca", None, ("inter_ca.crt", "ibm.crt"), ("inter_ca.crl",), None, True, "none", "chain",
     "error 20 "),
    ("correct_chain", None, ("inter_ca.crt", "ibm.crt"), ("inter_ca.crl",), ROOT, False, "none", "ok", ""),
    ("no_intermediate", None, ("ibm.crt",), (), ROOT, False, "none", "chain", "error 20 "),
    ("ibm_outdated_early_as_cert", None, ("inter_ca.crt", "ibm_outdated_early.crl"), ("inter_ca.crl",), ROOT,
     False, "none", "no-ibm-signing-key", ""),
    ("ibm_outdated_late_as_cert", None, ("inter_ca.crt", "ibm_outdated_late.crl"), ("inter_ca.crl",), ROOT,
     False, "none", "no-ibm-signing-key", ""),
    ("revoked_signing_key", None, ("inter_ca.crt", "ibm_rev.crt"), ("inter_ca.crl",), ROOT, False, "none",
     "signing-key-revoked", "error 23 "),
    # --- sesim: formats and chained files ---
    ("der_cert_and_crl", "host.crt", ("der.crt", "inter_ca.crt"), ("der.crl", "inter_ca.crl"), ROOT, True,
     "none", "ok", ""),
    ("der_crl_revokes", "host_rev.crt", ("der.crt", "inter_ca.crt"), ("der.crl", "inter_ca.crl"), ROOT, True,
     "none", "hkd-revoked", ""),
    ("chained_files", "host2.crt", ("ibm.chained.crt", "inter_ca.chained.crt"), (), ROOT, True, "none", "ok", ""),
    ("chained_files_revoke", "host_rev.crt", ("ibm.chained.crt", "inter_ca.chained.crt"), (), ROOT, True,
     "none", "hkd-revoked", ""),
    ("root_crl_separate", "host2.crt", ("ibm.crt", "inter_ca.crt"), ("ibm.crl", "inter_ca.crl", "root_ca.crl"),
     "root_ca.crt", True, "none", "ok", ""),
    # --- sesim: HKD-level cases ---
    ("armonk_hkd_poughkeepsie_key", "host_armonk.crt", ("ibm.crt", "inter_ca.crt"), ("ibm.crl", "inter_ca.crl"),
     ROOT, True, "none", "ok", ""),
    ("uri_not_available_online", "host_uri_na.crt", ("ibm.crt", "inter_ca.crt"), (), ROOT, False, "mock",
     "no-crl", ""),
    ("uri_not_available_local_crl", "host_uri_na.crt", ("ibm.crt", "inter_ca.crt"), ("ibm.crl", "inter_ca.crl"),
     ROOT, False, "mock", "ok", ""),
    ("hkd_crl_bad_signature_only", "host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm_invalid_hash.crl",
     "inter_ca.crl"), ROOT, True, "none", "no-crl", "ibm_invalid_hash.crl: signature does not verify"),
    ("hkd_crl_bad_signature_ignored", "host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm_invalid_hash.crl", "ibm.crl",
     "inter_ca.crl"), ROOT, True, "none", "ok", ""),
    ("hkd_crl_outdated_late", "host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm_outdated_late.crl", "inter_ca.crl"),
     ROOT, True, "none", "no-crl", "outside its validity period"),
    ("hkd_crl_outdated_early", "host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm_outdated_early.crl",
     "inter_ca.crl"), ROOT, True, "none", "no-crl", "outside its validity period"),
    ("hkd_not_yet_valid", "host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm.crl", "inter_ca.crl"), ROOT, True,
     "none", "hkd-not-yet-valid", ""),
    ("fake_host_real_chain", "fake_host.crt", ("ibm.crt", "inter_ca.crt"), ("ibm.crl", "inter_ca.crl"), ROOT,
     True, "none", "hkd-akid", ""),
    # --- sesim: chain-level cases (verdicts as openssl verify gives them) ---
    ("signing_key_expired", None, ("ibm_expired.crt", "inter_ca.crt"), ("inter_ca.crl",), ROOT, True, "none",
     "chain", "error 10 "),
    ("wrong_subject_beside_signing_key", "host.crt", ("ibm_wrong_subject.crt", "ibm.crt", "inter_ca.crt"),
     ("ibm.crl", "inter_ca.crl"), ROOT, True, "none", "ok", ""),
    ("crl_wrong_issuer_newest", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.crl", "ibm_wrong_issuer.crl"), ROOT,
     True, "none", "crl-signature", "error 8 "),
    ("inter_crl_expired", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.invalid_date.crl",), ROOT, True, "none",
     "crl-outdated", "error 12 "),
    ("inter_crl_expired_and_valid", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.invalid_date.crl",
     "inter_ca.crl"), ROOT, True, "none", "ok", ""),
    ("inter_crl_wrong_signer", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.invalid_signer.crl",), ROOT, True,
     "none", "no-crl", "error 3 "),
    ("root_crl_from_same_key", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.crl", "fake_root_ca_valid.crl"),
     "root_ca.crt", True, "none", "ok", ""),
    ("intermediate_as_root", None, ("ibm.crt",), ("inter_ca.crl",), "inter_ca.chained.crt", True, "none", "chain",
     "error 2 "),
    ("fake_root_for_real_chain", None, ("ibm.crt", "inter_ca.crt"), ("inter_ca.crl", "fake_root_ca.crl"),
     "fake_root_ca.crt", True, "none", "chain", "error 20 "),
    ("fake_pki_trusted", "fake_host.crt", ("fake_ibm.crt",), ("fake_root_ca.crl", "fake_ibm.crl"),
     "fake_root_ca.crt", True, "none", "ok", ""),
    ("fake_pki_online_cdp_is_a_cert", "fake_host.crt", ("fake_ibm.crt",), (), "fake_root_ca.crt", False, "mock",
     "no-crl", ""),
    ("fake_pki_crl_by_other_key", None, ("fake_ibm.crt",), ("fake_root_ca_valid.crl",), "fake_root_ca.crt", True,
     "none", "no-crl", "error 3 "),
    ("fake_signing_key_real_root", None, ("fake_ibm.crt",), ("fake_root_ca.crl",), ROOT, True, "none", "chain",
     "error 20 "),
]

# A time between the signing key's notBefore (14:52:38) and the HKDs' (14:52:39).
ROW_NOW = {"hkd_not_yet_valid": datetime(2024, 3, 21, 14, 52, 38, 500000, tzinfo=timezone.utc)}


def _verdict(row: Row) -> str:
    row_id, hkd, certs, crls, root, offline, fetch, _, _ = row
    now = ROW_NOW.get(row_id, NOW)
    try:
        if hkd is None:
            CertVerifier.create(
                certs=[str(CERTS / c) for c in certs],
                crls=[str(CERTS / c) for c in crls],
                root_ca=None if root is None else str(CERTS / root),
                offline=offline,
                now=now,
                fetch_crl=FETCHERS[fetch],
            )
        else:
            options = CertificateOptions(
                host_key_documents=(str(CERTS / hkd),),
                certs=tuple(str(CERTS / c) for c in certs),
                crls=tuple(str(CERTS / c) for c in crls),
                root_ca=None if root is None else str(CERTS / root),
                offline=offline,
            )
            load_host_keys(options, now=now, fetch_crl=FETCHERS[fetch])
    except VerificationError as exc:
        return f"{exc.check}|{exc}"
    return "ok|"


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_verification_verdict(row: Row) -> None:
    expected, detail = row[7], row[8]
    check, _, message = _verdict(row).partition("|")
    assert check == expected, message
    assert detail in message


def test_verification_table_covers_every_cert_asset() -> None:
    used = {f for row in ROWS for f in (row[1], *row[2], *row[3], row[4]) if f}
    used |= {name for name, _ in PRIVATE_KEYS} | set(DIST_POINTS)
    assert {p.name for p in CERTS.iterdir()} <= used


def test_online_verification_fetches_the_distribution_points() -> None:
    asked: list[str] = []

    def recording(uri: str) -> bytes | None:
        asked.append(uri)
        return mock_fetch(uri)

    options = CertificateOptions(
        host_key_documents=(str(CERTS / "host.crt"),),
        certs=(str(CERTS / "ibm.crt"), str(CERTS / "inter_ca.crt")),
        root_ca=str(CERTS / ROOT),
    )
    load_host_keys(options, now=NOW, fetch_crl=recording)
    assert asked == ["inter_ca.crl", "root_ca.crl", "ibm.crl"]


def test_offline_verification_never_fetches() -> None:
    def forbidden(uri: str) -> bytes | None:
        raise AssertionError(f"fetched {uri} while offline")

    options = CertificateOptions(
        host_key_documents=(str(CERTS / "host.crt"),),
        certs=(str(CERTS / "ibm.crt"), str(CERTS / "inter_ca.crt")),
        crls=(str(CERTS / "ibm.crl"), str(CERTS / "inter_ca.crl")),
        root_ca=str(CERTS / ROOT),
        offline=True,
    )
    assert len(load_host_keys(options, now=NOW, fetch_crl=forbidden)) == 1


DIST_POINTS = {"ibm.crt": ["inter_ca.crl"], "inter_ca.crt": ["root_ca.crl"], "host_uri_na.crt": ["notavailable"]}


@pytest.mark.parametrize("name", sorted(DIST_POINTS))
def test_crl_distribution_points(name: str) -> None:
    cert = x509.load_pem_x509_certificate((CERTS / name).read_bytes())
    assert crl_distribution_uris(cert) == DIST_POINTS[name]


@pytest.mark.parametrize(
    ("name", "is_signing_key"),
    [("ibm.crt", True), ("ibm_armonk.crt", True), ("inter_ca.crt", False), ("ibm_wrong_subject.crt", False)],
)
def test_ibm_signing_key_subject(name: str, is_signing_key: bool) -> None:
    cert = x509.load_pem_x509_certificate((CERTS / name).read_bytes())
    assert is_ibm_signing_cert(cert) is is_signing_key


# --- reading documents -------------------------------------------------------------------


def test_known_document_phkh() -> None:
    """se-format.md §5: keys/host.pem.crt has phkh 415c25a5…."""
    assert read_host_key_document(KEYS / "host.pem.crt").phkh.hex().startswith("415c25a5")


def test_pvattest_document_reads() -> None:
    path = VECTORS / "rust" / "pvattest" / "tests" / "assets" / "host.pem.crt"
    assert len(read_host_key_document(path).phkh) == 32


def test_pem_and_der_give_the_same_document(tmp_path: Path) -> None:
    pem = read_host_key_document(CERTS / "host.crt")
    der_path = tmp_path / "host.der"
    der_path.write_bytes(pem.certificate.public_bytes(serialization.Encoding.DER))
    assert read_host_key_document(der_path).phkh == pem.phkh


def test_document_with_a_crl_beside_it_reads(tmp_path: Path) -> None:
    path = tmp_path / "host.chained.crt"
    path.write_bytes((CERTS / "ibm.crl").read_bytes() + (CERTS / "host.crt").read_bytes())
    assert read_host_key_document(path).phkh == read_host_key_document(CERTS / "host.crt").phkh


def test_several_certificates_warn_and_use_the_first(tmp_path: Path) -> None:
    path = tmp_path / "two.crt"
    path.write_bytes((CERTS / "host2.crt").read_bytes() + (CERTS / "host.crt").read_bytes())
    with pytest.warns(HostKeyDocumentWarning, match="more than one certificate"):
        document = read_host_key_document(path)
    assert document.phkh == read_host_key_document(CERTS / "host2.crt").phkh


MALFORMED = {
    "truncated_pem": (CERTS / "host.crt").read_bytes()[:700],
    "random_bytes": bytes(range(256)) * 3,
    "empty": b"",
    "crl_only": (CERTS / "ibm.crl").read_bytes(),
    "bad_base64": b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    "der_garbage": b"\x30\x82\x01\x00" + b"\x00" * 40,
    "private_key": (CERTS / "host.key").read_bytes(),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_document_is_a_format_error_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.crt"
    path.write_bytes(MALFORMED[name])
    with pytest.raises(FormatError, match=name):
        read_host_key_document(path)


def test_missing_document_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="missing.crt"):
        read_host_key_document(tmp_path / "missing.crt")


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, usage: x509.KeyUsage | None) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not a host key")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _usage(**allowed: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: allowed.get(n, False) for n in names})


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("p256", lambda: _self_signed(ec.generate_private_key(ec.SECP256R1()), None)),
        ("p384", lambda: _self_signed(ec.generate_private_key(ec.SECP384R1()), None)),
        ("rsa", lambda: (CERTS / "ibm.crt").read_bytes()),
        ("p521_without_key_agreement",
         lambda: _self_signed(ec.generate_private_key(ec.SECP521R1()), _usage(digital_signature=True))),
    ],
)
def test_document_key_must_be_p521_for_key_agreement(name: str, make: Callable[[], bytes]) -> None:
    with pytest.raises(VerificationError) as caught:
        parse_host_key_document(make(), name)
    assert caught.value.check == "hkd-key-type"
    assert name in str(caught.value)


def test_p521_without_key_usage_is_accepted() -> None:
    document = parse_host_key_document(_self_signed(ec.generate_private_key(ec.SECP521R1()), None), "bare")
    assert len(document.phkh) == 32


_HOST_DER = (CERTS / "host.crt").read_bytes()


@st.composite
def _mutated_document(draw: st.DrawFn) -> bytes:
    der = read_host_key_document(CERTS / "host.crt").certificate.public_bytes(serialization.Encoding.DER)
    data = bytearray(draw(st.sampled_from([der, _HOST_DER])))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2048), _mutated_document()))
def test_parse_document_raises_only_sesim_errors(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parse_host_key_document(data, "fuzz")
        except (FormatError, VerificationError):
            pass


_CHAIN_DER = [
    x509.load_pem_x509_certificate((CERTS / "ibm.crt").read_bytes()).public_bytes(serialization.Encoding.DER),
    (CERTS / "der.crl").read_bytes(),
]


@st.composite
def _mutated_chain_file(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_CHAIN_DER)))
    for _ in range(draw(st.integers(1, 3))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(_mutated_chain_file())
def test_reading_certificates_and_crls_raises_only_format_errors(data: bytes) -> None:
    """Everything that is parsed lazily is decoded on load, so later checks never see a ValueError."""
    for read in (read_certificates, read_crls):
        try:
            for item in read(data, "fuzz"):
                obj = item.cert if isinstance(item, SourcedCert) else item.crl
                assert crl_distribution_uris(obj) is not None if isinstance(obj, x509.Certificate) else True
                assert authority_key_id(obj) is None or authority_key_id(obj) is not None
        except FormatError:
            pass


# --- options, --no-verify ----------------------------------------------------------------


def test_no_verify_warns_and_accepts_an_expired_document() -> None:
    options = CertificateOptions(host_key_documents=(str(CERTS / "host_crt_expired.crt"),), no_verify=True)
    with pytest.warns(HostKeyDocumentWarning, match="host-key document is not verified"):
        documents = load_host_keys(options, now=NOW)
    assert [d.source for d in documents] == [str(CERTS / "host_crt_expired.crt")]


def test_no_verify_still_rejects_a_non_p521_document() -> None:
    options = CertificateOptions(host_key_documents=(str(CERTS / "ibm.crt"),), no_verify=True)
    with pytest.warns(HostKeyDocumentWarning), pytest.raises(VerificationError, match="P-521"):
        load_host_keys(options, now=NOW)


@pytest.mark.parametrize(
    "options",
    [
        CertificateOptions(host_key_documents=("h.crt",)),
        CertificateOptions(host_key_documents=("h.crt",), no_verify=True, certs=("ibm.crt",)),
        CertificateOptions(host_key_documents=(), no_verify=True),
        CertificateOptions(host_key_documents=("h.crt",), no_verify=True, offline=True),
    ],
    ids=["neither", "both", "no_documents", "offline_without_certs"],
)
def test_contradicting_options_are_a_usage_error(options: CertificateOptions) -> None:
    with pytest.raises(UsageError):
        load_host_keys(options, now=NOW)


def test_documents_come_back_in_order() -> None:
    options = CertificateOptions(
        host_key_documents=(str(CERTS / "host2.crt"), str(CERTS / "host.crt")),
        certs=(str(CERTS / "ibm.crt"), str(CERTS / "inter_ca.crt")),
        crls=(str(CERTS / "ibm.crl"), str(CERTS / "inter_ca.crl")),
        root_ca=str(CERTS / ROOT),
        offline=True,
    )
    names = [Path(d.source).name for d in load_host_keys(options, now=NOW)]
    assert names == ["host2.crt", "host.crt"]


def test_crl_file_without_a_crl_is_a_format_error() -> None:
    options = CertificateOptions(
        host_key_documents=(str(CERTS / "host.crt"),),
        certs=(str(CERTS / "ibm.crt"), str(CERTS / "inter_ca.crt")),
        crls=(str(CERTS / "ibm.crt"),),
        root_ca=str(CERTS / ROOT),
        offline=True,
    )
    with pytest.raises(FormatError, match="ibm.crt: cannot load CRL"):
        load_host_keys(options, now=NOW)


# --- private host keys -------------------------------------------------------------------

PRIVATE_KEYS = [
    ("host.key", "host.crt"),
    ("host2.key", "host2.crt"),
    ("host_rev.key", "host_rev.crt"),
    ("host_invalid_signing_key.key", "host_invalid_signing_key.crt"),
    ("fake_host.key", "fake_host.crt"),
    ("ibm.key", None),
    ("ibm_wrong_subject.key", None),
    ("inter_ca.key", None),
    ("root_ca.key", None),
    ("fake_ibm.key", None),
    ("fake_inter_ca.key", None),
    ("fake_root_ca.key", None),
]


@pytest.mark.parametrize(("key_name", "crt_name"), PRIVATE_KEYS)
def test_private_host_key_matches_its_document_or_is_refused(key_name: str, crt_name: str | None) -> None:
    if crt_name is None:
        with pytest.raises(FormatError, match="P-521"):
            read_host_private_key(CERTS / key_name)
        return
    key = read_host_private_key(CERTS / key_name)
    assert key.public_key() == read_host_key_document(CERTS / crt_name).public_key


def test_private_host_key_of_another_curve_is_refused() -> None:
    with pytest.raises(FormatError, match="P-521"):
        read_host_private_key(ASSETS / "keys" / "ecsecp256k1.pem")


# --- the default CRL downloader ----------------------------------------------------------


@pytest.mark.parametrize("uri", ["inter_ca.crl", "ftp://127.0.0.1/x.crl", "file:///etc/passwd", ""])
def test_default_fetcher_only_tries_http(uri: str) -> None:
    assert fetch_crl_http(uri) is None


def test_default_fetcher_gets_the_crl_with_pvimgs_user_agent() -> None:
    body = (CERTS / "ibm.crl").read_bytes()
    agents: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            agents.append(self.headers.get("User-Agent", ""))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        data = fetch_crl_http(f"http://127.0.0.1:{server.server_port}/crl/ibm.crl")
    finally:
        thread.join(timeout=5)
        server.server_close()
    assert data == body
    assert agents == ["s390-tools-pv-crl"]


def test_default_fetcher_returns_none_when_nothing_listens() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert fetch_crl_http(f"http://127.0.0.1:{port}/ibm.crl") is None
