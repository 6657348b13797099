"""Secure memory under pressure: export and import, swapping, bounce buffers, isolation (issue 5).

The ultravisor's rules (uv-semantics.md §3.1) are tested on the raw-UVCB
testbed; the hypervisor's side (§3.3-§3.5, §4) on the running system, with a
probe thread that acts as the host once the guest runs.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from race_kit import config, guest, probe_run, run_seed, wait_state

from actors import Actor
from actors._bugs import BUG_NAMES, BugSwitches
from actors._linux_mm import LinuxMm, Page
from actors._messages import Uvc
from actors._reclaim import canary_tags
from actors._workload import canary, make_page, parse_op
from machine import HOST, FrameState, UvLimits
from machine._uv_storage import (
    RC_GADDR_ALIASED,
    RC_IMPORT_INTEGRITY,
    RC_OWNED_ELSEWHERE,
)
from protocol import (
    Cc,
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    SetSharedAccessRequest,
    UnpinPageSharedRequest,
    UsageError,
    UvcCommand,
)
from sesim._cli import main
from sesim._config import ConfigError, parse_config
from sesim._scenarios import tampered_swap
from sesim._simulation import demo_config, run
from sesim.testbed import GuestKilled, open_testbed

PAGE = 4096
SECRET = b"\xcaSESIM-CANARY:private page of a"
MISC = 1 << 63  # QUI feature bit 0 (MSB-0)


# ============================================================ the ultravisor
class Answer:
    """cc and rc of a host UVC issued on the testbed."""

    def __init__(self, cc: int, rc: int) -> None:
        self.cc, self.rc = cc, rc


async def call(tb: Any, request: Any) -> Answer:
    uvcb = tb.alloc(PAGE)
    tb.write(uvcb, request.pack())
    cc = await tb.uvc(uvcb)
    return Answer(cc, int.from_bytes(tb.read(uvcb + 4, 2), "big"))


async def share(g: Any, gaddr: int) -> int:
    """The guest shares its page at ``gaddr`` (SET_SHARED_ACCESS from inside it); the cc."""
    g.write(0x80000, SetSharedAccessRequest(paddr=gaddr).pack())
    return int(await g.uvc(0x80000))


async def _export(tb: Any, g: Any, gaddr: int) -> bytes:
    answer = await call(tb, ConvFromSecStorRequest(paddr=g.host_addr(gaddr)))
    assert answer.cc == Cc.OK
    return tb.read(g.host_addr(gaddr), PAGE)


async def test_export_encrypts_in_place_with_a_fresh_tweak_every_time() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, SECRET)
        first = await _export(tb, g, 0xA0000)
        assert g.read(0xA0000, len(SECRET)) == SECRET  # imported again, decrypted and checked
        second = await _export(tb, g, 0xA0000)
        assert SECRET not in first and SECRET not in second
        assert first != second  # same plaintext, another tweak


async def test_each_configuration_encrypts_with_its_own_key() -> None:
    async with open_testbed() as tb:
        a = await tb.secure_guest()
        b = await tb.secure_guest()
        a.write(0xA0000, SECRET)
        b.write(0xA0000, SECRET)
        assert await _export(tb, a, 0xA0000) != await _export(tb, b, 0xA0000)


async def test_a_replayed_older_ciphertext_is_refused_and_never_accepted() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"version 1")
        old = await _export(tb, g, 0xA0000)
        g.write(0xA0000, b"version 2")
        await _export(tb, g, 0xA0000)
        tb.write(g.host_addr(0xA0000), old)
        answer = await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000))
        assert (answer.cc, answer.rc) == (Cc.ERROR, RC_IMPORT_INTEGRITY)
        assert tb.memory.state_of(g.host_addr(0xA0000) >> 12) is FrameState.EXPORTED
        with pytest.raises(GuestKilled):
            g.read(0xA0000, 9)


async def test_a_ciphertext_moved_to_another_guest_address_is_refused() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"page a")
        g.write(0xA1000, b"page b")
        moved = await _export(tb, g, 0xA0000)
        await _export(tb, g, 0xA1000)
        tb.write(g.host_addr(0xA1000), moved)
        answer = await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA1000))
        assert (answer.cc, answer.rc) == (Cc.ERROR, RC_IMPORT_INTEGRITY)


async def test_a_ciphertext_of_another_configuration_is_refused() -> None:
    async with open_testbed() as tb:
        a = await tb.secure_guest()
        b = await tb.secure_guest()
        a.write(0xA0000, SECRET)
        b.write(0xA0000, b"b's own page")
        stolen = await _export(tb, a, 0xA0000)
        await _export(tb, b, 0xA0000)
        tb.write(b.host_addr(0xA0000), stolen)
        answer = await call(tb, ConvToSecStorRequest(guest_handle=b.config_handle, gaddr=0xA0000))
        assert (answer.cc, answer.rc) == (Cc.ERROR, RC_IMPORT_INTEGRITY)


async def test_a_guest_page_still_secure_elsewhere_cannot_be_imported_again() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, SECRET)
        fresh = tb.alloc(PAGE)
        g.space.map(0xA0, fresh >> 12)  # remapped without an export: the old frame stays secure
        answer = await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000))
        assert (answer.cc, answer.rc) == (Cc.ERROR, RC_GADDR_ALIASED)


async def test_a_frame_secure_for_one_configuration_cannot_be_imported_by_another() -> None:
    async with open_testbed() as tb:
        a = await tb.secure_guest()
        b = await tb.secure_guest()
        a.write(0xA0000, SECRET)
        b.space.map(0xB0, a.host_addr(0xA0000) >> 12)  # a hostile host maps a's frame into b
        answer = await call(tb, ConvToSecStorRequest(guest_handle=b.config_handle, gaddr=0xB0000))
        assert (answer.cc, answer.rc) == (Cc.ERROR, RC_OWNED_ELSEWHERE)
        assert a.read(0xA0000, len(SECRET)) == SECRET


@pytest.mark.parametrize(("misc", "handed_over"), [(False, False), (True, True)], ids=["no-misc", "misc"])
async def test_a_page_shared_by_another_configuration_changes_hands_only_with_misc(
    misc: bool, handed_over: bool
) -> None:
    async with open_testbed(limits=UvLimits(uv_feature_indications=MISC if misc else 0)) as tb:
        a = await tb.secure_guest()
        b = await tb.secure_guest()
        a.write(0xA0000, b"shared by a")
        assert await share(a, 0xA0000) == 0
        b.space.map(0xB0, a.host_addr(0xA0000) >> 12)
        answer = await call(tb, ConvToSecStorRequest(guest_handle=b.config_handle, gaddr=0xB0000))
        assert (answer.cc == Cc.OK) is handed_over
        if not handed_over:
            assert answer.rc == RC_OWNED_ELSEWHERE
        else:
            assert b.read(0xB0000, 11) == bytes(11)  # a new page of b: cleared, a's bytes not taken over


async def test_an_exported_shared_page_keeps_its_bytes_and_comes_back_shared() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"bounce buffer")
        assert await share(g, 0xA0000) == 0
        assert (await _export(tb, g, 0xA0000))[:13] == b"bounce buffer"
        answer = await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000))
        assert answer.cc == Cc.OK
        assert tb.memory.state_of(g.host_addr(0xA0000) >> 12) is FrameState.SHARED


def test_a_regular_guest_never_sees_a_secure_guests_plaintext() -> None:
    cfg = config(guest("a", ["write 0x100000", "compute 400000", "read 0x100000"]),
                 guest("b", ["compute 500000", "read 0x180000"], secure=False, cpus=1))

    async def steal(probe: Any, system: Any, vm: Any) -> None:
        await wait_state(probe, system, vm, 0x100, FrameState.SECURE)
        pfn = vm.space.pfn_of(0x100)
        regular = next(v for v in system.vms if v.name == "b")
        regular.space.map(0x180, pfn)  # a hostile host maps a's frame into the regular guest b
        probe.record("tamper", guest="a", gfn=0x100)

    outcome, _ = probe_run(cfg, steal)
    reads = [e for e in outcome.events if e["kind"] == "host-read"]
    assert all(not e["canaries"] for e in reads)
    stolen = outcome.vm("b")
    assert stolen.stats.exceptions["0x3d"] >= 1  # the regular guest met a secure page ...
    assert not outcome.vm("b").guest.corruptions or "another guest" not in outcome.vm("b").guest.corruptions[0]


# ====================================================== the UV's frame lock
class Later(Actor):
    """Runs ``fn`` after ``delay`` ns of virtual time (an event of another thread)."""

    def __init__(self, system: Any, delay: int, fn: Any) -> None:
        super().__init__(system.fabric, "later")
        self.delay, self.fn = delay, fn

    async def main(self) -> None:
        await self.sleep(self.delay)
        self.fn()


class Racer(Actor):
    """A host thread that issues one UVC as soon as it is started."""

    def __init__(self, system: Any, request: Any, answers: list[int]) -> None:
        super().__init__(system.fabric, "racer")
        self.system, self.request, self.answers = system, request, answers

    async def main(self) -> None:
        response = await self.call(self.system.uv_actor, Uvc(caller=HOST, request=self.request))
        self.answers.append(int(response.cc))


def test_a_uvc_on_a_frame_another_uvc_holds_answers_busy() -> None:
    answers: list[int] = []

    async def race(probe: Any, system: Any, vm: Any) -> None:
        request = ConvFromSecStorRequest(paddr=vm.space.pfn_of(0x100) * PAGE)
        Racer(system, request, answers)  # starts now, at the same virtual time
        response = await probe.call(system.uv_actor, Uvc(caller=HOST, request=request))
        answers.append(int(response.cc))
        while len(answers) < 2:
            await probe.sleep(1_000)

    probe_run(config(guest("a", ["write 0x100000", "compute 300000"])), race)
    assert sorted(answers) == [Cc.OK, Cc.BUSY]


# ========================================================= the host's side
def _secure_then_wait(extra: list[str] | None = None) -> Any:
    return config(guest("a", ["write 0x100000 pages=2", *(extra or []), "compute 600000", "read 0x100000 pages=2"]))


def test_a_host_read_of_a_secure_page_exports_it_and_sees_only_ciphertext() -> None:
    seen: dict[str, Any] = {}

    async def read(probe: Any, system: Any, vm: Any) -> None:
        kvm = system.hypervisor.kvm
        await wait_state(probe, system, vm, 0x101, FrameState.SECURE)
        seen["data"] = await kvm.user_access(probe, vm, 0x100)
        seen["state"] = system.server.memory.state_of(vm.space.pfn_of(0x100))

    outcome, _ = probe_run(_secure_then_wait(), read)
    assert seen["state"] is FrameState.EXPORTED
    assert canary("a") not in seen["data"]
    assert outcome.ok and not outcome.vm("a").guest.corruptions  # the guest reads its page back intact


def test_a_host_read_of_a_shared_page_pins_it_instead_of_exporting_it() -> None:
    seen: dict[str, Any] = {}

    async def read(probe: Any, system: Any, vm: Any) -> None:
        kvm = system.hypervisor.kvm
        await wait_state(probe, system, vm, 0x100, FrameState.SHARED)
        page = await kvm.gup_pin(probe, vm, 0x100)
        seen["state"] = system.server.memory.state_of(page.pfn)
        kvm.gup_unpin(probe, page)

    outcome, _ = probe_run(_secure_then_wait(["share 0x100000"]), read)
    assert seen["state"] is FrameState.SHARED_PINNED
    assert outcome.vm("a").stats.uvcs[("PIN_PAGE_SHARED", 1)] == 1
    assert ("CONV_FROM_SEC_STOR", 1) not in outcome.vm("a").stats.uvcs


async def _writes_done(probe: Any, system: Any, vm: Any) -> None:
    """Wait until the guest of :func:`_secure_then_wait` wrote its pages: from then on (its
    compute phase) every UVC and every counter change is the probe's."""
    for gfn in (0x100, 0x101):
        await wait_state(probe, system, vm, gfn, FrameState.SECURE)


async def _fresh_page(probe: Any, system: Any, vm: Any, gfn: int) -> Page:
    """A page faulted in for ``gfn`` (not secure yet), with the LRU batch drained."""
    kvm = system.hypervisor.kvm
    await kvm.handle_dat_fault(probe, vm, gfn)
    kvm.mm.lru_drain(probe.name)
    return kvm.mm.page(vm.space.pfn_of(gfn))


def _import(vm: Any, gfn: int) -> ConvToSecStorRequest:
    return ConvToSecStorRequest(guest_handle=vm.config_handle, gaddr=gfn << 12)


@pytest.mark.parametrize("obstacle", ["page-locked", "extra-reference", "writeback", "uv-busy"])
def test_the_import_tries_once_and_answers_eagain(obstacle: str) -> None:
    seen: dict[str, Any] = {}

    async def attempt(probe: Any, system: Any, vm: Any) -> None:
        kvm = system.hypervisor.kvm
        await _writes_done(probe, system, vm)
        page = await _fresh_page(probe, system, vm, 0x300)
        calls, ebusy = system.uv_actor.calls, vm.stats.ebusy
        if obstacle == "page-locked":
            page.locked_by = "someone"
        elif obstacle == "extra-reference":
            kvm.mm.try_get(page)
        elif obstacle == "writeback":
            page.writeback = True
            Later(system, 10_000, lambda: setattr(page, "writeback", False))  # the writeback ends
        else:
            system.uv_actor.busy_fault = lambda command: command is UvcCommand.CONV_TO_SEC_STOR
        seen["result"] = await kvm.make_secure(probe, vm, _import(vm, 0x300))
        seen["uvcs"] = system.uv_actor.calls - calls
        seen["ebusy"] = vm.stats.ebusy - ebusy
        page.locked_by, page.writeback = None, False
        system.uv_actor.busy_fault = None
        if obstacle == "extra-reference":
            kvm.mm.put(page, probe.name)
        seen["after"] = await kvm.make_secure(probe, vm, _import(vm, 0x300))

    probe_run(_secure_then_wait(), attempt)
    assert seen["result"] == "again"
    assert seen["uvcs"] == (1 if obstacle == "uv-busy" else 0)  # a single try, never a loop
    assert (seen["ebusy"] > 0) is (obstacle in ("extra-reference", "writeback"))
    assert seen["after"] == "ok"


@pytest.mark.parametrize(
    ("others", "misc", "command", "exported_first"),
    [(1, False, "import", True), (0, False, "import", False), (1, True, "import", False), (1, False, "unpin", False)],
    ids=["two-configs", "one-config", "misc", "unpin"],
)
def test_export_before_import_only_where_several_configurations_share_the_mm(
    others: int, misc: bool, command: str, exported_first: bool
) -> None:
    seen: dict[str, Any] = {}

    async def attempt(probe: Any, system: Any, vm: Any) -> None:
        kvm = system.hypervisor.kvm
        kvm.misc = misc
        vm.protected_count = others
        await _writes_done(probe, system, vm)
        await _fresh_page(probe, system, vm, 0x300)
        before = vm.stats.uvcs[("CONV_FROM_SEC_STOR", 1)]
        request: Any = _import(vm, 0x300)
        if command == "unpin":
            request = UnpinPageSharedRequest(guest_handle=vm.config_handle, gaddr=0x300000)
        await kvm.make_secure(probe, vm, request)
        seen["exports"] = vm.stats.uvcs[("CONV_FROM_SEC_STOR", 1)] - before
        vm.protected_count = 0

    probe_run(_secure_then_wait(), attempt)
    assert (seen["exports"] == 1) is exported_first


def test_the_reclaim_thread_swaps_secure_pages_out_as_ciphertext_and_nothing_is_lost() -> None:
    workload = [f"write 0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(6)]
    workload += [f"read 0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(6)]
    outcome = run_seed(config(guest("a", workload), limit_kib=48), 1)
    vm = outcome.vm("a")
    assert outcome.ok and vm.state.value == "halted" and not vm.guest.corruptions
    assert vm.stats.swap_outs > 0 and vm.stats.swap_ins > 0
    assert vm.stats.uvcs[("CONV_FROM_SEC_STOR", 1)] > 0  # ptep_clear_flush exported them first
    swapped = [e for e in outcome.events if e["kind"] == "host-read" and e["reader"] == "swap"]
    assert swapped and not any(e["canaries"] for e in swapped)


def test_a_regular_guests_pages_are_swapped_as_they_are() -> None:
    workload = [f"write 0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(6)]
    workload += [f"read 0x{0x100000 + 0x2000 * i:x} pages=2" for i in range(6)]
    outcome = run_seed(config(guest("a", workload, secure=False), limit_kib=48), 1)
    vm = outcome.vm("a")
    assert outcome.ok and not vm.guest.corruptions and vm.stats.swap_outs > 0
    assert not any(cmd == "CONV_FROM_SEC_STOR" for cmd, _ in vm.stats.uvcs)


def test_bounce_buffer_io_goes_through_shared_pinned_pages_and_reads_back() -> None:
    workload = ["write 0x100000 pages=4", "io-write 7 0x100000 pages=4", "net-send 0x100000 pages=2",
                "io-read 7 0x200000 pages=4", "read 0x200000 pages=4"]
    outcome = run_seed(config(guest("a", workload)), 2)
    vm = outcome.vm("a")
    assert outcome.ok and vm.state.value == "halted" and not vm.guest.corruptions
    assert vm.stats.io_requests == 3 and vm.stats.bounce_pins >= 10
    assert vm.stats.uvcs[("PIN_PAGE_SHARED", 1)] > 0
    device = [e for e in outcome.events if e["kind"] == "host-read" and e["reader"].startswith("virtio")]
    assert device and all(e["state"] in ("shared", "shared-pinned") for e in device)
    assert not any(e["canaries"] for e in device)  # the guest encrypts what it writes to disk and net


def test_io_errors_are_retried_until_they_heal() -> None:
    from actors._faults import FaultPlan

    workload = ["write 0x100000 pages=2", "io-write 0 0x100000 pages=2", "io-read 0 0x200000 pages=2"]
    cfg = config(guest("a", workload), faults=FaultPlan(io_error=60, heal_at=2_000_000))
    retried = [o for o in (run_seed(cfg, seed) for seed in range(6)) if o.vm("a").stats.io_retries]
    assert retried and all(o.ok and not o.vm("a").guest.corruptions for o in retried)


def test_a_failing_share_stops_the_guest_before_any_io() -> None:
    from actors._faults import FaultPlan

    faults = FaultPlan(fail_uvcs=("SET_SHARED_ACCESS:1",))  # the firmware fails the first share
    outcome = run_seed(config(guest("a", ["write 0x100000", "io-write 0 0x100000"]), faults=faults), 0)
    vm = outcome.vm("a")
    assert vm.guest.state == "stopped" and "not shared" in vm.guest.reason
    assert vm.stats.io_requests == 0 and outcome.ok


def test_a_tampered_swapped_page_kills_the_guest_without_its_data_being_accepted() -> None:
    for seed in range(20):
        outcome = run_seed(tampered_swap(seed), seed)
        if outcome.count("tamper") and outcome.vm("a").guest.state == "stopped":
            break
    else:
        pytest.fail("no seed tampered with a page the guest read back")
    assert "rc 0x0107" in outcome.vm("a").guest.reason and not outcome.vm("a").guest.corruptions
    assert outcome.ok  # the progress monitor accepts a stop the hostile host caused


# ================================================================ the demo
def test_the_demo_runs_with_less_host_memory_than_its_guests_use() -> None:
    result = run(demo_config(), seed=0, trace=None)
    memory = result.memory
    assert memory is not None and memory.limit_pages
    assert memory.touched_pages > 2 * memory.limit_pages  # the guests use more than the host gives them
    assert memory.peak_pages <= memory.limit_pages + 8  # (boot-time loads may overshoot a little)
    assert memory.peak_pages <= memory.limit_pages + memory.overcommitted  # every page over it is accounted for
    touched = sum(vm.stats.swap_outs for vm in result.vms)
    assert touched > 0 and memory.swap_reads > 0
    secure = [vm for vm in result.vms if vm.secure and vm.state.value == "halted"]
    assert all(vm.stats.uvcs[("CONV_FROM_SEC_STOR", 1)] > 0 for vm in secure)
    assert all(vm.stats.uvcs[("CONV_TO_SEC_STOR", 1)] > 0 for vm in secure)
    assert sum(vm.stats.busy for vm in result.vms) > 0
    assert all(vm.stats.io_requests > 0 and vm.stats.bounce_pins > 0 for vm in result.vms if vm.state.value == "halted")
    assert result.violations == ()


def test_the_demo_summary_shows_memory_io_and_monitors() -> None:
    out = CliRunner().invoke(main, ["demo", "--trace", "/dev/null"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    for needed in ("import", "export", "swap out/in", "busy", "EAGAIN", "pins", "host memory for guest pages",
                   "no violation"):
        assert needed in text


# ===================================================== configuration, CLI
def test_bug_switches_are_named_and_unknown_names_refused() -> None:
    switches = BugSwitches.from_names(["no-export-before-import", "busy-loop-under-lock"])
    assert switches.names == ("busy-loop-under-lock", "no-export-before-import")
    with pytest.raises(UsageError):
        BugSwitches.from_names(["no-such-bug"])


@pytest.mark.parametrize("command", [["demo"], ["run", "x.toml"]])
def test_inject_bug_is_listed_in_help(command: list[str]) -> None:
    out = CliRunner().invoke(main, [*command, "--help"])
    assert out.exit_code == 0
    text = "".join(out.output.split())  # help text wraps at hyphens
    assert all(name in text for name in BUG_NAMES)


def test_an_unknown_bug_name_is_a_usage_error() -> None:
    out = CliRunner().invoke(main, ["demo", "--inject-bug", "nope"])
    assert out.exit_code != 0 and "nope" in out.output


@pytest.mark.parametrize(
    ("server", "kib"), [({"guest_memory_limit_mib": 2}, 2048), ({"guest_memory_limit_kib": 96}, 96), ({}, 0)]
)
def test_the_guest_memory_limit_is_configured_in_mib_or_kib(server: dict[str, int], kib: int) -> None:
    cfg = parse_config({"server": server, "guest": [{"name": "g", "workload": []}]})
    assert cfg.guest_memory_limit_kib == kib
    assert parse_config(cfg.to_json()).guest_memory_limit_kib == kib  # round trip through a trace header


@pytest.mark.parametrize(
    "data",
    [
        {"server": {"guest_memory_limit_kib": 8}},
        {"server": {"guest_memory_limit_kib": 64, "guest_memory_limit_mib": 1}},
        {"bugs": ["no-such-bug"]},
    ],
    ids=["too-small", "both-units", "unknown-bug"],
)
def test_bad_memory_limits_and_bug_names_are_config_errors(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config({**data, "guest": [{"name": "g", "workload": []}]})


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("io-write 3 0x1000 pages=2", {"block": 3, "addr": 0x1000, "pages": 2}),
        ("io-read 0 0x2000", {"block": 0, "addr": 0x2000, "pages": 1}),
        ("net-send 0x3000 pages=4", {"addr": 0x3000, "pages": 4}),
    ],
)
def test_io_operations_parse(text: str, fields: dict[str, int]) -> None:
    op = parse_op(text)
    assert all(getattr(op, k) == v for k, v in fields.items())


@pytest.mark.parametrize("text", ["io-write 0x1000", "io-read 1 0x1001", "net-send 0x1000 pages=0", "io-write -1 0x0"])
def test_bad_io_operations_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_op(text)


# ======================================================= small pure pieces
def test_canary_tags_name_whose_plaintext_a_page_is() -> None:
    page = make_page("a", 0x1000, 1)
    assert canary_tags(page) == [canary("a")[14:22].hex()]
    assert canary_tags(bytes(PAGE)) == []


def test_unfreeze_is_a_set_so_a_reference_taken_meanwhile_is_lost() -> None:
    reports: list[str] = []
    from machine import HostMemory
    from machine._alloc import FrameAllocator

    mm = LinuxMm(HostMemory(1 << 24), FrameAllocator(16, 4096), lambda who, what, detail: reports.append(what))
    page = mm.alloc(None, 0, "t")
    page.mapcount = 1
    assert mm.freeze(page, 1)
    mm.get(page, "t")  # a plain folio_get while frozen: what §8 #19 let happen
    mm.unfreeze(page, 1)
    assert reports == ["vm-bug"] and page.refcount == 1



def test_the_memory_bench_prints_its_ratio_and_the_memory_per_page() -> None:
    import re
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "memory.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert re.search(r"^ratio actors/bare: \d+\.\d+$", done.stdout, re.MULTILINE)
    assert re.search(r"^memory held per touched guest page: \d+ bytes", done.stdout, re.MULTILINE)


def test_a_guest_doing_io_may_not_use_its_bounce_buffer_region_for_other_operations() -> None:
    guest_table = {"name": "g", "memory_mib": 4, "workload": ["io-write 0 0x100000", "write 0x3fa000"]}
    with pytest.raises(ConfigError, match="bounce buffers"):
        parse_config({"guest": [guest_table]})
    parse_config({"guest": [{**guest_table, "workload": ["write 0x3fa000"]}]})  # no I/O: the region is free
