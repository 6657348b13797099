"""The fabric and the scheduler: one actor at a time, every choice from the strategy."""

from __future__ import annotations

import io

import pytest
from attrs import frozen

from actors import Actor, Divergence, Fabric, PctStrategy, RandomStrategy, ReplayStrategy, RunLimitReached
from traces._writer import TraceRecorder


@frozen
class Ping:
    n: int


class Echo(Actor):
    async def main(self) -> None:
        while True:
            env = await self.receive()
            if env.msg is None:
                return
            self.reply(env, Ping(env.msg.n + 1))


class Caller(Actor):
    def __init__(self, fabric: Fabric, name: str, target: Actor, count: int, log: list[str]) -> None:
        super().__init__(fabric, name)
        self.target, self.count, self.log = target, count, log

    async def main(self) -> None:
        for i in range(self.count):
            reply = await self.call(self.target, Ping(i))
            assert reply.n == i + 1
            self.log.append(f"{self.name}:{i}@{self.now}")
            await self.sleep(10 * (i + 1))


async def _run(strategy: object, callers: int = 3, count: int = 5) -> tuple[list[str], bytes]:
    fabric = Fabric(strategy)  # type: ignore[arg-type]
    sink = io.BytesIO()
    fabric.recorder = TraceRecorder(fabric, sink)
    echo = Echo(fabric, "echo")
    log: list[str] = []
    actors = [Caller(fabric, f"c{i}", echo, count, log) for i in range(callers)]

    class Closer(Actor):
        async def main(self) -> None:
            while not all(a.finished for a in actors):
                await self.sleep(1000)
            self.send(echo, None)

    Closer(fabric, "closer")
    await fabric.run()
    return log, sink.getvalue()


async def test_call_and_reply_deliver_every_answer_to_its_caller() -> None:
    log, _ = await _run(RandomStrategy(1))
    assert sorted(log) == sorted(f"c{c}:{i}@{t}" for c in range(3) for i, t in zip(range(5), _times(log, c)))
    assert len(log) == 15


def _times(log: list[str], c: int) -> list[int]:
    return [int(entry.split("@")[1]) for entry in log if entry.startswith(f"c{c}:")]


async def test_virtual_time_advances_only_by_sleeps() -> None:
    log, _ = await _run(RandomStrategy(2), callers=1, count=3)
    assert [int(e.split("@")[1]) for e in log] == [0, 10, 30]


async def test_same_seed_gives_the_same_trace_bytes() -> None:
    runs = [await _run(RandomStrategy(7)) for _ in range(5)]
    assert len({trace for _, trace in runs}) == 1


async def test_different_seeds_explore_different_schedules() -> None:
    traces = {(await _run(RandomStrategy(seed)))[1] for seed in range(10)}
    assert len(traces) > 1


async def test_pct_strategy_is_deterministic_per_seed() -> None:
    a = await _run(PctStrategy(3, depth=2, max_steps=200))
    b = await _run(PctStrategy(3, depth=2, max_steps=200))
    assert a == b


async def test_replay_follows_the_recorded_choices() -> None:
    import orjson

    log, trace = await _run(RandomStrategy(11))
    picks = {}
    for line in trace.splitlines():
        event = orjson.loads(line)
        if "of" in event:
            picks[event["step"]] = event["actor"]
    replay_log, replay_trace = await _run(ReplayStrategy(picks, {}))
    assert replay_log == log
    assert replay_trace == trace


async def test_replay_reports_divergence_when_the_recording_does_not_fit() -> None:
    with pytest.raises(Divergence):
        await _run(ReplayStrategy({}, {}))


async def test_step_limit_stops_a_run() -> None:
    fabric = Fabric(RandomStrategy(0), max_steps=5)

    class Spinner(Actor):
        async def main(self) -> None:
            while True:
                await self.yield_()

    Spinner(fabric, "spin")
    with pytest.raises(RunLimitReached):
        await fabric.run()


async def test_an_actor_crash_ends_the_run_with_its_error() -> None:
    fabric = Fabric(RandomStrategy(0))

    class Broken(Actor):
        async def main(self) -> None:
            await self.sleep(5)
            raise KeyError("boom")

    Broken(fabric, "broken")
    with pytest.raises(KeyError):
        await fabric.run()
