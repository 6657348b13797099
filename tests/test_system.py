"""The whole system: a secure guest's life, refusals, a regular guest, deterministic traces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from sesim._simulation import DEMO_WORKLOAD, GuestConfig, RunConfig, demo_config, run

SMALL = RunConfig(
    memory_mib=3072,
    guests=(
        GuestConfig(name="alpha", secure=True, memory_mib=16, cpus=2, workload=DEMO_WORKLOAD),
        GuestConfig(name="gamma", secure=True, memory_mib=16, cpus=1, workload=DEMO_WORKLOAD, image_for="other"),
        GuestConfig(name="delta", secure=False, memory_mib=16, cpus=2, workload=DEMO_WORKLOAD),
    ),
)


@pytest.fixture(name="result", scope="module")
def _result(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return run(SMALL, seed=5, trace=tmp_path_factory.mktemp("t") / "run.jsonl")


def _vm(result, name):  # type: ignore[no-untyped-def]
    return next(vm for vm in result.vms if vm.name == name)


def test_secure_guest_boots_runs_its_workload_and_is_torn_down(result) -> None:  # type: ignore[no-untyped-def]
    alpha = _vm(result, "alpha")
    assert alpha.state.value == "halted"
    assert alpha.guest.corruptions == []
    assert alpha.stats.pages_unpacked > 0
    order = [cmd for (cmd, rc) in alpha.stats.uvcs]
    for needed in ("CREATE_SEC_CONF", "CREATE_SEC_CPU", "SET_SEC_CONF_PARAMS", "UNPACK_IMG", "VERIFY_IMG",
                   "CPU_SET_STATE", "DESTROY_SEC_CPU", "DESTROY_SEC_CONF"):
        assert needed in order
    assert alpha.stats.exceptions["0x3e"] > 0  # first touches were imported


def test_image_for_another_server_is_refused_with_rc_0108(result) -> None:  # type: ignore[no-untyped-def]
    gamma = _vm(result, "gamma")
    assert gamma.state.value == "refused"
    assert ("SET_SEC_CONF_PARAMS", 0x0108) in gamma.stats.uvcs
    assert gamma.stats.ops_done == 0 or gamma.guest.state == "refused"


def test_regular_guest_runs_beside_the_secure_ones_without_the_ultravisor(result) -> None:  # type: ignore[no-untyped-def]
    delta = _vm(result, "delta")
    assert delta.state.value == "halted"
    assert not delta.stats.uvcs
    assert delta.guest.corruptions == []


def test_trace_starts_with_a_header_and_has_one_event_a_line(result) -> None:  # type: ignore[no-untyped-def]
    lines = result.trace.read_bytes().splitlines()
    header = orjson.loads(lines[0])
    assert header["format"] == "sesim-trace" and header["seed"] == 5
    events = [orjson.loads(line) for line in lines[1:]]
    assert {"step", "t", "actor", "kind"} <= set(events[-1])
    kinds = {e["kind"] for e in events}
    assert {"recv", "reply", "frame"} <= kinds


def test_same_seed_gives_a_byte_identical_trace(tmp_path: Path) -> None:
    a = run(SMALL, seed=9, trace=tmp_path / "a.jsonl").trace.read_bytes()
    b = run(SMALL, seed=9, trace=tmp_path / "b.jsonl").trace.read_bytes()
    assert a == b


def test_trace_is_identical_across_processes_with_different_hash_seeds(tmp_path: Path) -> None:
    outputs = []
    for hash_seed in ("1", "2"):
        path = tmp_path / f"p{hash_seed}.jsonl"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-m", "sesim", "demo", "--seed", "3", "--trace", str(path)],
            check=True, env=env, capture_output=True,
        )
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_demo_configuration_has_three_secure_guests_and_one_regular() -> None:
    config = demo_config()
    assert sum(g.secure for g in config.guests) == 3
    assert sum(not g.secure for g in config.guests) == 1
    assert sum(bool(g.image_for) for g in config.guests) == 1


def test_an_image_with_one_flipped_byte_fails_at_verify_img_and_others_go_on(tmp_path: Path) -> None:
    from sesim._simulation import build_image, derived_host_key

    key = derived_host_key(1, "z15-a")
    image = bytearray(build_image(seed=1, name="evil", host_keys=[key.public_key()]))
    image[0x16000 + 100] ^= 0x01  # a byte inside the kernel: a secure, encrypted page
    path = tmp_path / "evil.img"
    path.write_bytes(bytes(image))
    config = RunConfig(
        memory_mib=3072,
        guests=(
            GuestConfig(name="evil", secure=True, memory_mib=16, cpus=1, workload=DEMO_WORKLOAD, image_path=str(path)),
            GuestConfig(name="good", secure=True, memory_mib=16, cpus=1, workload=DEMO_WORKLOAD),
        ),
    )
    result = run(config, seed=1, trace=None)
    evil, good = _vm(result, "evil"), _vm(result, "good")
    assert evil.state.value == "refused"
    assert "VERIFY_IMG rc 0x0102" in evil.reason
    assert evil.guest.state == "refused" and evil.stats.ops_done == 0
    assert good.state.value == "halted" and good.guest.corruptions == []


def test_the_private_host_key_is_held_only_by_the_ultravisor() -> None:
    import gc

    from cryptography.hazmat.primitives.asymmetric import ec

    from actors import Fabric, RandomStrategy
    from actors._system import System
    from sesim._simulation import derived_host_key

    fabric = Fabric(RandomStrategy(0))
    system = System(fabric, server_name="s", memory=3 << 30, cpus=2, host_key=derived_host_key(0, "s"),
                    guests=[], seed=0)
    holders = [r for r in gc.get_referrers(system.uv.host_private_key) if isinstance(r, dict)]
    # The only reference is the ultravisor's own attribute; the server's slot is empty.
    assert all(h is vars(system.uv) for h in holders)
    assert system.server.host_key_slot._key is None
    assert not any(isinstance(v, ec.EllipticCurvePrivateKey) for v in vars(system.hypervisor).values())
