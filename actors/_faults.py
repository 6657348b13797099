"""Fault sites: where a stress campaign makes the system misbehave on purpose.

Every fault decision is a data choice of the scheduler (``Actor.choose``), so
it is recorded in the trace and replayed exactly. Faults are active only in
the *safety phase*: once virtual time passes ``heal_at`` they heal, and the
*liveness phase* checks that every guest still makes progress.
"""

from __future__ import annotations

from typing import Any, Final

from attrs import field, frozen

from protocol import UsageError, UvcCommand

PARTIAL_OK: Final = frozenset(
    {
        UvcCommand.CONV_TO_SEC_STOR,
        UvcCommand.UNPACK_IMG,
        UvcCommand.UNPIN_PAGE_SHARED,
        UvcCommand.CONV_FROM_SEC_STOR,
        UvcCommand.PIN_PAGE_SHARED,
        UvcCommand.DESTR_SEC_STOR,
    }
)
"""Host UVCs that may end partial (cc 3) and be repeated (uv-interface.md §2)."""


@frozen(kw_only=True)
class FaultPlan:
    """Which fault sites are active in a run, and how often they fire (percent)."""

    uv_busy: int = 0
    """The ultravisor answers a UVC busy (cc 2) although nothing holds its footprint."""
    import_busy: int = 0
    """Only imports (CONV_TO_SEC_STOR) are answered busy: the storm of uv-semantics.md §8 #1."""
    uv_partial: int = 0
    """A host UVC that may end partial (:data:`PARTIAL_OK`) is answered partial (cc 3)."""
    fail_uvcs: tuple[str, ...] = field(default=(), converter=tuple)
    """One-shot firmware errors, ``"COMMAND:N"``: the N-th call of that UVC fails (cc 1,
    rc 0x0106), whatever the time (``CREATE_SEC_CPU:2`` fails the second vCPU's creation)."""
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

    def __attrs_post_init__(self) -> None:
        self.failing_calls()  # reject a bad entry when the plan is made, not in the middle of a run

    @property
    def any(self) -> bool:
        return bool(
            self.uv_busy or self.import_busy or self.uv_partial or self.sie_exit_delay or self.io_error
            or self.reclaim_storm or self.fail_uvcs
        )

    def failing_calls(self) -> dict[UvcCommand, frozenset[int]]:
        """:attr:`fail_uvcs` as command -> the call numbers (from 1) that fail.

        Raises:
            UsageError: an entry that is not ``COMMAND:N`` with a known UVC name and N >= 1.
        """
        out: dict[UvcCommand, set[int]] = {}
        for entry in self.fail_uvcs:
            name, _, nth = entry.partition(":")
            command = UvcCommand.__members__.get(name)
            if command is None or not nth.isdigit() or int(nth) < 1:
                raise UsageError(f"fail_uvcs: {entry!r} is not COMMAND:N (a UVC name and a call number from 1)")
            out.setdefault(command, set()).add(int(nth))
        return {command: frozenset(calls) for command, calls in out.items()}

    def fires(self, actor: Any, site: str, percent: int) -> bool:
        """Whether the fault at ``site`` fires now (a recorded scheduler choice)."""
        if percent <= 0 or not self.start_at <= actor.now < self.heal_at:
            return False
        return actor.choose(f"fault:{site}", 100) < percent

    def describe(self) -> dict[str, Any]:
        return {
            "uv_busy": self.uv_busy,
            **({"import_busy": self.import_busy} if self.import_busy else {}),
            **({"uv_partial": self.uv_partial} if self.uv_partial else {}),
            **({"fail_uvcs": list(self.fail_uvcs)} if self.fail_uvcs else {}),
            "sie_exit_delay": self.sie_exit_delay,
            "io_error": self.io_error,
            "reclaim_storm": self.reclaim_storm,
            "heal_at": self.heal_at,
            **({"start_at": self.start_at} if self.start_at else {}),
        }


NO_FAULTS = FaultPlan()
