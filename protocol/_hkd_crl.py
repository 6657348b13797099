"""CRLs for host-key verification: downloading them and finding the IBM ones.

* Download (``helper.rs::download_first_crl_from_x509``): try each URI of the
  certificate's CRL distribution points in turn, HTTP GET with a 3 s timeout
  and user agent ``s390-tools-pv-crl``; the first URI that yields a parsable
  CRL wins, failures are silent (se-format.md §3, chain check).
* Lookup by the signing key's subject with pvimg's two fallbacks
  (``verify.rs::quirk_crls``, se-format.md §3 item 5): the Armonk locality
  replaced by Poughkeepsie, and the RDNs reordered to C, O, OU, L, ST, CN.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from http.client import HTTPException

from cryptography import x509
from cryptography.x509.oid import NameOID

from ._errors import FormatError
from ._hkd_io import SourcedCrl, read_crls
from ._hkd_x509 import crl_distribution_uris, names_equal

CrlFetcher = Callable[[str], "bytes | None"]
"""Given a distribution-point URI, the bytes found there or None."""

CRL_TIMEOUT_S = 3.0
CRL_USER_AGENT = "s390-tools-pv-crl"
_MAX_CRL_BYTES = 16 * 1024 * 1024


def fetch_crl_http(uri: str) -> bytes | None:
    """Download ``uri`` the way pvimg's curl handle does, or return None.

    Only ``http://`` and ``https://`` are tried (redirects are followed);
    anything else, an error, or a transfer that takes longer than 3 s in all
    gives None, so the caller moves on to the next URI. This touches the
    network and the wall clock, so only the command line uses it; tests and
    the simulation pass their own fetcher.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return None
    request = urllib.request.Request(uri, headers={"User-Agent": CRL_USER_AGENT})
    deadline = time.monotonic() + CRL_TIMEOUT_S
    try:
        with urllib.request.urlopen(request, timeout=CRL_TIMEOUT_S) as response:  # noqa: S310
            chunks = []
            size = 0
            while chunk := response.read(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_CRL_BYTES or time.monotonic() > deadline:
                    return None
            return b"".join(chunks)
    except (OSError, ValueError, HTTPException, urllib.error.URLError):
        return None


def download_first_crls(cert: x509.Certificate, fetch: CrlFetcher) -> list[SourcedCrl]:
    """The CRLs at the first distribution point of ``cert`` that yields any.

    Returns an empty list when no URI works (pvimg's ``Ok(None)``).
    """
    for uri in crl_distribution_uris(cert):
        data = fetch(uri)
        if data is None:
            continue
        try:
            crls = read_crls(data, uri)
        except FormatError:
            continue
        if crls:
            return crls
    return []


_ARMONK = "Armonk"
_POUGHKEEPSIE = "Poughkeepsie"
_REORDER = (
    NameOID.COUNTRY_NAME,
    NameOID.ORGANIZATION_NAME,
    NameOID.ORGANIZATIONAL_UNIT_NAME,
    NameOID.LOCALITY_NAME,
    NameOID.STATE_OR_PROVINCE_NAME,
    NameOID.COMMON_NAME,
)


def _first(name: x509.Name, oid: x509.ObjectIdentifier) -> x509.NameAttribute | None:
    attrs = name.get_attributes_for_oid(oid)
    return attrs[0] if attrs else None


def armonk_locality_fixup(name: x509.Name) -> x509.Name | None:
    """The name with L=Armonk replaced by L=Poughkeepsie, or None if L is not Armonk."""
    locality = _first(name, NameOID.LOCALITY_NAME)
    if locality is None or locality.value != _ARMONK:
        return None
    rdns = []
    for rdn in name.rdns:
        attrs = [
            x509.NameAttribute(NameOID.LOCALITY_NAME, _POUGHKEEPSIE)
            if attr.oid == NameOID.LOCALITY_NAME
            else attr
            for attr in rdn
        ]
        rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def reorder_names(name: x509.Name) -> x509.Name:
    """The first C, O, OU, L, ST, CN of ``name`` in that order (``reorder_x509_names``)."""
    attrs = [attr for oid in _REORDER if (attr := _first(name, oid)) is not None]
    return x509.Name(attrs)


def crls_by_issuer(crls: Sequence[SourcedCrl], name: x509.Name) -> list[SourcedCrl]:
    """``X509_STORE_CTX_get1_crls``: every stored CRL whose issuer equals ``name``."""
    return [c for c in crls if names_equal(c.crl.issuer, name)]


def signing_key_crls(crls: Sequence[SourcedCrl], subject: x509.Name) -> list[SourcedCrl]:
    """The stored CRLs of the IBM signing key, with pvimg's fallbacks in its order.

    The first lookup that finds anything wins: the subject as is; Armonk
    replaced by Poughkeepsie; that reordered; the subject reordered.
    """
    candidates = [subject]
    fixed = armonk_locality_fixup(subject)
    if fixed is not None:
        candidates += [fixed, reorder_names(fixed)]
    candidates.append(reorder_names(subject))
    for name in candidates:
        found = crls_by_issuer(crls, name)
        if found:
            return found
    return []
