"""sesim check: the monitors offline find what they found online."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from sesim._campaign import CampaignOptions, run_seed
from sesim._cli import main
from sesim._corpus import CORPUS, CorpusEntry, path_of
from traces._monitors import Monitors


def test_a_clean_run_checks_clean(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    assert run_seed(3, CampaignOptions(swarm=True), trace=path).ok
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 0 and "no violation" in result.output


@pytest.mark.parametrize("entry", [e for e in CORPUS if e.fails], ids=lambda e: e.name)
def test_offline_monitors_find_the_violations_the_run_recorded(entry: CorpusEntry) -> None:
    """Each fixed bug's first failing swarm seed (traces/recorded/bug-*)."""
    path = path_of(entry)
    events = [orjson.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()[1:]]
    recorded = [(e["monitor"], e["detail"]) for e in events if e["kind"] == "violation"]
    offline = Monitors().observe_all(e for e in events if e["kind"] != "violation")
    assert recorded and [(v.monitor, v.detail) for v in offline] == recorded
    result = CliRunner().invoke(main, ["check", str(path)])
    monitor = entry.fails.split(": ")[1]
    assert result.exit_code == 1 and monitor in result.output


def test_check_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("not json\n")
    result = CliRunner().invoke(main, ["check", str(path)])
    assert result.exit_code == 1 and f"{path}:1" in result.output
