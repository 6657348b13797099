"""Reading X.509 certificates and CRLs from PEM or DER, as s390-tools does.

``rust/pv/src/utils.rs::read_certs`` / ``read_crls`` first try one DER object
and then a PEM stack; PEM blocks of another kind are skipped (so a file holding
a certificate and its CRL, like ``ibm.chained.crt``, yields one of each), a file
of the wrong kind yields an empty list, and broken PEM framing is an error
(se-format.md §3, §5 ``X.chained.crt``).

Everything here returns :class:`SourcedCert` / :class:`SourcedCrl`: the parsed
object plus where it came from, so every later message can name the file.
Every parse failure is a :class:`FormatError`; no ``ValueError`` from
``cryptography`` escapes (certificates are fully decoded here, including their
extensions and public key, because ``cryptography`` parses those lazily).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import warnings
from collections.abc import Callable
from typing import TypeVar

from attrs import frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning

from ._errors import FormatError

_CERT_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE"})
_CRL_LABELS = frozenset({"X509 CRL"})
_BEGIN = re.compile(rb"-----BEGIN ([^-\r\n]*)-----")
_MAX_FILE = 16 * 1024 * 1024
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
"""What ``cryptography`` raises for a malformed certificate or CRL, at load or lazily."""


@frozen(kw_only=True)
class SourcedCert:
    """A certificate and the file (or URI) it was read from."""

    cert: x509.Certificate
    source: str


@frozen(kw_only=True)
class SourcedCrl:
    """A certificate revocation list and the file (or URI) it was read from."""

    crl: x509.CertificateRevocationList
    source: str


def read_file(path: str | os.PathLike[str], what: str) -> bytes:
    """The bytes of ``path``; an unreadable file is a :class:`FormatError` naming it."""
    try:
        with open(path, "rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise FormatError(f"{os.fspath(path)}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE:
        raise FormatError(f"{os.fspath(path)}: {what} is larger than {_MAX_FILE} bytes")
    return data


def pem_blocks(data: bytes, source: str) -> list[tuple[str, bytes]]:
    """Every ``-----BEGIN X-----`` … ``-----END X-----`` block as (label, DER).

    Text outside blocks is ignored (OpenSSL does the same). Headers such as
    ``Proc-Type`` mark encrypted PEM, which no certificate or CRL uses.

    Raises:
        FormatError: a block has no matching END line or bad base64.
    """
    blocks: list[tuple[str, bytes]] = []
    pos = 0
    while (begin := _BEGIN.search(data, pos)) is not None:
        label = begin.group(1).decode("ascii", "replace")
        end_marker = b"-----END " + begin.group(1) + b"-----"
        end = data.find(end_marker, begin.end())
        if end < 0:
            raise FormatError(f"{source}: truncated PEM: no '-----END {label}-----' line")
        body = data[begin.end() : end]
        if b":" in body:
            raise FormatError(f"{source}: PEM block '{label}' has headers (encrypted?)")
        try:
            der = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"{source}: PEM block '{label}' is not valid base64") from None
        blocks.append((label, der))
        pos = end + len(end_marker)
    return blocks


_T = TypeVar("_T")


def _quietly(load: Callable[[bytes], _T], der: bytes) -> _T:
    """Parse without cryptography's deprecation warnings (old CAs in system stores
    have non-positive serials); whether a certificate is acceptable is decided
    by the verification rules, not by those warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return load(der)


def _checked_cert(cert: x509.Certificate, source: str) -> x509.Certificate:
    """Decode the lazily parsed parts now, so later code cannot hit a ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert.public_key()
            _ = cert.extensions, cert.serial_number
        _ = cert.subject, cert.issuer, cert.version
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc
    except _PARSE_ERRORS as exc:
        raise FormatError(f"{source}: malformed certificate: {exc}") from None
    return cert


def _checked_crl(crl: x509.CertificateRevocationList, source: str) -> x509.CertificateRevocationList:
    try:
        _ = crl.extensions, crl.issuer
        _ = crl.last_update_utc, crl.next_update_utc
        for revoked in crl:
            _ = revoked.serial_number, revoked.extensions
    except _PARSE_ERRORS as exc:
        raise FormatError(f"{source}: malformed CRL: {exc}") from None
    return crl


def _looks_like_der(data: bytes) -> bool:
    return data[:1] == b"\x30"


def read_certificates(data: bytes, source: str) -> list[SourcedCert]:
    """All certificates in ``data``: one DER certificate, or every PEM one.

    Returns an empty list for a PEM file without certificates (for example a
    CRL file), as ``read_certs`` does.

    Raises:
        FormatError: malformed PEM, or a certificate that does not decode.
    """
    if _looks_like_der(data):
        try:
            cert = _quietly(x509.load_der_x509_certificate, data)
        except _PARSE_ERRORS:
            pass
        else:
            return [SourcedCert(cert=_checked_cert(cert, source), source=source)]
    certs = []
    for label, der in pem_blocks(data, source):
        if label not in _CERT_LABELS:
            continue
        try:
            cert = _quietly(x509.load_der_x509_certificate, der)
        except _PARSE_ERRORS as exc:
            raise FormatError(f"{source}: malformed certificate: {exc}") from None
        certs.append(SourcedCert(cert=_checked_cert(cert, source), source=source))
    return certs


def read_crls(data: bytes, source: str) -> list[SourcedCrl]:
    """All CRLs in ``data``: one DER CRL, or every PEM ``X509 CRL`` block.

    Raises:
        FormatError: malformed PEM, or a CRL that does not decode.
    """
    if _looks_like_der(data):
        try:
            crl = _quietly(x509.load_der_x509_crl, data)
        except _PARSE_ERRORS:
            pass
        else:
            return [SourcedCrl(crl=_checked_crl(crl, source), source=source)]
    crls = []
    for label, der in pem_blocks(data, source):
        if label not in _CRL_LABELS:
            continue
        try:
            crl = _quietly(x509.load_der_x509_crl, der)
        except _PARSE_ERRORS as exc:
            raise FormatError(f"{source}: malformed CRL: {exc}") from None
        crls.append(SourcedCrl(crl=_checked_crl(crl, source), source=source))
    return crls
