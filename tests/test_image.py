"""Boot images: layout, parsing and the ultravisor's verification (se-format.md §2.4, §6)."""

from __future__ import annotations

import io
import struct

import attrs
import pytest
from conftest import CERTS
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import FormatError, UsageError, VerificationError
from protocol._components import (
    ComponentKind,
    PageDigests,
    decrypt_page,
    encrypt_page,
    page_tweak,
    padded_size,
)
from protocol._crypto import ec_private_from_scalar
from protocol._image import (
    ImageSpec,
    create_image,
    kernel_max_cmdline,
    synthetic_kernel,
    write_image,
)
from protocol._image_verify import check_image, parse_image, verify_image
from protocol._ipib import Ipib, ImageMetadata
from protocol._se_header import PCF_NO_COMPONENT_ENCRYPTION, parse_se_header
from protocol._stage3 import (
    STAGE3A_ARGS_ADDR,
    Stage3aArgs,
    parse_stage3a,
    parse_stage3b,
)

HOST_PUB = x509.load_pem_x509_certificate((CERTS / "host.crt").read_bytes()).public_key()
HOST_PRIV = serialization.load_pem_private_key((CERTS / "host.key").read_bytes(), None)
HOST2_PRIV = serialization.load_pem_private_key((CERTS / "host2.key").read_bytes(), None)
KERNEL = synthetic_kernel(0x11000, seed=1)

SPEC = ImageSpec(
    kernel=KERNEL, ramdisk=b"initrd" * 1000, cmdline=b"console=ttyS0 root=/dev/vda",
    host_keys=[HOST_PUB], cust_private_key=ec_private_from_scalar(b"\x01" + b"\x05" * 65),
    prot_key=b"\x32" * 32, iv=b"\x33" * 12, cck=b"\x31" * 32, xts_key=b"\x42" * 32 + b"\x43" * 32,
    tweak_randoms={kind: bytes([int(kind)]) * 6 for kind in ComponentKind},
)  # fmt: skip
IMAGE = create_image(SPEC)
DATA = IMAGE.data
DESC = IMAGE.description


def _region(kind: ComponentKind):  # type: ignore[no-untyped-def]
    return next(r for r in DESC.regions if r.kind == kind)


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# ---------------------------------------------------------------- layout


def test_header_lands_at_0x14000_and_the_kernel_on_the_next_page() -> None:
    assert DESC.hdr_addr == 0x14000 and DESC.sehs == 640
    assert _region(ComponentKind.KERNEL).addr == 0x15000


def test_95_host_keys_push_the_kernel_one_page_further() -> None:
    desc = create_image(attrs.evolve(SPEC, host_keys=[HOST_PUB] * 95)).description
    assert desc.sehs == 8160 and _region_of(desc, ComponentKind.KERNEL).addr == 0x16000


def _region_of(desc, kind):  # type: ignore[no-untyped-def]
    return next(r for r in desc.regions if r.kind == kind)


def test_secure_components_follow_in_pvimg_order_page_aligned() -> None:
    secure = DESC.secure_regions
    assert [r.kind for r in secure] == [
        ComponentKind.KERNEL, ComponentKind.RAMDISK, ComponentKind.CMDLINE, ComponentKind.STAGE3B,
    ]  # fmt: skip
    for before, after in zip(secure, secure[1:]):
        assert after.addr == before.addr + before.length and after.addr % 4096 == 0


def test_the_ipib_follows_stage3b_and_ends_the_file() -> None:
    stage3b = _region(ComponentKind.STAGE3B)
    assert DESC.ipib_addr == stage3b.addr + stage3b.length
    assert len(DATA) == DESC.image_size == DESC.ipib_addr + 0x88 + 4 * 24


def test_short_psw_at_0_enters_stage3a() -> None:
    assert DATA[:8].hex() == "0008000180011000"


def test_metadata_at_0xc000_points_to_header_and_ipib() -> None:
    meta = ImageMetadata.parse(DATA[0xC000:])
    assert (meta.hdr_offset, meta.ipib_offset) == (DESC.hdr_addr, DESC.ipib_addr)


def test_stage3a_args_point_to_header_and_ipib() -> None:
    args = parse_stage3a(DATA[0x10000:0x13000])
    assert args.hdr_addr() == DESC.hdr_addr and args.ipib_addr() == DESC.ipib_addr
    assert args.hdr_size == 640
    assert Stage3aArgs.parse(DATA[STAGE3A_ARGS_ADDR:]) == args


def test_stage3b_args_give_unpadded_sizes_and_the_kernel_psw() -> None:
    args = check_image(DATA, HOST_PRIV).stage3b_args
    assert args is not None
    kernel, ramdisk, cmdline = (_region(k) for k in (ComponentKind.KERNEL, ComponentKind.RAMDISK,
                                                      ComponentKind.CMDLINE))  # fmt: skip
    assert (args.kernel.src, args.kernel.size) == (kernel.addr, len(KERNEL))
    assert (args.initrd.src, args.initrd.size) == (ramdisk.addr, 6000)
    assert (args.cmdline.src, args.cmdline.size) == (cmdline.addr, len(SPEC.cmdline or b"") + 1)
    assert (args.psw_mask, args.psw_addr) == (0x180000000, 0x10000)


def test_header_psw_enters_stage3b() -> None:
    verdict = check_image(DATA, HOST_PRIV)
    assert verdict.psw_addr == _region(ComponentKind.STAGE3B).addr
    assert verdict.psw_mask == 0x180000000


def test_ipib_lists_secure_components_with_their_tweak_prefixes() -> None:
    ipib = Ipib.parse(DATA[DESC.ipib_addr :])
    assert [(c.tweak_prefix, c.addr, c.length) for c in ipib.components] == [
        (r.tweak_prefix, r.addr, r.length) for r in DESC.secure_regions
    ]
    assert (ipib.hdr_addr, ipib.hdr_size) == (0x14000, 640)
    assert [c.kind for c in ipib.components] == [40, 50, 60, 70]


def _decrypt_region(kind: ComponentKind) -> bytes:
    region = _region(kind)
    out = b""
    for off in range(0, region.length, 4096):
        page = DATA[region.addr + off : region.addr + off + 4096]
        out += decrypt_page(SPEC.xts_key, page_tweak(region.tweak_prefix, off), page)
    return out


def test_kernel_pages_decrypt_to_the_kernel() -> None:
    assert _decrypt_region(ComponentKind.KERNEL) == KERNEL


@pytest.mark.parametrize(
    ("cmdline", "stored"),
    [(b"quiet", b"quiet\0"), (b"quiet\0", b"quiet\0"), (b"", b"\0")],
    ids=["appended", "kept", "empty"],
)
def test_cmdline_is_nul_terminated_once(cmdline: bytes, stored: bytes) -> None:
    image = create_image(attrs.evolve(SPEC, cmdline=cmdline))
    region = _region_of(image.description, ComponentKind.CMDLINE)
    page = image.data[region.addr : region.addr + 4096]
    plain = decrypt_page(SPEC.xts_key, page_tweak(region.tweak_prefix, 0), page)
    assert region.size == len(stored)
    assert plain == stored + bytes(4096 - len(stored))


def test_an_empty_ramdisk_is_one_zero_page() -> None:
    image = create_image(attrs.evolve(SPEC, ramdisk=b""))
    region = _region_of(image.description, ComponentKind.RAMDISK)
    assert (region.size, region.length) == (0, 4096)
    page = image.data[region.addr : region.addr + 4096]
    assert decrypt_page(SPEC.xts_key, page_tweak(region.tweak_prefix, 0), page) == bytes(4096)


def test_without_ramdisk_and_cmdline_only_kernel_and_stage3b_are_secure() -> None:
    image = create_image(attrs.evolve(SPEC, ramdisk=None, cmdline=None))
    kinds = [r.kind for r in image.description.secure_regions]
    assert kinds == [ComponentKind.KERNEL, ComponentKind.STAGE3B]
    args = check_image(image.data, HOST_PRIV).stage3b_args
    assert args is not None and args.initrd.size == 0 and args.cmdline.size == 0


def test_header_digests_match_an_independent_recomputation() -> None:
    digests = PageDigests()
    for region in DESC.secure_regions:
        plain = _decrypt_region(region.kind)
        for off in range(0, region.length, 4096):
            tweak = page_tweak(region.tweak_prefix, off)
            page = encrypt_page(SPEC.xts_key, tweak, plain[off : off + 4096])
            digests.update(region.addr + off, tweak, page)
    header = parse_se_header(DATA[DESC.hdr_addr :])
    assert (digests.pld, digests.ald, digests.tld, digests.nep) == (
        header.pld, header.ald, header.tld, header.nep,
    )  # fmt: skip
    assert header.nep == sum(padded_size(r.size) for r in DESC.secure_regions) // 4096


def test_equal_specs_give_identical_images() -> None:
    assert create_image(SPEC).data == DATA


def test_write_image_streams_the_same_bytes_and_reports_progress() -> None:
    seen: list[int] = []
    out = io.BytesIO()
    write_image(out, SPEC, progress=seen.append)
    assert out.getvalue() == DATA
    assert seen[-1] == sum(r.length for r in DESC.secure_regions)


def test_no_component_encryption_stores_plaintext_and_still_verifies() -> None:
    spec = attrs.evolve(SPEC, pcf=SPEC.pcf | PCF_NO_COMPONENT_ENCRYPTION)
    image = create_image(spec)
    kernel = _region_of(image.description, ComponentKind.KERNEL)
    assert image.data[kernel.addr : kernel.addr + len(KERNEL)] == KERNEL
    assert verify_image(image.data, HOST_PRIV).ok


def test_equal_xts_key_halves_are_refused_when_encrypting() -> None:
    with pytest.raises(UsageError, match="halves"):
        create_image(attrs.evolve(SPEC, xts_key=b"\x03" * 64))


def test_96_host_keys_are_refused_before_any_page_is_written() -> None:
    out = io.BytesIO()
    with pytest.raises(UsageError, match="95"):
        write_image(out, attrs.evolve(SPEC, host_keys=[HOST_PUB] * 96))
    assert out.getvalue() == b""


def test_a_missing_tweak_random_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="ramdisk"):
        create_image(attrs.evolve(SPEC, tweak_randoms={ComponentKind.KERNEL: b"123456"}))


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("prot_key", b"\x01" * 5), ("iv", b"\x01" * 5), ("cck", b"\x01" * 5),
     ("xts_key", b"\x01" * 5), ("pcf", 1 << 64), ("scf", -1), ("psw_addr", 1 << 64)],
)  # fmt: skip
def test_spec_rejects_values_of_the_wrong_size(field_name: str, value: object) -> None:
    with pytest.raises(UsageError, match=field_name):
        attrs.evolve(SPEC, **{field_name: value})


# ---------------------------------------------------------------- kernel checks


def test_an_elf_kernel_is_refused_with_a_clear_message() -> None:
    with pytest.raises(FormatError, match="ELF"):
        create_image(attrs.evolve(SPEC, kernel=b"\x7fELF" + KERNEL[4:]))


def test_a_kernel_without_s390ep_is_refused() -> None:
    with pytest.raises(FormatError, match="S390EP"):
        create_image(attrs.evolve(SPEC, kernel=bytes(0x3000)))


def test_component_check_off_accepts_any_kernel() -> None:
    image = create_image(attrs.evolve(SPEC, kernel=bytes(0x3000), component_check=False))
    assert verify_image(image.data, HOST_PRIV).ok


def test_cmdline_longer_than_the_kernel_limit_is_refused() -> None:
    with pytest.raises(UsageError, match="at most 4096"):
        create_image(attrs.evolve(SPEC, cmdline=b"x" * 4096))


def test_a_zero_cmdline_limit_means_896() -> None:
    kernel = bytearray(KERNEL)
    kernel[0x10430:0x10438] = bytes(8)
    assert kernel_max_cmdline(bytes(kernel)) == 896


def test_synthetic_kernel_is_deterministic_and_marked() -> None:
    a, b = synthetic_kernel(0x20000, seed=7), synthetic_kernel(0x20000, seed=7)
    assert a == b != synthetic_kernel(0x20000, seed=8)
    assert a[0x10008:0x1000E] == b"S390EP" and b"seed=7" in a[0x10010:0x10040]
    assert kernel_max_cmdline(a) == 4096 and len(a) == 0x20000


def test_synthetic_kernel_refuses_sizes_without_room_for_the_markers() -> None:
    with pytest.raises(UsageError):
        synthetic_kernel(0x3000, seed=1)


# ---------------------------------------------------------------- parsing


def test_parse_image_reads_metadata_header_and_ipib() -> None:
    info = parse_image(DATA)
    assert (info.hdr_addr, info.ipib_addr, info.size) == (0x14000, DESC.ipib_addr, len(DATA))
    assert info.header.nep == DESC.nep and len(info.ipib.components) == 4
    assert info.stage3a_args is not None and info.short_psw == 0x0008000180011000


def _with_u64(offset: int, value: int, data: bytes = DATA) -> bytes:
    out = bytearray(data)
    struct.pack_into(">Q", out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (DATA[:0xC000], "metadata"),
        (_flip(DATA, 0xC000), "metadata"),
        (_flip(DATA, 0xC000 + 19), "version"),
        (_with_u64(0xC008, 1 << 40), "beyond"),
        (_with_u64(0xC014, 1 << 40), "beyond"),
        (_flip(DATA, 0x14000), "magic"),
        (DATA[: DESC.ipib_addr + 0x50], "IPIB truncated"),
        (_flip(DATA, DESC.ipib_addr + 3), "lengths"),
        (_flip(DATA, DESC.ipib_addr + 0x0C), "type"),
        (_with_u64(DESC.ipib_addr + 0x78, 0x15000), "names the header"),
        (_with_u64(DESC.ipib_addr + 0x88 + 8, 1 << 40), "beyond"),
        (_with_u64(DESC.ipib_addr + 0x88 + 8, 0x15800), "whole pages"),
        (_with_u64(STAGE3A_ARGS_ADDR, 0x2000), "stage3a args"),
    ],
    ids=["truncated", "meta-magic", "meta-version", "hdr-off", "ipib-off", "hdr-magic",
         "ipib-cut", "ipib-len", "ipib-pbt", "ipib-hdr", "comp-beyond", "comp-unaligned",
         "stage3a-args"],  # fmt: skip
)
def test_parse_image_rejects_malformed_images(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        parse_image(data)


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, len(DATA) - 1))
def test_a_truncated_image_is_a_format_error(cut: int) -> None:
    with pytest.raises(FormatError):
        parse_image(DATA[:cut])


_STRUCTURE = [(0xC000, 28), (0x10000, 0x100), (STAGE3A_ARGS_ADDR, 24), (0x14000, 640),
              (DESC.ipib_addr, 0x88 + 4 * 24)]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    where=st.sampled_from(_STRUCTURE), pos=st.integers(0, 10_000), value=st.integers(0, 255)
)
def test_parse_image_of_mutated_structures_raises_only_format_error(
    where: tuple[int, int], pos: int, value: int
) -> None:
    data = bytearray(DATA)
    data[where[0] + pos % where[1]] = value
    try:
        parse_image(bytes(data))
    except FormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_structure_parsers_of_arbitrary_bytes_raise_only_format_error(data: bytes) -> None:
    for parse in (Ipib.parse, ImageMetadata.parse, parse_stage3a, parse_stage3b, parse_image):
        try:
            parse(data)
        except FormatError:
            pass


# ---------------------------------------------------------------- verification


def test_verify_accepts_the_image_with_the_host_key() -> None:
    verdict = verify_image(DATA, HOST_PRIV)
    assert verdict.ok and verdict.failed is None
    assert [c.status for c in verdict.checks] == ["ok"] * 8


def test_verify_with_a_host_that_has_no_slot_names_no_key_slot() -> None:
    with pytest.raises(VerificationError) as err:
        verify_image(DATA, HOST2_PRIV)
    assert err.value.check == "no-key-slot"


def test_check_skips_the_digests_when_the_header_does_not_open() -> None:
    verdict = check_image(DATA, HOST2_PRIV)
    assert [c.status for c in verdict.checks] == ["failed"] + ["skipped"] * 7


@pytest.mark.parametrize("kind", [ComponentKind.KERNEL, ComponentKind.RAMDISK,
                                  ComponentKind.CMDLINE, ComponentKind.STAGE3B])  # fmt: skip
def test_a_flipped_byte_in_any_component_names_pld(kind: ComponentKind) -> None:
    region = _region(kind)
    with pytest.raises(VerificationError) as err:
        verify_image(_flip(DATA, region.addr + region.length - 1), HOST_PRIV)
    assert err.value.check == "pld"


@settings(max_examples=100, deadline=None)
@given(bit=st.integers(0, (DESC.ipib_addr - 0x15000) * 8 - 1))
def test_any_flipped_bit_in_a_secure_page_is_caught_by_the_pld(bit: int) -> None:
    data = _flip(DATA, 0x15000 + bit // 8, 0x80 >> (bit % 8))
    assert check_image(data, HOST_PRIV).failed.check == "pld"  # type: ignore[union-attr]


@settings(max_examples=100, deadline=None)
@given(bit=st.integers(0, 640 * 8 - 1))
def test_any_flipped_bit_in_the_header_fails_verification(bit: int) -> None:
    data = _flip(DATA, 0x14000 + bit // 8, 0x80 >> (bit % 8))
    with pytest.raises((FormatError, VerificationError)):
        verify_image(data, HOST_PRIV)


def test_a_changed_tweak_prefix_in_the_ipib_names_tld() -> None:
    with pytest.raises(VerificationError) as err:
        verify_image(_flip(DATA, DESC.ipib_addr + 0x88 + 7), HOST_PRIV)
    assert err.value.check == "tld"


def test_a_moved_component_in_the_ipib_names_ald() -> None:
    ramdisk_entry = DESC.ipib_addr + 0x88 + 24 + 8
    moved = _with_u64(ramdisk_entry, _region(ComponentKind.RAMDISK).addr + 0x1000)
    with pytest.raises(VerificationError) as err:
        verify_image(moved, HOST_PRIV)
    assert err.value.check == "ald"


def test_a_shortened_component_names_page_count() -> None:
    kernel_len = DESC.ipib_addr + 0x88 + 16
    shorter = _with_u64(kernel_len, _region(ComponentKind.KERNEL).length - 0x1000)
    with pytest.raises(VerificationError) as err:
        verify_image(shorter, HOST_PRIV)
    assert err.value.check == "page-count"


def test_a_flipped_byte_in_stage3a_code_is_not_covered() -> None:
    """stage3a is not secure: the UV never sees it (se-format.md §2.4)."""
    assert verify_image(_flip(DATA, 0x11000), HOST_PRIV).ok


def test_a_flipped_byte_in_the_short_psw_is_not_covered() -> None:
    assert verify_image(_flip(DATA, 7), HOST_PRIV).ok
