"""Scheduling strategies: seeded random, PCT, and replay of a recording.

Each strategy owns its own :class:`random.Random` seeded from the run's seed,
never the global one, so a run is a function of (configuration, seed, code).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._fabric import Actor

from ._fabric import Divergence


@final
class RandomStrategy:
    """Pick uniformly among the ready actors; data choices uniform too."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._rng = random.Random(seed)

    def pick(self, ready: Sequence[Actor], step: int) -> int:
        return self._rng.randrange(len(ready))

    def choose(self, site: str, count: int, step: int) -> int:
        return self._rng.randrange(count)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "seed": self.seed}


@final
class PctStrategy:
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

    Every actor gets a distinct random priority when first seen; the ready
    actor with the highest priority runs. At ``depth - 1`` change points,
    drawn uniformly from ``1..max_steps``, the actor that runs has its priority
    dropped below every initial one. A bug of depth *d* is found with
    probability at least 1/(n·k^(d-1)).

    Args:
        seed: seed of the strategy's own random generator.
        depth: the bug depth *d* to aim for (≥ 1).
        max_steps: estimate of the run's length *k* in steps.
    """

    name = "pct"

    def __init__(self, seed: int, depth: int = 3, max_steps: int = 20_000) -> None:
        if depth < 1:
            raise ValueError("PCT depth must be at least 1")
        self.seed = seed
        self.depth = depth
        self.max_steps = max_steps
        self._rng = random.Random(seed)
        self._priority: dict[str, float] = {}
        points = self._rng.sample(range(1, max(max_steps, depth) + 1), depth - 1)
        # change point step -> new (low) priority; earlier points get higher of the low values
        self._change = {step: float(depth - i) for i, step in enumerate(sorted(points))}

    def _priority_of(self, actor: Actor) -> float:
        p = self._priority.get(actor.name)
        if p is None:
            p = self._priority[actor.name] = self.depth + 1 + self._rng.random()
        return p

    def pick(self, ready: Sequence[Actor], step: int) -> int:
        best = max(range(len(ready)), key=lambda i: self._priority_of(ready[i]))
        low = self._change.get(step)
        if low is not None:
            self._priority[ready[best].name] = low
        return best

    def choose(self, site: str, count: int, step: int) -> int:
        return self._rng.randrange(count)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "seed": self.seed, "depth": self.depth, "max_steps": self.max_steps}


@final
class ReplayStrategy:
    """Follow the choices of a recorded run.

    Args:
        picks: step -> name of the actor that ran at that step (only steps where
            more than one actor was ready are needed).
        choices: step -> the data choices made during that step, in order.
        fallback: where the recording ends (``--explore``), continue with this
            strategy; without one, running past the recording is a divergence.
    """

    name = "replay"

    def __init__(
        self,
        picks: Mapping[int, str],
        choices: Mapping[int, Iterable[int]],
        fallback: RandomStrategy | PctStrategy | None = None,
        until: int | None = None,
    ) -> None:
        self._picks = dict(picks)
        self._choices = {step: list(values) for step, values in choices.items()}
        self._fallback = fallback
        self._last = max([*self._picks, *self._choices, 0]) if until is None else until

    def pick(self, ready: Sequence[Actor], step: int) -> int:
        if self._fallback is not None and step > self._last:
            return self._fallback.pick(ready, step)
        name = self._picks.get(step)
        if name is None:
            raise Divergence(f"step {step}: {len(ready)} actors ready but the recording made no choice here")
        for i, actor in enumerate(ready):
            if actor.name == name:
                return i
        names = ", ".join(sorted(a.name for a in ready))
        raise Divergence(f"step {step}: recorded actor {name!r} is not ready (ready: {names})")

    def choose(self, site: str, count: int, step: int) -> int:
        if self._fallback is not None and step > self._last:
            return self._fallback.choose(site, count, step)
        values = self._choices.get(step)
        if not values:
            raise Divergence(f"step {step}: choice {site!r} was not recorded")
        value = values.pop(0)
        if value >= count:
            raise Divergence(f"step {step}: recorded choice {value} for {site!r} out of range {count}")
        return value

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "until": self._last}
        if self._fallback is not None:
            out["then"] = self._fallback.describe()
        return out


@final
class GuidedStrategy:
    """The default schedule (always the first ready actor), except at the steps given.

    Used by the shrinker: a failing run's schedule is reduced to the fewest
    deviations from the default that still make it fail. Unlike
    :class:`ReplayStrategy` it never diverges: a recorded actor that is not
    ready falls back to the default. With ``inner`` it records, for every step
    with a real choice, which actor ran and whether that deviated from the default.
    """

    name = "guided"

    def __init__(
        self,
        picks: Mapping[int, str],
        choices: Mapping[int, Iterable[int]] | None = None,
        inner: RandomStrategy | PctStrategy | None = None,
    ) -> None:
        self._picks = dict(picks)
        self._choices = {step: list(values) for step, values in (choices or {}).items()}
        self._inner = inner
        self.deviations: dict[int, str] = {}
        self._data: dict[int, list[int]] = {}

    def pick(self, ready: Sequence[Actor], step: int) -> int:
        if self._inner is not None:
            index = self._inner.pick(ready, step)
        else:
            index = 0
            name = self._picks.get(step)
            if name is not None:
                index = next((i for i, a in enumerate(ready) if a.name == name), 0)
        if index:
            self.deviations[step] = ready[index].name
        return index

    def choose(self, site: str, count: int, step: int) -> int:
        if self._inner is not None:
            value = self._inner.choose(site, count, step)
        else:
            values = self._choices.get(step)
            value = values.pop(0) if values else 0
            value = value if value < count else 0
        # Every value of a step is kept, zeros too: a replay hands them out in order, so a
        # step whose first choice was 0 and second 3 must not replay as 3 and then 0.
        self._data.setdefault(step, []).append(value)
        return value

    @property
    def data(self) -> dict[int, list[int]]:
        """The data choices of every step where one of them was not 0 (all of that step's, in order)."""
        return {step: values for step, values in self._data.items() if any(values)}

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "deviations": len(self._picks)}
