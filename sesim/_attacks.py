"""The catalogue of attacks by a hostile hypervisor, and running them (issue 9).

Every attack is an executable scenario with the defence that must stop it
(:mod:`sesim._attacks_base`). They live by area in ``_attacks_memory``,
``_attacks_boot``, ``_attacks_cpu``, ``_attacks_requests`` (testbed
attacks) and ``_attacks_sim`` (attacks on the running actor system:
swapping, I/O, dumps under way). :func:`run_attack` runs one in a fresh
world and judges it; the plaintext accounting of :mod:`sesim._hostile`
counts what the hostile host obtained.

Everything is deterministic: testbed attacks run on a testbed of seed 0,
simulated ones on fixed seeds; keys and images derive from fixed labels.
The one exception is the test PKI of the revoked-HKD attack (keys from the
OS, as ``sesim hostkey`` makes them), whose outcome does not depend on them.
"""

from __future__ import annotations

import traceback

import trio

from protocol import UsageError

from . import (  # noqa: F401  (importing an attack module registers its attacks, in catalogue order)
    _attacks_boot,
    _attacks_cpu,
    _attacks_io,
    _attacks_memory,
    _attacks_requests,
    _attacks_sim,
    _attacks_storage,
    _attacks_swap,
)
from ._attacks_arena import Arena
from ._attacks_base import AREAS, REGISTRY, Attack, AttackResult, judge
from ._hostile import HostileHost, LeakReport
from .testbed import open_testbed

__all__ = ["Attack", "AttackResult", "catalogue", "controls", "find", "run_attack", "run_attacks"]


_MODULES = ("memory", "storage", "boot", "cpu", "requests", "swap", "io")
"""The attack modules in catalogue order (within a module: the order of its attacks)."""


def _order(attack: Attack) -> tuple[int, int]:
    module = attack.fn.__module__.rsplit("_attacks_", 1)[-1]
    return AREAS.index(attack.area), _MODULES.index(module) if module in _MODULES else len(_MODULES)


def catalogue() -> list[Attack]:
    """Every attack (controls excluded), by area, then module, then the order they were written."""
    return sorted((a for a in REGISTRY.values() if not a.control), key=_order)


def controls() -> list[Attack]:
    """The control scenarios: built to leak, to show the plaintext counter can count."""
    return [a for a in REGISTRY.values() if a.control]


def find(name: str) -> Attack:
    """The attack (or control) ``name``.

    Raises:
        UsageError: no such attack.
    """
    attack = REGISTRY.get(name)
    if attack is None:
        raise UsageError(f"no attack named {name!r} (sesim attack --list shows them)")
    return attack


def run_attack(attack: Attack) -> AttackResult:
    """Run ``attack`` in a fresh world and judge it (a crash of the attack itself is reported, not raised)."""
    try:
        if attack.runner == "testbed":
            return trio.run(_run_testbed, attack)
        return _attacks_sim.run_simulated(attack)
    except Exception as exc:  # noqa: BLE001  (any failure of an attack is part of its report)
        where = traceback.extract_tb(exc.__traceback__)[-1]
        problem = f"the attack could not run: {type(exc).__name__}: {exc} ({where.filename}:{where.lineno})"
        return judge(
            attack, attempts=[], fired=[], guest="unknown", intact=None,
            leak=LeakReport(obtained_bytes=0, plaintext_bytes=0, sources=()), extra=[problem],
        )  # fmt: skip


def run_attacks(attacks: list[Attack]) -> list[AttackResult]:
    return [run_attack(a) for a in attacks]


async def _run_testbed(attack: Attack) -> AttackResult:
    async with open_testbed(seed=0) as tb:
        host = HostileHost(testbed=tb)
        arena = Arena(tb, host)
        await attack.fn(arena)
        await arena.finish()
        guest, intact = arena.outcome()
        leak = host.leaks(arena.scanner())
        return judge(attack, attempts=host.attempts, fired=host.fired, guest=guest, intact=intact, leak=leak, extra=[])
