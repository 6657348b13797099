"""A hostile hypervisor (issue 9): every attack of the catalogue is stopped and leaks nothing.

Each attack runs in a fresh world (a testbed, or the actor system for
swapping, I/O and dumps under way) and is judged by
:func:`sesim._attacks_base.judge`: its expected defences fired, its victim
ran on with its data intact or stopped rather than use changed data, and
the hostile host obtained zero bytes of the victim's plaintext. The control
scenarios show that the counter counts: a guest that gives its secret away
leaks it.
"""

from __future__ import annotations

import json

import attrs
import pytest
from click.testing import CliRunner, Result

from actors._workload import canary
from sesim._attacks import catalogue, controls, find, run_attack
from sesim._attacks_arena import secret_page
from sesim._attacks_base import REGISTRY
from sesim._cli import main
from sesim._hostile import Defence, HostileHost, PlaintextScanner

ISSUE_EXAMPLES = (
    "read-secure-page", "write-secure-page", "read-donated-storage", "swap-replay", "swap-move",
    "exchange-pages-between-guests", "map-frame-into-other-guest", "foreign-handle-uvc", "flip-bit-se-header",
    "flip-bit-image-page", "unpack-out-of-order", "unpack-twice", "unpack-missing-pages", "boot-without-key-slot",
    "revoked-hkd", "change-sie-handles", "sie-block-on-two-cpus", "inject-pgm-after-notification",
    "fake-intercept-registers", "share-fails", "read-after-unshare", "dump-forbidden", "replay-attestation",
    "secret-for-other-config",
)  # fmt: skip
"""The issue's own list of attacks, by their catalogue names."""


def _params() -> list[str]:
    return [a.name for a in catalogue()]


# ------------------------------------------------------------------ the catalogue
@pytest.mark.parametrize("name", _params())
def test_the_attack_is_stopped_by_its_defence_and_leaks_nothing(name: str) -> None:
    result = run_attack(find(name))
    assert result.stopped, "\n".join(result.problems)
    assert result.leak.plaintext_bytes == 0
    for expected in result.attack.expected:
        assert any(expected.matches(f) for f in result.fired), expected.label
    assert result.attempts and all(t.stopped for t in result.attempts)
    assert result.intact is not False


def test_the_catalogue_has_at_least_twenty_attacks_and_every_example_of_the_issue() -> None:
    names = [a.name for a in catalogue()]
    assert len(names) >= 20
    assert len(set(names)) == len(names)
    assert set(ISSUE_EXAMPLES) <= set(names)
    assert {a.runner for a in catalogue()} == {"testbed", "actors"}


def test_every_attack_names_what_it_tries_its_steps_and_a_defence() -> None:
    for a in catalogue():
        assert a.title and a.defence and a.steps and a.expected, a.name


# ------------------------------------------------------------------ the counter can fail
@pytest.mark.parametrize("name", [a.name for a in controls()])
def test_a_control_that_gives_its_secret_away_leaks_a_whole_page(name: str) -> None:
    result = run_attack(find(name))
    assert result.leak.plaintext_bytes >= 4096
    assert result.stopped  # for a control: the counter found the leak


def test_judged_as_an_attack_a_leaky_scenario_is_not_stopped() -> None:
    leaky = attrs.evolve(find("control-shared-secret"), control=False,
                         expected=(Defence.pgm(0x3D),))  # fmt: skip
    result = run_attack(leaky)
    assert not result.stopped
    assert any("plaintext bytes obtained" in p for p in result.problems)
    assert any("never fired" in p for p in result.problems)


def test_the_scanner_finds_a_secret_piece_at_any_offset_and_counts_its_bytes() -> None:
    page = secret_page("victim", 0x1000)
    scanner = PlaintextScanner([page])
    for offset in (0, 1, 7, 13, 100):
        data = b"\x5a" * offset + page[0x230:0x330] + b"\xa5" * 50
        assert scanner.count(data) == 0x100
    assert scanner.count(page) == 4096


def test_the_scanner_ignores_zeros_fill_and_ciphertext() -> None:
    scanner = PlaintextScanner([bytes(4096), b"\xca" * 4096, secret_page("victim", 0)])
    assert scanner.count(bytes(8192)) == 0
    assert scanner.count(b"\xca" * 4096) == 0
    assert scanner.count(secret_page("other", 0)) == 0


def test_the_scanner_counts_markers_anywhere_and_merges_overlaps() -> None:
    mark = canary("victim")
    scanner = PlaintextScanner([], [mark, mark[:8]])
    assert scanner.count(b"x" * 5 + mark + b"y" + mark) == 64


def test_the_ledger_keeps_what_was_obtained_and_reports_its_sources() -> None:
    host = HostileHost()
    host.obtain("a read", b"\x01" * 64 + secret_page("victim", 0)[:64])
    host.obtain("zeros", bytes(4096))
    report = host.leaks(PlaintextScanner([secret_page("victim", 0)]))
    assert report.obtained_bytes == 128 + 4096
    assert report.plaintext_bytes == 64 and report.sources == (("a read", 64),)


# ------------------------------------------------------------------ determinism
@pytest.mark.parametrize("name", ["tamper-exported-page", "swap-replay"])
def test_an_attack_gives_the_same_report_twice(name: str) -> None:
    first, second = run_attack(find(name)).to_json(), run_attack(find(name)).to_json()
    assert first == second


# ------------------------------------------------------------------ the command line
def cli(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args))


def test_attack_list_shows_every_attack_with_its_expected_defence() -> None:
    result = cli("attack", "--list", "--format", "json")
    assert result.exit_code == 0, result.output
    listed = {e["name"]: e for e in json.loads(result.output)}
    assert {a.name for a in catalogue()} <= set(listed)
    assert listed["read-secure-page"]["expected"] == ["PGM 0x3d SECURE_STORAGE_ACCESS"]
    table = cli("attack", "--list")
    assert table.exit_code == 0 and "change-sie-handles" in table.output


def test_attack_name_prints_the_defence_the_outcome_and_zero_plaintext() -> None:
    result = cli("attack", "read-secure-page", "tamper-exported-page")
    assert result.exit_code == 0, result.output
    for text in ("PGM 0x3d", "keeps running, data intact", "CONV_TO_SEC_STOR rc 0x0107", "stopped: import",
                 "2 attacks, 2 stopped"):  # fmt: skip
        assert text in result.output


def test_attack_json_has_the_report_of_each_attack() -> None:
    result = cli("attack", "change-sie-handles", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (entry,) = data["attacks"]
    assert entry["stopped"] and entry["plaintext_bytes"] == 0
    assert "validity 0x2001 CPU_HANDLE" in entry["fired"]
    assert data["summary"] == {**data["summary"], "attacks": 1, "stopped": 1, "plaintext_bytes": 0}


def test_attack_exits_1_when_an_attack_is_not_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = attrs.evolve(find("control-shared-secret"), name="leaky", control=False, expected=(Defence.pgm(0x3D),))
    monkeypatch.setitem(REGISTRY, "leaky", leaky)
    result = cli("attack", "leaky")
    assert result.exit_code == 1
    assert "NOT STOPPED" in result.output


def test_attack_needs_a_name_or_all_and_refuses_unknown_names() -> None:
    assert cli("attack").exit_code == 2
    result = cli("attack", "no-such-attack")
    assert result.exit_code == 1 and "no attack named 'no-such-attack'" in result.output
