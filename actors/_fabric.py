"""The message fabric and the deterministic scheduler.

Theory of operation
===================

Every actor is one trio task, but trio never decides which actor runs: at most
one actor runs between two *scheduling points*, and the scheduler picks the
next one. A scheduling point is any fabric await: :meth:`Actor.receive`,
:meth:`Actor.call` (waiting for the reply), :meth:`Actor.sleep` and
:meth:`Actor.yield_`. Sending never blocks and is not a scheduling point.

At a scheduling point the running actor *parks*: it asks the strategy to pick
one of the ready actors and wakes it directly with
:func:`trio.lowlevel.reschedule` (no detour through a scheduler task, so one
trio task switch per delivery), then waits in
:func:`trio.lowlevel.wait_task_rescheduled`. If the strategy picks the parking
actor itself, no switch happens at all. Because every actor is parked in
``wait_task_rescheduled`` except the one that runs, trio's own ordering of
ready tasks never matters (DESIGN.md, Determinism).

Time is virtual, in integer nanoseconds. It advances only when no actor is
ready: then every timer due at the earliest deadline fires at once (the
strategy orders them like any other ready actors). When nothing is ready and
no timer is pending the system is *quiescent* and the run ends.

Every resumption of an actor is one *step*, and one trace event: the actor, the
kind of wake-up (``recv``, ``reply``, ``wake``, ``start``), the message it
received and, where the strategy had a real choice, how many actors were ready
(``of``). That record is what replay follows.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from typing import Any, Final, Protocol, TypeVar, final

import trio
from attrs import frozen

from protocol import SesimInternalError

T = TypeVar("T")

_ABORT: Final = lambda _raise_cancel: trio.lowlevel.Abort.SUCCEEDED  # noqa: E731


class Recorder(Protocol):
    """Where the fabric writes its events (implemented by :mod:`traces`).

    ``step`` and ``now`` are read from the fabric by the recorder itself, so the
    hot path passes only what changes.
    """

    def __call__(self, actor: str, kind: str, payload: dict[str, Any]) -> None: ...


class Strategy(Protocol):
    """How the scheduler makes its choices (see :mod:`actors._strategy`)."""

    def pick(self, ready: Sequence[Actor], step: int) -> int:
        """Index into ``ready`` (which has at least two entries) of the actor to run."""
        ...

    def choose(self, site: str, count: int, step: int) -> int:
        """A value in ``range(count)`` for a data choice named ``site``."""
        ...


class Divergence(Exception):
    """A replayed run asked for a choice that the recording cannot give."""


class RunLimitReached(Exception):
    """The run hit its step or virtual-time limit before it became quiescent."""


@final
class Envelope:
    """A message in flight: who sent it, to whom, and the correlation id of a call."""

    __slots__ = ("sender", "target", "corr", "msg", "sent_at", "is_reply")

    def __init__(self, sender: Actor, target: Actor, corr: int, msg: Any, sent_at: int, is_reply: bool) -> None:
        self.sender = sender
        self.target = target
        self.corr = corr
        self.msg = msg
        self.sent_at = sent_at
        self.is_reply = is_reply


# What a parked actor is waiting for.
_RUNNING, _RECV, _REPLY, _SLEEP, _YIELD, _START, _DONE = range(7)
_WAKE_KIND: Final = {_RECV: "recv", _REPLY: "reply", _SLEEP: "wake", _YIELD: "wake", _START: "start"}


class Actor:
    """One concurrent component. Subclasses implement :meth:`main`.

    All methods that await are scheduling points; everything else runs without
    interruption, so an actor's synchronous code is atomic with respect to
    every other actor.
    """

    kind: str = "actor"

    def __init__(self, fabric: Fabric, name: str) -> None:
        self.fabric = fabric
        self.name = name
        self._mailbox: deque[Envelope] = deque()
        self._replies: dict[int, Envelope] = {}
        self._waiting = _START
        self._wait_corr = 0
        self._is_ready = False
        self._task: trio.lowlevel.Task | None = None
        self._resume_before_start = False
        self.finished = False
        self.error: BaseException | None = None
        fabric._register(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    async def main(self) -> None:
        """The actor's behaviour; returning ends the actor."""

    # ------------------------------------------------------------------ API
    @property
    def now(self) -> int:
        """The virtual time in nanoseconds."""
        return self.fabric.now

    def send(self, target: Actor, msg: Any) -> None:
        """Put ``msg`` in ``target``'s mailbox. Never blocks."""
        fabric = self.fabric
        fabric._corr += 1
        fabric._deliver(Envelope(self, target, fabric._corr, msg, fabric.now, False))

    def send_after(self, delay: int, target: Actor, msg: Any) -> None:
        """Deliver ``msg`` to ``target`` once ``delay`` ns of virtual time have passed."""
        fabric = self.fabric
        fabric._corr += 1
        fabric._add_timer(fabric.now + delay, target, Envelope(self, target, fabric._corr, msg, fabric.now, False))

    def reply(self, request: Envelope, msg: Any) -> None:
        """Answer a :meth:`call`; the caller resumes with ``msg``."""
        self.fabric._deliver(Envelope(self, request.sender, request.corr, msg, self.fabric.now, True))

    async def receive(self) -> Envelope:
        """The next message of the mailbox (FIFO), parking until there is one."""
        self._waiting = _RECV
        if self._mailbox:
            self.fabric._make_ready(self)
        await self.fabric._park(self)
        return self._mailbox.popleft()

    async def call(self, target: Actor, msg: Any) -> Any:
        """Send ``msg`` and park until ``target`` replies to it; return the reply."""
        fabric = self.fabric
        fabric._corr += 1
        corr = fabric._corr
        fabric._deliver(Envelope(self, target, corr, msg, fabric.now, False))
        self._waiting = _REPLY
        self._wait_corr = corr
        await fabric._park(self)
        return self._replies.pop(corr).msg

    async def sleep(self, duration: int) -> None:
        """Park for ``duration`` ns of virtual time (0 is a plain scheduling point)."""
        if duration <= 0:
            await self.yield_()
            return
        self._waiting = _SLEEP
        self.fabric._add_timer(self.fabric.now + duration, self, None)
        await self.fabric._park(self)

    async def yield_(self) -> None:
        """A scheduling point that keeps this actor ready: let others run first if the strategy says so."""
        self._waiting = _YIELD
        self.fabric._make_ready(self)
        await self.fabric._park(self)

    def choose(self, site: str, count: int) -> int:
        """A nondeterministic data choice in ``range(count)``, made and recorded by the scheduler."""
        return self.fabric.choose(self, site, count)

    def record(self, kind: str, **payload: Any) -> None:
        """Write an event of this actor to the trace."""
        self.fabric.record(self.name, kind, payload)

    # ------------------------------------------------------------ internals
    async def _bootstrap(self) -> None:
        self._task = trio.lowlevel.current_task()
        if not self._resume_before_start:
            await trio.lowlevel.wait_task_rescheduled(_ABORT)
        self._waiting = _RUNNING
        try:
            await self.main()
        except trio.Cancelled:
            raise
        except BaseException as exc:  # an actor bug: stop the whole run, loudly
            self.error = exc
            self.fabric._crash(self, exc)
            raise
        self.finished = True
        self._waiting = _DONE
        self.fabric.record(self.name, "exit", {})
        self.fabric._hand_over(self)


@final
class Fabric:
    """Mailboxes, timers, virtual time and the one scheduler of a run.

    Args:
        strategy: makes every scheduling and data choice.
        recorder: receives every event; ``None`` records nothing.
        max_steps: stop with :class:`RunLimitReached` after this many steps.
        max_time: stop with :class:`RunLimitReached` once virtual time passes this.
    """

    def __init__(
        self,
        strategy: Strategy,
        recorder: Recorder | None = None,
        *,
        max_steps: int | None = None,
        max_time: int | None = None,
    ) -> None:
        self.strategy = strategy
        self.recorder = recorder
        self.now = 0
        self.step = 0
        self.max_steps = max_steps
        self.max_time = max_time
        self.actors: list[Actor] = []
        self._by_name: dict[str, Actor] = {}
        self._ready: list[Actor] = []
        self._timers: list[tuple[int, int, Actor, Envelope | None]] = []
        self._timer_seq = 0
        self._corr = 0
        self._nursery: trio.Nursery | None = None
        self._driver: trio.lowlevel.Task | None = None
        self._outcome: BaseException | None = None
        self._done = False
        self._started = False
        self._last_choice_count = 0

    # ------------------------------------------------------------- building
    def _register(self, actor: Actor) -> None:
        if actor.name in self._by_name:
            raise SesimInternalError(f"two actors named {actor.name!r}")
        self.actors.append(actor)
        self._by_name[actor.name] = actor
        self._make_ready(actor)
        if self._started:
            assert self._nursery is not None
            self._nursery.start_soon(actor._bootstrap, name=actor.name)

    def actor(self, name: str) -> Actor:
        """The actor called ``name``."""
        return self._by_name[name]

    def record(self, actor: str, kind: str, payload: dict[str, Any]) -> None:
        """Write one event (no-op without a recorder)."""
        if self.recorder is not None:
            self.recorder(actor, kind, payload)

    def choose(self, actor: Actor, site: str, count: int) -> int:
        """A data choice through the strategy, recorded in the trace."""
        if count <= 1:
            return 0
        value = self.strategy.choose(site, count, self.step)
        if self.recorder is not None:
            self.recorder(actor.name, "choice", {"site": site, "of": count, "value": value})
        return value

    # ------------------------------------------------------------- running
    async def run(self) -> None:
        """Run every actor until the system is quiescent.

        Raises:
            RunLimitReached: the step or time limit was hit first.
            Divergence: a replay strategy could not follow its recording.
            Exception: whatever an actor raised (a bug in that actor).
        """
        self._driver = trio.lowlevel.current_task()
        try:
            await self._run_nursery()
        except BaseExceptionGroup as group:
            # An actor crashed; the rest were cancelled. Re-raise the crash itself.
            errors = [e for e in group.exceptions if not isinstance(e, trio.Cancelled)]
            if len(errors) == 1:
                raise errors[0] from None
            raise
        if self._outcome is not None:
            raise self._outcome

    async def _run_nursery(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for actor in self.actors:
                nursery.start_soon(actor._bootstrap, name=actor.name)
            self._started = True
            # Wait for every actor to park in its bootstrap, then start the first.
            await trio.lowlevel.checkpoint()
            while any(actor._task is None for actor in self.actors):
                await trio.lowlevel.checkpoint()
            self._hand_over(None)
            if not self._done:
                await trio.lowlevel.wait_task_rescheduled(_ABORT)
            nursery.cancel_scope.cancel()

    def _crash(self, actor: Actor, exc: BaseException) -> None:
        self.record(actor.name, "crash", {"error": f"{type(exc).__name__}: {exc}"})

    def _finish(self, outcome: BaseException | None) -> None:
        self._outcome = outcome
        self._done = True
        assert self._driver is not None
        if trio.lowlevel.current_task() is not self._driver:
            trio.lowlevel.reschedule(self._driver)

    def _make_ready(self, actor: Actor) -> None:
        if not actor._is_ready:
            actor._is_ready = True
            self._ready.append(actor)

    def _deliver(self, env: Envelope) -> None:
        target = env.target
        if env.is_reply:
            target._replies[env.corr] = env
            if target._waiting == _REPLY and target._wait_corr == env.corr:
                self._make_ready(target)
        else:
            target._mailbox.append(env)
            if target._waiting == _RECV:
                self._make_ready(target)

    def _add_timer(self, when: int, actor: Actor, env: Envelope | None) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, actor, env))

    def _fire_timers(self) -> bool:
        """Advance time to the next deadline and fire every timer due then."""
        timers = self._timers
        if not timers:
            return False
        when = timers[0][0]
        if self.max_time is not None and when > self.max_time:
            return False
        self.now = when
        while timers and timers[0][0] == when:
            _, _, actor, env = heapq.heappop(timers)
            if env is None:
                if actor._waiting == _SLEEP:
                    self._make_ready(actor)
            else:
                self._deliver(env)
        return True

    def _pick(self) -> Actor | None:
        ready = self._ready
        if not ready and not self._fire_timers():
            return None
        if not ready:  # timers fired but woke nobody (e.g. a message to a finished actor)
            return self._pick()
        count = self._last_choice_count = len(ready)
        index = 0 if count == 1 else self.strategy.pick(ready, self.step + 1)
        actor = ready[index]
        ready[index] = ready[-1]
        ready.pop()
        actor._is_ready = False
        return actor

    def _resume_event(self, actor: Actor, count: int) -> None:
        waiting = actor._waiting
        payload: dict[str, Any]
        if waiting == _RECV:
            env = actor._mailbox[0]
            if env.sender is actor and count == 1:
                # An actor's own timer (the UV finishing a call) where nothing else could
                # run: neither a message between actors nor a choice, so not an event.
                return
            payload = {"from": env.sender.name, "corr": env.corr, "sent": env.sent_at, "msg": env.msg}
        elif waiting == _REPLY:
            env = actor._replies[actor._wait_corr]
            payload = {"from": env.sender.name, "corr": env.corr, "sent": env.sent_at, "msg": env.msg}
        else:
            payload = {}
        if count > 1:
            payload["of"] = count
        self.recorder(actor.name, _WAKE_KIND[waiting], payload)  # type: ignore[misc]

    def _next(self) -> Actor | None:
        """Choose the next actor to run, count the step and record it; None when quiescent."""
        actor = self._pick()
        if actor is None:
            return None
        count = self._last_choice_count
        self.step += 1
        if self.max_steps is not None and self.step > self.max_steps:
            raise RunLimitReached(f"step limit {self.max_steps} reached at virtual time {self.now} ns")
        if self.recorder is not None:
            self._resume_event(actor, max(count, 1))
        return actor

    def _hand_over(self, current: Actor | None) -> None:
        """Wake the next actor; ``current`` does not run again until it is picked."""
        try:
            nxt = self._next()
        except BaseException as exc:
            self._finish(exc)
            return
        if nxt is None:
            self._finish(None)
        elif nxt._task is None:
            nxt._resume_before_start = True
        else:
            trio.lowlevel.reschedule(nxt._task)

    async def _park(self, actor: Actor) -> None:
        try:
            nxt = self._next()
        except BaseException as exc:
            self._finish(exc)
            nxt = None
            await trio.lowlevel.wait_task_rescheduled(_ABORT)
        if nxt is actor:
            actor._waiting = _RUNNING
            return
        if nxt is None:
            self._finish(None)
        elif nxt._task is None:
            nxt._resume_before_start = True
        else:
            trio.lowlevel.reschedule(nxt._task)
        await trio.lowlevel.wait_task_rescheduled(_ABORT)
        actor._waiting = _RUNNING

    # ---------------------------------------------------------- inspection
    def statistics(self) -> FabricStatistics:
        """Counters of the run so far."""
        return FabricStatistics(
            steps=self.step,
            now=self.now,
            actors=len(self.actors),
            finished=sum(1 for a in self.actors if a.finished),
            pending_timers=len(self._timers),
        )

    def blocked(self) -> list[Actor]:
        """Actors that have not finished (after a run: those left waiting at quiescence)."""
        return [a for a in self.actors if not a.finished]


@frozen(kw_only=True)
class FabricStatistics:
    """What :meth:`Fabric.statistics` reports."""

    steps: int
    now: int
    actors: int
    finished: int
    pending_timers: int
