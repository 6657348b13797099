"""Dumping a secure guest (uv-semantics.md §7): allowed by the PCF only, vCPUs blocked, ciphertext only."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from sie4 import booted

from actors import Fabric, RandomStrategy
from actors._system import System
from actors._vm import VmSpec
from actors._workload import canary, parse_workload
from machine import ValidityIntercept, ValidityReason
from machine._uv_dump import FINAL_MAGIC, dump_key, open_dump_blob, unpack_cpu_state
from protocol._components import decrypt_page, xts_algorithm
from sesim._config import ConfigError, parse_config
from sesim._simulation import GuestConfig, RunConfig, build_image, derived_host_key, run
from sesim.testbed import open_testbed

MIB = 1 << 20
WORKLOAD = ("write 0x100000 pages=4", "write 0x300000 pages=2", *(["compute 10000", "read 0x100000"] * 20))
"""Writes first; the dump (100 µs after the guest runs) meets the guest in the middle of its reads."""


class DumpRun:
    def __init__(self, system: System, events: list[tuple[str, str, dict]], owner: dict[str, bytes]) -> None:
        self.system = system
        self.events = events
        self.owner = owner  # what the image's owner knows: its CCK, and the configuration's id

    @property
    def vm(self) -> Any:
        return self.system.vms[0]


def dump_run(*, allow: bool = True, seed: int = 2) -> DumpRun:
    key = derived_host_key(seed, "s")
    spec = VmSpec(
        name="alpha", secure=True, memory=16 * MIB, cpus=2, workload=parse_workload(WORKLOAD), dump=True,
        image=build_image(seed=seed, name="alpha", host_keys=[key.public_key()], allow_dump=allow),
    )  # fmt: skip
    events: list[tuple[str, str, dict]] = []
    owner: dict[str, bytes] = {}
    fabric = Fabric(RandomStrategy(seed))
    system = System(fabric, server_name="s", memory=3 << 30, cpus=2, host_key=key, guests=[spec], seed=seed)

    def recorder(actor: str, kind: str, payload: dict[str, Any]) -> None:
        events.append((actor, kind, payload))
        if kind == "dump-start":
            conf = system.uv.configs[system.vms[0].config_handle]
            owner.update(cck=conf.opened.secrets.cck, cuid=conf.cuid)

    fabric.recorder = recorder
    trio.run(fabric.run)
    return DumpRun(system, events, owner)


@pytest.fixture(name="dumped", scope="module")
def _dumped() -> DumpRun:
    return dump_run()


def test_the_hypervisor_dumps_a_running_guest_that_allows_it_and_the_guest_goes_on(dumped: DumpRun) -> None:
    vm = dumped.vm
    assert vm.stats.dumps == 1
    image = vm.dumps[0]
    assert image.refused == "" and image.memory and len(image.cpus) == 2 and image.completion
    assert vm.state.value == "halted" and vm.guest.corruptions == []


def test_the_dumped_memory_and_state_hold_no_plaintext_of_the_guest(dumped: DumpRun) -> None:
    vm = dumped.vm
    blobs = vm.dumps[0].blobs()
    secret = canary("alpha")
    assert not any(secret in blob for blob in blobs)
    written = [page for gaddr, page in vm.dumps[0].memory.items() if gaddr in vm.guest.versions]
    assert len(written) == 6
    assert all(b"SESIMPG1" not in page for page in written)
    markers = vm.guest.registers.planted
    assert not any(m.to_bytes(8, "big") in blob or m.to_bytes(8, "little") in blob for m in markers for blob in blobs)


def test_the_images_owner_can_open_the_dump_with_the_cck(dumped: DumpRun) -> None:
    """The completion data gives the export key; with the tweaks, exported pages decrypt."""
    image = dumped.vm.dumps[0]
    key = dump_key(dumped.owner["cck"], dumped.owner["cuid"])
    magic, _, plain = open_dump_blob(key, image.completion)
    assert magic == FINAL_MAGIC
    xts = xts_algorithm(plain[:64])
    gaddr = 0x100000
    tweak = image.stor_state[gaddr & ~(MIB - 1)][((gaddr % MIB) >> 12) * 16 :][:16]
    assert tweak != bytes(16)
    page = decrypt_page(xts, tweak, image.memory[gaddr])
    assert page.startswith(b"SESIMPG1") and canary("alpha") in page
    states = [unpack_cpu_state(open_dump_blob(key, blob)[2]) for blob in image.cpus]
    planted = dumped.vm.guest.registers.planted
    assert any(s.psw.addr in planted for s in states)  # the owner sees the real PSW and registers
    assert any(g in planted for s in states for g in s.gprs)


def test_vcpus_cannot_run_while_the_dump_is_in_progress(dumped: DumpRun) -> None:
    vm = dumped.vm
    assert vm.stats.intercepts["KVM_RUN -EINVAL (dump)"] >= 1
    assert vm.stats.intercepts["validity"] == 0  # KVM blocked them: the UV never had to refuse
    kinds = [kind for _, kind, p in dumped.events if p.get("guest") == "alpha"]
    start, end = kinds.index("dump-start"), kinds.index("dump-complete")
    assert "kvm-run" in kinds[start:end] or "kvm-run" in kinds[:start]
    assert "sie-exit" not in kinds[start:end]  # nothing entered SIE in between


def test_a_guest_whose_header_does_not_allow_dumping_is_not_dumped() -> None:
    run = dump_run(allow=False)
    vm = run.vm
    assert vm.dumps[0].refused == "DUMP_INIT rc 0x0101"
    assert vm.dumps[0].memory == {} and vm.stats.dumps == 0
    assert vm.state.value == "halted" and vm.guest.corruptions == []
    assert not vm.dumping


async def test_sie_entry_while_the_configuration_is_dumped_is_a_validity_intercept() -> None:
    async with open_testbed() as tb:
        h = await booted(tb)
        tb.uv.configs[h.g.config_handle].dumping = True  # as after DUMP_INIT
        with pytest.raises(ValidityIntercept) as validity:
            h.enter()
        assert validity.value.reason == ValidityReason.DUMPING
        tb.uv.configs[h.g.config_handle].dumping = False
        h.run_once()


def test_dump_is_a_guest_key_of_secure_guests_that_round_trips() -> None:
    config = parse_config({"guest": [{"name": "alpha", "workload": ["halt"], "dump": True}]})
    assert config.guests[0].dump
    assert parse_config(config.to_json()) == config
    with pytest.raises(ConfigError, match="dump"):
        parse_config({"guest": [{"name": "delta", "secure": False, "workload": ["halt"], "dump": True}]})


@pytest.mark.parametrize("teardown", ["sync", "async"])
def test_after_a_dump_the_guest_can_re_ipl_into_a_new_configuration(teardown: str) -> None:
    """The dump exported the image's pages; the old configuration's end gives them back for the new unpack."""
    workload = ("write 0x100000 pages=2", *(["compute 10000"] * 15), "reboot reipl", "read 0x100000", "diag500")
    guest = GuestConfig(
        name="alpha", secure=True, memory_mib=3072, cpus=2, workload=workload, dump=True, teardown=teardown
    )
    config = RunConfig(memory_mib=4096, guests=(guest,))
    vm = run(config, seed=1, trace=None).vms[0]
    assert vm.stats.dumps == 1
    assert vm.state.value == "halted" and vm.guest.corruptions == [], vm.reason
    assert vm.stats.uvcs[("CREATE_SEC_CONF", 1)] == 2 and vm.stats.uvcs[("VERIFY_IMG", 1)] == 2
