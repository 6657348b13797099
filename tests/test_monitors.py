"""The monitors of traces._monitors: each on hand-made events, then on a whole run, online and offline."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors._workload import canary, owner_tag
from sesim._simulation import GuestConfig, RunConfig, run
from traces._monitors import (
    KernelMonitor,
    Monitors,
    NoPlaintextMonitor,
    NothingLostMonitor,
    OneOwnerMonitor,
    ProgressMonitor,
    Violation,
)
from traces._writer import TraceRecorder

A, B = 0xA, 0xB


def feed(monitor: Any, *events: dict[str, Any]) -> list[str]:
    """The details of every violation ``monitor`` finds in ``events`` (then at the end)."""
    found = []
    for event in events:
        found += [detail for _, detail in monitor.observe(event["kind"], event)]
    found += [detail for _, detail in monitor.finish()]
    return found


def ev(kind: str, **payload: Any) -> dict[str, Any]:
    return {"kind": kind, **payload}


def tag(name: str) -> str:
    return owner_tag(name).hex()


# ------------------------------------------------------------ (a) plaintext
@pytest.mark.parametrize(
    ("secure", "canaries", "state", "violations"),
    [
        (True, ["a"], "host", 1),
        (True, ["a"], "exported", 1),
        (True, [], "exported", 0),
        (True, ["a"], "shared", 0),
        (True, ["a"], "shared-pinned", 0),
        (False, ["a"], "host", 0),
    ],
    ids=["plaintext", "plaintext-exported", "ciphertext", "shared", "pinned", "regular-guest"],
)
def test_no_plaintext_monitor_flags_a_secure_guests_canary_outside_shared_pages(
    secure: bool, canaries: list[str], state: str, violations: int
) -> None:
    found = feed(
        NoPlaintextMonitor(),
        ev("vm-create", guest="a", secure=secure),
        ev("host-read", reader="swap", guest="a", gfn=1, pfn=2, state=state, canaries=[tag(c) for c in canaries]),
    )
    assert len(found) == violations


def test_the_canary_tag_is_what_a_host_read_reports() -> None:
    from actors._reclaim import canary_tags

    assert canary_tags(b"\0" * 100 + canary("a") + b"\0" * 100) == [tag("a")]


# ------------------------------------------------------------ (b) lost data
def test_nothing_lost_monitor_accepts_what_was_written() -> None:
    assert feed(
        NothingLostMonitor(),
        ev("guest-write", guest="a", gaddr=0x1000, version=1, digest="aa"),
        ev("guest-read", guest="a", gaddr=0x1000, version=1, digest="aa"),
        ev("io-write", guest="a", block=3, digest="bb"),
        ev("io-read", guest="a", block=3, digest="bb"),
    ) == []


@pytest.mark.parametrize(
    "events",
    [
        [ev("guest-write", guest="a", gaddr=0x1000, version=2, digest="v2"),
         ev("guest-read", guest="a", gaddr=0x1000, version=2, digest="v1")],
        [ev("io-write", guest="a", block=3, digest="bb"), ev("io-read", guest="a", block=3, digest="cc")],
    ],
    ids=["stale-page", "changed-block"],
)
def test_nothing_lost_monitor_flags_a_value_that_does_not_read_back(events: list[dict[str, Any]]) -> None:
    assert len(feed(NothingLostMonitor(), *events)) == 1


def test_nothing_lost_monitor_ignores_pages_never_written() -> None:
    assert feed(NothingLostMonitor(), ev("guest-read", guest="a", gaddr=0x1000, version=0, digest="00")) == []


# ------------------------------------------------------------ (c) one owner
def frame(to: str, owner: int, pfn: int = 7, **extra: Any) -> dict[str, Any]:
    return ev("frame", pfn=pfn, to=to, owner=owner, **extra)


@pytest.mark.parametrize(
    ("states", "violations"),
    [
        ([("secure", A), ("secure", B)], 1),
        ([("secure", A), ("shared", B)], 1),
        ([("secure", A), ("exported", A), ("secure", B)], 0),
        ([("secure", A), ("host", 0), ("secure", B)], 0),
        ([("shared", A), ("secure", B)], 0),
        ([("secure", A), ("shared", A), ("secure", A)], 0),
    ],
    ids=["secure-to-other", "secure-to-other-shared", "via-export", "via-host", "misc-handover", "same-owner"],
)
def test_one_owner_monitor(states: list[tuple[str, int]], violations: int) -> None:
    assert len(feed(OneOwnerMonitor(), *(frame(to, owner) for to, owner in states))) == violations


def test_one_owner_monitor_follows_ranges() -> None:
    events = [frame("secure", A, pfn=10), frame("host", 0, pfn=8, count=4), frame("secure", B, pfn=10)]
    assert feed(OneOwnerMonitor(), *events) == []


# ------------------------------------------------------------ (d) progress
def exit_(cpu: str = "a.cpu0") -> dict[str, Any]:
    return ev("sie-exit", actor=cpu, guest="a", pgm=0x3E, gaddr=0x1000)


@pytest.mark.parametrize(
    ("events", "violations"),
    [
        ([exit_(), ev("vcpu-resume", actor="a.cpu0", guest="a")], 0),
        ([exit_()], 1),
        ([exit_(), ev("guest-stop", actor="a.cpu0", guest="a", cause="stated", reason="pgm 0x05")], 0),
        ([exit_(), ev("guest-stop", actor="a.cpu0", guest="a", cause="host-error", reason="x")], 1),
        ([exit_(), ev("guest-stop", actor="a.cpu0", guest="a", cause="integrity", reason="x")], 1),
        ([ev("tamper", guest="a", gfn=1), exit_(),
          ev("guest-stop", actor="a.cpu0", guest="a", cause="integrity", reason="x")], 0),
        ([exit_(), ev("guest-halt", guest="a", state="stopped", reason="vCPU 0: no progress after 10000 SIE exits")], 1),
        ([exit_(), ev("vm-destroy", guest="a", state="halted", reason="halt")], 0),
        ([ev("sie-exit", actor="a.cpu0", guest="a", icpt=104)], 0),
    ],
    ids=["resumed", "hung", "stated", "host-error", "integrity-untampered", "integrity-tampered", "no-progress",
         "destroyed", "intercept"],
)
def test_progress_monitor(events: list[dict[str, Any]], violations: int) -> None:
    assert len(feed(ProgressMonitor(), *events)) == violations


# ------------------------------------------------------------ (e) kernel
def test_kernel_monitor_turns_every_host_bug_into_a_violation() -> None:
    found = feed(KernelMonitor(), ev("host-bug", actor="kswapd", what="use-after-free", detail="page 0x10"))
    assert found == ["use-after-free in kswapd: page 0x10"]


# ------------------------------------------------- the processor and the run
class _Clock:
    step, now = 3, 40


def test_a_violation_is_written_right_after_the_event_that_revealed_it() -> None:
    sink = io.BytesIO()
    monitors = Monitors()
    recorder = TraceRecorder(_Clock(), sink, (monitors,))
    recorder("kswapd", "host-bug", {"what": "soft-lockup", "detail": "spun"})
    recorder("kswapd", "wake", {})
    lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    assert [line["kind"] for line in lines] == ["host-bug", "violation", "wake"]
    assert lines[1]["monitor"] == "kernel" and lines[1]["step"] == 3
    assert monitors.violations == [Violation(monitor="kernel", detail="soft-lockup in kswapd: spun", step=3, t=40)]


def test_violations_print_as_monitor_and_detail() -> None:
    assert str(Violation(monitor="progress", detail="x hung")) == "progress: x hung"


SMALL = RunConfig(
    memory_mib=3072,
    guest_memory_limit_kib=64,
    guests=(
        GuestConfig(name="a", secure=True, memory_mib=4, cpus=2,
                    workload=("write 0x100000 pages=2", "io-write 1 0x100000 pages=2", "write 0x102000 pages=2",
                              "read 0x100000 pages=4", "io-read 1 0x104000 pages=2")),
        GuestConfig(name="b", secure=False, memory_mib=4, cpus=1, workload=("write 0x100000 pages=4",)),
    ),
)


def test_a_clean_run_has_no_violation_and_the_monitors_saw_its_events(tmp_path: Path) -> None:
    result = run(SMALL, seed=4, trace=tmp_path / "t.jsonl")
    assert result.violations == ()
    kinds = {orjson.loads(line)["kind"] for line in (tmp_path / "t.jsonl").read_bytes().splitlines()[1:]}
    assert {"host-read", "guest-write", "guest-read", "io-write", "io-read", "swap-out", "frame", "sie-exit"} <= kinds


def test_the_same_monitors_run_offline_over_a_recorded_file(tmp_path: Path) -> None:
    path = tmp_path / "bug.jsonl"
    for seed in range(30):  # the first seed that breaks the kernel monitor (and more)
        online = run(SMALL, seed=seed, trace=path, bugs=("import-without-pte-lock",)).violations
        if len(online) >= 2:
            break
    assert len(online) >= 2
    events = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]
    offline = Monitors().observe_all(e for e in events if e["kind"] != "violation")
    assert [(v.monitor, v.detail) for v in offline] == [(v.monitor, v.detail) for v in online]
    assert sum(e["kind"] == "violation" for e in events) == len(online)


def test_a_page_exported_while_shared_may_be_read_as_plaintext() -> None:
    found = feed(
        NoPlaintextMonitor(),
        ev("vm-create", guest="a", secure=True),
        ev("frame", pfn=9, **{"from": "shared"}, to="exported", owner=A),
        ev("host-read", reader="swap", guest="a", gfn=1, pfn=9, state="exported", canaries=[tag("a")]),
        ev("frame", pfn=9, **{"from": "exported"}, to="secure", owner=A),
        ev("frame", pfn=9, **{"from": "secure"}, to="exported", owner=A),
        ev("host-read", reader="swap", guest="a", gfn=1, pfn=9, state="exported", canaries=[tag("a")]),
    )
    assert len(found) == 1  # the second export was of a private page
