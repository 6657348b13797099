"""A test PKI for simulated servers: a root CA, an intermediate, an IBM Z signing key, HKDs.

Real host-key documents are signed by IBM's key under DigiCert's CAs, and the
matching private host keys live only inside real machines. A simulated server
needs both halves, so this module makes a complete stand-in PKI whose files
pass pvimg's verification (se-format.md §3) when given as::

    -k DIR/host.crt -C DIR/ibm.crt -C DIR/inter_ca.crt
    --crl DIR/ibm.crl --crl DIR/inter_ca.crl --crl DIR/root_ca.crl
    --root-ca DIR/root_ca.crt --offline

Shape (as the upstream generator ``rust/pv/tests/assets/cert/gen`` and the real
documents): root CA → intermediate CA (both RSA-3072, CA, keyCertSign +
cRLSign, critical basicConstraints) → IBM Z signing key (RSA-4096, the exact
subject pvimg looks for, digitalSignature, codeSigning) → per host an HKD (EC
P-521, keyAgreement critical, sha512WithRSA). Every certificate carries an
SKID, an AKID and a CRL distribution point naming the issuer's CRL file (a bare
file name, like the upstream test assets). Every level has a CRL; revoked
hosts are listed in ``ibm.crl``.

Keys and serial numbers come from the OS random source: this runs on the
command line (``sesim hostkey``), never inside the deterministic simulation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ._errors import FormatError, UsageError
from ._hkd import CertificateOptions
from ._pki_x509 import (
    CA_KEY_BITS,
    IBM_KEY_BITS,
    IBM_SIGNING_SUBJECT,
    ca_extensions,
    ca_subject,
    issue_certificate,
    issue_crl,
    issue_host_document,
    pem,
    pem_private_key,
    signing_key_extensions,
)

DEFAULT_DAYS = 365
_BACKDATE = timedelta(days=1)
_RESERVED = frozenset({"root_ca", "inter_ca", "ibm"})
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@frozen(kw_only=True)
class TestHost:
    """One simulated host: its host-key document and its private host key."""

    __test__ = False  # not a pytest test class

    name: str
    crt: Path
    key: Path


@frozen(kw_only=True)
class TestPki:
    """The files of a test PKI (see the module docstring)."""

    __test__ = False  # not a pytest test class

    directory: Path
    root_ca_crt: Path
    root_ca_key: Path
    root_ca_crl: Path
    inter_ca_crt: Path
    inter_ca_key: Path
    inter_ca_crl: Path
    ibm_crt: Path
    ibm_key: Path
    ibm_crl: Path
    hosts: tuple[TestHost, ...]

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file of the PKI, CAs first, then each host's document and key."""
        files = [
            self.root_ca_crt, self.root_ca_key, self.root_ca_crl,
            self.inter_ca_crt, self.inter_ca_key, self.inter_ca_crl,
            self.ibm_crt, self.ibm_key, self.ibm_crl,
        ]
        for host in self.hosts:
            files += [host.crt, host.key]
        return tuple(files)

    def certificate_options(self, *host_names: str) -> CertificateOptions:
        """Options that verify the named hosts' documents (all hosts if none named) offline."""
        names = host_names or tuple(h.name for h in self.hosts)
        by_name = {h.name: h for h in self.hosts}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise UsageError(f"no host named {', '.join(unknown)} in the test PKI")
        return CertificateOptions(
            host_key_documents=tuple(str(by_name[n].crt) for n in names),
            certs=(str(self.ibm_crt), str(self.inter_ca_crt)),
            crls=(str(self.ibm_crl), str(self.inter_ca_crl), str(self.root_ca_crl)),
            root_ca=str(self.root_ca_crt),
            offline=True,
        )


def _paths(directory: Path, stem: str) -> tuple[Path, Path, Path]:
    return directory / f"{stem}.crt", directory / f"{stem}.key", directory / f"{stem}.crl"


def _check_host_names(hosts: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in hosts:
        if not _HOST_NAME.fullmatch(name) or name in _RESERVED:
            raise UsageError(
                f"bad host name {name!r}: use letters, digits, '.', '_', '-' "
                f"(not {', '.join(sorted(_RESERVED))})"
            )
        if name in seen:
            raise UsageError(f"host name {name!r} given twice")
        seen.add(name)


def _refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise UsageError(f"refusing to overwrite existing files: {shown} (use --force)")


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def _window(now: datetime, days: int) -> tuple[datetime, datetime]:
    if days < 1:
        raise UsageError(f"validity must be at least 1 day, got {days}")
    start = (now if now.tzinfo else now.replace(tzinfo=timezone.utc)) - _BACKDATE
    return start, start + _BACKDATE + timedelta(days=days)


def create_test_pki(
    directory: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = ("host",),
    now: datetime,
    revoked: Sequence[str] = (),
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> TestPki:
    """Write a complete test PKI into ``directory`` (created if missing).

    Args:
        directory: where the files go.
        hosts: one HKD + private host key per name (``<name>.crt``/``.key``).
        now: start of validity (backdated by a day so that clocks may differ).
        revoked: host names to list in ``ibm.crl``.
        days: how long certificates and CRLs stay valid.
        force: overwrite existing files; without it any existing file is an error
            and nothing is written.

    Raises:
        UsageError: bad or duplicate host names, revoking an unknown host, or
            files already present without ``force``.
    """
    _check_host_names(hosts)
    unknown = [name for name in revoked if name not in hosts]
    if unknown:
        raise UsageError(f"cannot revoke {', '.join(unknown)}: not among the hosts")
    root = Path(directory)
    root_crt, root_key_path, root_crl = _paths(root, "root_ca")
    inter_crt, inter_key_path, inter_crl = _paths(root, "inter_ca")
    ibm_crt, ibm_key_path, ibm_crl = _paths(root, "ibm")
    host_files = [TestHost(name=n, crt=root / f"{n}.crt", key=root / f"{n}.key") for n in hosts]
    pki = TestPki(
        directory=root,
        root_ca_crt=root_crt, root_ca_key=root_key_path, root_ca_crl=root_crl,
        inter_ca_crt=inter_crt, inter_ca_key=inter_key_path, inter_ca_crl=inter_crl,
        ibm_crt=ibm_crt, ibm_key=ibm_key_path, ibm_crl=ibm_crl,
        hosts=tuple(host_files),
    )
    _refuse_overwrite(pki.files, force)
    start, end = _window(now, days)

    root_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
    root_cert = issue_certificate(
        subject=ca_subject("sesim Test Root CA"), public_key=root_key.public_key(), issuer=None,
        issuer_key=root_key, not_before=start, not_after=end, crl_uri=None,
        extensions=ca_extensions(), hash_algorithm=hashes.SHA512(),
    )
    inter_key = rsa.generate_private_key(public_exponent=65537, key_size=CA_KEY_BITS)
    inter_cert = issue_certificate(
        subject=ca_subject("sesim Test Intermediate CA"), public_key=inter_key.public_key(),
        issuer=root_cert, issuer_key=root_key, not_before=start, not_after=end, crl_uri="root_ca.crl",
        extensions=ca_extensions(), hash_algorithm=hashes.SHA512(),
    )
    ibm_key = rsa.generate_private_key(public_exponent=65537, key_size=IBM_KEY_BITS)
    ibm_cert = issue_certificate(
        subject=IBM_SIGNING_SUBJECT, public_key=ibm_key.public_key(), issuer=inter_cert,
        issuer_key=inter_key, not_before=start, not_after=end, crl_uri="inter_ca.crl",
        extensions=signing_key_extensions(),
        hash_algorithm=hashes.SHA512(),
    )
    hosts_made = {h.name: issue_host_document(h.name, ibm_cert, ibm_key, start, end) for h in host_files}
    revoked_serials = [hosts_made[name][0].serial_number for name in revoked]

    outputs: list[tuple[Path, bytes, bool]] = [
        (root_crt, pem(root_cert), False),
        (root_key_path, pem_private_key(root_key), True),
        (root_crl, pem(issue_crl(root_cert, root_key, [], start, end)), False),
        (inter_crt, pem(inter_cert), False),
        (inter_key_path, pem_private_key(inter_key), True),
        (inter_crl, pem(issue_crl(inter_cert, inter_key, [], start, end)), False),
        (ibm_crt, pem(ibm_cert), False),
        (ibm_key_path, pem_private_key(ibm_key), True),
        (ibm_crl, pem(issue_crl(ibm_cert, ibm_key, revoked_serials, start, end)), False),
    ]
    for host in host_files:
        cert, key = hosts_made[host.name]
        outputs += [(host.crt, pem(cert), False), (host.key, pem_private_key(key), True)]
    root.mkdir(parents=True, exist_ok=True)
    for path, data, private in outputs:
        _write(path, data, private=private, force=force)
    return pki


def add_test_host(
    directory: str | os.PathLike[str],
    name: str,
    *,
    now: datetime,
    days: int = DEFAULT_DAYS,
    force: bool = False,
) -> TestHost:
    """Add one host (``<name>.crt`` + ``<name>.key``) to an existing test PKI, signed by its ``ibm.key``.

    Raises:
        UsageError: bad name, or the files exist and ``force`` is not set.
        FormatError: the PKI's ``ibm.crt``/``ibm.key`` are missing or unreadable.
    """
    _check_host_names([name])
    root = Path(directory)
    host = TestHost(name=name, crt=root / f"{name}.crt", key=root / f"{name}.key")
    _refuse_overwrite([host.crt, host.key], force)
    ibm_cert, ibm_key = _load_signing_pair(root)
    start, end = _window(now, days)
    cert, key = issue_host_document(name, ibm_cert, ibm_key, start, end)
    _write(host.crt, pem(cert), private=False, force=force)
    _write(host.key, pem_private_key(key), private=True, force=force)
    return host


def _load_signing_pair(root: Path) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    crt_path, key_path, _ = _paths(root, "ibm")
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise FormatError(f"{exc.filename}: cannot read the test PKI's signing key: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{root}: the test PKI's ibm.crt/ibm.key do not load: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key() != cert.public_key():
        raise FormatError(f"{root}: ibm.key is not the RSA key of ibm.crt")
    return cert, key
