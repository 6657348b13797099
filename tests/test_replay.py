"""Replay: the same trace comes out again; a changed one shows where."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sesim._cli import main
from sesim._simulation import DEMO_WORKLOAD, GuestConfig, RunConfig, run

CONFIG = RunConfig(
    memory_mib=3072,
    strategy="pct",
    guests=(
        GuestConfig(name="alpha", secure=True, memory_mib=16, cpus=2, workload=DEMO_WORKLOAD),
        GuestConfig(name="delta", secure=False, memory_mib=16, cpus=2, workload=DEMO_WORKLOAD[:4]),
    ),
)


@pytest.fixture(name="trace")
def _trace(tmp_path: Path) -> Path:
    path = tmp_path / "run.jsonl"
    run(CONFIG, seed=21, trace=path)
    return path


def test_replay_of_an_unchanged_trace_is_identical(trace: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(trace)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("identical:")


def test_replay_until_a_step_compares_the_prefix(trace: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(trace), "--until", "100"])
    assert result.exit_code == 0 and "identical" in result.output


def test_replay_names_the_first_event_that_differs(trace: Path) -> None:
    lines = trace.read_bytes().splitlines()
    lines[300] = lines[300].replace(b'"t":', b'"t":7', 1)
    trace.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(main, ["replay", str(trace)])
    assert result.exit_code == 1
    assert "differs at event 300" in result.output
    assert result.output.count("\n- ") == 1 and "\n+ " in result.output


def test_replay_of_a_truncated_trace_names_the_file_and_line(trace: Path) -> None:
    data = trace.read_bytes()
    trace.write_bytes(data[: len(data) // 2 - 5])
    result = CliRunner().invoke(main, ["replay", str(trace)])
    assert result.exit_code == 1
    assert f"{trace}:" in result.output and "Traceback" not in result.output


def test_replay_of_a_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"hello": 1}\n')
    result = CliRunner().invoke(main, ["replay", str(path)])
    assert result.exit_code == 1 and f"{path}:1: not a sesim trace" in result.output


def test_explore_replays_a_prefix_then_tries_fresh_seeds(trace: Path) -> None:
    result = CliRunner().invoke(main, ["replay", str(trace), "--until", "150", "--explore", "2"])
    assert result.exit_code == 0, result.output
    assert "alpha: halted" in result.output
