"""Small X.509 predicates with OpenSSL's meaning, shared by the chain and HKD checks.

pvimg verifies with OpenSSL (``rust/pv/src/verify/helper.rs``), so where a rule
is OpenSSL's own (name comparison, ``X509_check_akid``, security bits of a key
or digest) it is written down here once, with the OpenSSL function it follows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import ExtensionOID, SignatureAlgorithmOID

NameKey = tuple[tuple[tuple[str, str], ...], ...]

MIN_SECURITY_BITS = 112
"""Auth level 2 of ``X509_VERIFY_PARAM_set_auth_level`` (helper.rs ``SECURITY_LEVEL``)."""


def name_key(name: x509.Name) -> NameKey:
    """A comparable form of a name, like OpenSSL's canonical encoding.

    ``X509_NAME_cmp`` compares RDN by RDN, in order, with string values
    lower-cased and their white space collapsed. Order matters, which is why
    pvimg needs the RDN-reorder fallback for IBM CRLs (se-format.md §3 item 5).
    """
    rdns = []
    for rdn in name.rdns:
        attrs = sorted(
            (attr.oid.dotted_string, " ".join(str(attr.value).split()).lower()) for attr in rdn
        )
        rdns.append(tuple(attrs))
    return tuple(rdns)


def names_equal(a: x509.Name, b: x509.Name) -> bool:
    """``X509_NAME_cmp(a, b) == 0``."""
    return name_key(a) == name_key(b)


def extension(obj: x509.Certificate | x509.CertificateRevocationList, oid: x509.ObjectIdentifier) -> Any:
    """The value of extension ``oid`` or None (the object was fully parsed on load)."""
    try:
        return obj.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


def subject_key_id(cert: x509.Certificate) -> bytes | None:
    ski = extension(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    return None if ski is None else bytes(ski.digest)


def akid_matches(akid: x509.AuthorityKeyIdentifier | None, issuer: x509.Certificate) -> bool:
    """``X509_check_akid(issuer, akid) == X509_V_OK``.

    Each part present on both sides must match: key id vs the issuer's SKID,
    serial vs the issuer's serial, directory name vs the issuer's issuer.
    """
    if akid is None:
        return True
    skid = subject_key_id(issuer)
    if akid.key_identifier is not None and skid is not None and akid.key_identifier != skid:
        return False
    if (
        akid.authority_cert_serial_number is not None
        and akid.authority_cert_serial_number != issuer.serial_number
    ):
        return False
    for general_name in akid.authority_cert_issuer or ():
        if isinstance(general_name, x509.DirectoryName):
            return names_equal(general_name.value, issuer.issuer)
    return True


def authority_key_id(obj: x509.Certificate | x509.CertificateRevocationList) -> x509.AuthorityKeyIdentifier | None:
    value = extension(obj, ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    return value if isinstance(value, x509.AuthorityKeyIdentifier) else None


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    value = extension(cert, ExtensionOID.KEY_USAGE)
    return value if isinstance(value, x509.KeyUsage) else None


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    value = extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    return value if isinstance(value, x509.BasicConstraints) else None


def is_critical(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> bool:
    try:
        return cert.extensions.get_extension_for_oid(oid).critical
    except x509.ExtensionNotFound:
        return False


def security_bits(key: object) -> int:
    """``EVP_PKEY_get_security_bits``: RSA/DSA by modulus size, EC by order size."""
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        size = key.key_size
        for minimum, bits in ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (1024, 80)):
            if size >= minimum:
                return bits
        return 0
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size // 2
    if isinstance(key, ed25519.Ed25519PublicKey):
        return 128
    if isinstance(key, ed448.Ed448PublicKey):
        return 224
    return 0


_HASH_BITS = {"md5": 39, "sha1": 63, "sha224": 112, "sha256": 128, "sha384": 192, "sha512": 256,
              "sha512-224": 112, "sha512-256": 128, "sha3-224": 112, "sha3-256": 128,
              "sha3-384": 192, "sha3-512": 256}


def signature_security_bits(cert: x509.Certificate) -> int:
    """Security of the digest that signed ``cert`` (``X509_get_signature_info``)."""
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return 0
    if algorithm is None:  # Ed25519/Ed448 sign without a separate digest
        return 224 if cert.signature_algorithm_oid == SignatureAlgorithmOID.ED448 else 128
    return _HASH_BITS.get(algorithm.name, 0)


def signature_valid(issuer_key: object, signed: x509.Certificate | x509.CertificateRevocationList) -> bool:
    """Does ``issuer_key`` verify the signature on ``signed``? No name comparison.

    This is ``X509_verify(signed, issuer_key)``: only the key and the
    signature. pvimg relies on it for the Armonk quirk (se-format.md §3 item 4):
    ``verify_directly_issued_by`` would also compare names and fail.
    """
    if isinstance(signed, x509.Certificate):
        tbs = signed.tbs_certificate_bytes
    else:
        tbs = signed.tbs_certlist_bytes
    try:
        params = signed.signature_algorithm_parameters
        algorithm = signed.signature_hash_algorithm
        if isinstance(issuer_key, rsa.RSAPublicKey):
            if not isinstance(params, (padding.PKCS1v15, padding.PSS)) or not isinstance(
                algorithm, hashes.HashAlgorithm
            ):
                return False
            issuer_key.verify(signed.signature, tbs, params, algorithm)
        elif isinstance(issuer_key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            issuer_key.verify(signed.signature, tbs, params)
        elif isinstance(issuer_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            issuer_key.verify(signed.signature, tbs)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def likely_issued(issuer: x509.Certificate, subject: x509.Certificate) -> bool:
    """``ossl_x509_likely_issued``: names chain, the AKID fits, the key type fits the signature.

    The signature itself is checked later (``internal_verify``).
    """
    if not names_equal(subject.issuer, issuer.subject):
        return False
    if not akid_matches(authority_key_id(subject), issuer):
        return False
    key = issuer.public_key()
    try:
        params = subject.signature_algorithm_parameters
    except (UnsupportedAlgorithm, ValueError):
        return False  # an unknown signature algorithm fits no key (check_sig_alg_match)
    if isinstance(key, rsa.RSAPublicKey):
        return isinstance(params, (padding.PKCS1v15, padding.PSS))
    if isinstance(key, ec.EllipticCurvePublicKey):
        return isinstance(params, ec.ECDSA)
    return True


def self_issued(cert: x509.Certificate) -> bool:
    """``X509_self_signed(cert, 0)``: issued by itself by name and AKID."""
    return likely_issued(cert, cert)


def self_signed(cert: x509.Certificate) -> bool:
    """``EXFLAG_SS``: self-issued, and its key usage (if any) allows certificate signing."""
    usage = key_usage(cert)
    return self_issued(cert) and (usage is None or usage.key_cert_sign)


def time_state(now: datetime, not_before: datetime, not_after: datetime | None) -> int:
    """-1 before the window, 0 inside ``[not_before, not_after)``, 1 after it.

    OpenSSL's ``X509_cmp_time`` counts a time equal to ``not_after`` as past.
    """
    if now < not_before:
        return -1
    if not_after is not None and now >= not_after:
        return 1
    return 0


def crl_distribution_uris(cert: x509.Certificate) -> list[str]:
    """The URIs of the full names of every CRL distribution point (helper.rs ``x509_dist_points``)."""
    points = extension(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS)
    uris: list[str] = []
    for point in points or ():
        for general_name in point.full_name or ():
            if isinstance(general_name, x509.UniformResourceIdentifier):
                uris.append(general_name.value)
    return uris
