"""The chain of trust of the IBM Z signing key, checked as OpenSSL checks it.

pvimg calls ``X509_verify_cert`` with X509_STRICT | CRL_CHECK | CRL_CHECK_ALL |
TRUSTED_FIRST | CHECK_SS_SIGNATURE | POLICY_CHECK, depth 2, auth level 2,
purpose ANY, then demands a chain of at least two certificates
(``rust/pv/src/verify/helper.rs::store_setup``/``verify_chain``, se-format.md §3).

Why not ``cryptography.x509.verification``: its ``PolicyBuilder`` takes a
store, a time and a depth but no CRLs, so CRL_CHECK_ALL (a CRL for every chain
certificate, the heart of pvimg's check) cannot be expressed; its verifiers are
built for TLS server/client profiles, not OpenSSL's X509_STRICT with purpose
ANY; and it cannot report OpenSSL's error numbers, which the upstream tests
assert (3, 20, 23). So the steps of OpenSSL 3's
``verify_chain`` (``crypto/x509/x509_vfy.c``) are written out here, in its order,
each failure carrying OpenSSL's error number:

1. leaf key strength (``EE_KEY_TOO_SMALL``);
2. ``build_chain``: issuers by name + AKID + key type, trusted store first,
   preferring a time-valid candidate; a self-signed trusted anchor must end it;
   at most ``depth`` intermediates;
3. ``check_extensions``: CA-ness, X509_STRICT's RFC 5280 rules, path length,
   unknown critical extensions;
4. ``check_auth_level``: keys and signature digests of >= 112 bits;
5. ``check_revocation``: a CRL for every certificate but the self-signed
   anchor, chosen by OpenSSL's CRL score (issuer name, AKID, time, scope; the
   newest wins a tie), then its scope, time, signature and the serial
   (:mod:`protocol._hkd_chain_crl`);
6. ``internal_verify``: signatures top-down (the anchor's own with
   CHECK_SS_SIGNATURE) and validity windows.

Not modelled (documented gaps): certificate policy trees (no policy is
required, so OpenSSL only fails on malformed policy extensions), delta CRLs,
indirect CRLs, and name constraints (a chain using them is rejected rather than
half-checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID

from ._errors import VerificationError
from ._hkd_chain_crl import check_certificate_crl
from ._hkd_io import SourcedCert, SourcedCrl
from ._hkd_x509 import (
    MIN_SECURITY_BITS,
    authority_key_id,
    basic_constraints,
    extension,
    is_critical,
    key_usage,
    likely_issued,
    security_bits,
    self_issued,
    self_signed,
    signature_security_bits,
    signature_valid,
    subject_key_id,
)

MAX_DEPTH = 2
"""``SECURITY_CHAIN_MAX_LEN``: intermediates allowed (leaf and anchor not counted)."""
MIN_CHAIN_LEN = 2
"""helper.rs ``verify_chain``: one root and at least one more certificate."""

# OpenSSL's X509_V_ERR_* numbers and texts, and the sesim check each maps to.
_ERRORS: dict[int, tuple[str, str]] = {
    2: ("chain", "unable to get issuer certificate"),
    3: ("no-crl", "unable to get certificate CRL"),
    7: ("chain", "certificate signature failure"),
    8: ("crl-signature", "CRL signature failure"),
    9: ("chain", "certificate is not yet valid"),
    10: ("chain", "certificate has expired"),
    11: ("crl-outdated", "CRL is not yet valid"),
    12: ("crl-outdated", "CRL has expired"),
    18: ("chain", "self-signed certificate"),
    19: ("chain", "self-signed certificate in certificate chain"),
    20: ("chain", "unable to get local issuer certificate"),
    22: ("chain", "certificate chain too long"),
    23: ("revoked", "certificate revoked"),
    25: ("chain", "path length constraint exceeded"),
    32: ("chain", "key usage does not include certificate signing"),
    33: ("no-crl", "unable to get CRL issuer certificate"),
    34: ("chain", "unhandled critical extension"),
    35: ("chain", "key usage does not include CRL signing"),
    36: ("chain", "unhandled critical CRL extension"),
    44: ("no-crl", "Different CRL scope"),
    50: ("chain", "application verification failure (chain shorter than 2)"),
    66: ("weak-key", "EE certificate key too weak"),
    67: ("weak-key", "CA certificate key too weak"),
    68: ("weak-key", "CA signature digest algorithm too weak"),
    79: ("chain", "invalid CA certificate"),
    80: ("chain", "Path length invalid for non-CA cert"),
    81: ("chain", "Path length given without key usage keyCertSign"),
    82: ("chain", "Key usage keyCertSign invalid for non-CA cert"),
    83: ("chain", "Issuer name empty"),
    84: ("chain", "Subject name empty"),
    85: ("chain", "Missing Authority Key Identifier"),
    86: ("chain", "Missing Subject Key Identifier"),
    89: ("chain", "Basic Constraints of CA cert not marked critical"),
    90: ("chain", "Authority Key Identifier marked critical"),
    91: ("chain", "Subject Key Identifier marked critical"),
    92: ("chain", "CA cert does not include key usage extension"),
    93: ("chain", "Using cert extension requires at least X509v3"),
}

# Critical extensions OpenSSL understands (X509_supported_extension); name
# constraints are understood by OpenSSL but not evaluated here, so a chain
# using them is refused (see module docstring).
_SUPPORTED_CRITICAL = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.INHIBIT_ANY_POLICY,
    }
)
_NO_WELL_DEFINED_END = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)


class _Chain:
    """The chain under construction plus the context every failure reports."""

    def __init__(self, leaf: SourcedCert, now: datetime) -> None:
        self.certs: list[SourcedCert] = [leaf]
        self.now = now
        self.num_untrusted = 1

    def fail(self, code: int, depth: int, detail: str = "") -> VerificationError:
        check, text = _ERRORS[code]
        if check == "revoked":
            check = "signing-key-revoked" if depth == 0 else "ca-revoked"
        depth = min(depth, len(self.certs) - 1)
        where = self.certs[depth].source
        extra = f": {detail}" if detail else ""
        return VerificationError(
            f"{self.certs[0].source}: the IBM Z signing key could not be verified: {text}{extra} "
            f"(OpenSSL X509 error {code} at depth {depth}, {where})",
            check=check,
        )


def verify_chain(
    leaf: SourcedCert,
    *,
    untrusted: Sequence[SourcedCert],
    trusted: Sequence[SourcedCert],
    crls: Sequence[SourcedCrl],
    now: datetime,
) -> list[SourcedCert]:
    """Verify ``leaf`` up to a trusted root; return the chain, leaf first.

    Raises:
        VerificationError: the first failing OpenSSL step, with ``check`` one of
            ``chain``, ``no-crl``, ``crl-outdated``, ``crl-signature``,
            ``signing-key-revoked``, ``ca-revoked``, ``weak-key``.
    """
    chain = _Chain(leaf, now)
    if security_bits(leaf.cert.public_key()) < MIN_SECURITY_BITS:
        raise chain.fail(66, 0)
    _build_chain(chain, trusted, untrusted)
    _check_extensions(chain)
    _check_auth_level(chain)
    certs = [c.cert for c in chain.certs]
    for depth in range(len(certs)):
        problem = check_certificate_crl(certs, depth, crls, now)
        if problem is not None:
            raise chain.fail(problem[0], depth, problem[1])
    _internal_verify(chain)
    if len(chain.certs) < MIN_CHAIN_LEN:
        raise chain.fail(50, 0)
    return chain.certs


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def _time_valid(cert: x509.Certificate, now: datetime) -> bool:
    return _cert_time_error(cert, now) == 0


def _cert_time_error(cert: x509.Certificate, now: datetime) -> int:
    """``ossl_x509_check_cert_time``: 9 before, 10 after the window, else 0."""
    if now < cert.not_valid_before_utc:
        return 9
    not_after = cert.not_valid_after_utc
    if not_after != _NO_WELL_DEFINED_END and now > not_after:
        return 10
    return 0


def _best_issuer(chain: _Chain, cert: x509.Certificate, pool: Sequence[SourcedCert]) -> SourcedCert | None:
    """``get0_best_issuer_sk``: the first time-valid issuer, else the latest-expiring one."""
    in_chain = {_der(c.cert) for c in chain.certs}
    allow_dup = self_issued(cert) and len(chain.certs) == 1
    best: SourcedCert | None = None
    for candidate in pool:
        if not allow_dup and _der(candidate.cert) in in_chain:
            continue
        if not likely_issued(candidate.cert, cert):
            continue
        if _time_valid(candidate.cert, chain.now):
            return candidate
        if best is None or candidate.cert.not_valid_after_utc > best.cert.not_valid_after_utc:
            best = candidate
    return best


def _build_chain(chain: _Chain, trusted: Sequence[SourcedCert], untrusted: Sequence[SourcedCert]) -> None:
    trusted_ders = {_der(t.cert) for t in trusted}
    while True:
        current = chain.certs[-1]
        if _der(current.cert) in trusted_ders and self_issued(current.cert):
            return  # reached a self-signed trust anchor
        issuer = _best_issuer(chain, current.cert, trusted)
        if issuer is not None:
            chain.certs.append(issuer)
            if self_issued(issuer.cert):
                _check_depth(chain)
                return
            continue
        if chain.num_untrusted < len(chain.certs):
            # Once a trusted certificate is in, only the trust store may extend the chain.
            raise chain.fail(2, len(chain.certs) - 1)
        if self_issued(current.cert):
            raise chain.fail(18 if len(chain.certs) == 1 else 19, len(chain.certs) - 1)
        issuer = _best_issuer(chain, current.cert, untrusted)
        if issuer is None:
            raise chain.fail(20, len(chain.certs) - 1)
        chain.certs.append(issuer)
        chain.num_untrusted = len(chain.certs)
        _check_depth(chain)


def _check_depth(chain: _Chain) -> None:
    """Leaf plus ``MAX_DEPTH`` intermediates, not counting a trusted anchor."""
    untrusted_part = chain.num_untrusted
    if untrusted_part > MAX_DEPTH + 1:
        raise chain.fail(22, untrusted_part - 1)


def _check_ca(cert: x509.Certificate) -> int:
    """``X509_check_ca``: 1 for a CA by basicConstraints, 0 for not a CA, 3/4 for legacy hints."""
    usage = key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        return 0
    constraints = basic_constraints(cert)
    if constraints is not None:
        return 1 if constraints.ca else 0
    if cert.version == x509.Version.v1 and self_issued(cert):
        return 3
    return 4 if usage is not None else 0


def _check_extensions(chain: _Chain) -> None:
    num = len(chain.certs)
    path_len = 0
    for i, sourced in enumerate(chain.certs):
        cert = sourced.cert
        for ext in cert.extensions:
            if ext.oid == ExtensionOID.NAME_CONSTRAINTS:
                raise chain.fail(34, i, "name constraints are not evaluated by sesim")
            if ext.critical and ext.oid not in _SUPPORTED_CRITICAL:
                raise chain.fail(34, i, ext.oid.dotted_string)
        ca = _check_ca(cert)
        if (i == 0 and ca not in (0, 1)) or (i > 0 and ca != 1):
            raise chain.fail(79, i)
        if num > 1:
            _check_strict(chain, i, cert, num)
        constraints = basic_constraints(cert)
        limit = None if constraints is None else constraints.path_length
        if i > 1 and limit is not None and path_len > limit:
            raise chain.fail(25, i)
        if i > 0 and not self_issued(cert):
            path_len += 1


def _check_strict(chain: _Chain, i: int, cert: x509.Certificate, num: int) -> None:
    """X509_STRICT's RFC 5280 rules of ``check_extensions`` (OpenSSL 3.0)."""
    constraints = basic_constraints(cert)
    is_ca = constraints is not None and constraints.ca
    usage = key_usage(cert)
    cert_sign = usage is not None and usage.key_cert_sign
    if constraints is not None and constraints.path_length is not None:
        if not is_ca:
            raise chain.fail(80, i)
        if not cert_sign:
            raise chain.fail(81, i)
    if is_ca and not is_critical(cert, ExtensionOID.BASIC_CONSTRAINTS):
        raise chain.fail(89, i)
    if is_ca and usage is None:
        raise chain.fail(92, i)
    if not is_ca and cert_sign:
        raise chain.fail(82, i)
    if len(cert.issuer.rdns) == 0:
        raise chain.fail(83, i)
    crl_sign = usage is not None and usage.crl_sign
    has_san = extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME) is not None
    if (is_ca or crl_sign or not has_san) and len(cert.subject.rdns) == 0:
        raise chain.fail(84, i)
    if cert.version == x509.Version.v3:
        akid = authority_key_id(cert)
        if i + 1 < num and (akid is None or akid.key_identifier is None):
            raise chain.fail(85, i)
        if is_critical(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER):
            raise chain.fail(90, i)
        if is_critical(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER):
            raise chain.fail(91, i)
        if is_ca and subject_key_id(cert) is None:
            raise chain.fail(86, i)
    elif len(cert.extensions) > 0:
        raise chain.fail(93, i)


def _check_auth_level(chain: _Chain) -> None:
    """Auth level 2: issuer keys and every digest but the anchor's reach 112 bits."""
    num = len(chain.certs)
    for i, sourced in enumerate(chain.certs):
        if i > 0 and security_bits(sourced.cert.public_key()) < MIN_SECURITY_BITS:
            raise chain.fail(67, i)
        if i < num - 1 and signature_security_bits(sourced.cert) < MIN_SECURITY_BITS:
            raise chain.fail(68, i)


def _internal_verify(chain: _Chain) -> None:
    """Signatures from the anchor down, then each certificate's validity window."""
    n = len(chain.certs) - 1
    issuer = chain.certs[n].cert
    subject = issuer
    if not self_issued(issuer) and n > 0:
        n -= 1
        subject = chain.certs[n].cert
    while n >= 0:
        if subject is not issuer or self_signed(issuer):
            issuer_depth = n if subject is issuer else n + 1
            usage = key_usage(issuer)
            if not self_issued(issuer) and usage is not None and not usage.key_cert_sign:
                raise chain.fail(32, issuer_depth)
            if not signature_valid(issuer.public_key(), subject):
                raise chain.fail(7, n)
        code = _cert_time_error(subject, chain.now)
        if code:
            raise chain.fail(code, n)
        n -= 1
        if n >= 0:
            issuer, subject = subject, chain.certs[n].cert
