"""X.509 builders for the test PKI (:mod:`protocol._pki`).

The shapes follow the real IBM documents and the upstream asset generator
(``rust/pv/tests/assets/cert/gen``), see se-format.md §3: CAs with critical
basicConstraints and keyCertSign + cRLSign; the IBM Z signing key with the
exact six-entry subject pvimg looks for, digitalSignature and codeSigning;
host-key documents with an EC P-521 key, keyAgreement (critical) and a
sha512WithRSA signature. Every certificate has an SKID, an AKID and (below the
root) a CRL distribution point; every CRL has an AKID.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY_BITS = 3072
IBM_KEY_BITS = 4096

IBM_SIGNING_SUBJECT = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "New York"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Poughkeepsie"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "International Business Machines Corporation"),
        x509.NameAttribute(NameOID.COMMON_NAME, "International Business Machines Corporation"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IBM Z Host Key Signing Service"),
    ]
)
"""The subject pvimg accepts as the IBM Z signing key (se-format.md §3)."""


def ca_subject(common_name: str) -> x509.Name:
    """A test CA's name: clearly not IBM's or DigiCert's."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sesim test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def host_subject(name: str) -> x509.Name:
    """A simulated host's name (pvimg does not look at HKD subjects)."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "New York"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Poughkeepsie"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "International Business Machines Corporation"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "IBM Z Host Key"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"sesim simulated host {name}"),
        ]
    )


def usage(**allowed: bool) -> x509.KeyUsage:
    """A KeyUsage with only the named flags set."""
    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )
    flags.update(allowed)
    return x509.KeyUsage(**flags)


def pem_private_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM, the form ``read_host_private_key`` and OpenSSL read."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def issue_certificate(
    *,
    subject: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: rsa.RSAPrivateKey,
    not_before: datetime,
    not_after: datetime,
    crl_uri: str | None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    hash_algorithm: hashes.HashAlgorithm,
) -> x509.Certificate:
    """A certificate with SKID, AKID and, if ``crl_uri``, a CRL distribution point.

    ``issuer=None`` makes a self-signed root.
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if crl_uri is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_uri)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    for value, critical in extensions:
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(issuer_key, hash_algorithm)


def ca_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    """CA, keyCertSign + cRLSign, both critical (X509_STRICT wants them so)."""
    return [
        (x509.BasicConstraints(ca=True, path_length=None), True),
        (usage(key_cert_sign=True, crl_sign=True), True),
    ]


def issue_crl(
    issuer: x509.Certificate,
    issuer_key: rsa.RSAPrivateKey,
    revoked: Sequence[int],
    last_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL of ``issuer`` with an AKID, listing ``revoked`` serials, signed sha512."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for serial in revoked:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last_update).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer_key, hashes.SHA512())


def issue_host_document(
    name: str, ibm: x509.Certificate, ibm_key: rsa.RSAPrivateKey, not_before: datetime, not_after: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A fresh P-521 host key and its host-key document signed by the IBM Z key."""
    host_key = ec.generate_private_key(ec.SECP521R1())
    cert = issue_certificate(
        subject=host_subject(name),
        public_key=host_key.public_key(),
        issuer=ibm,
        issuer_key=ibm_key,
        not_before=not_before,
        not_after=not_after,
        crl_uri="ibm.crl",
        extensions=[(usage(key_agreement=True), True)],
        hash_algorithm=hashes.SHA512(),
    )
    return cert, host_key


def signing_key_extensions() -> list[tuple[x509.ExtensionType, bool]]:
    """The IBM Z signing key: not a CA, digitalSignature, codeSigning."""
    return [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage(digital_signature=True), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False),
    ]
