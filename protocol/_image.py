"""Secure Execution boot images, built exactly as ``pvimg create`` lays them out.

The image is a flat memory image loaded at absolute 0: file offset = guest
address, gaps are zeros (se-format.md §2.4, ``se_img.rs``, legacy mode)::

    0x0      short PSW → stage3a entry 0x11000                   non-secure
    0xC000   SeImgMetaData (28 bytes)                            non-secure
    0x10000  stage3a (stand-in, 0x3000 bytes, args in last 24)   non-secure
    0x14000  SE header = max(roundup4K(0x10000+len(stage3a)), 0x14000)
    next 4K  kernel → ramdisk → cmdline (NUL-terminated) → stage3b
             (each 4K aligned, secure, AES-XTS encrypted unless PCF bit 35)
    next 4K  IPIB (unpadded; the file ends here)                 non-secure

:func:`write_image` streams the secure components to a seekable binary file
in chunks of up to 1 MiB through one reused buffer, then writes
the IPIB, and finally seeks back to fill in the first ~84 KiB (short PSW,
metadata, stage3a, header), whose header needs the digests of everything
after it. Nothing here draws random numbers: keys, IV, customer key and the
tweak randoms all come in through :class:`ImageSpec`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import BinaryIO

from attrs import field, frozen
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.asymmetric import ec

from ._components import (
    PAGE_SIZE,
    ComponentKind,
    PageDigests,
    padded_size,
    secure_component_chunks,
    tweak_prefix,
    xts_algorithm,
)
from ._crypto import phkh
from ._errors import FormatError, UsageError
from ._ipib import METADATA_LEN, METADATA_OFFSET, ImageMetadata, Ipib, IpibComponent
from ._se_header import (
    PCF_DEFAULT,
    PCF_NO_COMPONENT_ENCRYPTION,
    build_se_header,
    check_host_keys,
    header_size,
)
from ._stage3 import (
    KERNEL_ENTRY,
    PSW_MASK_EA_BA,
    STAGE3A_ENTRY,
    STAGE3A_LOAD_ADDRESS,
    STAGE3A_SIZE,
    MemBlob,
    Stage3bArgs,
    render_stage3a,
    render_stage3b,
    short_psw,
)

LEGACY_HDR_MIN_ADDR = 0x14000
"""Where ``pvextract-hdr`` starts searching: the legacy header minimum."""
KERNEL_S390EP_OFFSET = 0x10008
KERNEL_S390EP = b"S390EP"
KERNEL_CMDLINE_SIZE_OFFSET = 0x10430
LEGACY_MAX_CMDLINE_SIZE = 896
MIN_KERNEL_SIZE = KERNEL_CMDLINE_SIZE_OFFSET + 8
_ELF_MAGIC = b"\x7fELF"


def _roundup(value: int) -> int:
    return -(-value // PAGE_SIZE) * PAGE_SIZE


def kernel_max_cmdline(kernel: bytes) -> int:
    """Check a raw s390x ``Image`` and return its command-line size limit.

    Raises:
        FormatError: an ELF file, or no ``S390EP`` at 0x10008 (``kernel.rs``).
    """
    if bytes(kernel[:4]) == _ELF_MAGIC:
        raise FormatError("the kernel is an ELF file; a raw s390x Image is needed (not vmlinux)")
    if len(kernel) < MIN_KERNEL_SIZE or bytes(
        kernel[KERNEL_S390EP_OFFSET : KERNEL_S390EP_OFFSET + 6]
    ) != KERNEL_S390EP:
        raise FormatError("the kernel is not a raw s390x Linux Image (no 'S390EP' at 0x10008)")
    where = KERNEL_CMDLINE_SIZE_OFFSET
    limit = int.from_bytes(kernel[where : where + 8], "big")
    return limit or LEGACY_MAX_CMDLINE_SIZE


def synthetic_kernel(size: int, seed: int) -> bytes:
    """A deterministic stand-in for a raw s390x kernel ``Image``.

    The content is an AES-128-CTR keystream keyed by ``seed`` (fast and the
    same on every machine), with the parts pvimg and stage3b look at made
    real: ``S390EP`` at 0x10008, a zeroed parameter area 0x10400..0x10480
    with a 4096-byte command-line limit at 0x10430, and a readable marker
    ``SESIM-SYNTHETIC-KERNEL seed=… size=…`` at 0x10010.

    Raises:
        UsageError: ``size`` below 0x10438 (the markers would not fit) or a
            negative seed.
    """
    if size < MIN_KERNEL_SIZE:
        raise UsageError(
            f"a synthetic kernel needs at least {MIN_KERNEL_SIZE:#x} bytes, got {size:#x}"
        )
    if seed < 0:
        raise UsageError(f"seed must be non-negative, got {seed}")
    key = (seed % (1 << 128)).to_bytes(16, "big")
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    blob = bytearray(stream.update(bytes(size)))
    blob[KERNEL_S390EP_OFFSET : KERNEL_S390EP_OFFSET + 6] = KERNEL_S390EP
    marker = f"SESIM-SYNTHETIC-KERNEL seed={seed} size={size}".encode().ljust(0x30, b"\0")
    blob[0x10010 : 0x10010 + len(marker)] = marker
    blob[0x10400:0x10480] = bytes(0x80)
    blob[KERNEL_CMDLINE_SIZE_OFFSET : KERNEL_CMDLINE_SIZE_OFFSET + 8] = (4096).to_bytes(8, "big")
    return bytes(blob)


def _len_is(n: int) -> Callable[[object, object, bytes], None]:
    def check(_inst: object, attribute: object, value: bytes) -> None:
        if len(value) != n:
            name = getattr(attribute, "name", "value")
            raise UsageError(f"{name} must be {n} bytes, got {len(value)}")

    return check


def _u64(_inst: object, attribute: object, value: int | None) -> None:
    if value is not None and (not isinstance(value, int) or not 0 <= value < 1 << 64):
        name = getattr(attribute, "name", "value")
        raise UsageError(f"{name} must be an unsigned 64-bit integer, got {value!r}")


@frozen(kw_only=True)
class ImageSpec:
    """Everything an image is made of; equal specs give byte-identical images.

    ``kernel``, ``ramdisk`` and ``cmdline`` may be any bytes-like object
    (``bytes``, ``memoryview``, ``mmap``). ``cmdline`` gets a NUL appended if
    it lacks one. ``tweak_randoms`` maps each present secure component kind
    (and always STAGE3B) to its 6 random tweak bytes. ``psw_addr`` overrides
    the header's entry address (``--x-psw``); None means stage3b's address.
    ``component_check`` False skips the kernel/cmdline checks
    (``--no-component-check``).
    """

    kernel: bytes = field(repr=False)
    ramdisk: bytes | None = field(default=None, repr=False)
    cmdline: bytes | None = field(default=None, repr=False)
    host_keys: tuple[ec.EllipticCurvePublicKey, ...] = field(converter=tuple)
    cust_private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    prot_key: bytes = field(repr=False, validator=_len_is(32))
    iv: bytes = field(validator=_len_is(12))
    cck: bytes = field(repr=False, validator=_len_is(32))
    xts_key: bytes = field(repr=False, validator=_len_is(64))
    tweak_randoms: Mapping[ComponentKind, bytes] = field(repr=False)
    pcf: int = field(default=PCF_DEFAULT, validator=_u64)
    scf: int = field(default=0, validator=_u64)
    psw_addr: int | None = field(default=None, validator=_u64)
    component_check: bool = True

    @property
    def encrypted(self) -> bool:
        return not self.pcf & PCF_NO_COMPONENT_ENCRYPTION


@frozen(kw_only=True)
class ImageRegion:
    """One part of an image: what, where, how big, and for secure ones the tweak."""

    kind: ComponentKind
    addr: int
    size: int
    """Unpadded size in bytes (for cmdline: including the NUL)."""
    length: int
    """Bytes the region occupies (padded to pages for secure components)."""
    tweak_prefix: int | None = None

    @property
    def secure(self) -> bool:
        return self.tweak_prefix is not None


@frozen(kw_only=True)
class ImageDescription:
    """What :func:`write_image` produced."""

    regions: tuple[ImageRegion, ...] = field(converter=tuple)
    hdr_addr: int
    sehs: int
    ipib_addr: int
    image_size: int
    nep: int
    pld: bytes = field(repr=False)
    ald: bytes = field(repr=False)
    tld: bytes = field(repr=False)
    pcf: int
    scf: int
    psw_mask: int
    psw_addr: int
    phkhs: tuple[bytes, ...] = field(converter=tuple, repr=False)

    @property
    def secure_regions(self) -> tuple[ImageRegion, ...]:
        return tuple(r for r in self.regions if r.secure)


@frozen(kw_only=True)
class _Layout:
    hdr_addr: int
    sehs: int
    secure: tuple[tuple[ImageRegion, bytes], ...]
    stage3b_addr: int
    ipib_addr: int


def _secure_inputs(spec: ImageSpec) -> list[tuple[ComponentKind, bytes]]:
    inputs: list[tuple[ComponentKind, bytes]] = [(ComponentKind.KERNEL, spec.kernel)]
    if spec.ramdisk is not None:
        inputs.append((ComponentKind.RAMDISK, spec.ramdisk))
    if spec.cmdline is not None:
        cmdline = bytes(spec.cmdline)
        if not cmdline.endswith(b"\0"):
            cmdline += b"\0"  # Cmdline::read appends the terminator (cmdline.rs)
        inputs.append((ComponentKind.CMDLINE, cmdline))
    if spec.component_check:
        limit = kernel_max_cmdline(spec.kernel)
        if spec.cmdline is not None and len(inputs[-1][1]) > limit:
            raise UsageError(
                f"kernel command line is {len(inputs[-1][1])} bytes with its NUL; "
                f"this kernel accepts at most {limit}"
            )
    return inputs


def _prefix(spec: ImageSpec, kind: ComponentKind) -> int:
    try:
        rand = spec.tweak_randoms[kind]
    except KeyError:
        raise UsageError(f"no tweak random given for the {kind.label} component") from None
    return tweak_prefix(int(kind), rand)


def _layout(spec: ImageSpec) -> _Layout:
    check_host_keys(spec.host_keys)  # before hours of encryption, not after
    sehs = header_size(len(spec.host_keys))
    hdr_addr = max(_roundup(STAGE3A_LOAD_ADDRESS + STAGE3A_SIZE), LEGACY_HDR_MIN_ADDR)
    addr = _roundup(hdr_addr + sehs)
    secure: list[tuple[ImageRegion, bytes]] = []
    for kind, data in _secure_inputs(spec):
        length = padded_size(len(data))
        region = ImageRegion(kind=kind, addr=addr, size=len(data), length=length,
                             tweak_prefix=_prefix(spec, kind))  # fmt: skip
        secure.append((region, data))
        addr += length
    by_kind = {r.kind: MemBlob(src=r.addr, size=r.size) for r, _ in secure}
    args = Stage3bArgs(
        kernel=by_kind[ComponentKind.KERNEL],
        cmdline=by_kind.get(ComponentKind.CMDLINE, MemBlob()),
        initrd=by_kind.get(ComponentKind.RAMDISK, MemBlob()),
        psw_mask=PSW_MASK_EA_BA, psw_addr=KERNEL_ENTRY,
    )  # fmt: skip
    stage3b = render_stage3b(args)
    region = ImageRegion(kind=ComponentKind.STAGE3B, addr=addr, size=len(stage3b),
                         length=padded_size(len(stage3b)),
                         tweak_prefix=_prefix(spec, ComponentKind.STAGE3B))  # fmt: skip
    secure.append((region, stage3b))
    return _Layout(hdr_addr=hdr_addr, sehs=sehs, secure=tuple(secure), stage3b_addr=addr,
                   ipib_addr=addr + region.length)  # fmt: skip


def secure_size(spec: ImageSpec) -> int:
    """Total padded bytes of the secure components (for progress bars)."""
    return sum(r.length for r, _ in _layout(spec).secure)


def write_image(
    out: BinaryIO, spec: ImageSpec, *, progress: Callable[[int], None] | None = None
) -> ImageDescription:
    """Write the boot image of ``spec`` to a fresh, seekable binary file.

    Args:
        out: positioned anywhere; the image occupies offsets 0..end.
        spec: all inputs.
        progress: called with the number of secure bytes written so far,
            after every chunk of up to 1 MiB.

    Raises:
        UsageError: impossible inputs (key sizes, 0 or >95 host keys, equal
            XTS key halves with encryption on, command line too long).
        FormatError: the kernel is not a raw s390x Image (unless
            ``component_check`` is False).
    """
    layout = _layout(spec)
    alg = xts_algorithm(spec.xts_key) if spec.encrypted else None
    digests = PageDigests()
    write = out.write
    done = 0
    for region, data in layout.secure:
        out.seek(region.addr)
        for chunk in secure_component_chunks(
            data, addr=region.addr, prefix=region.tweak_prefix or 0, alg=alg, digests=digests
        ):
            write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done)

    secure_regions = [r for r, _ in layout.secure]
    ipib = Ipib(
        hdr_addr=layout.hdr_addr, hdr_size=layout.sehs,
        components=[IpibComponent(tweak_prefix=r.tweak_prefix or 0, addr=r.addr, length=r.length)
                    for r in secure_regions],
    )  # fmt: skip
    ipib_bytes = ipib.pack()
    out.seek(layout.ipib_addr)
    write(ipib_bytes)

    final = digests.finish()
    psw_addr = layout.stage3b_addr if spec.psw_addr is None else spec.psw_addr
    header = build_se_header(
        cust_private_key=spec.cust_private_key, host_keys=spec.host_keys, prot_key=spec.prot_key,
        iv=spec.iv, cck=spec.cck, xts_key=spec.xts_key, psw_mask=PSW_MASK_EA_BA,
        psw_addr=psw_addr, pcf=spec.pcf, scf=spec.scf, nep=final.nep, pld=final.pld,
        ald=final.ald, tld=final.tld,
    )  # fmt: skip
    stage3a = render_stage3a(
        hdr_addr=layout.hdr_addr, hdr_size=len(header), ipib_addr=layout.ipib_addr
    )
    meta = ImageMetadata(hdr_offset=layout.hdr_addr, ipib_offset=layout.ipib_addr).pack()
    head = bytearray(secure_regions[0].addr)
    head[0:8] = short_psw(STAGE3A_ENTRY)
    head[METADATA_OFFSET : METADATA_OFFSET + METADATA_LEN] = meta
    head[STAGE3A_LOAD_ADDRESS : STAGE3A_LOAD_ADDRESS + len(stage3a)] = stage3a
    head[layout.hdr_addr : layout.hdr_addr + len(header)] = header
    out.seek(0)
    write(head)
    out.seek(layout.ipib_addr + len(ipib_bytes))

    regions = [
        ImageRegion(kind=ComponentKind.SHORT_PSW, addr=0, size=8, length=8),
        ImageRegion(kind=ComponentKind.IMG_METADATA, addr=METADATA_OFFSET, size=METADATA_LEN,
                    length=METADATA_LEN),
        ImageRegion(kind=ComponentKind.STAGE3A, addr=STAGE3A_LOAD_ADDRESS, size=len(stage3a),
                    length=len(stage3a)),
        ImageRegion(kind=ComponentKind.SE_HEADER, addr=layout.hdr_addr, size=len(header),
                    length=len(header)),
        *secure_regions,
        ImageRegion(kind=ComponentKind.IPIB, addr=layout.ipib_addr, size=len(ipib_bytes),
                    length=len(ipib_bytes)),
    ]  # fmt: skip
    return ImageDescription(
        regions=regions, hdr_addr=layout.hdr_addr, sehs=len(header), ipib_addr=layout.ipib_addr,
        image_size=layout.ipib_addr + len(ipib_bytes), nep=final.nep, pld=final.pld,
        ald=final.ald, tld=final.tld, pcf=spec.pcf, scf=spec.scf, psw_mask=PSW_MASK_EA_BA,
        psw_addr=psw_addr, phkhs=[phkh(k) for k in spec.host_keys],
    )  # fmt: skip


@frozen(kw_only=True)
class BuiltImage:
    """An image held in memory, with its description."""

    data: bytes = field(repr=False)
    description: ImageDescription


def create_image(spec: ImageSpec) -> BuiltImage:
    """Build the image of ``spec`` in memory (see :func:`write_image`)."""
    buf = io.BytesIO()
    description = write_image(buf, spec)
    return BuiltImage(data=buf.getvalue(), description=description)
