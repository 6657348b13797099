"""Safety and liveness monitors over the event stream (DESIGN.md, Traces).

Each monitor is a pure object of the events it sees: it keeps its own state
from the events' payloads only (never a live object of the run), so the same
monitors can run online, as a processor of the trace recorder's chain, and
offline over a recorded file. A violation becomes an event of its own,
``kind: "violation"`` with ``monitor``, ``detail`` and ``guest``, written
right after the event that revealed it, and is collected in
:attr:`Monitors.violations` for the run's result and the command line.

====================  =========================================================
monitor               what it checks, from which events
====================  =========================================================
``no-plaintext`` (a)  the hypervisor never reads plaintext of a secure guest:
                      every ``host-read`` lists the canaries it found (their
                      owner tags); a secure guest's tag in a frame that guest
                      did not share is a violation
``nothing-lost`` (b)  every value a guest wrote reads back the same, through
                      any number of exports, imports, swaps and I/O:
                      ``guest-write``/``guest-read`` digests per (page,
                      version), ``io-write``/``io-read`` digests per block
``one-owner`` (c)     no frame is secure for two configurations: a ``frame``
                      event must not hand a secure frame to another owner
                      without it passing through host or exported first
``progress`` (d)      every vCPU that took an exception (``sie-exit`` with
                      ``pgm``) runs again (``vcpu-resume``) or its guest stops
                      for a stated reason: a ``guest-stop`` whose cause is a
                      host error, or an import or destroy failure no
                      ``tamper`` event explains, is a violation; so is a vCPU
                      still waiting when the run ends (a hang)
``kernel`` (e)        the host kernel reports nothing: a ``host-bug`` event
                      (use after free, frozen reference taken, bad page state,
                      soft lockup, a BUG in the 0x3d handler) is a violation
====================  =========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from attrs import frozen

from actors._workload import owner_tag

Found = tuple[str, str]
"""(guest, detail) of one violation."""

_SHARED: Final = frozenset({"shared", "shared-pinned"})
_SECUREISH: Final = frozenset({"secure", "shared", "shared-pinned"})
ATTACKABLE: Final = frozenset({"integrity", "owned-elsewhere", "aliased", "import-failed", "storage-violation"})
"""``guest-stop`` causes that are right only after a hostile change to the guest's memory (a ``tamper``)."""


@frozen(kw_only=True)
class Violation:
    """One violation: which monitor, what it saw, where in the run."""

    monitor: str
    detail: str
    guest: str = ""
    step: int = 0
    t: int = 0

    def __str__(self) -> str:
        return f"{self.monitor}: {self.detail}"


class Monitor:
    """Base of the monitors: ``KINDS`` are the event kinds it reads."""

    name = "monitor"
    KINDS: tuple[str, ...] = ()

    def observe(self, kind: str, event: dict[str, Any]) -> Iterable[Found]:
        return ()

    def finish(self) -> Iterable[Found]:
        """At the end of the run (or of the file): what is still outstanding."""
        return ()


class NoPlaintextMonitor(Monitor):
    """(a) The hypervisor never reads plaintext of a secure guest's private page."""

    name = "no-plaintext"
    KINDS = ("vm-create", "host-read", "frame")

    def __init__(self) -> None:
        self.secure_tags: dict[str, str] = {}
        self.shared_exports: set[int] = set()  # frames exported while shared: plaintext the guest gave away
        self.reads = 0

    def observe(self, kind: str, event: dict[str, Any]) -> Iterator[Found]:
        if kind == "frame":
            first, count = event["pfn"], event.get("count", 1)
            if count == 1 and event["to"] == "exported" and event.get("from") in _SHARED:
                self.shared_exports.add(first)
            elif self.shared_exports:
                self.shared_exports.difference_update(range(first, first + count) if count < 64 else [
                    p for p in self.shared_exports if first <= p < first + count])
            return
        if kind == "vm-create":
            if event.get("secure"):
                self.secure_tags[owner_tag(event["guest"]).hex()] = event["guest"]
            return
        self.reads += 1
        if event.get("state") in _SHARED or event.get("pfn") in self.shared_exports:
            return  # the guest shared this page: the host may see what the guest put there
        for tag in event.get("canaries", ()):
            owner = self.secure_tags.get(tag)
            if owner is not None:
                yield owner, (
                    f"{event.get('reader')} read plaintext of secure guest {owner} "
                    f"(guest page {event.get('gfn', -1):#x} of {event.get('guest')}, frame {event.get('pfn', -1):#x}, "
                    f"state {event.get('state')})"
                )


class NothingLostMonitor(Monitor):
    """(b) Every value a guest wrote reads back the same (pages by version, blocks)."""

    name = "nothing-lost"
    KINDS = ("guest-write", "guest-read", "io-write", "io-read")

    def __init__(self) -> None:
        self.pages: dict[tuple[str, int], tuple[int, str]] = {}  # (guest, gaddr) -> last (version, digest)
        self.blocks: dict[tuple[str, int], str] = {}
        self.checked = 0

    def observe(self, kind: str, event: dict[str, Any]) -> Iterator[Found]:
        guest = event["guest"]
        if kind == "guest-write":
            self.pages[(guest, event["gaddr"])] = (event["version"], event["digest"])
        elif kind == "io-write":
            self.blocks[(guest, event["block"])] = event["digest"]
        elif kind == "guest-read":
            version = event["version"]
            last = self.pages.get((guest, event["gaddr"]))
            if version and last is not None and last[0] == version:
                self.checked += 1
                if last[1] != event["digest"]:
                    yield guest, f"{guest} read page {event['gaddr']:#x} version {version}: not what it wrote"
        else:
            want = self.blocks.get((guest, event["block"]))
            if want is not None:
                self.checked += 1
                if want != event["digest"]:
                    yield guest, f"{guest} read block {event['block']}: not what it wrote"


class OneOwnerMonitor(Monitor):
    """(c) A frame is secure for at most one configuration at a time."""

    name = "one-owner"
    KINDS = ("frame",)

    def __init__(self) -> None:
        self.frames: dict[int, tuple[str, int]] = {}

    def observe(self, kind: str, event: dict[str, Any]) -> Iterator[Found]:
        first, count = event["pfn"], event.get("count", 1)
        to, owner = event["to"], event.get("owner", 0)
        frames = self.frames
        if count > 1 and to not in _SECUREISH:
            # A range (UV storage donated or given back): only frames it tracks can change.
            for pfn in [p for p in frames if first <= p < first + count]:
                if to == "host":
                    del frames[pfn]
                else:
                    frames[pfn] = (to, owner)
            return
        for pfn in range(first, first + count):
            state, was = frames.get(pfn, ("host", 0))
            if state == "secure" and to in _SECUREISH and owner != was:
                yield "", f"frame {pfn:#x} secure for configuration {was:#x} became {to} for {owner:#x}"
            if to == "host":
                frames.pop(pfn, None)
            else:
                frames[pfn] = (to, owner)


class ProgressMonitor(Monitor):
    """(d) A vCPU that took an exception runs again, or its guest stopped for a stated reason."""

    name = "progress"
    KINDS = ("sie-exit", "vcpu-resume", "guest-stop", "tamper", "guest-halt", "vm-destroy")

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, int, int]] = {}  # vCPU -> (guest, pgm, gaddr)
        self.tampered: set[str] = set()
        self.exceptions = 0

    def _drop_guest(self, guest: str) -> None:
        for vcpu in [v for v, p in self.pending.items() if p[0] == guest]:
            del self.pending[vcpu]

    def observe(self, kind: str, event: dict[str, Any]) -> Iterator[Found]:
        actor = event.get("actor", "")
        if kind == "sie-exit":
            if "pgm" in event:
                self.exceptions += 1
                self.pending[actor] = (event.get("guest", ""), event["pgm"], event.get("gaddr", 0))
        elif kind == "vcpu-resume":
            self.pending.pop(actor, None)
        elif kind == "tamper":
            self.tampered.add(event.get("guest", ""))
        elif kind == "guest-stop":
            self.pending.pop(actor, None)
            guest, cause = event.get("guest", ""), event.get("cause", "")
            if cause == "host-error" or (cause in ATTACKABLE and guest not in self.tampered):
                yield guest, f"{guest} stopped by its host ({cause}) although nobody attacked it: {event.get('reason')}"
        elif kind == "guest-halt":
            guest = event.get("guest", "")
            reason = str(event.get("reason", ""))
            if "no progress" in reason:
                yield guest, f"{guest} stopped: {reason}"
            self._drop_guest(guest)
        else:
            self._drop_guest(event.get("guest", ""))

    def finish(self) -> Iterator[Found]:
        for vcpu, (guest, pgm, gaddr) in sorted(self.pending.items()):
            yield guest, f"{vcpu} took PGM {pgm:#04x} at {gaddr:#x} and never ran again"
        self.pending.clear()


class KernelMonitor(Monitor):
    """(e) The host kernel never reports a bug (its own checks: KASAN, VM_BUG_ON, lockup detector)."""

    name = "kernel"
    KINDS = ("host-bug",)

    def observe(self, kind: str, event: dict[str, Any]) -> Iterator[Found]:
        yield "", f"{event.get('what')} in {event.get('actor')}: {event.get('detail')}"


def standard_monitors() -> list[Monitor]:
    """The monitors every simulation runs."""
    return [NoPlaintextMonitor(), NothingLostMonitor(), OneOwnerMonitor(), ProgressMonitor(), KernelMonitor()]


class Monitors:
    """The monitors as one structlog processor of the trace recorder's chain.

    Args:
        monitors: which monitors (default: :func:`standard_monitors`).

    Violations are kept in :attr:`violations` and queued as ``violation``
    events in :attr:`followups`, which the recorder writes right after the
    event that revealed them.
    """

    def __init__(self, monitors: Iterable[Monitor] | None = None) -> None:
        self.monitors = list(monitors) if monitors is not None else standard_monitors()
        self.violations: list[Violation] = []
        self.followups: list[tuple[str, str, dict[str, Any]]] = []
        self._by_kind: dict[str, list[Monitor]] = {}
        for monitor in self.monitors:
            for kind in monitor.KINDS:
                self._by_kind.setdefault(kind, []).append(monitor)

    def __call__(self, logger: Any, method_name: str, event: dict[str, Any]) -> dict[str, Any]:
        kind = event.get("kind", "")
        monitors = self._by_kind.get(kind)
        if monitors is not None:
            for monitor in monitors:
                for guest, detail in monitor.observe(kind, event):
                    self._violate(monitor.name, guest, detail, event.get("step", 0), event.get("t", 0))
        return event

    def observe_all(self, events: Iterable[dict[str, Any]]) -> list[Violation]:
        """Offline: run the monitors over recorded events (each with ``kind``), then finish."""
        for event in events:
            self(None, "info", event)
        self.finish()
        return self.violations

    def finish(self, step: int = 0, t: int = 0) -> None:
        """The run ended: ask every monitor what is outstanding."""
        for monitor in self.monitors:
            for guest, detail in monitor.finish():
                self._violate(monitor.name, guest, detail, step, t)

    def _violate(self, monitor: str, guest: str, detail: str, step: int, t: int) -> None:
        self.violations.append(Violation(monitor=monitor, detail=detail, guest=guest, step=step, t=t))
        self.followups.append(("monitor", "violation", {"monitor": monitor, "detail": detail, "guest": guest}))

    def drain_followups(self) -> list[tuple[str, str, dict[str, Any]]]:
        out, self.followups = self.followups, []
        return out
