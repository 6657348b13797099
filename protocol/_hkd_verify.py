"""``CertVerifier``: pvimg's host-key document verifier (``rust/pv/src/verify.rs``).

Building a verifier (``CertVerifier::new``, se-format.md §3) loads the trust
store (``--root-ca`` or the system store; CRLs in the root file count too),
every ``--crl``, the CRLs inside ``--cert`` files, and, unless offline, the CRL
behind each certificate's distribution point; then it picks the one IBM Z
signing key among the certificates and checks its chain
(:mod:`protocol._hkd_chain`). Verifying a host-key document then runs the
per-HKD checks of se-format.md §3 items 1-5, in pvimg's order.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Sequence
from datetime import datetime

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ._errors import FormatError, VerificationError
from ._hkd_chain import verify_chain
from ._hkd_crl import CrlFetcher, download_first_crls, signing_key_crls
from ._hkd_io import SourcedCert, SourcedCrl, read_certificates, read_crls, read_file
from ._hkd_x509 import (
    MIN_SECURITY_BITS,
    akid_matches,
    authority_key_id,
    security_bits,
    signature_valid,
    time_state,
)

# helper.rs is_ibm_signing_cert: exactly these six entries (se-format.md §3).
_IBM_ENTRY_COUNT = 6
_IBM_FIXED = (
    (NameOID.COUNTRY_NAME, ("US",)),
    (NameOID.STATE_OR_PROVINCE_NAME, ("New York",)),
    (NameOID.LOCALITY_NAME, ("Poughkeepsie", "Armonk")),
    (NameOID.ORGANIZATION_NAME, ("International Business Machines Corporation",)),
    (NameOID.COMMON_NAME, ("International Business Machines Corporation",)),
)
_IBM_OU_SUFFIX = "Key Signing Service"


def is_ibm_signing_cert(cert: x509.Certificate) -> bool:
    """Does the subject name an IBM Z signing key (``helper.rs::is_ibm_signing_cert``)?

    Six entries; the first C, ST, L, O, CN hold exactly the IBM values (L may
    be Poughkeepsie or Armonk) and the first OU ends with "Key Signing Service".
    """
    subject = cert.subject
    if len(list(subject)) != _IBM_ENTRY_COUNT:
        return False
    for oid, allowed in _IBM_FIXED:
        attrs = subject.get_attributes_for_oid(oid)
        if not attrs or attrs[0].value not in allowed:
            return False
    units = subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return bool(units) and str(units[0].value).endswith(_IBM_OU_SUFFIX)


def _system_trust_store() -> list[SourcedCert]:
    """The system's trusted roots, as ``X509_STORE_set_default_paths`` finds them.

    The CA bundle file is read; the hashed directory only if there is no bundle.
    """
    paths = ssl.get_default_verify_paths()
    found: list[SourcedCert] = []
    for cafile in dict.fromkeys(p for p in (paths.cafile, paths.openssl_cafile) if p):
        if os.path.isfile(cafile):
            found += _quiet_certificates(cafile)
    if not found:
        for capath in dict.fromkeys(p for p in (paths.capath, paths.openssl_capath) if p):
            if os.path.isdir(capath):
                for entry in sorted(os.listdir(capath)):
                    found += _quiet_certificates(os.path.join(capath, entry))
    return found


def _quiet_certificates(path: str) -> list[SourcedCert]:
    try:
        return read_certificates(read_file(path, "certificate"), path)
    except FormatError:
        return []


def _load_root_ca(path: str) -> tuple[list[SourcedCert], list[SourcedCrl]]:
    """``helper.rs::load_root_ca``: the certificates of the file, and any CRLs beside them."""
    data = read_file(path, "root CA certificate")
    certs = read_certificates(data, path)
    if not certs:
        raise FormatError(f"{path}: cannot load root CA certificate: no certificate found")
    try:
        crls = read_crls(data, path)
    except FormatError:
        crls = []
    return certs, crls


def _load_crl_file(path: str) -> list[SourcedCrl]:
    crls = read_crls(read_file(path, "CRL"), path)
    if not crls:
        raise FormatError(f"{path}: cannot load CRL: no CRL found")
    return crls


def _crls_beside_cert(path: str) -> list[SourcedCrl]:
    """CRLs inside a ``--cert`` file (``X.chained.crt``); problems are ignored, as upstream."""
    try:
        return read_crls(read_file(path, "certificate"), path)
    except FormatError:
        return []


def _dedupe(crls: Sequence[SourcedCrl]) -> tuple[SourcedCrl, ...]:
    seen: set[bytes] = set()
    unique = []
    for sourced in crls:
        der = sourced.crl.public_bytes(Encoding.DER)
        if der not in seen:
            seen.add(der)
            unique.append(sourced)
    return tuple(unique)


@frozen(kw_only=True)
class CertVerifier:
    """A verified IBM Z signing key plus the CRL store, ready to check HKDs."""

    signing_key: SourcedCert
    chain: tuple[SourcedCert, ...]
    crls: tuple[SourcedCrl, ...]
    offline: bool
    now: datetime
    fetch_crl: CrlFetcher

    @classmethod
    def create(
        cls,
        *,
        certs: Sequence[str],
        crls: Sequence[str],
        root_ca: str | None,
        offline: bool,
        now: datetime,
        fetch_crl: CrlFetcher,
    ) -> CertVerifier:
        """Load everything and verify the IBM Z signing key's chain (``CertVerifier::new``).

        Raises:
            FormatError: a file cannot be read or parsed.
            VerificationError: ``no-ibm-signing-key``, ``many-ibm-signing-keys``,
                or a chain failure (see :func:`protocol._hkd_chain.verify_chain`).
        """
        if root_ca is None:
            trusted, store = _system_trust_store(), []
        else:
            trusted, store = _load_root_ca(os.fspath(root_ca))
        for path in crls:
            store += _load_crl_file(os.fspath(path))
        for path in certs:
            store += _crls_beside_cert(os.fspath(path))
        untrusted: list[SourcedCert] = []
        for path in certs:
            loaded = read_certificates(read_file(path, "certificate"), os.fspath(path))
            if not offline:
                for sourced in loaded:
                    store += download_first_crls(sourced.cert, fetch_crl)
            untrusted += loaded
        signing = [c for c in untrusted if is_ibm_signing_cert(c.cert)]
        if not signing:
            names = ", ".join(dict.fromkeys(os.fspath(p) for p in certs)) or "none"
            raise VerificationError(
                f"no IBM Z signing key among the certificates ({names}); specify one IBM Z signing key",
                check="no-ibm-signing-key",
            )
        if len(signing) > 1:
            names = ", ".join(c.source for c in signing)
            raise VerificationError(
                f"more than one IBM Z signing key ({names}); specify only one IBM Z signing key",
                check="many-ibm-signing-keys",
            )
        others = [c for c in untrusted if not is_ibm_signing_cert(c.cert)]
        store_crls = _dedupe(store)
        chain = verify_chain(signing[0], untrusted=others, trusted=trusted, crls=store_crls, now=now)
        return cls(
            signing_key=signing[0],
            chain=tuple(chain),
            crls=store_crls,
            offline=offline,
            now=now,
            fetch_crl=fetch_crl,
        )

    def verify(self, hkd: x509.Certificate, source: str) -> None:
        """Check one host-key document (``HkdVerifier for CertVerifier``).

        Raises:
            VerificationError: ``weak-key``, ``hkd-not-yet-valid``,
                ``hkd-expired``, ``hkd-akid``, ``hkd-signature``, ``no-crl`` or
                ``hkd-revoked``, in that order of checking.
        """
        signing = self.signing_key.cert
        prefix = f"{source}: host-key document verification failed"
        bits = security_bits(hkd.public_key())
        if bits < MIN_SECURITY_BITS:
            raise VerificationError(
                f"{prefix}: not enough bits of security ({bits}, {MIN_SECURITY_BITS} expected)",
                check="weak-key",
            )
        state = time_state(self.now, hkd.not_valid_before_utc, hkd.not_valid_after_utc)
        if state < 0:
            raise VerificationError(
                f"{prefix}: before its validity period (not before {hkd.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)",
                check="hkd-not-yet-valid",
            )
        if state > 0:
            raise VerificationError(
                f"{prefix}: after its validity period (expired {hkd.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)",
                check="hkd-expired",
            )
        if not akid_matches(authority_key_id(hkd), signing):
            raise VerificationError(
                f"{prefix}: Authority Key Id mismatch with the IBM Z signing key {self.signing_key.source}",
                check="hkd-akid",
            )
        # No issuer-name comparison: the Armonk quirk (se-format.md §3 item 4).
        if not signature_valid(signing.public_key(), hkd):
            raise VerificationError(
                f"{prefix}: signature does not verify under the IBM Z signing key {self.signing_key.source}",
                check="hkd-signature",
            )
        candidates = signing_key_crls(self.crls, signing.subject)
        if not self.offline:
            candidates += download_first_crls(hkd, self.fetch_crl)
        verified, rejected = [], []
        for candidate in candidates:
            problem = self._crl_problem(candidate.crl)
            if problem is None:
                verified.append(candidate)
            else:
                rejected.append(f"{candidate.source}: {problem}")
        if not verified:
            why = f" (rejected: {'; '.join(rejected)})" if rejected else ""
            raise VerificationError(
                f"{prefix}: no valid CRL found for the IBM Z signing key {self.signing_key.source}{why}",
                check="no-crl",
            )
        for candidate in verified:
            if candidate.crl.get_revoked_certificate_by_serial_number(hkd.serial_number) is not None:
                raise VerificationError(
                    f"{prefix}: host-key document is revoked (listed in {candidate.source})",
                    check="hkd-revoked",
                )

    def _crl_problem(self, crl: x509.CertificateRevocationList) -> str | None:
        """``helper.rs::verify_crl``: validity window, AKID, signature by the signing key."""
        if crl.next_update_utc is None:
            return "no validity period"
        if time_state(self.now, crl.last_update_utc, crl.next_update_utc) != 0:
            return "outside its validity period"
        if not akid_matches(authority_key_id(crl), self.signing_key.cert):
            return "Authority Key Id mismatch"
        if not signature_valid(self.signing_key.cert.public_key(), crl):
            return "signature does not verify"
        return None
