"""``sesim hostkey`` and the shared certificate options, through click's test runner."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from conftest import CERTS

from protocol import CertificateOptions, read_host_key_document
from sesim._cli import main
from sesim._cli_certs import certificate_options, certificate_options_from

WIDE = {"COLUMNS": "200"}


def run(*args: str) -> Result:
    return CliRunner(env=WIDE).invoke(main, list(args))


@pytest.fixture(name="pki", scope="module")
def _pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli") / "pki"
    result = run("hostkey", "pki", str(directory), "--host", "alpha", "--host", "beta", "--revoke", "beta")
    assert result.exit_code == 0, result.output
    return directory


def verify_args(pki: Path, *documents: str) -> list[str]:
    args = ["hostkey", "verify"]
    for name in documents:
        args += ["-k", str(pki / name)]
    args += ["-C", str(pki / "ibm.crt"), "-C", str(pki / "inter_ca.crt"),
             "--crl", f"{pki / 'ibm.crl'},{pki / 'inter_ca.crl'}", "--crl", str(pki / "root_ca.crl"),
             "--root-ca", str(pki / "root_ca.crt"), "--offline"]
    return args


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sesim: error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "command", [["hostkey"], ["hostkey", "pki"], ["hostkey", "create"], ["hostkey", "show"], ["hostkey", "verify"]]
)
def test_help_works(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_pki_writes_every_file_and_a_hint(pki: Path) -> None:
    expected = {f"{stem}.{ext}" for stem in ("root_ca", "inter_ca", "ibm") for ext in ("crt", "key", "crl")}
    expected |= {"alpha.crt", "alpha.key", "beta.crt", "beta.key"}
    assert {p.name for p in pki.iterdir()} == expected


def test_pki_prints_the_files_and_how_to_use_them(tmp_path: Path) -> None:
    result = run("hostkey", "pki", str(tmp_path / "p"))
    assert result.exit_code == 0, result.output
    assert "host.crt" in result.stdout and "root_ca.key" in result.stdout
    hint = [line for line in result.stdout.splitlines() if line.startswith("hint:")]
    assert len(hint) == 1
    for part in ("sesim image create", f"-k {tmp_path / 'p' / 'host.crt'}", f"-C {tmp_path / 'p' / 'ibm.crt'}",
                 f"--root-ca {tmp_path / 'p' / 'root_ca.crt'}", "--offline"):
        assert part in hint[0]


def test_pki_refuses_to_overwrite(pki: Path) -> None:
    before = (pki / "ibm.crt").read_bytes()
    result = run("hostkey", "pki", str(pki))
    assert_one_line_error(result, "refusing to overwrite", "--force")
    assert (pki / "ibm.crt").read_bytes() == before


def test_show_prints_the_document(pki: Path) -> None:
    result = run("hostkey", "show", str(pki / "alpha.crt"))
    assert result.exit_code == 0, result.output
    document = read_host_key_document(pki / "alpha.crt")
    assert document.phkh.hex() in result.stdout
    assert "secp521r1" in result.stdout
    assert "IBM Z Host Key Signing Service" in result.stdout


def test_show_of_a_bad_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.crt"
    path.write_bytes(b"\x00\x01 not a certificate")
    assert_one_line_error(run("hostkey", "show", str(path)), "junk.crt")


def test_show_of_a_missing_file_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run("hostkey", "show", str(tmp_path / "nope.crt")), "nope.crt")


def test_verify_ok(pki: Path) -> None:
    result = run(*verify_args(pki, "alpha.crt"))
    assert result.exit_code == 0, result.output
    assert "alpha.crt: OK" in result.stdout


def test_verify_revoked_host_fails(pki: Path) -> None:
    assert_one_line_error(run(*verify_args(pki, "alpha.crt", "beta.crt")), "beta.crt", "revoked")


def test_verify_bad_document_fails(pki: Path, tmp_path: Path) -> None:
    path = tmp_path / "garbage.crt"
    path.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA")
    assert_one_line_error(run(*verify_args(pki, str(path))), "garbage.crt")


def test_verify_upstream_assets_offline() -> None:
    result = run(
        "hostkey", "verify", "-k", str(CERTS / "host.crt"), "-C", f"{CERTS / 'ibm.crt'},{CERTS / 'inter_ca.crt'}",
        "--crl", str(CERTS / "ibm.crl"), "--crl", str(CERTS / "inter_ca.crl"),
        "--root-ca", str(CERTS / "root_ca.chained.crt"), "--offline",
    )
    assert result.exit_code == 0, result.output


def test_no_verify_warns_on_stderr(pki: Path) -> None:
    result = run("hostkey", "verify", "-k", str(pki / "beta.crt"), "--no-verify")
    assert result.exit_code == 0, result.output
    assert "sesim: warning: host-key document is not verified" in result.stderr
    assert "not verified" in result.stdout


def test_several_certificates_in_a_document_warn(tmp_path: Path) -> None:
    path = tmp_path / "two.crt"
    path.write_bytes((CERTS / "host.crt").read_bytes() + (CERTS / "host2.crt").read_bytes())
    result = run("hostkey", "show", str(path))
    assert result.exit_code == 0, result.output
    assert "sesim: warning: " in result.stderr and "more than one certificate" in result.stderr


def test_create_adds_a_verifiable_host(pki: Path) -> None:
    result = run("hostkey", "create", "gamma", "--pki", str(pki))
    assert result.exit_code == 0, result.output
    assert run(*verify_args(pki, "gamma.crt")).exit_code == 0


def test_create_refuses_an_existing_host(pki: Path) -> None:
    assert_one_line_error(run("hostkey", "create", "alpha", "--pki", str(pki)), "refusing to overwrite")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "h.crt"], "<--no-verify|--cert <FILE>>"),
        (["-k", "h.crt", "--no-verify", "-C", "ibm.crt"], "'--no-verify' cannot be used with '--cert <FILE>'"),
        (["-k", "h.crt", "--no-verify", "--crl", "x.crl"], "--cert <FILE>"),
        (["-k", "h.crt", "--no-verify", "--offline"], "--cert <FILE>"),
        (["-k", "h.crt", "--no-verify", "--root-ca", "r.crt"], "--cert <FILE>"),
        (["--no-verify"], "-k"),
    ],
    ids=["neither", "both", "crl_without_cert", "offline_without_cert", "root_without_cert", "no_document"],
)
def test_certificate_option_rules(args: list[str], message: str) -> None:
    result = run("hostkey", "verify", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_certificate_options_from_pops_and_splits_commas() -> None:
    seen: dict[str, object] = {}

    @click.command()
    @certificate_options
    @click.option("--other", default="x")
    def command(**kwargs: object) -> None:
        seen["options"] = certificate_options_from(kwargs)  # type: ignore[arg-type]
        seen["rest"] = dict(kwargs)

    result = CliRunner().invoke(command, ["-k", "a.crt,b.crt", "-k", "c.crt", "--crt", "i.crt,j.crt",
                                          "--crl", "x.crl", "--root-ca", "r.crt", "--offline"])
    assert result.exit_code == 0, result.output
    assert seen["options"] == CertificateOptions(
        host_key_documents=("a.crt", "b.crt", "c.crt"), certs=("i.crt", "j.crt"), crls=("x.crl",),
        root_ca="r.crt", offline=True,
    )
    assert seen["rest"] == {"other": "x"}
