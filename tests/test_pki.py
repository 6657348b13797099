"""The test PKI for simulated servers: shape of its files and that pvimg's rules accept it."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from protocol import (
    FormatError,
    TestPki,
    UsageError,
    VerificationError,
    add_test_host,
    create_test_pki,
    load_host_keys,
    read_host_key_document,
    read_host_private_key,
)
from protocol._hkd_verify import is_ibm_signing_cert
from protocol._pki_x509 import issue_certificate, issue_crl

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


@pytest.fixture(name="pki", scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return create_test_pki(
        tmp_path_factory.mktemp("pki"), hosts=("host", "other", "gone"), now=NOW, revoked=("gone",)
    )


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_every_file_is_written(pki: TestPki) -> None:
    names = sorted(p.name for p in pki.directory.iterdir())
    assert names == sorted(p.name for p in pki.files)
    assert len(pki.files) == 9 + 2 * 3


def test_hosts_verify_offline(pki: TestPki) -> None:
    documents = load_host_keys(pki.certificate_options("host", "other"), now=NOW)
    assert [d.phkh for d in documents] == [
        read_host_key_document(pki.directory / "host.crt").phkh,
        read_host_key_document(pki.directory / "other.crt").phkh,
    ]


def test_revoked_host_fails(pki: TestPki) -> None:
    with pytest.raises(VerificationError) as caught:
        load_host_keys(pki.certificate_options("gone"), now=NOW)
    assert caught.value.check == "hkd-revoked"


def test_pki_is_refused_once_expired(pki: TestPki) -> None:
    """OpenSSL checks CRLs before validity windows, so the expired CRL is what fails first."""
    with pytest.raises(VerificationError) as caught:
        load_host_keys(pki.certificate_options("host"), now=NOW + timedelta(days=366))
    assert caught.value.check == "crl-outdated"
    assert "error 12 " in str(caught.value)


def test_signing_key_has_pvimgs_subject_and_usage(pki: TestPki) -> None:
    cert = _cert(pki.ibm_crt)
    expected = [
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.STATE_OR_PROVINCE_NAME, "New York"),
        (NameOID.LOCALITY_NAME, "Poughkeepsie"),
        (NameOID.ORGANIZATION_NAME, "International Business Machines Corporation"),
        (NameOID.COMMON_NAME, "International Business Machines Corporation"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "IBM Z Host Key Signing Service"),
    ]
    assert [(a.oid, a.value) for a in cert.subject] == expected
    assert is_ibm_signing_cert(cert)
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    usage = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE).value
    assert usage.digital_signature and not usage.key_cert_sign
    eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    assert list(eku) == [ExtendedKeyUsageOID.CODE_SIGNING]


def test_host_document_is_p521_key_agreement_signed_sha512_by_ibm(pki: TestPki) -> None:
    cert = _cert(pki.directory / "host.crt")
    ibm = _cert(pki.ibm_crt)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP521R1)
    usage = cert.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert usage.critical and usage.value.key_agreement
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA512)
    ibm_key = ibm.public_key()
    assert isinstance(ibm_key, rsa.RSAPublicKey)
    ibm_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA512())
    akid = cert.extensions.get_extension_for_oid(ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    skid = ibm.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert akid.key_identifier == skid.digest
    points = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    assert [n.value for p in points for n in p.full_name] == ["ibm.crl"]


def test_every_level_has_a_crl_signed_by_it(pki: TestPki) -> None:
    for crt, crl in ((pki.root_ca_crt, pki.root_ca_crl), (pki.inter_ca_crt, pki.inter_ca_crl),
                     (pki.ibm_crt, pki.ibm_crl)):
        revocations = x509.load_pem_x509_crl(crl.read_bytes())
        assert revocations.is_signature_valid(_cert(crt).public_key())  # type: ignore[arg-type]


def test_only_revoked_hosts_are_listed(pki: TestPki) -> None:
    revocations = x509.load_pem_x509_crl(pki.ibm_crl.read_bytes())
    listed = {entry.serial_number for entry in revocations}
    assert listed == {_cert(pki.directory / "gone.crt").serial_number}


def test_private_host_key_matches_document(pki: TestPki) -> None:
    for host in pki.hosts:
        key = read_host_private_key(host.key)
        assert key.public_key() == read_host_key_document(host.crt).public_key


def test_private_keys_are_readable_only_by_the_owner(pki: TestPki) -> None:
    keys = [p for p in pki.files if p.suffix == ".key"]
    assert len(keys) == 6
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_existing_files_are_never_overwritten(pki: TestPki) -> None:
    before = {p: p.read_bytes() for p in pki.files}
    with pytest.raises(UsageError, match="refusing to overwrite"):
        create_test_pki(pki.directory, hosts=("host",), now=NOW)
    assert {p: p.read_bytes() for p in pki.files} == before


def test_force_overwrites(tmp_path: Path) -> None:
    first = create_test_pki(tmp_path, now=NOW)
    old = first.ibm_crt.read_bytes()
    second = create_test_pki(tmp_path, now=NOW, force=True)
    assert second.ibm_crt.read_bytes() != old
    assert len(load_host_keys(second.certificate_options(), now=NOW)) == 1


def test_added_host_verifies(pki: TestPki) -> None:
    host = add_test_host(pki.directory, "added", now=NOW)
    options = pki.certificate_options("host")
    options = type(options)(
        host_key_documents=(str(host.crt),), certs=options.certs, crls=options.crls,
        root_ca=options.root_ca, offline=True,
    )
    assert len(load_host_keys(options, now=NOW)) == 1


def test_adding_an_existing_host_is_refused(pki: TestPki) -> None:
    before = (pki.directory / "other.crt").read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        add_test_host(pki.directory, "other", now=NOW)
    assert (pki.directory / "other.crt").read_bytes() == before


def test_adding_a_host_needs_a_pki(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="ibm"):
        add_test_host(tmp_path, "lonely", now=NOW)


@pytest.mark.parametrize("name", ["", "../escape", "ibm", "root_ca", "with space", "-dash"])
def test_bad_host_names_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="bad host name"):
        create_test_pki(tmp_path / "pki", hosts=(name,), now=NOW)
    assert not (tmp_path / "pki").exists()


def test_revoking_an_unknown_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot revoke"):
        create_test_pki(tmp_path, hosts=("a",), revoked=("b",), now=NOW)


def test_duplicate_host_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="twice"):
        create_test_pki(tmp_path, hosts=("a", "a"), now=NOW)


def test_unknown_host_in_options_is_refused(pki: TestPki) -> None:
    with pytest.raises(UsageError, match="nobody"):
        pki.certificate_options("nobody")


def test_weak_intermediate_key_fails_the_chain(tmp_path: Path, pki: TestPki) -> None:
    """Auth level 2: a 1024-bit CA key (80 bits of security) is refused (OpenSSL error 67)."""
    root_key = serialization.load_pem_private_key(pki.root_ca_key.read_bytes(), password=None)
    assert isinstance(root_key, rsa.RSAPrivateKey)
    root = _cert(pki.root_ca_crt)
    weak_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    weak_inter = issue_certificate(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak intermediate")]),
        public_key=weak_key.public_key(), issuer=root, issuer_key=root_key,
        not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1), crl_uri=None,
        extensions=[(x509.BasicConstraints(ca=True, path_length=None), True),
                    (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)],
        hash_algorithm=hashes.SHA256(),
    )
    ibm_key = serialization.load_pem_private_key(pki.ibm_key.read_bytes(), password=None)
    assert isinstance(ibm_key, rsa.RSAPrivateKey)
    ibm = issue_certificate(
        subject=_cert(pki.ibm_crt).subject, public_key=ibm_key.public_key(), issuer=weak_inter,
        issuer_key=weak_key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1),
        crl_uri=None, extensions=[], hash_algorithm=hashes.SHA256(),
    )
    files = {
        "inter.crt": weak_inter.public_bytes(serialization.Encoding.PEM),
        "ibm.crt": ibm.public_bytes(serialization.Encoding.PEM),
        "inter.crl": issue_crl(weak_inter, weak_key, [], NOW - timedelta(days=1), NOW + timedelta(days=1))
        .public_bytes(serialization.Encoding.PEM),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    options = pki.certificate_options("host")
    options = type(options)(
        host_key_documents=options.host_key_documents,
        certs=(str(tmp_path / "ibm.crt"), str(tmp_path / "inter.crt")),
        crls=(str(tmp_path / "inter.crl"), str(pki.root_ca_crl)),
        root_ca=options.root_ca, offline=True,
    )
    with pytest.raises(VerificationError) as caught:
        load_host_keys(options, now=NOW)
    assert caught.value.check == "weak-key"
    assert "error 67" in str(caught.value)


# --- read_host_private_key forms ---------------------------------------------------------


def _write_key(path: Path, key: object, fmt: str) -> Path:
    encoding = serialization.Encoding.DER if fmt.endswith("der") else serialization.Encoding.PEM
    private_format = (
        serialization.PrivateFormat.TraditionalOpenSSL if fmt.startswith("sec1")
        else serialization.PrivateFormat.PKCS8
    )
    encryption = (
        serialization.BestAvailableEncryption(b"secret") if fmt == "pkcs8-encrypted-pem"
        else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(encoding, private_format, encryption))  # type: ignore[attr-defined]
    return path


@pytest.mark.parametrize("fmt", ["pkcs8-pem", "pkcs8-der", "sec1-pem", "sec1-der"])
def test_private_host_key_forms(tmp_path: Path, fmt: str) -> None:
    key = ec.generate_private_key(ec.SECP521R1())
    loaded = read_host_private_key(_write_key(tmp_path / "k", key, fmt))
    assert loaded.private_numbers() == key.private_numbers()


@pytest.mark.parametrize(
    ("fmt", "make", "message"),
    [
        ("pkcs8-encrypted-pem", lambda: ec.generate_private_key(ec.SECP521R1()), "encrypted"),
        ("pkcs8-pem", lambda: ec.generate_private_key(ec.SECP384R1()), "P-521"),
        ("pkcs8-pem", lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "P-521"),
    ],
    ids=["encrypted", "p384", "rsa"],
)
def test_private_host_key_refusals(tmp_path: Path, fmt: str, make: object, message: str) -> None:
    path = _write_key(tmp_path / "k", make(), fmt)  # type: ignore[operator]
    with pytest.raises(FormatError, match=message):
        read_host_private_key(path)


@pytest.mark.parametrize("data", [b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\n"])
def test_private_host_key_garbage_is_a_format_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(data)
    with pytest.raises(FormatError, match="bad.key"):
        read_host_private_key(path)
