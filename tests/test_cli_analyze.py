"""The command line of trace analysis: analyze, traces convert, export perfetto, report."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO
from trace_samples import demo_trace, race_trace

from sesim._cli import main
from traces import REPORT_NAMES, VIEWS


@pytest.fixture(name="trace", scope="module")
def _trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_trace(tmp_path_factory.mktemp("demo"))


def sesim(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_analyze_prints_every_canned_table(trace: Path) -> None:
    code, out, _ = sesim("analyze", str(trace))
    assert code == 0
    for title in ("Traces", "UVCs by command and return code", "Guest life cycles", "Races", "UVC latency"):
        assert title in out
    assert "UNPACK_IMG" in out and "no races found" in out


def test_analyze_json_has_a_list_of_rows_per_table(trace: Path) -> None:
    code, out, _ = sesim("analyze", str(trace), "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["traces"] == [str(trace)]
    assert set(REPORT_NAMES) <= set(doc)
    assert {"guest", "boot_us", "unpack_us", "run_us"} <= set(doc["lifecycle"][0])


def test_analyze_csv_of_one_table_is_plain_csv(trace: Path) -> None:
    code, out, _ = sesim("analyze", str(trace), "--format", "csv", "--table", "latency")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows and {"command", "p50_us", "p99_us"} <= set(rows[0])


def test_analyze_csv_of_several_tables_has_named_sections(trace: Path) -> None:
    code, out, _ = sesim("analyze", str(trace), "--format", "csv", "--table", "uvcs", "--table", "races")
    assert code == 0
    sections = out.split("\n\n")
    assert [s.splitlines()[0] for s in sections] == ["# uvcs", "# races"]


def test_analyze_sql_as_json_rows(trace: Path) -> None:
    query = "SELECT guest, count(*) AS n FROM uvcs WHERE guest IS NOT NULL GROUP BY guest ORDER BY guest"
    code, out, _ = sesim("analyze", str(trace), "--sql", query, "--format", "json")
    assert code == 0
    assert [r["guest"] for r in json.loads(out)] == ["alpha", "beta", "gamma"]


def test_analyze_finds_races(tmp_path: Path) -> None:
    code, out, _ = sesim("analyze", str(race_trace(tmp_path / "r.jsonl")), "--table", "races", "--format", "json")
    assert code == 0
    assert json.loads(out)["races"][0]["resolution"] == "busy (cc 2), retried: ok after 3 tries"


def test_analyze_help_documents_every_view_and_column() -> None:
    code, out, _ = sesim("analyze", "--help")
    assert code == 0
    for view in VIEWS:
        assert f"{view.name}: " in out
        for column, _ in view.columns:
            assert f"  {column} " in out


@pytest.mark.parametrize(
    ("content", "message"),
    [("hello\n", ":1: not a sesim trace"), ('{"format":"sesim-trace","format_version":1}\n{"step":1', ":2: truncated")],
)
def test_bad_trace_is_one_line_and_exit_1(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    code, out, err = sesim("analyze", str(bad))
    assert code == 1
    assert err.startswith(f"sesim: error: {bad}{message}")
    assert err.count("\n") == 1


def test_bad_sql_is_one_line_and_exit_1(trace: Path) -> None:
    code, _, err = sesim("analyze", str(trace), "--sql", "SELEC 1")
    assert code == 1
    assert err.startswith("sesim: error: SQL: ")


def test_missing_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    code, _, err = sesim("analyze", str(tmp_path / "nope.jsonl"))
    assert code == 1
    assert "nope.jsonl" in err and err.count("\n") == 1


def test_convert_writes_parquet_that_analyze_reads(tmp_path: Path, trace: Path) -> None:
    out = tmp_path / "campaign.parquet"
    code, text, _ = sesim("traces", "convert", str(trace), "-o", str(out))
    assert code == 0 and "1 traces" in text
    _, from_jsonl, _ = sesim("analyze", str(trace), "--format", "json")
    _, from_parquet, _ = sesim("analyze", str(out), "--format", "json")
    assert json.loads(from_parquet) == json.loads(from_jsonl)


def test_convert_wants_a_parquet_name(tmp_path: Path, trace: Path) -> None:
    code, _, err = sesim("traces", "convert", str(trace), "-o", str(tmp_path / "x.json"))
    assert code == 1 and "must end in .parquet" in err


def test_export_perfetto_writes_trace_events(tmp_path: Path, trace: Path) -> None:
    out = tmp_path / "p.json"
    code, text, _ = sesim("export", "perfetto", str(trace), "-o", str(out), "--window", "0:600us", "--actors", "uv,kvm")
    assert code == 0 and "ui.perfetto.dev" in text
    doc = json.loads(out.read_text())
    names = {e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    assert names <= {"uv", "uv #2", "uv #3", "kvm"} and "kvm" in names


def test_export_perfetto_bad_window_is_a_usage_error(tmp_path: Path, trace: Path) -> None:
    code, _, err = sesim("export", "perfetto", str(trace), "-o", str(tmp_path / "p.json"), "--window", "9:1")
    assert code == 1 and "--window" in err


def test_report_writes_one_html_file(tmp_path: Path, trace: Path) -> None:
    out = tmp_path / "r.html"
    code, _, _ = sesim("report", str(trace), "-o", str(out), "--window", "500us:700us", "--max-messages", "30")
    assert code == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count('<g class="message') <= 30


def test_bench_quick_prints_throughput_and_ratio() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "analyze.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^sesim analyze \(JSONL\): +[\d,]+ events/s", run.stdout, re.M)
    assert re.search(r"^ratio analyze/json\.loads: \d+\.\d+ \(target >= 3\)$", run.stdout, re.M)


def _rich_text(table: object) -> str:
    from rich.console import Console

    console = Console(width=160, file=io.StringIO())
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


_CELLS = [None, True, 0, 7, -12, 123_456, 2.5, 1e7, "", "x", "ok", "pfn 0x1a2b", "a b  c", "y" * 59, "z" * 61, "w" * 200]


@pytest.mark.parametrize("seed", range(40))
def test_plain_tables_are_drawn_as_rich_draws_them(seed: int) -> None:
    import random

    from sesim._cli_analyze import _TABLE_ROWS, _plain, _rich
    from traces import ResultTable

    rng = random.Random(seed)
    ncols = rng.randint(1, 4)
    columns = tuple(rng.choice(["n", "command", "a_longer_column_name", "t_us"]) + str(i) for i in range(ncols))
    nrows = rng.choice([1, 2, 5, _TABLE_ROWS, _TABLE_ROWS + 3])
    rows = [tuple(rng.choice(_CELLS) for _ in columns) for _ in range(nrows)]
    table = ResultTable(name="t", title=rng.choice(["T", "UVC latency (virtual µs)", "x" * 90]), columns=columns, rows=rows)
    text = _plain(table, 160)
    if text is not None:
        assert text == _rich_text(_rich(table))
    else:  # only where rich folds the table to the console's width, or wraps a title wider than the table
        top = next(line for line in _rich_text(_rich(table)).splitlines() if line.startswith("\u250f"))
        assert len(top) == 160 or len(table.title) > len(top)


@pytest.mark.parametrize("cell", ["a:b:c", "[bold]x[/bold]", "ü", "tab\there", "\u4e2d"])
def test_cells_rich_would_change_are_left_to_rich(cell: str) -> None:
    from sesim._cli_analyze import _plain
    from traces import ResultTable

    assert _plain(ResultTable(name="t", title="T", columns=("c",), rows=[(cell,)]), 160) is None
