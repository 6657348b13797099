"""Reading and verifying boot images: ``pvimg info`` and the ultravisor's view.

:func:`parse_image` reads only plaintext: the metadata at 0xC000, the SE
header it points to, the IPIB, and (for sesim images) the stage3a stand-in's
args. :func:`check_image` then does what the ultravisor does while booting
(se-format.md §6 step 3): open the header with the host's private key
(SET_SEC_CONF_PARAMS), walk every page of every IPIB component with its
tweak, account it in running PLD/ALD/TLD/page count and decrypt it
(UNPACK_IMG), and compare with the header (VERIFY_IMG).

What is covered: the header (GCM over all of it), every secure page (the PLD
is over the ciphertext), the component addresses (ALD) and tweak prefixes
(TLD) the IPIB hands to the UV, and the number of pages. What is not: the
short PSW, the metadata and stage3a (non-secure; a changed one may send the
boot elsewhere, but cannot change what the UV accepts), and the IPIB's
reserved bytes.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen
from cryptography.hazmat.primitives.asymmetric import ec

from ._components import (
    PAGE_SIZE,
    ComponentDigests,
    ComponentKind,
    PageDigests,
    decrypt_page,
    page_tweak,
    xts_algorithm,
)
from ._errors import FormatError, UsageError, VerificationError
from ._ipib import METADATA_OFFSET, ImageMetadata, Ipib
from ._se_header import (
    HDR_MAGIC,
    PCF_NAMES,
    PCF_NO_COMPONENT_ENCRYPTION,
    SeHeader,
    flag_names,
    open_se_header,
    parse_se_header,
)
from ._stage3 import (
    STAGE3A_LOAD_ADDRESS,
    STAGE3A_MAGIC,
    Stage3aArgs,
    Stage3bArgs,
    parse_stage3a,
    parse_stage3b,
    stage3a_length,
)


@frozen(kw_only=True)
class ImageInfo:
    """The plaintext structure of a boot image."""

    size: int
    short_psw: int
    metadata: ImageMetadata
    header: SeHeader
    ipib: Ipib
    stage3a_args: Stage3aArgs | None
    """Only for images with sesim's stage3a stand-in."""

    @property
    def hdr_addr(self) -> int:
        return self.metadata.hdr_offset

    @property
    def ipib_addr(self) -> int:
        return self.metadata.ipib_offset

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``pvimg info``-like; hex strings for bytes)."""
        h = self.header
        return {
            "image": {
                "size": self.size, "short_psw": f"{self.short_psw:016x}",
                "hdr_addr": f"{self.hdr_addr:#x}", "ipib_addr": f"{self.ipib_addr:#x}",
                "metadata_version": self.metadata.version,
                "stage3a": "sesim stand-in" if self.stage3a_args is not None else "unknown",
            },
            "header": {
                "magic": HDR_MAGIC.decode(), "version": f"{h.version:#x}", "sehs": h.sehs,
                "nks": h.nks, "sea": f"{h.sea:#x}", "nep": h.nep, "pcf": f"{h.pcf:#018x}",
                "pcf_flags": list(flag_names(h.pcf, PCF_NAMES)), "iv": h.iv.hex(),
                "cust_pub_key": h.cust_pub_key.hex(), "pld": h.pld.hex(), "ald": h.ald.hex(),
                "tld": h.tld.hex(), "key_slots": [{"phkh": s.phkh.hex()} for s in h.key_slots],
                "tag": h.tag.hex(),
            },
            "components": [
                {"kind": _kind_label(c.kind), "addr": f"{c.addr:#x}", "length": f"{c.length:#x}",
                 "pages": c.length // PAGE_SIZE, "tweak_prefix": f"{c.tweak_prefix:016x}"}
                for c in self.ipib.components
            ],
        }  # fmt: skip


def _kind_label(kind: int) -> str:
    try:
        return ComponentKind(kind).label
    except ValueError:
        return f"unknown ({kind})"


def parse_image(data: bytes) -> ImageInfo:
    """Parse a boot image's plaintext parts, checking they agree.

    Raises:
        FormatError: no ``SeImgLnx`` metadata, unknown metadata version, a
            malformed header or IPIB, an IPIB whose header address/size differ
            from the metadata and header, a component outside the file, or
            stand-in stage3a args that disagree with the metadata.
    """
    view = memoryview(data)
    if not ImageMetadata.present(view):
        raise FormatError("not a Secure Execution boot image: no 'SeImgLnx' metadata at 0xC000")
    meta = ImageMetadata.parse(view[METADATA_OFFSET:])
    if meta.hdr_offset >= len(view):
        raise FormatError(f"SE header offset {meta.hdr_offset:#x} is beyond the end of the image")
    header = parse_se_header(view[meta.hdr_offset :])
    if meta.ipib_offset >= len(view):
        raise FormatError(f"IPIB offset {meta.ipib_offset:#x} is beyond the end of the image")
    ipib = Ipib.parse(view[meta.ipib_offset :])
    if ipib.hdr_addr != meta.hdr_offset or ipib.hdr_size != header.sehs:
        raise FormatError(
            f"IPIB names the header at {ipib.hdr_addr:#x} ({ipib.hdr_size} bytes), "
            f"but it is at {meta.hdr_offset:#x} ({header.sehs} bytes)"
        )
    for comp in ipib.components:
        if comp.addr + comp.length > len(view):
            raise FormatError(
                f"component at {comp.addr:#x} ({comp.length:#x} bytes) extends beyond the image"
            )
    stage3a_args = None
    if bytes(view[STAGE3A_LOAD_ADDRESS : STAGE3A_LOAD_ADDRESS + 16]) == STAGE3A_MAGIC:
        blob = view[STAGE3A_LOAD_ADDRESS:]
        stage3a_args = parse_stage3a(blob)
        args_addr = STAGE3A_LOAD_ADDRESS + stage3a_length(blob) - 24
        if (stage3a_args.hdr_addr(args_addr), stage3a_args.hdr_size,
                stage3a_args.ipib_addr(args_addr)) != (meta.hdr_offset, header.sehs,
                                                       meta.ipib_offset):  # fmt: skip
            raise FormatError("stage3a args do not point at the header and IPIB of the metadata")
    return ImageInfo(
        size=len(view), short_psw=int.from_bytes(view[:8], "big"), metadata=meta,
        header=header, ipib=ipib, stage3a_args=stage3a_args,
    )  # fmt: skip


IMAGE_CHECKS: tuple[tuple[str, str], ...] = (
    ("no-key-slot", "key slot for this host key"),
    ("key-slot-tag", "key slot unwraps the header key"),
    ("header-tag", "header authentic (AES-GCM tag)"),
    ("header-optional-items", "no unsupported optional items"),
    ("page-count", "number of encrypted pages (nep)"),
    ("ald", "address list digest (ALD)"),
    ("pld", "page list digest (PLD)"),
    ("tld", "tweak list digest (TLD)"),
)
"""Every check of :func:`check_image`, in the order they are reported.

The header checks come first because the UV stops at SET_SEC_CONF_PARAMS
when one fails. VERIFY_IMG compares all four digests at once (reason codes
0x1A ALD, 0x1B PLD, 0x1C TLD, 0x1D page count; se-format.md §1); the page
count is reported first here because a missing or extra page also changes
every digest, and the count says more about what happened."""


@frozen(kw_only=True)
class CheckResult:
    """One check: its stable name, a label, and ``ok``/``failed``/``skipped``."""

    check: str
    label: str
    status: str
    detail: str = ""


@frozen(kw_only=True)
class ImageVerdict:
    """Outcome of the ultravisor's checks on an image."""

    checks: tuple[CheckResult, ...] = field(converter=tuple)
    info: ImageInfo
    digests: ComponentDigests | None
    """Recomputed over the IPIB's pages (None if the header did not open)."""
    psw_mask: int | None
    psw_addr: int | None
    stage3b_args: Stage3bArgs | None
    """Decoded from the decrypted stage3b, if it is sesim's stand-in."""

    @property
    def ok(self) -> bool:
        return all(c.status == "ok" for c in self.checks)

    @property
    def failed(self) -> CheckResult | None:
        return next((c for c in self.checks if c.status == "failed"), None)

    def raise_for_failure(self) -> None:
        """Raise :class:`VerificationError` naming the first failed check."""
        failed = self.failed
        if failed is not None:
            message = f"image verification failed at check '{failed.check}' ({failed.label})"
            if failed.detail:
                message += f": {failed.detail}"
            raise VerificationError(message, check=failed.check)


def _results(outcome: dict[str, tuple[str, str]]) -> list[CheckResult]:
    return [
        CheckResult(check=name, label=label, status=outcome.get(name, ("skipped", ""))[0],
                    detail=outcome.get(name, ("skipped", ""))[1])
        for name, label in IMAGE_CHECKS
    ]  # fmt: skip


def check_image(data: bytes, host_private_key: ec.EllipticCurvePrivateKey) -> ImageVerdict:
    """Run every ultravisor check on a boot image and report each one.

    Never raises for a failed check (see :meth:`ImageVerdict.raise_for_failure`);
    checks after a failed header check are ``skipped``, as the UV stops there.

    Raises:
        FormatError: the image is malformed (:func:`parse_image`).
        VerificationError: ``check="key-type"``: the host key is not P-521.
    """
    info = parse_image(data)
    view = memoryview(data)
    outcome: dict[str, tuple[str, str]] = {}
    try:
        opened = open_se_header(view[info.hdr_addr :], host_private_key)
    except VerificationError as exc:
        names = [name for name, _label in IMAGE_CHECKS]
        if exc.check not in names:
            raise  # "key-type": the caller's key is unusable, not the image
        for name in names[: names.index(exc.check)]:
            outcome[name] = ("ok", "")
        outcome[exc.check] = ("failed", str(exc))
        return ImageVerdict(checks=_results(outcome), info=info, digests=None,
                            psw_mask=None, psw_addr=None, stage3b_args=None)  # fmt: skip
    for name in ("no-key-slot", "key-slot-tag", "header-tag", "header-optional-items"):
        outcome[name] = ("ok", "")

    header, secrets = opened.header, opened.secrets
    alg = None
    if not header.pcf & PCF_NO_COMPONENT_ENCRYPTION:
        try:
            alg = xts_algorithm(secrets.xts_key)
        except UsageError as exc:  # equal key halves in an authentic header
            raise FormatError(f"the image key in the SE header is unusable: {exc}") from None
    digests = PageDigests()
    stage3b_plain = None
    for comp in info.ipib.components:
        plain = bytearray() if comp.addr == secrets.psw_addr else None
        for offset in range(0, comp.length, PAGE_SIZE):
            tweak = page_tweak(comp.tweak_prefix, offset)
            page = view[comp.addr + offset : comp.addr + offset + PAGE_SIZE]
            digests.update(comp.addr + offset, tweak, page)
            clear = decrypt_page(alg, tweak, page) if alg is not None else bytes(page)
            if plain is not None:
                plain += clear
        if plain is not None:
            stage3b_plain = bytes(plain)
    final = digests.finish()
    for name, got, want in (("ald", final.ald, header.ald), ("pld", final.pld, header.pld),
                            ("tld", final.tld, header.tld)):  # fmt: skip
        differs = ("failed", f"{name.upper()} differs from the header")
        outcome[name] = ("ok", "") if got == want else differs
    outcome["page-count"] = (
        ("ok", "") if final.nep == header.nep
        else ("failed", f"{final.nep} pages unpacked, the header expects {header.nep}")
    )  # fmt: skip
    stage3b_args = None
    if stage3b_plain is not None:
        try:
            stage3b_args = parse_stage3b(stage3b_plain)
        except FormatError:
            stage3b_args = None  # not sesim's stand-in (or a page that failed the PLD)
    return ImageVerdict(checks=_results(outcome), info=info, digests=final,
                        psw_mask=secrets.psw_mask, psw_addr=secrets.psw_addr,
                        stage3b_args=stage3b_args)  # fmt: skip


def verify_image(data: bytes, host_private_key: ec.EllipticCurvePrivateKey) -> ImageVerdict:
    """The complete ultravisor check of an image; raise on the first failure.

    Raises:
        FormatError: the image is malformed.
        VerificationError: ``check`` is one of ``no-key-slot``,
            ``key-slot-tag``, ``header-tag``, ``header-optional-items``,
            ``ald``, ``pld``, ``tld``, ``page-count`` (see :data:`IMAGE_CHECKS`), or
            ``key-type`` if the host key is not P-521.
    """
    verdict = check_image(data, host_private_key)
    verdict.raise_for_failure()
    return verdict
