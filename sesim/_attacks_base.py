"""What an attack of the catalogue is, and how one run of it is judged.

An attack is data and code: its name, what it tries, the defences that must
stop it (:class:`sesim._hostile.Defence`), and a function that performs it
as the hostile host. Testbed attacks (``runner="testbed"``) are ``async``
functions of a :class:`sesim._attacks_arena.Arena`; attacks on the running
system (``runner="actors"``) are plain functions of a
:class:`sesim._attacks_sim.SimArena`. The function's docstring says the
steps.

An attack is **stopped** when every step it declared met its expected
defence, every expected defence fired at least once, the hostile host
obtained zero bytes of the victim's plaintext, and the victim either runs on
with its data intact or stopped rather than use what the host changed. A
*control* scenario is the opposite: it is built to leak, to show that the
counter can count.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from attrs import frozen

from ._hostile import Attempt, Defence, LeakReport

AREAS = ("memory", "boot", "cpu", "requests", "swap & I/O", "control")


@frozen(kw_only=True)
class Attack:
    """One attack of the catalogue (module docstring)."""

    name: str
    title: str
    """What the hostile host tries, in one line."""
    defence: str
    """What stops it, in words."""
    expected: tuple[Defence, ...]
    area: str
    runner: str
    fn: Callable[..., Any]
    steps: str = ""
    """The attack steps (the function's docstring)."""
    control: bool = False

    @property
    def expected_labels(self) -> list[str]:
        return [d.label for d in self.expected]


REGISTRY: dict[str, Attack] = {}


def attack(
    name: str,
    *,
    title: str,
    defence: str,
    expected: tuple[Defence, ...],
    area: str,
    runner: str = "testbed",
    control: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as the attack ``name``."""
    if area not in AREAS:
        raise ValueError(f"unknown attack area {area!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in REGISTRY:
            raise ValueError(f"two attacks named {name}")
        REGISTRY[name] = Attack(
            name=name, title=title, defence=defence, expected=expected, area=area, runner=runner, fn=fn,
            steps=inspect.getdoc(fn) or "", control=control,
        )  # fmt: skip
        return fn

    return register


@frozen(kw_only=True)
class AttackResult:
    """One run of an attack: what fired, what the victim became, what leaked, and the verdict."""

    attack: Attack
    attempts: tuple[Attempt, ...]
    fired: tuple[Defence, ...]
    guest: str
    intact: bool | None
    leak: LeakReport
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def stopped(self) -> bool:
        """The attack failed: every defence held and nothing leaked (a control: it leaked)."""
        return not self.problems

    @property
    def defences_fired(self) -> list[str]:
        """Labels of the expected defences that fired, each once, in the catalogue's order."""
        return [d.label for d in self.attack.expected if any(d.matches(f) for f in self.fired)]

    def to_json(self) -> dict[str, Any]:
        a = self.attack
        return {
            "attack": a.name,
            "area": a.area,
            "title": a.title,
            "expected": a.expected_labels,
            "fired": self.defences_fired,
            "all_fired": sorted({f.label for f in self.fired}),
            "steps": [_step_json(t) for t in self.attempts],
            "guest": self.guest,
            "intact": self.intact,
            "obtained_bytes": self.leak.obtained_bytes,
            "plaintext_bytes": self.leak.plaintext_bytes,
            "leaks": [{"source": s, "bytes": n} for s, n in self.leak.sources],
            "stopped": self.stopped,
            "control": a.control,
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def _step_json(t: Attempt) -> dict[str, Any]:
    return {"step": t.step, "expected": t.expected.label, "fired": None if t.fired is None else t.fired.label,
            "stopped": t.stopped}  # fmt: skip


def judge(
    attack: Attack,
    *,
    attempts: list[Attempt],
    fired: list[Defence],
    guest: str,
    intact: bool | None,
    leak: LeakReport,
    extra: list[str],
    notes: tuple[str, ...] = (),
) -> AttackResult:
    """The verdict of one run (module docstring)."""
    if attack.control:
        # A control must leak: that shows the counter finds plaintext where there is some.
        problems = [] if leak.plaintext_bytes else ["the control leaked nothing: the counter did not see it"]
        return AttackResult(
            attack=attack, attempts=tuple(attempts), fired=tuple(fired), guest=guest, intact=intact, leak=leak,
            problems=tuple(problems + extra), notes=tuple(notes),
        )  # fmt: skip
    problems = [t.problem for t in attempts if not t.stopped]
    if not attempts:
        problems.append("the attack performed no step")
    for expected in attack.expected:
        if not any(expected.matches(f) for f in fired):
            problems.append(f"{expected.label} never fired")
    problems += extra
    if intact is False:
        problems.append(f"the victim's data was changed ({guest})")
    if leak.plaintext_bytes:
        where = ", ".join(f"{s} ({n})" for s, n in leak.sources[:3])
        problems.append(f"{leak.plaintext_bytes} plaintext bytes obtained: {where}")
    return AttackResult(
        attack=attack, attempts=tuple(attempts), fired=tuple(fired), guest=guest, intact=intact, leak=leak,
        problems=tuple(problems), notes=tuple(notes),
    )  # fmt: skip
