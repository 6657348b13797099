"""``sesim image create|info|verify|kernel`` through click's test runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import CERTS, KEYS
from protocol import (
    open_se_header,
    parse_image,
    read_host_key_document,
    read_host_private_key,
    synthetic_kernel,
)
from sesim._cli import main

HOST_CRT, HOST_KEY, HOST2_KEY = CERTS / "host.crt", CERTS / "host.key", CERTS / "host2.key"
HOST_PRIV = read_host_private_key(HOST_KEY)
KERNEL = synthetic_kernel(0x11000, seed=3)  # 17 pages: the smallest kernel with S390EP


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result: Result) -> str:
    """A failed command: exit 1, one ``sesim: error:`` line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("sesim: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(name="work")
def _work(tmp_path: Path) -> Path:
    (tmp_path / "kernel").write_bytes(KERNEL)
    (tmp_path / "parm").write_bytes(b"console=ttyS0 quiet")
    (tmp_path / "initrd").write_bytes(b"\x1f\x8b" + bytes(5000))
    return tmp_path


def create(work: Path, *extra: object, hkd: Path = HOST_CRT, out: str = "image.se") -> Result:
    return run("image", "create", "-i", work / "kernel", "-r", work / "initrd", "-p", work / "parm",
               "-o", work / out, "-k", hkd, "--no-verify", *extra)  # fmt: skip


def _info(path: Path) -> dict:  # type: ignore[type-arg]
    result = run("image", "info", "--format", "json", path)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_create_with_a_vector_hkd_and_no_verify(work: Path) -> None:
    result = create(work, hkd=KEYS / "host.pem.crt")
    assert result.exit_code == 0, result.output
    assert "not verified" in result.stderr  # the HKD warning
    info = _info(work / "image.se")
    hkd = read_host_key_document(KEYS / "host.pem.crt")
    assert [s["phkh"] for s in info["header"]["key_slots"]] == [hkd.phkh.hex()]


def test_create_info_verify_round_trip(work: Path) -> None:
    assert create(work).exit_code == 0
    info = _info(work / "image.se")
    assert info["header"]["pcf"] == "0x00000000000000e0" and info["header"]["nks"] == 1
    assert [c["kind"] for c in info["components"]] == ["kernel", "ramdisk", "cmdline", "stage3b"]
    result = run("image", "verify", "--host-key", HOST_KEY, work / "image.se")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK ") == 8 and "verified" in result.stdout


def test_info_table_lists_header_fields_and_components(work: Path) -> None:
    assert create(work).exit_code == 0
    result = run("image", "info", work / "image.se")
    assert result.exit_code == 0, result.output
    for needle in ("IBMSecEx", "pckmo-aes", "0x14000", "kernel", "stage3b", "0x15000"):
        assert needle in result.stdout


def test_verify_with_a_host_without_slot_names_no_key_slot(work: Path) -> None:
    assert create(work).exit_code == 0
    result = run("image", "verify", "--host-key", HOST2_KEY, work / "image.se")
    assert "no-key-slot" in _one_line_error(result)
    assert "FAILED   no-key-slot" in result.stdout


def test_verify_of_a_flipped_byte_in_a_page_names_pld(work: Path) -> None:
    assert create(work).exit_code == 0
    data = bytearray((work / "image.se").read_bytes())
    data[0x15000 + 100] ^= 0x40
    (work / "image.se").write_bytes(bytes(data))
    result = run("image", "verify", "--host-key", HOST_KEY, work / "image.se")
    assert "'pld'" in _one_line_error(result)
    assert "FAILED   pld" in result.stdout


@pytest.mark.parametrize("command", ["info", "verify"])
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[: len(d) - 30], "IPIB truncated"),
        (lambda d: d[:0x14100], "truncated"),
        (lambda d: d[:0xC000] + b"SeImgLnX" + d[0xC008:], "SeImgLnx"),
        (lambda d: d[:0x14000] + b"IBMSecEy" + d[0x14008:], "magic"),
        (lambda d: b"hello", "SeImgLnx"),
    ],
    ids=["ipib-cut", "header-cut", "meta-magic", "header-magic", "not-an-image"],
)
def test_malformed_images_give_one_line_errors(
    work: Path, command: str, damage: Callable[[bytes], bytes], message: str
) -> None:
    assert create(work).exit_code == 0
    path = work / "image.se"
    path.write_bytes(damage(path.read_bytes()))
    args = ["--host-key", HOST_KEY] if command == "verify" else []
    assert message in _one_line_error(run("image", command, *args, path))


def test_missing_input_file_is_a_one_line_error(work: Path) -> None:
    result = run("image", "info", work / "nope.se")
    assert "nope.se" in _one_line_error(result)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--enable-dump"], "--enable-dump requires --cck"),
        (["--enable-cck-extension-secret"], "requires --cck"),
        (["--enable-pckmo", "--disable-pckmo"], "cannot be used together"),
        (["--x-pcf", "0x0", "--enable-backup-keys"], "--x-pcf"),
        (["--x-pcf", "zero"], "not a number"),
        (["--image-key", "KEY64", "--disable-image-encryption"], "--image-key"),
        (["--cck", "KEY32", "--enable-cck-extension-secret", "--enable-cck-update"], "cck-update"),
        (["--cck", "KEY64"], "exactly 32 bytes"),
        (["--image-key", "KEY32"], "exactly 64 bytes"),
        (["--image-key", "EQUAL64"], "halves"),
    ],
)
def test_option_rules_of_pvimg_create(work: Path, extra: list[str], message: str) -> None:
    (work / "KEY32").write_bytes(bytes(range(32)))
    (work / "KEY64").write_bytes(bytes(range(64)))
    (work / "EQUAL64").write_bytes(b"\x03" * 64)
    args = [work / a if a.isupper() else a for a in extra]
    assert message in _one_line_error(create(work, *args))
    assert not list(work.glob("*.se")) and not list(work.glob(".*part"))


@pytest.mark.parametrize(
    ("extra", "pcf", "scf"),
    [
        ([], 0xE0, 0),
        (["--disable-pckmo", "--enable-pckmo-hmac"], 0x10, 0),
        (["--enable-dump", "--enable-cck-update"], 0x200000E0, 0x2000000000000000),
        (["--enable-backup-keys", "--disable-image-encryption"], 0x100000E2, 0),
        (["--cck", "KEY32", "--enable-cck-extension-secret"], 0xE0, 0x4000000000000000),
        (["--x-pcf", "0x0", "--x-scf", "5"], 0, 5),
    ],
)
def test_flags_set_pcf_and_scf(work: Path, extra: list[str], pcf: int, scf: int) -> None:
    (work / "KEY32").write_bytes(bytes(range(32)))
    args = [work / a if a.isupper() else a for a in extra]
    assert create(work, *args).exit_code == 0
    data = (work / "image.se").read_bytes()
    opened = open_se_header(data[0x14000:], HOST_PRIV)
    assert (opened.header.pcf, opened.secrets.scf) == (pcf, scf)


def test_user_keys_and_psw_end_up_in_the_header(work: Path) -> None:
    (work / "cck").write_bytes(b"\x11" * 32)
    (work / "hdr").write_bytes(b"\x22" * 32)
    (work / "img").write_bytes(b"\x33" * 32 + b"\x44" * 32)
    result = create(work, "--cck", work / "cck", "--hdr-key", work / "hdr",
                    "--x-comp-key", work / "img", "--x-psw", "0x20000")  # fmt: skip
    assert result.exit_code == 0, result.output
    secrets = open_se_header((work / "image.se").read_bytes()[0x14000:], HOST_PRIV).secrets
    assert (secrets.cck, secrets.xts_key, secrets.psw_addr) == (
        b"\x11" * 32, b"\x33" * 32 + b"\x44" * 32, 0x20000,
    )  # fmt: skip


def test_an_existing_output_is_kept_without_overwrite(work: Path) -> None:
    (work / "image.se").write_bytes(b"precious")
    assert "--overwrite" in _one_line_error(create(work))
    assert (work / "image.se").read_bytes() == b"precious"
    assert create(work, "--overwrite").exit_code == 0
    assert parse_image((work / "image.se").read_bytes()).header.nks == 1


def test_an_elf_kernel_is_refused(work: Path) -> None:
    (work / "kernel").write_bytes(b"\x7fELF" + KERNEL[4:])
    assert "ELF" in _one_line_error(create(work))
    assert not (work / "image.se").exists()


def test_a_too_long_cmdline_leaves_no_file_behind(work: Path) -> None:
    (work / "parm").write_bytes(b"x" * 5000)
    assert "at most 4096" in _one_line_error(create(work))
    assert sorted(p.name for p in work.iterdir()) == ["initrd", "kernel", "parm"]


def test_no_component_check_accepts_a_tiny_kernel(work: Path) -> None:
    (work / "kernel").write_bytes(b"\0" * 3 * 4096)
    assert create(work, "--no-component-check").exit_code == 0


def test_kernel_command_writes_a_synthetic_kernel(tmp_path: Path) -> None:
    result = run("image", "kernel", "-o", tmp_path / "k", "--size", "128K", "--seed", "9")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "k").read_bytes() == synthetic_kernel(128 * 1024, seed=9)


@pytest.mark.parametrize(("size", "message"), [("4K", "at least"), ("lots", "not a size")])
def test_kernel_command_refuses_bad_sizes(tmp_path: Path, size: str, message: str) -> None:
    assert message in _one_line_error(run("image", "kernel", "-o", tmp_path / "k", "--size", size))


@pytest.mark.parametrize("command", ["create", "info", "verify", "kernel"])
def test_every_command_has_help(command: str) -> None:
    result = run("image", command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout
