"""``sesim attest create|perform|verify`` through click's test runner.

The test PKI's ``cert/host.crt`` is a host-key document whose private key
(``cert/host.key``) is published, so an image and a request made for it can
be performed on a simulated server with that key.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import CERTS

from protocol import (
    Arcb,
    ExchangeRequest,
    ExchangeResponse,
    read_host_private_key,
    synthetic_kernel,
)
from protocol._crypto import phkh
from sesim._cli import main

HOST_CRT, HOST_KEY, HOST2_CRT, HOST2_KEY = (CERTS / "host.crt", CERTS / "host.key", CERTS / "host2.crt",
                                            CERTS / "host2.key")  # fmt: skip
CERT_ARGS = ("-C", CERTS / "ibm.crt", "-C", CERTS / "inter_ca.crt", "--crl", CERTS / "ibm.crl",
             "--crl", CERTS / "inter_ca.crl", "--crl", CERTS / "root_ca.crl", "--root-ca", CERTS / "root_ca.crt",
             "--offline")  # fmt: skip


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result: Result) -> str:
    """A failed command: exit 1, one ``sesim: error:`` line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("sesim: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(name="work", scope="module")
def _work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image for host.crt, a request with all four additional items, and its response."""
    work = tmp_path_factory.mktemp("attest")
    (work / "kernel").write_bytes(synthetic_kernel(0x11000, seed=5))
    ok(run("image", "create", "-i", work / "kernel", "-o", work / "image", "-k", HOST_CRT, "--no-verify"))
    ok(run("image", "create", "-i", work / "kernel", "-o", work / "image2", "-k", HOST2_CRT, "--no-verify"))
    ok(run("attest", "create", "-k", HOST_CRT, *CERT_ARGS, "--arpk", work / "arpk", "-o", work / "request",
           "--add-data", "phkh-img,phkh-att", "--add-data", "secret-store-hash", "--add-data", "firmware-state"))
    (work / "user").write_bytes(b"nonce from the verifier")
    ok(run("attest", "perform", work / "request", work / "response", "--image", work / "image",
           "--host-key", HOST_KEY, "--user-data", work / "user"))  # fmt: skip
    return work


def test_create_writes_a_request_in_exchange_format_and_the_arpk(work: Path) -> None:
    request = ExchangeRequest.parse((work / "request").read_bytes())
    arcb = Arcb.parse(request.arcb)
    assert (request.measurement_size, request.additional_size) == (64, 32 + 32 + 64 + 320)
    assert arcb.phkhs == (phkh(read_host_private_key(HOST_KEY).public_key()),)
    assert len((work / "arpk").read_bytes()) == 32
    assert arcb.open((work / "arpk").read_bytes()).nonce is not None  # pvattest always sends a nonce


def test_perform_writes_a_response_with_all_five_entries(work: Path) -> None:
    response = ExchangeResponse.parse((work / "response").read_bytes())
    assert response.arcb == ExchangeRequest.parse((work / "request").read_bytes()).arcb
    assert len(response.measurement) == 64 and len(response.cuid) == 16
    assert response.additional is not None and len(response.additional) == 448
    assert response.user_data == b"nonce from the verifier"


def test_verify_accepts_the_response_and_writes_what_it_verified(work: Path) -> None:
    result = ok(run("attest", "verify", "-i", work / "response", "--hdr", work / "image", "--arpk", work / "arpk",
                    "--request", work / "request", "-o", work / "verified.yaml", "-u", work / "user.out"))
    assert "Attestation measurement verified" in result.stdout
    cuid = ExchangeResponse.parse((work / "response").read_bytes()).cuid
    assert f"cuid: '0x{cuid.hex()}'" in (work / "verified.yaml").read_text()
    assert (work / "user.out").read_bytes() == b"nonce from the verifier"


def test_verify_accepts_a_bare_se_header(work: Path, tmp_path: Path) -> None:
    image = (work / "image").read_bytes()
    (tmp_path / "hdr").write_bytes(image[0x14000 : 0x14000 + 640])
    ok(run("attest", "verify", "-i", work / "response", "--hdr", tmp_path / "hdr", "--arpk", work / "arpk"))


def _flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("arpk", "the ARPK does not open"),
        ("image", "booted from an image for host key"),
        ("same-host-image", "measurement does not match"),
        ("measurement", "measurement does not match"),
        ("user", "measurement does not match"),
        ("request", "answers another attestation request"),
    ],
)
def test_verify_says_why_a_wrong_response_is_wrong(work: Path, tmp_path: Path, case: str, message: str) -> None:
    response = ExchangeResponse.parse((work / "response").read_bytes())
    args = {"-i": work / "response", "--hdr": work / "image", "--arpk": work / "arpk"}
    if case == "arpk":
        (tmp_path / "arpk").write_bytes(b"\1" * 32)
        args["--arpk"] = tmp_path / "arpk"
    elif case == "image":
        args["--hdr"] = work / "image2"
    elif case == "same-host-image":
        ok(run("image", "create", "-i", work / "kernel", "-o", tmp_path / "img", "-k", HOST_CRT, "--no-verify"))
        args["--hdr"] = tmp_path / "img"
    elif case in ("measurement", "user"):
        changed = (ExchangeResponse(arcb=response.arcb, measurement=_flip(response.measurement, 0),
                                    additional=response.additional, user_data=response.user_data, cuid=response.cuid)
                   if case == "measurement" else
                   ExchangeResponse(arcb=response.arcb, measurement=response.measurement,
                                    additional=response.additional, user_data=b"another nonce", cuid=response.cuid))
        (tmp_path / "resp").write_bytes(changed.pack())  # fmt: skip
        args["-i"] = tmp_path / "resp"
    elif case == "request":
        ok(run("attest", "create", "-k", HOST_CRT, "--no-verify", "--arpk", tmp_path / "a", "-o", tmp_path / "r"))
        args["--request"] = tmp_path / "r"
    assert message in one_line_error(run("attest", "verify", *[x for kv in args.items() for x in kv]))


def test_perform_refuses_an_image_for_another_host(work: Path) -> None:
    error = one_line_error(run("attest", "perform", work / "request", work / "x", "--image", work / "image2",
                               "--host-key", HOST_KEY))  # fmt: skip
    assert "no key slot for the host key" in error


def test_perform_reports_the_uv_refusing_a_request_for_another_host(work: Path, tmp_path: Path) -> None:
    ok(run("attest", "create", "-k", HOST2_CRT, "--no-verify", "--arpk", tmp_path / "a", "-o", tmp_path / "r"))
    error = one_line_error(run("attest", "perform", tmp_path / "r", tmp_path / "out", "--image", work / "image",
                               "--host-key", HOST_KEY))  # fmt: skip
    assert "rc 0x010c" in error and "made for another host" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("verify", "-i", "{req}", "--hdr", "{image}", "--arpk", "{arpk}"), "measurement missing"),
        (("verify", "-i", "{image}", "--hdr", "{image}", "--arpk", "{arpk}"), "magic 'pvattest'"),
        (("verify", "-i", "{resp}", "--hdr", "{arpk}", "--arpk", "{arpk}"), "SE header"),
        (("perform", "{image}", "{tmp}/o", "--image", "{image}", "--host-key", HOST_KEY), "magic 'pvattest'"),
        (("perform", "{req}", "{tmp}/o", "--image", "{image}", "--host-key", "{arpk}"), "private key"),
        (("perform", "{req}", "{tmp}/o", "--image", "{image}", "--host-key", HOST_KEY, "-u", "{image}"),
         "at most 256"),
        (("create", "-k", "{arpk}", "--no-verify", "--arpk", "{tmp}/a", "-o", "{tmp}/r"), "certificate"),
        (("verify", "-i", "{tmp}/missing", "--hdr", "{image}", "--arpk", "{arpk}"), "No such file"),
    ],
    ids=["request-as-response", "not-exchange", "hdr-not-image", "image-as-request", "bad-host-key",
         "user-too-long", "bad-hkd", "missing-file"],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_1(work: Path, tmp_path: Path, args: tuple, message: str) -> None:
    names = {"req": work / "request", "resp": work / "response", "image": work / "image", "arpk": work / "arpk",
             "tmp": tmp_path}  # fmt: skip
    argv = [str(a).format(**names) if isinstance(a, str) else a for a in args]
    assert message in one_line_error(run("attest", *argv))


def test_add_data_takes_only_known_flags(tmp_path: Path) -> None:
    result = run("attest", "create", "-k", HOST_CRT, "--no-verify", "--arpk", tmp_path / "a", "-o", tmp_path / "r",
                 "--add-data", "phkh-img,everything")  # fmt: skip
    assert result.exit_code == 2 and "everything" in result.stderr


@pytest.mark.parametrize("command", ["create", "perform", "verify"])
def test_every_command_has_help(command: str) -> None:
    result = run("attest", command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.stdout
