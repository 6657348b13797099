"""Teardown of secure configurations (uv-semantics.md §2.5): sync, async, process exit, leaks.

Each test runs a small server through its actors and reads what happened
from the UVCs the UV received (who sent which command, in order) and from
the state left behind: which frames the UV still owns, and what the host's
allocator got back.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import Fabric, RandomStrategy
from actors._system import System
from actors._vm import VmSpec
from actors._workload import parse_workload
from machine import FrameState, UvLimits
from protocol import RESPONSE_TYPES, Cc, UvcCommand
from sesim._config import ConfigError, parse_config
from sesim._simulation import build_image, derived_host_key

MIB = 1 << 20
GIB = 1 << 30
HIGH = 0x9000_0000  # above 2 GiB

SMALL = ("write 0x100000 pages=2", "read 0x100000 pages=2", "diag500")
LARGE = ("write 0x100000 pages=2", f"write {HIGH:#x} pages=2", f"read {HIGH:#x} pages=2", "diag9c")


class Run:
    """One finished run: the system, and the UVCs in the order the UV took them."""

    def __init__(self, system: System, uvcs: list[tuple[str, str]], events: list[tuple[str, str, dict]]) -> None:
        self.system = system
        self.uvcs = uvcs  # (sender, command name)
        self.events = events

    def vm(self, name: str = "alpha") -> Any:
        return next(vm for vm in self.system.vms if vm.name == name)

    def commands(self, sender_prefix: str = "") -> list[str]:
        return [cmd for who, cmd in self.uvcs if who.startswith(sender_prefix)]


def run_system(
    workload: tuple[str, ...] = SMALL,
    *,
    memory: int = 16 * MIB,
    teardown: str = "sync",
    limits: UvLimits | None = None,
    fail: dict[UvcCommand, int] | None = None,
    cleanup_delay: int = 0,
    cleanup_killed_after: int | None = None,
    seed: int = 1,
) -> Run:
    """Run one secure guest ``alpha`` (2 vCPUs); ``fail`` makes the UV answer those commands cc 1 with that rc."""
    key = derived_host_key(seed, "s")
    spec = VmSpec(
        name="alpha", secure=True, memory=memory, cpus=2, workload=parse_workload(workload),
        image=build_image(seed=seed, name="alpha", host_keys=[key.public_key()]),
        teardown=teardown, cleanup_delay=cleanup_delay, cleanup_killed_after=cleanup_killed_after,
    )  # fmt: skip
    uvcs: list[tuple[str, str]] = []
    events: list[tuple[str, str, dict]] = []
    fabric = Fabric(RandomStrategy(seed))

    def recorder(actor: str, kind: str, payload: dict[str, Any]) -> None:
        events.append((actor, kind, payload))
        msg = payload.get("msg")
        if actor == "uv" and kind == "recv" and type(msg).__name__ == "Uvc" and not msg.caller.is_guest:
            uvcs.append((payload["from"], msg.request.COMMAND.name))

    fabric.recorder = recorder
    system = System(fabric, server_name="s", memory=4 * GIB, cpus=2, host_key=key, guests=[spec], seed=seed,
                    limits=limits)  # fmt: skip
    if fail:
        real = system.uv.execute

        def failing(caller: Any, request: Any) -> Any:
            rc = fail.get(request.COMMAND)
            if rc is not None and not caller.is_guest:
                return RESPONSE_TYPES[request.COMMAND](cc=Cc.ERROR, rc=rc, rrc=0)
            return real(caller, request)

        system.uv.execute = failing  # type: ignore[method-assign]
    trio.run(fabric.run)
    return Run(system, uvcs, events)


def _owned_by_uv(system: System) -> dict[str, int]:
    """Frames the UV still owns, by state (the INIT_UV storage aside)."""
    base, length = system.uv.base_storage
    counts: dict[str, int] = {}
    for frame in system.server.memory.frames():
        if frame.state is FrameState.HOST or base <= frame.pfn * 4096 < base + length:
            continue
        counts[frame.state.value] = counts.get(frame.state.value, 0) + 1
    return counts


def _all_freed(run: Run) -> bool:
    """Only the UV's INIT_UV storage is still allocated."""
    system = run.system
    return system.allocator.in_use == system.uv.base_storage[1] // 4096


def _before(seq: list[str], a: str, b: str) -> bool:
    return seq.index(a) < seq.index(b)


# ------------------------------------------------------------------ sync
def _teardown_tail(run: Run) -> list[str]:
    """The hypervisor's commands from its last DESTROY_SEC_CPU's first of the batch on."""
    kvm = run.commands("kvm")
    last = len(kvm) - kvm[::-1].index("DESTROY_SEC_CPU") - 1
    while last > 0 and kvm[last - 1] == "DESTROY_SEC_CPU":
        last -= 1
    return kvm[last:]


def test_sync_teardown_destroys_the_cpus_then_the_configuration_then_the_pages() -> None:
    run = run_system()
    vm = run.vm()
    assert vm.state.value == "halted" and vm.stats.teardown == "sync"
    tail = _teardown_tail(run)
    assert tail[:3] == ["DESTROY_SEC_CPU", "DESTROY_SEC_CPU", "DESTROY_SEC_CONF"]
    assert tail[3:] and set(tail[3:]) == {"DESTR_SEC_STOR"}


def test_after_a_sync_teardown_the_uv_owns_nothing_and_every_frame_is_free_again() -> None:
    run = run_system()
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)
    assert run.vm().leaked == []


# ------------------------------------------------------------------ leaks
def test_a_failed_configuration_destroy_leaks_its_storage_for_good() -> None:
    run = run_system(fail={UvcCommand.DESTROY_SEC_CONF: 0x0199})
    vm = run.vm()
    system = run.system
    assert vm.stats.leaked_pages > 0
    leaked = {pfn for addr, length in vm.leaked for pfn in range(addr >> 12, (addr + length) >> 12)}
    assert leaked
    states = {system.server.memory.state_of(pfn) for pfn in leaked}
    assert states == {FrameState.DONATED}  # still the UV's, as it said nothing else
    assert not leaked & set(system.allocator._free)  # never handed back to the host
    assert any(kind == "leak" for _, kind, _ in run.events)
    assert vm.state.value == "halted"


def test_a_failed_cpu_destroy_leaks_it_and_the_configuration_destroy_is_not_attempted() -> None:
    run = run_system(fail={UvcCommand.DESTROY_SEC_CPU: 0x0199})
    vm = run.vm()
    assert "DESTROY_SEC_CONF" not in run.commands()
    leaked = {pfn for addr, length in vm.leaked for pfn in range(addr >> 12, (addr + length) >> 12)}
    assert not leaked & set(run.system.allocator._free)
    assert vm.stats.leaked_pages >= 2 * (16 * 1024 // 4096)  # both CPUs' storage at least
    # Pages the UV would not destroy (the configuration still has CPUs) were exported instead.
    assert "CONV_FROM_SEC_STOR" in run.commands("kvm")


# ------------------------------------------------------------------ async
def test_async_teardown_destroys_fast_then_the_low_pages_and_leaves_the_rest_to_the_cleanup_thread() -> None:
    run = run_system(LARGE, memory=3 * GIB, teardown="async")
    vm = run.vm()
    assert vm.stats.teardown == "async" and vm.state.value == "halted"
    tail = _teardown_tail(run)
    assert tail[:3] == ["DESTROY_SEC_CPU", "DESTROY_SEC_CPU", "DESTROY_SEC_CONF_FAST"]
    assert tail[3:] and set(tail[3:]) == {"DESTR_SEC_STOR"}  # the pages below 2 GiB, at once
    cleaner = run.commands("alpha.cleanup")
    assert cleaner == ["DESTR_SEC_STOR", "DESTR_SEC_STOR"]  # the two pages above 2 GiB
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)


def test_async_teardown_is_refused_for_a_guest_of_2_gib_or_less_and_runs_synchronously() -> None:
    run = run_system(SMALL, memory=2 * GIB, teardown="async")
    vm = run.vm()
    assert vm.stats.teardown.startswith("sync (async refused: the guest has 2 GiB or less")
    assert "DESTROY_SEC_CONF" in run.commands("kvm") and "DESTROY_SEC_CONF_FAST" not in run.commands()
    assert not any(who.startswith("alpha.cleanup") for who, _ in run.uvcs)
    assert _all_freed(run)


def test_without_destroy_fast_the_cleanup_thread_destroys_the_set_aside_configuration() -> None:
    run = run_system(LARGE, memory=3 * GIB, teardown="async", limits=UvLimits(destroy_fast=False))
    assert "DESTROY_SEC_CONF_FAST" not in run.commands()
    assert run.commands("alpha.cleanup")[-1] == "DESTROY_SEC_CONF"
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)


def test_a_cleanup_killed_midway_is_finished_when_the_vm_is_destroyed() -> None:
    run = run_system(
        LARGE, memory=3 * GIB, teardown="async", limits=UvLimits(destroy_fast=False), cleanup_killed_after=1
    )
    kinds = [kind for _, kind, _ in run.events]
    assert "cleanup-interrupted" in kinds and "cleanup-leftover" in kinds
    assert run.commands("alpha.cleanup") == ["DESTR_SEC_STOR"]
    kvm = run.commands("kvm")
    assert kvm[-2:] == ["DESTR_SEC_STOR", "DESTROY_SEC_CONF"]  # the rest, then the leftover itself
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)


def test_a_new_configuration_meets_the_old_ones_pages_as_0x3d_in_sie_and_destroys_them() -> None:
    workload = (f"write {HIGH:#x} pages=2", "reboot reipl", f"read {HIGH:#x} pages=2", f"write {HIGH:#x}")
    run = run_system(workload, memory=3 * GIB, teardown="async", cleanup_delay=50_000_000)
    vm = run.vm()
    assert vm.state.value == "halted" and vm.guest.corruptions == [], vm.reason
    assert vm.stats.exceptions["0x3d"] >= 2
    from_vcpus = [cmd for who, cmd in run.uvcs if who.startswith("alpha.cpu")]
    assert from_vcpus.count("DESTR_SEC_STOR") >= 2  # destroy_stale, from the vCPU threads
    assert vm.stats.uvcs[("CREATE_SEC_CONF", 1)] == 2
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)


# ------------------------------------------------------------------ process exit
def test_at_process_exit_pages_are_destroyed_before_the_configuration_and_never_exported() -> None:
    run = run_system(teardown="exit", limits=UvLimits(destroy_fast=False))
    tail = _teardown_tail(run)
    assert tail[:2] == ["DESTROY_SEC_CPU", "DESTROY_SEC_CPU"] and tail[-1] == "DESTROY_SEC_CONF"
    assert tail[2:-1] and set(tail[2:-1]) == {"DESTR_SEC_STOR"}  # destroyed, not exported
    assert run.vm().stats.teardown == "exit"
    assert _all_freed(run)


def test_at_process_exit_destroy_fast_comes_first_where_installed() -> None:
    run = run_system(teardown="exit")
    tail = _teardown_tail(run)
    assert tail[:3] == ["DESTROY_SEC_CPU", "DESTROY_SEC_CPU", "DESTROY_SEC_CONF_FAST"]
    assert set(tail[3:]) == {"DESTR_SEC_STOR"}
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)


# ------------------------------------------------------------------ configuration
def _config(**guest: Any) -> dict[str, Any]:
    return {"guest": [{"name": "alpha", "workload": ["halt"], **guest}]}


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_the_teardown_mode_is_a_guest_key_that_round_trips(mode: str) -> None:
    config = parse_config(_config(teardown=mode, memory_mib=4096))
    assert config.guests[0].teardown == mode
    assert parse_config(config.to_json()) == config


@pytest.mark.parametrize("bad", ["fast", 1])
def test_an_unknown_teardown_mode_is_a_config_error(bad: Any) -> None:
    with pytest.raises(ConfigError, match="teardown"):
        parse_config(_config(teardown=bad))


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_pages_still_shared_at_halt_are_given_back_whatever_the_teardown(mode: str) -> None:
    """The guest's bounce buffers stay shared to the end, and the host pinned them for its I/O."""
    run = run_system((*LARGE, "io-write 0 0x100000 pages=2", "share 0x300000"), memory=3 * GIB, teardown=mode)
    assert run.vm().state.value == "halted" and run.vm().stats.teardown == mode
    assert _owned_by_uv(run.system) == {}
    assert _all_freed(run)
