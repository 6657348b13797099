"""The IBM Z signing key's chain check on generated chains: OpenSSL's rules one by one.

Each row builds root → intermediate(s) → leaf (EC P-256 keys, fast to make)
with one thing changed, and expects the OpenSSL X509 error number and depth
that ``openssl verify -x509_strict -crl_check_all -trusted_first
-check_ss_sig -policy_check -verify_depth 2 -auth_level 2`` (3.0) gave for the
very same files (se-format.md §3, chain check).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol import VerificationError
from protocol._hkd_chain import verify_chain
from protocol._hkd_io import SourcedCert, SourcedCrl

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_KEYS: dict[str, Key] = {}


def key(label: str) -> Key:
    if label not in _KEYS:
        _KEYS[label] = (
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            if label == "weak"
            else ec.generate_private_key(ec.SECP256R1())
        )
    return _KEYS[label]


def _usage(kind: str | None) -> x509.KeyUsage | None:
    allowed = {
        "ca": {"key_cert_sign", "crl_sign"},
        "sig": {"digital_signature"},
        "sig+certsign": {"digital_signature", "key_cert_sign"},
        "certsign_only": {"key_cert_sign"},
        None: None,
    }[kind]
    if allowed is None:
        return None
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: n in allowed for n in names})


def make_cert(subject: str, subject_key: Key, issuer: str, issuer_key: Key, **o: Any) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(o.get("not_before", NOW - DAY))
        .not_valid_after(o.get("not_after", NOW + 10 * DAY))
    )
    if o.get("bc", True):
        builder = builder.add_extension(
            x509.BasicConstraints(ca=o.get("ca", True), path_length=o.get("pathlen")),
            critical=o.get("bc_critical", True),
        )
    usage = _usage(o.get("ku", "ca"))
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if o.get("akid", True):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
            critical=o.get("akid_critical", False),
        )
    if o.get("skid", True):
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), critical=False  # type: ignore[arg-type]
        )
    for value, critical in o.get("extra", ()):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_crl(issuer: str, issuer_key: Key, **o: Any) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .last_update(o.get("last_update", NOW - DAY))
        .next_update(o.get("next_update", NOW + 10 * DAY))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for serial in o.get("revoked", ()):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - DAY).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer_key, hashes.SHA256())


def build(case: dict[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate], x509.Certificate,
                                         list[x509.CertificateRevocationList]]:
    """(root, intermediates, leaf, CRLs) for one row; ``case`` changes single fields."""
    root = make_cert("root", key("root"), "root", key("root"), **case.get("root", {}))
    inter_key = key("weak") if case.get("weak_inter") else key("inter")
    chain = [make_cert("inter", inter_key, "root", key("root"), **case.get("inter", {}))]
    crls = [make_crl("root", key("root")), make_crl("inter", inter_key, **case.get("inter_crl", {}))]
    top, top_key = "inter", inter_key
    for _ in range(case.get("more", 0)):
        label = f"inter{len(chain) + 1}"
        chain.append(make_cert(label, key(label), top, top_key))
        crls.append(make_crl(label, key(label)))
        top, top_key = label, key(label)
    leaf = make_cert("leaf", key("leaf"), top, top_key, **{"ca": False, "ku": "sig", **case.get("leaf", {})})
    if case.get("revoke_leaf"):
        crls[-1] = make_crl(top, top_key, revoked=[leaf.serial_number])
    return root, chain, leaf, crls


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "good": ({}, "ok"),
    "two_intermediates": ({"more": 1}, "ok"),
    "three_intermediates": ({"more": 2}, "22@3"),
    "inter_without_akid": ({"inter": {"akid": False}}, "85@1"),
    "inter_bc_not_critical": ({"inter": {"bc_critical": False}}, "89@1"),
    "inter_without_key_usage": ({"inter": {"ku": None}}, "92@1"),
    "inter_not_ca": ({"inter": {"ca": False}}, "79@1"),
    "inter_without_bc": ({"inter": {"bc": False}}, "79@1"),
    "inter_without_skid": ({"inter": {"skid": False}}, "86@1"),
    "inter_weak_key": ({"weak_inter": True}, "67@1"),
    "inter_without_crl_sign": ({"inter": {"ku": "certsign_only"}}, "35@0"),
    "inter_unknown_critical_ext": (
        {"inter": {"extra": [(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)]}},
        "34@1",
    ),
    "leaf_key_cert_sign_not_ca": ({"leaf": {"ku": "sig+certsign"}}, "82@0"),
    "leaf_akid_critical": ({"leaf": {"akid_critical": True}}, "34@0"),
    "leaf_code_signing": ({"leaf": {"extra": [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)]}},
                          "ok"),
    "leaf_not_yet_valid": ({"leaf": {"not_before": NOW + DAY}}, "9@0"),
    "leaf_revoked": ({"revoke_leaf": True}, "23@0"),
    "root_pathlen_0": ({"root": {"pathlen": 0}}, "25@2"),
    "root_expired": ({"root": {"not_before": NOW - 10 * DAY, "not_after": NOW - 2 * DAY}}, "10@2"),
    "root_signature_only": ({"root": {"ku": "sig"}}, "79@2"),
    "inter_expired": ({"inter": {"not_before": NOW - 10 * DAY, "not_after": NOW - 2 * DAY}}, "10@1"),
    "inter_crl_expired": ({"inter_crl": {"last_update": NOW - 3 * DAY, "next_update": NOW - DAY}}, "12@0"),
    "inter_crl_not_yet_valid": ({"inter_crl": {"last_update": NOW + DAY}}, "11@0"),
}


def chain_verdict(case: dict[str, Any]) -> str:
    root, chain, leaf, crls = build(case)
    try:
        verify_chain(
            SourcedCert(cert=leaf, source="leaf"),
            untrusted=[SourcedCert(cert=c, source="inter") for c in chain],
            trusted=[SourcedCert(cert=root, source="root")],
            crls=[SourcedCrl(crl=c, source="crl") for c in crls],
            now=NOW,
        )
    except VerificationError as exc:
        found = re.search(r"OpenSSL X509 error (\d+) at depth (\d+)", str(exc))
        assert found, str(exc)
        return f"{found.group(1)}@{found.group(2)}"
    return "ok"


@pytest.mark.parametrize("name", sorted(CASES))
def test_chain_rule(name: str) -> None:
    case, expected = CASES[name]
    assert chain_verdict(case) == expected
