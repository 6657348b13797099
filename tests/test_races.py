"""The stress scenarios of uv-semantics.md §8, each over many seeds, and the historical bugs they catch.

Every scenario runs over 200 seeds (10,000 with ``pytest --long``). A seed
passes when no monitor fires, nothing hangs, and the scenario's own check
holds; a scenario also checks, over all its seeds, that its race really
happened (a run that never meets the race proves nothing).

Each bug switch of :mod:`actors._bugs` re-creates a fixed kernel bug; for
each one a scenario must fail for some seed in a bounded range with the
switch on (and passes for all of them with every switch off).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from race_kit import (
    JITTER,
    Outcome,
    config,
    free_frames_not_host,
    guest,
    run_seed,
)

from actors._system import System
from machine import FrameState
from machine._uv_storage import RC_CONFIG_HAS_CPUS
from protocol import UvcCommand
from sesim import _scenarios as sc
from sesim._simulation import RunConfig

Build = Callable[[int], RunConfig]


@attrs.frozen
class Scenario:
    """A configuration per seed, a check per run, and what must have happened over all runs."""

    build: Build
    check: Callable[[Outcome], list[str]]
    happened: Callable[[list[Outcome]], bool]
    what: str


def _halted(outcome: Outcome, name: str = "a") -> list[str]:
    vm = outcome.vm(name)
    problems = []
    if vm.state.value != "halted" or vm.guest.state not in ("running",):
        problems.append(f"{name} ended {vm.state.value}/{vm.guest.state}: {vm.guest.reason or vm.reason}")
    if vm.guest.corruptions:
        problems.append(f"{name} corrupted: {vm.guest.corruptions[0]}")
    return problems


def _one_page_check(outcome: Outcome) -> list[str]:
    problems = _halted(outcome)
    reads = [e for e in outcome.events if e["kind"] == "host-read" and e.get("reader") == "qemu-reader"]
    if any(e["canaries"] for e in reads):
        problems.append("the host thread read plaintext")
    return problems


def _fell_back(outcome: Outcome) -> bool:
    return outcome.vm("a").stats.uvcs.get(("DESTR_SEC_STOR", RC_CONFIG_HAS_CPUS), 0) > 0


def _perform_check(outcome: Outcome) -> list[str]:
    problems = _halted(outcome)
    system = outcome.system
    vm = outcome.vm("a")
    kvm = system.hypervisor.kvm
    if kvm.protected_count(vm) != 0 or vm.need_cleanup or vm.set_aside is not None:
        problems.append("leftovers were not cleaned at VM destroy")
    if system.uv.configs:
        problems.append(f"{len(system.uv.configs)} configuration(s) left in the UV")
    owned = [f.pfn for f in system.server.memory.frames() if f.state in (FrameState.SECURE, FrameState.SHARED)]
    if owned:
        problems.append(f"{len(owned)} frame(s) still secure after the VM was destroyed")
    if free_frames_not_host(system):
        problems.append("a frame the UV owns is on the free list")
    return problems


def _cpu_fails_check(outcome: Outcome) -> list[str]:
    problems = []
    system = outcome.system
    vm = outcome.vm("a")
    if vm.state.value != "refused":
        problems.append(f"the guest ended {vm.state.value}, not refused")
    if free_frames_not_host(system):
        problems.append("UV storage went back to the free list")
    destroy_failed = outcome.count("uvc-fault", command="DESTROY_SEC_CPU") > 0
    if destroy_failed:
        if not vm.stats.leaked_pages:
            problems.append("a failed destroy did not leak its storage")
    elif system.uv.configs or system.uv.cpus:
        problems.append("the configuration or a CPU survived its deinit")
    return problems


def _unpins(outcome: Outcome) -> int:
    """How often the guest's REMOVE_SHARED met a pinned page (intercept 108 and an unpin try)."""
    return outcome.vm("a").stats.intercepts["108 uvc"]


def _tamper_check(outcome: Outcome) -> list[str]:
    vm = outcome.vm("a")
    if not outcome.count("tamper"):
        return _halted(outcome)
    problems = []
    if vm.guest.corruptions:
        problems.append(f"tampered data reached the guest: {vm.guest.corruptions[0]}")
    stops = [e for e in outcome.events if e["kind"] == "guest-stop"]
    if vm.guest.state == "stopped" and not any(e["cause"] == "integrity" for e in stops):
        problems.append(f"the guest stopped for another reason: {vm.guest.reason}")
    return problems


def _dump_check(outcome: Outcome) -> list[str]:
    problems = _halted(outcome)
    if outcome.count("dump-start") != outcome.count("dump-complete"):
        problems.append("a dump did not complete")
    return problems


SCENARIOS: dict[str, Scenario] = {
    "1-many-vcpus-fault-one-page-while-the-host-exports-it": Scenario(
        sc.one_page, _one_page_check, lambda os: sum(o.count("host-read", reader="qemu-reader") for o in os) > 0,
        "the host thread read (exported) the page",
    ),
    "2-uv-answers-busy-and-partial-at-random": Scenario(
        sc.random_busy, _halted, lambda os: sum(o.result.uv_busy for o in os if o.result) > 0, "busy or partial answers"
    ),
    "3-reference-noise-makes-the-freeze-fail": Scenario(
        sc.reference_noise, _halted, lambda os: sum(o.vm("a").stats.ebusy for o in os) > 0, "-EBUSY from a failed freeze"
    ),
    "4-async-reboot-new-guest-destroys-old-pages": Scenario(
        sc.async_reboot, _halted, lambda os: sum(o.vm("a").stats.exceptions["0x3d"] for o in os) > 0, "0x3d inside SIE"
    ),
    "5-second-cpu-that-cannot-destroy-exports": Scenario(
        sc.second_cpu, _halted, lambda os: any(_fell_back(o) for o in os), "a destroy that failed and an export"
    ),
    "6-fatal-signal-during-perform": Scenario(
        sc.perform_killed, _perform_check, lambda os: sum(o.count("cleanup-interrupted") for o in os) > 0, "an interrupted PERFORM"
    ),
    "7-create-sec-cpu-fails": Scenario(
        sc.create_cpu_fails, _cpu_fails_check, lambda os: any(o.vm("a").stats.leaked_pages for o in os), "a leak"
    ),
    "8-remove-shared-on-a-pinned-page": Scenario(
        sc.pinned_shared, _halted, lambda os: any(_unpins(o) > 1 for o in os), "an unpin retried after intercept 108"
    ),
    "9-tampered-swap-page": Scenario(
        sc.tampered_swap, _tamper_check, lambda os: sum(o.count("tamper") for o in os) > 0, "a tampered page"
    ),
    "10-dump-while-vcpus-run": Scenario(
        sc.dump_running, _dump_check,
        lambda os: sum(o.count("kvm-run") for o in os) > 0 and sum(o.count("dump-complete") for o in os) > len(os) // 2,
        "KVM_RUN refused while dumping (in most seeds a completed dump)"
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_holds_over_every_seed(name: str, seeds: range) -> None:
    scenario = SCENARIOS[name]
    outcomes = []
    failures = []
    for seed in seeds:
        outcome = run_seed(scenario.build(seed), seed)
        problems = outcome.failures + scenario.check(outcome)
        if problems:
            failures.append((seed, problems[:3]))
        outcomes.append(outcome)
    assert failures == [], f"{len(failures)} of {len(seeds)} seeds fail, first: {failures[:3]}"
    assert scenario.happened(outcomes), f"no seed got as far as {scenario.what}"


# ------------------------------------------------------- bug switches
BUG_HUNTS: dict[str, tuple[Build, range]] = {
    "busy-loop-under-lock": (sc.import_storm, range(20)),
    "destroy-without-export-fallback": (sc.second_cpu, range(100)),
    "no-export-before-import": (functools.partial(sc.async_reboot, fast=False), range(20)),
    "writeback-without-ref": (sc.thrash, range(60)),
    "import-without-pte-lock": (sc.thrash, range(60)),
}
"""Per switch: the scenario that catches it, and the seeds within which one must fail."""


@pytest.mark.parametrize("bug", BUG_HUNTS)
def test_bug_switch_breaks_a_monitor_within_a_bounded_seed_range(bug: str) -> None:
    build, seeds = BUG_HUNTS[bug]
    for seed in seeds:
        outcome = run_seed(build(seed), seed, bugs=(bug,))
        if outcome.failures:
            return
    pytest.fail(f"{bug}: no seed in {seeds} broke a monitor or hung")


@pytest.mark.parametrize("name", ["storm", "thrash"])
def test_bug_hunting_scenarios_pass_with_every_switch_off(name: str, seeds: range) -> None:
    """The two configurations only the bug hunts use, over their hunting range (storm: all of it
    with --long). Not thrash beyond its range: with 12 pages for two vCPUs that share prefix 0,
    about 2 % of seeds livelock on the prefix pages (each vCPU's reference fails the other's
    refcount freeze, again and again): thrashing, which a real host ends with the OOM killer."""
    build = {"storm": sc.import_storm, "thrash": sc.thrash}[name]
    hunted = max(r.stop for b, r in BUG_HUNTS.values() if b is build)
    failures = []
    for seed in seeds if len(seeds) > 200 and name == "storm" else range(hunted):
        outcome = run_seed(build(seed), seed)
        if outcome.failures or _halted(outcome):
            failures.append((seed, (outcome.failures + _halted(outcome))[:2]))
    assert failures == []


def _busy_forever(gaddr: int) -> Callable[[System], None]:
    """The UV answers busy to every import of the guest page at ``gaddr``, forever."""

    def setup(system: System) -> None:
        uv_actor = system.uv_actor
        begin = uv_actor._begin

        def watched(env: Any, call: Any) -> None:
            request = call.request
            stuck = request.COMMAND is UvcCommand.CONV_TO_SEC_STOR and request.gaddr == gaddr
            uv_actor.busy_fault = (lambda command: True) if stuck else None
            begin(env, call)

        uv_actor._begin = watched  # type: ignore[method-assign]

    return setup


def test_a_page_the_uv_keeps_busy_forever_blocks_no_other_thread() -> None:
    """§8 #1: "the UV returns cc 2 forever; no actor may block". One page never imports; a page of
    the same page table, on the other vCPU, still does. With the bug that vCPU spins on the PTE lock."""
    cfg = config(guest("a", ["write 0x100000", "compute 20000", "write 0x101000"]),
                 faults=attrs.evolve(JITTER, sie_exit_delay=0))
    fixed = run_seed(cfg, 0, setup=_busy_forever(0x100000), max_steps=200_000)
    assert not [f for f in fixed.failures if f.startswith("kernel")]
    assert fixed.vm("a").guest.versions.get(0x101000)  # the other page was written
    assert "no progress" in fixed.vm("a").guest.reason  # the stuck one never was: the vCPU gave up
    broken = run_seed(cfg, 0, setup=_busy_forever(0x100000), bugs=("busy-loop-under-lock",), max_steps=30_000)
    assert broken.failures[0].startswith("hang")  # the vCPU that loops never runs the guest again ...
    assert any("soft-lockup" in f for f in broken.failures)  # ... and the other one spins on its lock
    assert not broken.vm("a").guest.versions.get(0x101000)
