"""Attacks on the boot: the SE header, the image pages, the unpack sequence, the host key (se-format.md §2, §3).

The hostile host drives the switch into secure mode itself
(:class:`sesim._attacks_arena.HostileBoot`) and changes one step. The
victim's kernel is plaintext only its owner knows: it is scanned for in
everything the host obtains (the image it loads, the UVCBs it reads back).
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

from protocol import (
    CertificateOptions,
    HostKeyDocumentWarning,
    TestPki,
    UvcCommand,
    VerificationError,
    create_test_pki,
    load_host_keys,
)
from protocol._crypto import ec_private_from_scalar

from ._attacks_arena import PAGE, Arena, derive, kernel_of
from ._attacks_base import attack
from ._attacks_rigs import HostileBoot
from ._hostile import Defence

HEADER_TAG = Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x010A, 0x0036)
NO_KEY_SLOT = Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x0108, 0x0005)
NOT_VERIFIED = Defence.rc(UvcCommand.CPU_SET_STATE, 0x0003)
"""OPR_LOAD on a configuration whose image did not verify (machine._uv_cpu)."""
PKI_NOW = datetime(2025, 6, 1, tzinfo=UTC)
"""The fixed time of the test PKI and its checks (no wall clock in an attack)."""


def _verify(rrc: int) -> Defence:
    return Defence.rc(UvcCommand.VERIFY_IMG, 0x0102, rrc)


def _boot(a: Arena, label: str = "victim", **image: object) -> HostileBoot:
    boot = HostileBoot(a, a.image(label, **image), name=label)  # type: ignore[arg-type]
    boot.load()
    return boot


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def _adopt(a: Arena, boot: HostileBoot) -> None:
    boot.victim(kernel=kernel_of(boot.name))


@attack(
    "flip-bit-se-header", area="boot", title="flip a bit in the SE header (digest, entry PSW, dump flag)",
    defence="the header is AES-GCM with the whole plaintext part as AAD: rc 0x010a rrc 0x0036; never started",
    expected=(HEADER_TAG,),
)  # fmt: skip
async def flip_bit_se_header(a: Arena) -> None:
    """Load the image and create the configuration; give SET_SEC_CONF_PARAMS a header with one bit
    flipped: in the page-list digest (plaintext, AAD), in the encrypted area (the entry PSW), in
    the plaintext control flags (turn on "allow dumping")."""
    boot = _boot(a)
    header = boot.header
    encrypted = len(header) - 16 - 0x80
    for what, offset, mask in (("the PLD", 0xE0, 0x01), ("the encrypted PSW", encrypted + 0x68, 0x01),
                               ("the PCF (allow dumping)", 0x3C, 0x20)):  # fmt: skip
        a.host.expect(f"SET_SEC_CONF_PARAMS with a bit of {what} flipped", HEADER_TAG,
                      boot.set_params(_flip(header, offset, mask)))  # fmt: skip
    _adopt(a, boot)


@attack(
    "flip-bit-image-page", area="boot", title="flip a bit in an encrypted image page before unpacking",
    defence="VERIFY_IMG compares the page-list digest: rc 0x0102 rrc 0x001b; the CPU cannot be started",
    expected=(_verify(0x001B), NOT_VERIFIED),
)  # fmt: skip
async def flip_bit_image_page(a: Arena) -> None:
    """Flip one bit of the first kernel page in guest memory, then SET_SEC_CONF_PARAMS, UNPACK_IMG
    of every page, VERIFY_IMG, and start the CPU anyway."""
    boot = _boot(a)
    assert boot.space is not None
    gaddr = boot.pages()[0][0]
    frame = boot.space.translate(gaddr) or 0
    a.host.write(frame, _flip(a.tb.read(frame, PAGE), 0x123))
    assert boot.set_params() is None and boot.unpack() is None
    a.host.expect("VERIFY_IMG after a changed page", _verify(0x001B), boot.verify())
    a.host.expect("start the CPU anyway", NOT_VERIFIED, boot.start())
    _adopt(a, boot)


@attack(
    "unpack-out-of-order", area="boot", title="unpack the image's pages in another order",
    defence="the address-list digest is over the order of unpacking: VERIFY_IMG rc 0x0102 rrc 0x001a",
    expected=(_verify(0x001A), NOT_VERIFIED),
)  # fmt: skip
async def unpack_out_of_order(a: Arena) -> None:
    """UNPACK_IMG every page, with the first two swapped; VERIFY_IMG; start the CPU anyway."""
    boot = _boot(a)
    pages = boot.pages()
    pages[0], pages[1] = pages[1], pages[0]
    assert boot.set_params() is None and boot.unpack(pages) is None
    a.host.expect("VERIFY_IMG after unpacking out of order", _verify(0x001A), boot.verify())
    a.host.expect("start the CPU anyway", NOT_VERIFIED, boot.start())
    _adopt(a, boot)


@attack(
    "unpack-with-wrong-tweak", area="boot", title="unpack an image page with another tweak",
    defence="the tweak-list digest covers every tweak: VERIFY_IMG rc 0x0102 rrc 0x001c",
    expected=(_verify(0x001C), NOT_VERIFIED),
)  # fmt: skip
async def unpack_with_wrong_tweak(a: Arena) -> None:
    """UNPACK_IMG every page, giving the first one the tweak of the second (it decrypts to other
    bytes, a change the host cannot aim but would hope to slip in); VERIFY_IMG; start anyway."""
    boot = _boot(a)
    pages = boot.pages()
    pages[0] = (pages[0][0], pages[1][1])
    assert boot.set_params() is None and boot.unpack(pages) is None
    a.host.expect("VERIFY_IMG after a changed tweak", _verify(0x001C), boot.verify())
    a.host.expect("start the CPU anyway", NOT_VERIFIED, boot.start())
    _adopt(a, boot)


@attack(
    "unpack-twice", area="boot", title="unpack a page twice, and a copy of a page at another address",
    defence="a secure page cannot be unpacked again (rc 0x0102); an extra page changes the page count "
            "(VERIFY_IMG rrc 0x001d)",
    expected=(Defence.rc(UvcCommand.UNPACK_IMG, 0x0102), _verify(0x001D), NOT_VERIFIED),
)  # fmt: skip
async def unpack_twice(a: Arena) -> None:
    """UNPACK_IMG every page; UNPACK_IMG the first page again; copy the first page's ciphertext to
    a free address and unpack it there with the same tweak; VERIFY_IMG; start anyway."""
    boot = _boot(a)
    assert boot.space is not None
    pages = boot.pages()
    assert boot.set_params() is None and boot.unpack() is None
    a.host.expect("UNPACK_IMG the first page again", Defence.rc(UvcCommand.UNPACK_IMG, 0x0102), boot.unpack(pages[:1]))
    boot.refused = ""
    spare = 0xE0000
    a.host.write(boot.space.translate(spare) or 0, boot.data[pages[0][0] : pages[0][0] + PAGE])
    assert boot.unpack([(spare, pages[0][1])]) is None
    a.host.expect("VERIFY_IMG with an extra page", _verify(0x001D), boot.verify())
    a.host.expect("start the CPU anyway", NOT_VERIFIED, boot.start())
    _adopt(a, boot)


@attack(
    "unpack-missing-pages", area="boot", title="leave out pages of the image, or skip unpack and verify",
    defence="no start before VERIFY_IMG (CPU_SET_STATE rc 0x0003); a missing page changes the page count "
            "(rrc 0x001d)",
    expected=(NOT_VERIFIED, _verify(0x001D)),
)  # fmt: skip
async def unpack_missing_pages(a: Arena) -> None:
    """Guest A: SET_SEC_CONF_PARAMS, no UNPACK_IMG at all, start the CPU. Guest B: unpack all pages
    but the last, start without VERIFY_IMG, then VERIFY_IMG, then start."""
    boot = _boot(a)
    assert boot.set_params() is None
    a.host.expect("start without unpacking anything", NOT_VERIFIED, boot.start())
    _adopt(a, boot)
    other = _boot(a, "victim-b")
    assert other.set_params() is None and other.unpack(other.pages()[:-1]) is None
    a.host.expect("start without VERIFY_IMG", NOT_VERIFIED, other.start())
    other.refused = ""
    a.host.expect("VERIFY_IMG with a page missing", _verify(0x001D), other.verify())
    a.host.expect("start after the failed verify", NOT_VERIFIED, other.start())
    _adopt(a, other)


@attack(
    "boot-without-key-slot", area="boot", title="boot an image on a server it has no key slot for",
    defence="the UV finds no slot for its host key: SET_SEC_CONF_PARAMS rc 0x0108 rrc 0x0005; never started",
    expected=(NO_KEY_SLOT,),
)  # fmt: skip
async def boot_without_key_slot(a: Arena) -> None:
    """Build the victim's image for another server's host key; boot it on this server."""
    other = ec_private_from_scalar(derive("another-server", 64)).public_key()
    boot = _boot(a, host_key=other)
    a.host.expect("SET_SEC_CONF_PARAMS of an image for another server", NO_KEY_SLOT, boot.set_params())
    _adopt(a, boot)


@functools.cache
def _revoked_pki() -> TestPki:
    """A test PKI with two hosts, ``host`` and ``revoked`` (listed in the IBM signing key's CRL); once a process."""
    return create_test_pki(Path(tempfile.mkdtemp(prefix="sesim-attack-pki-")), hosts=("host", "revoked"),
                           now=PKI_NOW, revoked=("revoked",))  # fmt: skip


@attack(
    "revoked-hkd", area="boot", title="have the image built for a revoked host-key document",
    defence="image creation verifies the HKD chain and CRLs (check hkd-revoked); an image made without "
            "verification is still only for that key's server (rc 0x0108 here)",
    expected=(Defence.check("hkd-revoked"), NO_KEY_SLOT),
)  # fmt: skip
async def revoked_hkd(a: Arena) -> None:
    """Offer the customer the HKD of a revoked host: verify it as ``pvimg create`` does (offline, the
    PKI's CRLs). Then skip verification (``--no-verify``), build the image for that key, and boot it
    on this server."""
    pki = _revoked_pki()
    try:
        load_host_keys(pki.certificate_options("revoked"), now=PKI_NOW)
        fired = None
    except VerificationError as exc:
        fired = a.host.saw(Defence.check(exc.check))
    a.host.expect("verify the revoked HKD", Defence.check("hkd-revoked"), fired)
    options = CertificateOptions(host_key_documents=(str(pki.hosts[1].crt),), no_verify=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HostKeyDocumentWarning)
        (document,) = load_host_keys(options, now=PKI_NOW)
    boot = _boot(a, host_key=document.public_key)
    a.host.expect("boot the unverified image on this server", NO_KEY_SLOT, boot.set_params())
    _adopt(a, boot)
