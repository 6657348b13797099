"""Revocation of the chain certificates, chosen and checked as OpenSSL does.

pvimg verifies the IBM Z signing key with CRL_CHECK | CRL_CHECK_ALL
(se-format.md §3), so every certificate of its chain needs a CRL. This is the
CRL half of ``crypto/x509/x509_vfy.c`` (``check_cert_crl``, ``get_crl_sk``,
``get_crl_score``, ``crl_akid_check``, ``crl_crldp_check``, ``check_crl``,
``cert_crl``) without delta CRLs and indirect CRLs (extended CRL support is
off in pvimg, so OpenSSL ignores such CRLs too). The functions return OpenSSL
error numbers; :mod:`protocol._hkd_chain` turns them into errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from ._hkd_io import SourcedCrl
from ._hkd_x509 import (
    akid_matches,
    authority_key_id,
    basic_constraints,
    extension,
    key_usage,
    names_equal,
    self_issued,
    self_signed,
    signature_valid,
)

_CRL_SUPPORTED_CRITICAL = frozenset(
    {
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.DELTA_CRL_INDICATOR,
    }
)

# CRL score bits of x509_vfy.c.
_NOCRITICAL, _SCOPE, _TIME, _ISSUER_NAME = 0x100, 0x080, 0x040, 0x020
_ISSUER_CERT, _SAME_PATH, _AKID = 0x018, 0x008, 0x004


def _crl_critical_ok(crl: x509.CertificateRevocationList) -> bool:
    return all(not ext.critical or ext.oid in _CRL_SUPPORTED_CRITICAL for ext in crl.extensions)


def _crl_time_error(crl: x509.CertificateRevocationList, now: datetime) -> int:
    """``ossl_x509_check_crl_time``: 11 before lastUpdate, 12 after nextUpdate, else 0."""
    if now < crl.last_update_utc:
        return 11
    next_update = crl.next_update_utc
    if next_update is not None and now > next_update:
        return 12
    return 0


def _crl_matches_issuer(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """``matching_crl_issuer_and_akid``."""
    return names_equal(issuer.subject, crl.issuer) and akid_matches(authority_key_id(crl), issuer)


def _idp_matches(point: x509.DistributionPoint, idp: x509.IssuingDistributionPoint) -> bool:
    """``idp_check_dp`` for full names (relative names only match each other exactly)."""
    if (point.full_name is None and point.relative_name is None) or (
        idp.full_name is None and idp.relative_name is None
    ):
        return True
    if point.full_name is not None and idp.full_name is not None:
        return any(a == b for a in point.full_name for b in idp.full_name)
    return point.relative_name is not None and point.relative_name == idp.relative_name


def _in_scope(cert: x509.Certificate, crl: x509.CertificateRevocationList, score: int) -> bool:
    """``crl_crldp_check``: is ``cert`` inside the scope of ``crl``?"""
    idp = extension(crl, ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    if idp is not None:
        if idp.only_contains_attribute_certs:
            return False
        constraints = basic_constraints(cert)
        if constraints is not None and constraints.ca:
            if idp.only_contains_user_certs:
                return False
        elif idp.only_contains_ca_certs:
            return False
    for point in extension(cert, ExtensionOID.CRL_DISTRIBUTION_POINTS) or ():
        if point.crl_issuer is None:
            issuer_ok = bool(score & _ISSUER_NAME)
        else:
            issuer_ok = any(
                isinstance(name, x509.DirectoryName) and names_equal(name.value, crl.issuer)
                for name in point.crl_issuer
            )
        if issuer_ok and (idp is None or _idp_matches(point, idp)):
            return True
    no_point = idp is None or (idp.full_name is None and idp.relative_name is None)
    return no_point and bool(score & _ISSUER_NAME)


def _crl_score(
    chain: Sequence[x509.Certificate], depth: int, crl: x509.CertificateRevocationList, now: datetime
) -> tuple[int, int]:
    """``get_crl_score`` + ``crl_akid_check``: (score, chain index of the CRL issuer)."""
    cert = chain[depth]
    idp = extension(crl, ExtensionOID.ISSUING_DISTRIBUTION_POINT)
    if extension(crl, ExtensionOID.DELTA_CRL_INDICATOR) is not None:
        return 0, -1
    if idp is not None and (idp.indirect_crl or idp.only_some_reasons):
        return 0, -1
    if not names_equal(cert.issuer, crl.issuer):
        return 0, -1
    score = _ISSUER_NAME
    if _crl_critical_ok(crl):
        score |= _NOCRITICAL
    if _crl_time_error(crl, now) == 0:
        score |= _TIME
    last = len(chain) - 1
    index = depth if depth == last else depth + 1
    issuer = -1
    if _crl_matches_issuer(crl, chain[index]):
        score |= _AKID | _ISSUER_CERT
        issuer = index
    else:
        for later in range(index + 1, last + 1):
            if _crl_matches_issuer(crl, chain[later]):
                score |= _AKID | _SAME_PATH
                issuer = later
                break
    if not score & _AKID:
        return 0, -1
    if _in_scope(cert, crl, score):
        score |= _SCOPE
    return score, issuer


def check_certificate_crl(
    chain: Sequence[x509.Certificate], depth: int, crls: Sequence[SourcedCrl], now: datetime
) -> tuple[int, str] | None:
    """``check_cert_crl`` for ``chain[depth]``: None if fine, else (OpenSSL error, detail).

    CRL_CHECK_ALL calls it for every certificate; self-signed ones are skipped
    (OpenSSL 3.x). Of the stored CRLs the best-scoring one is used: issuer name
    and AKID must fit a certificate of the chain, a time-valid one beats an
    outdated one, and among equals the newest ``lastUpdate`` wins. Only then
    are its scope, time and signature checked, so a newer CRL with a bad
    signature spoils the check even when a good one is present (as OpenSSL).
    """
    cert = chain[depth]
    if self_signed(cert):
        return None
    best: SourcedCrl | None = None
    best_score, best_issuer = 0, -1
    for candidate in crls:
        score, issuer = _crl_score(chain, depth, candidate.crl, now)
        if score == 0 or score < best_score:
            continue
        if score == best_score and best is not None:
            if candidate.crl.last_update_utc <= best.crl.last_update_utc:
                continue
        best, best_score, best_issuer = candidate, score, issuer
    if best is None:
        return 3, ""
    crl = best.crl
    issuer_cert = chain[best_issuer]
    if best_issuer == depth and not self_issued(issuer_cert):
        return 33, best.source
    usage = key_usage(issuer_cert)
    if usage is not None and not usage.crl_sign:
        return 35, best.source
    if not best_score & _SCOPE:
        return 44, best.source
    if not best_score & _TIME:
        return _crl_time_error(crl, now), best.source
    if not signature_valid(issuer_cert.public_key(), crl):
        return 8, best.source
    if not _crl_critical_ok(crl):
        return 36, best.source
    entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if entry is not None and not _removed_from_crl(entry):
        return 23, f"listed in {best.source}"
    return None


def _removed_from_crl(entry: x509.RevokedCertificate) -> bool:
    try:
        reason = entry.extensions.get_extension_for_oid(CRLEntryExtensionOID.CRL_REASON).value
    except x509.ExtensionNotFound:
        return False
    return isinstance(reason, x509.CRLReason) and reason.reason == x509.ReasonFlags.remove_from_crl
