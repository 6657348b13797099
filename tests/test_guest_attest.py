"""A running secure guest attests itself to its owner and receives a secret."""

from __future__ import annotations

import pytest

from sesim._simulation import GuestConfig, RunConfig, demo_config, run


def _run(workload: tuple[str, ...], seed: int = 1):  # type: ignore[no-untyped-def]
    config = RunConfig(
        memory_mib=3072,
        guests=(GuestConfig(name="a", secure=True, memory_mib=16, cpus=2, workload=workload),),
    )
    return run(config, seed=seed, trace=None).vms[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_owner_verifies_the_measurement_of_a_running_guest(seed: int) -> None:
    vm = _run(("write 0x100000 pages=2", "attest user=hello", "read 0x100000 pages=2"), seed)
    assert vm.guest.attestations and vm.guest.attestations[0][0], vm.guest.attestations
    assert ("guest RETR_ATTEST", 1) in vm.stats.uvcs


def test_the_guest_receives_the_secret_its_owner_sent_and_only_once() -> None:
    vm = _run(("secret disk", "secret disk"))
    assert [ok for _, ok, _ in vm.guest.secrets] == [True, True]
    assert vm.stats.uvcs[("guest ADD_SECRET", 1)] == 1  # a retried or repeated op never adds twice
    assert vm.stats.uvcs[("guest RETR_SECRET", 1)] == 2


def test_the_demo_includes_one_attestation_and_one_secret() -> None:
    result = run(demo_config(), seed=0, trace=None)
    alpha = next(vm for vm in result.vms if vm.name == "alpha")
    assert [ok for ok, _ in alpha.guest.attestations] == [True]
    assert [ok for _, ok, _ in alpha.guest.secrets] == [True]
