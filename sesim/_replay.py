"""Replaying a recorded trace: same configuration, same seed, the recorded schedule."""

from __future__ import annotations

import io
from pathlib import Path

from attrs import frozen

from actors import Divergence, RandomStrategy, ReplayStrategy, RunLimitReached
from traces._replay import Difference, first_difference, read_recording

from ._config import ConfigError, parse_config
from ._simulation import RunResult, run


@frozen(kw_only=True)
class ReplayOutcome:
    """What a replay found."""

    events: int  # events compared
    difference: Difference | None
    divergence: str  # the scheduler could not follow the recording ("" if it could)

    @property
    def identical(self) -> bool:
        return self.difference is None and not self.divergence


def _step(line: bytes) -> int:
    import orjson

    return int(orjson.loads(line)["step"])


def replay(path: Path, *, until: int | None = None, context: int = 3) -> ReplayOutcome:
    """Re-run the trace at ``path`` along its recorded choices and compare every event.

    Args:
        until: compare only up to this step (the run stops there).
    """
    recording = read_recording(path)
    try:
        config = parse_config(recording.header.get("config", {}), source=f"{path}: header config", check_ranges=False)
    except ConfigError as exc:
        raise ConfigError(f"cannot replay: {exc}") from None
    strategy = ReplayStrategy(recording.picks, recording.choices)
    sink = io.BytesIO()
    divergence = ""
    try:
        run(config, seed=recording.seed, trace=None, strategy=strategy, sink=sink, max_steps=until)
    except RunLimitReached:
        if until is None:
            raise
    except Divergence as exc:
        divergence = str(exc)
    got = sink.getvalue().splitlines()[1:]
    expected = list(recording.lines)
    if until is not None:
        expected = [line for line in expected if _step(line) <= until]
        got = [line for line in got if _step(line) <= until]
    return ReplayOutcome(
        events=len(expected), difference=first_difference(expected, got, context=context), divergence=divergence
    )


def explore(path: Path, *, prefix: int | None, seeds: range) -> list[tuple[int, RunResult | str]]:
    """Replay the recording up to step ``prefix`` (default: all of it), then go on with fresh seeds."""
    recording = read_recording(path)
    config = parse_config(recording.header.get("config", {}), source=f"{path}: header config", check_ranges=False)
    until = recording.last_step if prefix is None else prefix
    results: list[tuple[int, RunResult | str]] = []
    for seed in seeds:
        strategy = ReplayStrategy(recording.picks, recording.choices, fallback=RandomStrategy(seed), until=until)
        try:
            results.append((seed, run(config, seed=recording.seed, trace=None, strategy=strategy)))
        except Divergence as exc:
            results.append((seed, f"diverged: {exc}"))
    return results
