"""Secured components: per-page AES-XTS, tweaks and the PLD/ALD/TLD digests.

Everything here follows ``rust/pvimg/src/pv_utils/secured_comp.rs`` and
``reference/se-format.md`` §2.3:

* A component is cut into 4096-byte pages (the last one zero-padded); an
  empty component is one zero page.
* Page *i* of a component is encrypted with AES-256-XTS under the 64-byte
  image key and the 16-byte tweak ``BE128(prefix ‖ 0^8) + i·4096``: bytes
  0..7 are the component's tweak prefix, bytes 8..15 the page's **byte
  offset** inside the component.
* ``tweak prefix = BE16(kind) ‖ 6 random bytes`` (``CompTweakV1``).
* Over all secure pages in image order: PLD = SHA-512 of every output page
  (ciphertext; plaintext if component encryption is off), ALD = SHA-512 of
  every page's guest address as BE64, TLD = SHA-512 of every tweak, and nep
  the number of pages.

:class:`PageDigests` is the running form of those digests. The image
builder feeds it while writing, :func:`protocol.verify_image` while
checking, and the simulated ultravisor (UNPACK_IMG / VERIFY_IMG,
se-format.md §6 step 3) one page at a time as the pages arrive.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator

from attrs import frozen
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ._errors import UsageError

PAGE_SIZE = 4096
"""Chunk size of secured components (``CHUNK_SIZE_V1``)."""
XTS_KEY_LEN = 64
TWEAK_LEN = 16
DIGEST_LEN = 64
TWEAK_RANDOM_LEN = 6


class ComponentKind(enum.IntEnum):
    """Component kinds; the secure ones are the tweak-prefix kind field.

    Values are pvimg's (``se_img_comps.rs::ComponentKind``); their order is
    the order of the components in an image.
    """

    SHORT_PSW = 10
    IMG_METADATA = 20
    STAGE3A = 30
    KERNEL = 40
    RAMDISK = 50
    CMDLINE = 60
    STAGE3B = 70
    SE_HEADER = 80
    IPIB = 90

    @property
    def label(self) -> str:
        """A short lowercase name (``kernel``, ``ramdisk``, ...)."""
        return self.name.lower().replace("_", "-")


def tweak_prefix(kind: int, random6: bytes) -> int:
    """The u64 tweak prefix ``BE16(kind) ‖ random6`` (``CompTweakPrefV1``).

    Raises:
        UsageError: ``random6`` is not 6 bytes or ``kind`` not a u16.
    """
    if len(random6) != TWEAK_RANDOM_LEN:
        raise UsageError(f"tweak random part must be {TWEAK_RANDOM_LEN} bytes, got {len(random6)}")
    if not 0 <= kind <= 0xFFFF:
        raise UsageError(f"component kind {kind} does not fit in 16 bits")
    return int.from_bytes(kind.to_bytes(2, "big") + bytes(random6), "big")


def page_tweak(prefix: int, offset: int) -> bytes:
    """The 16-byte XTS tweak of the page at byte ``offset`` of a component.

    ``BE128(prefix ‖ 0^8) + offset`` (se-format.md §2.3); the same value the
    hypervisor passes to UNPACK as ``tweak[0] = prefix, tweak[1] = offset``.
    """
    return ((prefix << 64) + offset).to_bytes(TWEAK_LEN, "big")


def padded_size(size: int) -> int:
    """Bytes a component occupies once padded: whole pages, at least one."""
    return max(PAGE_SIZE, -(-size // PAGE_SIZE) * PAGE_SIZE)


def xts_algorithm(xts_key: bytes) -> algorithms.AES:
    """The AES algorithm object for a 64-byte XTS key, checked once.

    Raises:
        UsageError: the key is not 64 bytes, or its two halves are equal
            (OpenSSL 3 and pyca refuse such keys, se-format.md §2.3).
    """
    if len(xts_key) != XTS_KEY_LEN:
        raise UsageError(f"image (XTS) key must be {XTS_KEY_LEN} bytes, got {len(xts_key)}")
    if xts_key[:32] == xts_key[32:]:
        raise UsageError("image (XTS) key halves must differ (OpenSSL rejects equal halves)")
    return algorithms.AES(bytes(xts_key))


def _check_page(page: bytes) -> None:
    if len(page) != PAGE_SIZE:
        raise UsageError(f"a page must be {PAGE_SIZE} bytes, got {len(page)}")


def encrypt_page(xts_key: bytes | algorithms.AES, tweak: bytes, page: bytes) -> bytes:
    """AES-256-XTS-encrypt one 4096-byte page under ``tweak``.

    ``xts_key`` may be the raw 64 bytes or the result of :func:`xts_algorithm`
    (faster when encrypting many pages).
    """
    _check_page(page)
    alg = xts_key if isinstance(xts_key, algorithms.AES) else xts_algorithm(xts_key)
    return Cipher(alg, modes.XTS(tweak)).encryptor().update(page)


def decrypt_page(xts_key: bytes | algorithms.AES, tweak: bytes, page: bytes) -> bytes:
    """The inverse of :func:`encrypt_page`, as the ultravisor does on UNPACK."""
    _check_page(page)
    alg = xts_key if isinstance(xts_key, algorithms.AES) else xts_algorithm(xts_key)
    return Cipher(alg, modes.XTS(tweak)).decryptor().update(page)


@frozen(kw_only=True)
class ComponentDigests:
    """Final PLD/ALD/TLD and page count, as stored in the SE header."""

    pld: bytes
    ald: bytes
    tld: bytes
    nep: int


class PageDigests:
    """Running PLD/ALD/TLD and page count over secure pages.

    Feed pages in the order they are unpacked; the digests depend on it.
    This is the only mutable class of the protocol layer: a hash context
    cannot be frozen. It holds no keys.
    """

    __slots__ = ("_ald", "_nep", "_pld", "_tld")

    def __init__(self) -> None:
        self._pld = hashlib.sha512()
        self._ald = hashlib.sha512()
        self._tld = hashlib.sha512()
        self._nep = 0

    def update(self, gaddr: int, tweak: bytes, page: bytes) -> None:
        """Account one page: its guest address, tweak and output bytes.

        ``page`` is what the image holds at ``gaddr`` (the ciphertext, or the
        plaintext when component encryption is off), exactly 4096 bytes.
        """
        self._pld.update(page)
        self._ald.update(gaddr.to_bytes(8, "big"))
        self._tld.update(tweak)
        self._nep += 1

    @property
    def pld(self) -> bytes:
        return self._pld.digest()

    @property
    def ald(self) -> bytes:
        return self._ald.digest()

    @property
    def tld(self) -> bytes:
        return self._tld.digest()

    @property
    def nep(self) -> int:
        return self._nep

    def finish(self) -> ComponentDigests:
        """The digests so far (the object stays usable)."""
        return ComponentDigests(pld=self.pld, ald=self.ald, tld=self.tld, nep=self._nep)


def secure_component_chunks(
    data: bytes | memoryview,
    *,
    addr: int,
    prefix: int,
    alg: algorithms.AES | None,
    digests: PageDigests,
    chunk_pages: int = 256,
) -> Iterator[memoryview]:
    """Encrypt one secure component, yielding its output a chunk at a time.

    The hot loop of image creation: per page one XTS cipher encrypting
    straight into a reused buffer, and three hash updates; no other per-page
    objects. Each yielded chunk (up to ``chunk_pages`` pages) is a view into
    that buffer, valid only until the next iteration: write it out at once.

    Args:
        data: the component's unpadded bytes (bytes, memoryview or mmap).
        addr: its guest address (4096-aligned).
        prefix: its u64 tweak prefix.
        alg: from :func:`xts_algorithm`, or None when component encryption is
            off (the output is then the padded plaintext).
        digests: updated in place, page by page.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    pages = max(1, -(-size // PAGE_SIZE))
    # update_into wants len(input) + 15 bytes of room; the slack at the end
    # covers the last slot, earlier slots overlap the next (not yet written).
    buf = bytearray(min(chunk_pages, pages) * PAGE_SIZE + 16)
    out = memoryview(buf)
    pld, ald, tld = digests._pld.update, digests._ald.update, digests._tld.update
    prefix_bytes = prefix.to_bytes(8, "big")
    XTS = modes.XTS  # noqa: N806 - local alias, this loop runs per page
    for first in range(0, pages, chunk_pages):
        count = min(chunk_pages, pages - first)
        for j in range(count):
            offset = (first + j) * PAGE_SIZE
            page: memoryview | bytes = view[offset : offset + PAGE_SIZE]
            if len(page) < PAGE_SIZE:  # the last, partial (or empty) page
                page = bytes(page) + bytes(PAGE_SIZE - len(page))
            tweak = prefix_bytes + offset.to_bytes(8, "big")
            slot = j * PAGE_SIZE
            if alg is not None:
                encryptor = Cipher(alg, XTS(tweak)).encryptor()
                encryptor.update_into(page, out[slot : slot + PAGE_SIZE + 15])
            else:
                out[slot : slot + PAGE_SIZE] = page
            pld(out[slot : slot + PAGE_SIZE])
            ald((addr + offset).to_bytes(8, "big"))
            tld(tweak)
        digests._nep += count
        yield out[: count * PAGE_SIZE]
