"""Fault sites: where a stress campaign makes the system misbehave on purpose.

Every fault decision is a data choice of the scheduler (``Actor.choose``), so
it is recorded in the trace and replayed exactly. Faults are active only in
the *safety phase*: once virtual time passes ``heal_at`` they heal, and the
*liveness phase* checks that every guest still makes progress.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen


@frozen(kw_only=True)
class FaultPlan:
    """Which fault sites are active in a run, and how often they fire (percent)."""

    uv_busy: int = 0
    """The ultravisor answers a UVC busy (cc 2) although nothing holds its footprint."""
    import_busy: int = 0
    """Only imports (CONV_TO_SEC_STOR) are answered busy: the storm of uv-semantics.md §8 #1."""
    sie_exit_delay: int = 0
    """A vCPU's SIE exit is delayed (the host thread is slow to run)."""
    io_error: int = 0
    """A virtio request fails with an I/O error."""
    reclaim_storm: int = 0
    """The reclaim thread runs at every chance, exporting as much as it can."""
    heal_at: int = 2_000_000
    """Virtual ns after which every fault heals."""
    start_at: int = 0
    """Virtual ns before which no fault fires (a storm in the middle of a run, not at boot)."""

    @property
    def any(self) -> bool:
        return bool(self.uv_busy or self.import_busy or self.sie_exit_delay or self.io_error or self.reclaim_storm)

    def fires(self, actor: Any, site: str, percent: int) -> bool:
        """Whether the fault at ``site`` fires now (a recorded scheduler choice)."""
        if percent <= 0 or not self.start_at <= actor.now < self.heal_at:
            return False
        return actor.choose(f"fault:{site}", 100) < percent

    def describe(self) -> dict[str, int]:
        return {
            "uv_busy": self.uv_busy,
            **({"import_busy": self.import_busy} if self.import_busy else {}),
            "sie_exit_delay": self.sie_exit_delay,
            "io_error": self.io_error,
            "reclaim_storm": self.reclaim_storm,
            "heal_at": self.heal_at,
            **({"start_at": self.start_at} if self.start_at else {}),
        }


NO_FAULTS = FaultPlan()
