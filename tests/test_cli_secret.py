"""``sesim secret create|verify`` through click's test runner, and the requests in a guest.

The requests the command writes are added by a secure guest of a testbed
whose server has the test PKI's ``cert/host.key``, so the whole path
pvsecret → ultravisor is exercised.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner, Result
from conftest import CERTS, KEYS

from protocol import (
    ASRCB_FLAG_DISABLE_DUMP,
    Asrcb,
    BootHdrTags,
    SecretType,
    derive_extension_secret,
    plaintext_payload,
    read_host_private_key,
    secret_id,
    synthetic_kernel,
)
from sesim._cli import main
from sesim._guest_ops import add_secret, list_secrets, retrieve_secret
from sesim.testbed import open_testbed

HOST_CRT, HOST_KEY = CERTS / "host.crt", CERTS / "host.key"


def run(*args: object, cwd: Path | None = None) -> Result:
    """Run sesim; in ``cwd`` if given (``create`` writes NAME.yaml into the working directory)."""
    with contextlib.chdir(cwd or Path.cwd()):
        return CliRunner().invoke(main, [str(a) for a in args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("sesim: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(name="work", scope="module")
def _work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("secret")
    (work / "kernel").write_bytes(synthetic_kernel(0x11000, seed=6))
    (work / "cck").write_bytes(b"\xcc" * 32)
    ok(run("image", "create", "-i", work / "kernel", "-o", work / "image", "-k", HOST_CRT, "--no-verify",
           "--cck", work / "cck"))  # fmt: skip
    return work


def create(work: Path, out: Path, *args: object) -> Result:
    return run("secret", "create", "-k", HOST_CRT, "--no-verify", "--hdr", work / "image", "-o", out, *args,
               cwd=out.parent)  # fmt: skip


def _in_guest(work: Path, *requests: bytes) -> list[tuple[int, bytes]]:
    """Add ``requests`` in a guest booted from the image; (type, retrieved bytes) of every listed secret."""

    async def go() -> list[tuple[int, bytes]]:
        async with open_testbed(host_key=read_host_private_key(HOST_KEY)) as tb:
            guest = await tb.secure_guest(memory_mib=2, image=(work / "image").read_bytes())
            for request in requests:
                await add_secret(guest, request)
            out = []
            for entry in await list_secrets(guest):
                data = b"" if entry.type == SecretType.ASSOCIATION else await retrieve_secret(guest, entry.index,
                                                                                              entry.length)
                out.append((entry.type, data))
            return out

    return trio.run(go)


def test_a_retrievable_plaintext_secret_reaches_the_guest(work: Path, tmp_path: Path) -> None:
    (tmp_path / "pw").write_bytes(b"correct horse battery staple")
    result = ok(create(work, tmp_path / "req", "retrievable", "disk pw", "--secret", tmp_path / "pw",
                       "--type", "plain"))  # fmt: skip
    assert "wrote disk_pw.yaml" in result.stdout
    yaml = (tmp_path / "disk_pw.yaml").read_text()
    assert f"id: '0x{secret_id('disk pw').hex()}'" in yaml and "kind: 3 (PLAINTEXT)" in yaml
    [(stype, data)] = _in_guest(work, (tmp_path / "req").read_bytes())
    assert stype == SecretType.PLAINTEXT and plaintext_payload(data) == b"correct horse battery staple"


def test_meta_association_and_aes_secrets_with_options(work: Path, tmp_path: Path) -> None:
    (tmp_path / "aes").write_bytes(b"\x42" * 32)
    ok(create(work, tmp_path / "meta", "--flags", "disable-dump", "meta"))
    ok(create(work, tmp_path / "assoc", "--cck", work / "cck", "association", "card 1", "--output-secret",
              tmp_path / "assoc.bin", "--stdout"))  # fmt: skip
    ok(create(work, tmp_path / "aes", "--cck", work / "cck", "--use-name", "retr", "aeskey", "--secret",
              tmp_path / "aes", "--secret-type", "aes"))  # fmt: skip
    meta = Asrcb.parse((tmp_path / "meta").read_bytes())
    assert meta.flags == ASRCB_FLAG_DISABLE_DUMP and meta.secret_type is SecretType.NULL
    aes = Asrcb.parse((tmp_path / "aes").read_bytes())
    assert aes.secret_id == b"aeskey".ljust(32, b"\0")
    assert not (tmp_path / "card_1.yaml").exists() and len((tmp_path / "assoc.bin").read_bytes()) == 32
    # The first request fixes the extension secret; both carry the CCK-derived one.
    listed = _in_guest(work, (tmp_path / "assoc").read_bytes(), (tmp_path / "aes").read_bytes())
    assert [t for t, _ in listed] == [SecretType.ASSOCIATION, SecretType.AES_256]
    assert len(listed[1][1]) == 64  # a protected key: 32 bytes wrapped + 32 bytes WKVP


def test_cck_derives_the_extension_secret_from_the_header_tag(work: Path, tmp_path: Path) -> None:
    ok(create(work, tmp_path / "r", "--cck", work / "cck", "meta"))
    tags = BootHdrTags.from_image_or_header((work / "image").read_bytes())
    request = Asrcb.parse((tmp_path / "r").read_bytes())
    assert request.tags == tags
    key = read_host_private_key(HOST_KEY)
    assert request.open_for_host(key)[0].extension_secret == derive_extension_secret(b"\xcc" * 32, tags.tag)


def test_cuid_from_an_attestation_result_binds_the_request(work: Path, tmp_path: Path) -> None:
    (tmp_path / "verified.yaml").write_text("cuid: '0x00112233445566778899aabbccddeeff'\nuser_data: '0x00'\n")
    ok(create(work, tmp_path / "a", "--cuid", tmp_path / "verified.yaml", "meta"))
    ok(create(work, tmp_path / "b", "--cuid-hex", "0x00112233445566778899aabbccddeeff", "meta"))
    for name in ("a", "b"):
        assert Asrcb.parse((tmp_path / name).read_bytes()).cuid == bytes.fromhex("00112233445566778899aabbccddeeff")


@pytest.mark.parametrize(("key", "cert"), [("rsa2048key.pem", "rsa2048.crt"), ("rsa3072key.pem", "rsa3072.crt")])
def test_signed_user_data_verifies_with_the_certificate(work: Path, tmp_path: Path, key: str, cert: str) -> None:
    (tmp_path / "ud").write_bytes(b"policy v1")
    ok(create(work, tmp_path / "r", "--user-data", tmp_path / "ud", "--user-sign-key", KEYS / key, "meta"))
    result = ok(run("secret", "verify", tmp_path / "r", "--user-cert", KEYS / cert, "-o", tmp_path / "out"))
    assert "signature" in result.stdout and "verified" in result.stdout
    assert (tmp_path / "out").read_bytes().rstrip(b"\0") == b"policy v1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--user-sign-key", KEYS / "rsa4096key.pem", "meta"), "RSA 4096"),
        (("--cck", KEYS / "rsa2048key.pem", "meta"), "exactly 32 bytes"),
        (("--cuid-hex", "0x1234", "meta"), "32 hex digits"),
        (("retrievable", "k", "--secret", KEYS / "rsa2048key.pem", "--type", "aes"), "aes secret must be"),
        (("retrievable", "k", "--secret", KEYS / "ecsecp256k1.pem", "--type", "ec"), "secp256k1"),
        (("--pcf", "zebra", "meta"), "not a number"),
    ],
    ids=["rsa4096", "cck-size", "cuid-hex", "aes-size", "ec-curve", "pcf"],
)
def test_bad_input_is_one_line_and_exit_1(work: Path, tmp_path: Path, args: tuple, message: str) -> None:
    assert message in one_line_error(create(work, tmp_path / "r", *args))
    assert not (tmp_path / "r").exists()


def test_a_header_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\0" * 8192)
    result = run("secret", "create", "-k", HOST_CRT, "--no-verify", "--hdr", tmp_path / "x", "-o", tmp_path / "r",
                 "meta")  # fmt: skip
    assert "SE header is malformed" in one_line_error(result)


@pytest.mark.parametrize(
    "args",
    [("--cck", "x", "--extension-secret", "y", "meta"), ("--cuid", "x", "--cuid-hex", "00", "meta"),
     ("--pcf", "1", "--flags", "disable-dump", "meta"), ("--flags", "everything", "meta"),
     ("association", "n", "--input-secret", "a", "--output-secret", "b")],
    ids=["ext", "cuid", "flags", "unknown-flag", "secret-in-and-out"],
)  # fmt: skip
def test_contradicting_options_are_usage_errors(work: Path, tmp_path: Path, args: tuple) -> None:
    assert create(work, tmp_path / "r", *args).exit_code == 2


@pytest.mark.parametrize("what", ["not-a-request", "signed-without-cert"])
def test_verify_refuses(work: Path, tmp_path: Path, what: str) -> None:
    if what == "not-a-request":
        target, message = work / "image", "not an add-secret request"
    else:
        ok(create(work, tmp_path / "r", "--user-sign-key", KEYS / "rsa2048key.pem", "meta"))
        target, message = tmp_path / "r", "give the verification key"
    assert message in one_line_error(run("secret", "verify", target))


GROUP_ARGS = ("create", "-k", "h.crt", "--no-verify", "--hdr", "img", "-o", "out")


@pytest.mark.parametrize(
    "command",
    [("create",), ("verify",), *((*GROUP_ARGS, sub) for sub in ("meta", "association", "retrievable", "retr",
                                                                 "update-cck"))],
)  # fmt: skip
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = run("secret", *command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout
