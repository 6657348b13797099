"""Host-key documents (HKDs): reading them and verifying them as pvimg does.

An HKD is an X.509 certificate carrying a server's EC P-521 host key, signed
by the IBM Z signing key (se-format.md §3). :func:`load_host_keys` is what
``pvimg``/``pvattest``/``pvsecret`` do with their shared certificate options
(``rust/utils/src/cli.rs::CertificateOptions::get_verified_hkds``): build the
verifier (unless ``--no-verify``), then read and verify every HKD in order.

The checks and their stable names (``VerificationError.check``), in the order
pvimg runs them:

Building the verifier (``verify.rs::CertVerifier::new``)
    ``no-ibm-signing-key``, ``many-ibm-signing-keys``: not exactly one
    certificate with the IBM Z signing-key subject among ``certs``.
    ``chain``: the signing key's chain does not verify (no local issuer,
    signature, expired or not yet valid certificate, not a CA, too long,
    X509_STRICT rule, ...); ``weak-key``: a key or digest under 112 bits;
    ``no-crl``: no CRL for a chain certificate; ``crl-outdated``: that CRL is
    expired or not yet valid; ``crl-signature``: that CRL's signature fails;
    ``signing-key-revoked`` / ``ca-revoked``: the signing key / a CA is
    revoked. Chain messages carry OpenSSL's X509 error number and depth.
Each host-key document (``verify.rs::HkdVerifier::verify``)
    ``hkd-key-type``: not an EC P-521 key, or key usage without
    keyAgreement (checked when reading, even with ``no_verify``);
    ``weak-key``; ``hkd-not-yet-valid``, ``hkd-expired``; ``hkd-akid``:
    AKID does not match the signing key's SKID; ``hkd-signature``;
    ``no-crl``: no valid CRL of the signing key; ``hkd-revoked``.

Malformed or unreadable files raise :class:`FormatError` naming the file.
Warnings (several certificates in one HKD, verification disabled) go through
:mod:`warnings` as :class:`HostKeyDocumentWarning`; the CLI prints them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from datetime import datetime, timezone

from attrs import field, frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._crypto import phkh
from ._errors import FormatError, UsageError, VerificationError
from ._hkd_crl import fetch_crl_http
from ._hkd_io import read_certificates, read_file
from ._hkd_verify import CertVerifier
from ._hkd_x509 import key_usage


class HostKeyDocumentWarning(UserWarning):
    """Something about a host-key document the user should know, but not fatal."""


@frozen(kw_only=True)
class HostKeyDocument:
    """A host-key document: the certificate and the file it came from."""

    certificate: x509.Certificate
    source: str

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The host's EC P-521 public key (checked by :func:`parse_host_key_document`)."""
        key = self.certificate.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):  # pragma: no cover - guarded on read
            raise VerificationError(f"{self.source}: not an EC key", check="hkd-key-type")
        return key

    @property
    def phkh(self) -> bytes:
        """SHA-256 over the 160-byte X80 ‖ Y80 public key (se-format.md §2.1)."""
        return phkh(self.public_key)


def parse_host_key_document(data: bytes, source: str) -> HostKeyDocument:
    """An HKD from PEM or DER bytes; ``source`` names it in messages.

    Several certificates only warn and the first is used (``cli.rs``,
    se-format.md §3). The key must be EC on secp521r1, as the C genprotimg
    enforced (``read_ec_pubkey_cert``); a key-usage extension must allow
    keyAgreement.

    Raises:
        FormatError: not PEM or DER, no certificate, malformed certificate.
        VerificationError: ``check="hkd-key-type"`` for any other key.
    """
    certs = read_certificates(data, source)
    if not certs:
        raise FormatError(f"{source}: the host-key document contains no certificate")
    if len(certs) > 1:
        warnings.warn(
            f"the host-key document in '{source}' contains more than one certificate; using the first",
            HostKeyDocumentWarning,
            stacklevel=2,
        )
    cert = certs[0].cert
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP521R1):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise VerificationError(
            f"{source}: host-key document key must be EC secp521r1 (P-521), found {kind}",
            check="hkd-key-type",
        )
    usage = key_usage(cert)
    if usage is not None and not usage.key_agreement:
        raise VerificationError(
            f"{source}: host-key document key usage does not allow keyAgreement", check="hkd-key-type"
        )
    return HostKeyDocument(certificate=cert, source=source)


def read_host_key_document(path: str | os.PathLike[str]) -> HostKeyDocument:
    """Read an HKD file (PEM or DER); see :func:`parse_host_key_document`."""
    source = os.fspath(path)
    return parse_host_key_document(read_file(source, "host-key document"), source)


def read_host_private_key(path: str | os.PathLike[str]) -> ec.EllipticCurvePrivateKey:
    """A server's private host key: PEM or DER (PKCS#8 or SEC1), unencrypted, P-521.

    Raises:
        FormatError: unreadable, encrypted, not a private key, or not P-521.
    """
    source = os.fspath(path)
    data = read_file(source, "host private key")
    key = None
    for loader in (serialization.load_der_private_key, serialization.load_pem_private_key):
        try:
            key = loader(data, password=None)
            break
        except TypeError:
            raise FormatError(f"{source}: the host private key is encrypted") from None
        except (ValueError, UnsupportedAlgorithm):
            continue
    if key is None:
        raise FormatError(f"{source}: not a PEM or DER private key")
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP521R1):
        raise FormatError(f"{source}: the host private key must be EC secp521r1 (P-521)")
    return key


def _paths(values: object) -> tuple[str, ...]:
    if isinstance(values, (str, os.PathLike)):
        return (os.fspath(values),)
    return tuple(os.fspath(v) for v in values)  # type: ignore[attr-defined]


@frozen(kw_only=True)
class CertificateOptions:
    """pvimg's shared certificate options (``rust/utils/src/cli.rs``)."""

    host_key_documents: tuple[str, ...] = field(converter=_paths)
    no_verify: bool = False
    certs: tuple[str, ...] = field(default=(), converter=_paths)
    crls: tuple[str, ...] = field(default=(), converter=_paths)
    root_ca: str | None = field(default=None, converter=lambda v: None if v is None else os.fspath(v))
    offline: bool = False


def _check_options(options: CertificateOptions) -> None:
    """The option rules clap enforces for pvimg (``cli.rs``: group ``pv_verify``, ``requires``)."""
    if not options.host_key_documents:
        raise UsageError("at least one host-key document is required")
    if options.no_verify and options.certs:
        raise UsageError("no_verify cannot be combined with certificates")
    if not options.no_verify and not options.certs:
        raise UsageError("either no_verify or at least one certificate (the IBM Z signing key) is required")
    if not options.certs and (options.crls or options.root_ca is not None or options.offline):
        raise UsageError("CRLs, a root CA and offline need certificates")


def load_host_keys(
    options: CertificateOptions,
    *,
    now: datetime | None = None,
    fetch_crl: Callable[[str], bytes | None] | None = None,
) -> list[HostKeyDocument]:
    """Read every host-key document and verify it unless ``no_verify`` (se-format.md §3).

    Args:
        options: the HKDs and how to verify them.
        now: the time of the check; default the current UTC time (CLI only;
            the simulation passes a fixed time).
        fetch_crl: downloads a CRL distribution point (URI → bytes or None);
            default an HTTP GET with a 3 s timeout. Not used when ``offline``.

    Returns:
        The documents, in the order given.

    Raises:
        UsageError: the options contradict each other (as pvimg's CLI refuses).
        FormatError: a file is unreadable or malformed.
        VerificationError: a check failed; ``check`` names it (module docstring).
    """
    _check_options(options)
    if options.no_verify:
        warnings.warn(
            "host-key document is not verified (verification disabled); "
            "the protected data may not be protected",
            HostKeyDocumentWarning,
            stacklevel=2,
        )
        return [read_host_key_document(path) for path in options.host_key_documents]
    when = datetime.now(timezone.utc) if now is None else now
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    verifier = CertVerifier.create(
        certs=options.certs,
        crls=options.crls,
        root_ca=options.root_ca,
        offline=options.offline,
        now=when,
        fetch_crl=fetch_crl_http if fetch_crl is None else fetch_crl,
    )
    documents = []
    for path in options.host_key_documents:
        document = read_host_key_document(path)
        verifier.verify(document.certificate, document.source)
        documents.append(document)
    return documents
