"""Stress campaigns: verdicts, determinism rechecks, shrinking, Dask."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from actors._strategy import GuidedStrategy
from sesim._campaign import CampaignOptions, recheck_seeds, run_distributed, run_seed, run_serial
from sesim._cli import main
from sesim._corpus import CORPUS
from sesim._shrink import shrink, write_shrunk_trace
from sesim._simulation import GuestConfig, RunConfig
from sesim._swarm import swarm_config

OPTIONS = CampaignOptions(swarm=True)


def test_swarm_configurations_are_a_function_of_the_seed() -> None:
    assert swarm_config(7) == swarm_config(7)
    assert len({swarm_config(seed) for seed in range(20)}) > 10


def test_a_seed_gives_the_same_trace_hash_twice() -> None:
    assert run_seed(3, OPTIONS).trace_hash == run_seed(3, OPTIONS).trace_hash


def test_swarm_seeds_pass_without_injected_bugs() -> None:
    outcomes = run_serial(range(40), OPTIONS)
    assert [o.failures for o in outcomes if not o.ok] == []
    assert all(o.steps > 0 for o in outcomes)


def test_recheck_takes_an_even_share_of_the_seeds() -> None:
    assert recheck_seeds(range(100), 0.1) == list(range(0, 100, 10))
    assert recheck_seeds(range(5), 0) == []


def _broken_config() -> RunConfig:
    good = ("write 0x100000 pages=2", "read 0x100000 pages=2", "diag9c")
    return RunConfig(
        memory_mib=3072,
        guests=(
            GuestConfig(name="a", secure=True, memory_mib=4, cpus=2, workload=good),
            # reaches beyond its 1 MiB: the guest stops with an addressing exception
            GuestConfig(name="b", secure=False, memory_mib=1, cpus=2, workload=(*good[:1], "compute 10", "read 0x200000")),
            GuestConfig(name="c", secure=False, memory_mib=4, cpus=1, workload=good),
        ),
    )


def test_a_failing_run_is_judged_a_liveness_failure() -> None:
    outcome = run_seed(1, OPTIONS, config=_broken_config())
    assert outcome.failure_class == "liveness"
    assert "b ended halted, its OS stopped" in outcome.failures[0]


def test_shrinking_keeps_the_failure_and_drops_the_rest(tmp_path: Path) -> None:
    config = _broken_config()
    original = run_seed(1, OPTIONS, config=config)
    shrunk = shrink(1, OPTIONS, original, config=config, runs=80, seconds=60)
    assert [g.name for g in shrunk.config.guests] == ["b"]
    assert shrunk.config.guests[0].workload == ("read 0x200000",)
    assert shrunk.outcome.failure_class == "liveness"
    path = tmp_path / "shrunk.jsonl"
    assert write_shrunk_trace(1, OPTIONS, shrunk, path).failure_class == "liveness"
    replayed = CliRunner().invoke(main, ["replay", str(path)])
    assert replayed.exit_code == 0 and "identical" in replayed.output


def test_serial_and_two_worker_dask_campaigns_give_the_same_results() -> None:
    seeds = list(range(12))
    serial = run_serial(seeds, OPTIONS)
    distributed = run_distributed(seeds, OPTIONS, workers=2, scheduler=None, chunk=3)
    assert [(o.seed, o.trace_hash, o.failures) for o in serial] == [
        (o.seed, o.trace_hash, o.failures) for o in distributed
    ]


def test_stress_command_reports_and_saves_coverage(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["stress", "--seeds", "0..9", "--swarm", "--workers", "1", "--recheck", "0.2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "no failures" in result.output
    assert "2 / 0" in result.output  # rechecked / nondeterministic
    assert (tmp_path / "coverage.json").exists()


@pytest.mark.parametrize("text", ["9..3", "x", "-1..2"])
def test_stress_refuses_bad_seed_ranges(text: str) -> None:
    result = CliRunner().invoke(main, ["stress", "--seeds", text, "--workers", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_scenario_campaign_runs_a_race_scenario_and_names_it_in_the_reproduce_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["stress", "--scenario", "second-cpu", "--seeds", "0..3", "--workers", "1", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0 and "4/4" in result.output, result.output
    bug = CliRunner().invoke(main, ["stress", "--scenario", "second-cpu", "--seeds", "3..3", "--workers", "1",
                                    "--inject-bug", "destroy-without-export-fallback", "--out", str(tmp_path),
                                    "--shrink-seconds", "5"])  # fmt: skip
    assert bug.exit_code == 1 and "--scenario second-cpu" in " ".join(bug.output.split())


@pytest.mark.parametrize(
    ("options", "says"),
    [(["--swarm"], "exclude each other"), (["--no-faults"], "--no-faults has no effect")],
)
def test_scenario_refuses_options_it_cannot_honour(options: list[str], says: str) -> None:
    result = CliRunner().invoke(main, ["stress", *options, "--scenario", "one-page", "--seeds", "0..0"])
    assert result.exit_code == 2 and says in result.output


def test_a_guest_stopped_because_a_hostile_host_tampered_with_it_is_not_a_failure() -> None:
    outcome = run_seed(0, CampaignOptions(scenario="tampered-swap"))
    assert outcome.ok, outcome.failures


def test_a_shrunk_run_is_never_longer_than_the_original() -> None:
    entry = next(e for e in CORPUS if e.name == "bug-writeback-without-ref")
    assert entry.options is not None
    original = run_seed(entry.seed, entry.options)
    assert original.failure_class == "violation: kernel"
    shrunk = shrink(entry.seed, entry.options, original, runs=40, seconds=60)
    assert shrunk.outcome.failure_class == "violation: kernel"
    assert shrunk.outcome.steps <= original.steps


@pytest.mark.parametrize("seed", [115, 173])
def test_a_guided_replay_of_a_recorded_schedule_runs_the_same_events(seed: int, tmp_path: Path) -> None:
    """What the shrinker relies on: the deviations and data choices it records replay exactly
    (a step with several data choices keeps its zeros: [0, 3] must not replay as [3, 0])."""
    options = CampaignOptions(swarm=True)
    recorder = GuidedStrategy({}, inner=options.strategy_for(seed))
    first, second = tmp_path / "recorded.jsonl", tmp_path / "guided.jsonl"
    run_seed(seed, options, strategy=recorder, trace=first)
    run_seed(seed, options, strategy=GuidedStrategy(recorder.deviations, recorder.data), trace=second)
    assert first.read_bytes().splitlines()[1:] == second.read_bytes().splitlines()[1:]
