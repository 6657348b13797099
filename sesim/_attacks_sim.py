"""The world of attacks on the running system: swapping, QEMU's reads and writes, I/O, a dump under way.

These attacks (:mod:`sesim._attacks_swap`, :mod:`sesim._attacks_io`) need the actor system (:func:`sesim._simulation.run`): a hostile host
thread joins the server's actors (the ``setup`` hook) and acts while the
victim's workload runs, the reclaim thread swaps, and the devices do I/O.
Every run is deterministic for its seed. An attack that depends on timing
(a page must be on the swap device at the right moment) is tried on the
seeds of :data:`SEEDS` in order until its hostile action happened; that run
is judged.

What the hostile host obtains here: what its own threads read, every page
it finds on the swap device while the guest runs and after, the virtio
disk and network data, the dumps, and for every ``host-read`` event of the
trace that found the victim's canary in a page the victim did not share,
the canary itself. The UV's cc 1 answers to the host's calls are the
defences that fired; the monitors of :mod:`traces._monitors` run as in
every simulation, and a violation is a problem of the attack.
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from actors import Actor, RunLimitReached
from actors._system import System
from actors._workload import canary, make_page, owner_tag
from protocol import Cc, UvcCommand

from ._attacks_base import Attack, AttackResult, judge
from ._hostile import Defence, HostileHost, PlaintextScanner
from ._simulation import GuestConfig, RunConfig, build_image, derived_host_key, run

PAGE = 4096
VICTIM = "victim"
KERNEL_SIZE = 0x11000
"""A small synthetic kernel (68 KiB): short boots."""
SEEDS = range(8)
MAX_STEPS = 80_000
RC_INTEGRITY = Defence.rc(UvcCommand.CONV_TO_SEC_STOR, 0x0107)
EXPORT_ENCRYPTS = Defence.check("export-encrypts")
_KEPT = frozenset({"guest-stop", "tamper", "host-read", "violation", "kvm-run", "dump-complete", "dump-refused"})


@functools.cache
def _assets() -> Path:
    """The server's host key and the victim's images (with and without dumping), once per process."""
    base = Path(tempfile.mkdtemp(prefix="sesim-attack-"))
    key = derived_host_key(0, "z15-a")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())  # fmt: skip
    (base / "host.pem").write_bytes(pem)
    for dump in (False, True):
        image = build_image(seed=0, name=VICTIM, host_keys=[key.public_key()], allow_dump=dump,
                            kernel_size=KERNEL_SIZE)  # fmt: skip
        (base / f"{VICTIM}{'-dump' if dump else ''}.img").write_bytes(image)
    return base


def victim_config(workload: tuple[str, ...], *, limit_kib: int = 0, dump: bool = False, cpus: int = 1) -> RunConfig:
    """One victim guest (4 MiB) on a 3 GiB server; ``limit_kib`` of host memory for guest pages."""
    image = _assets() / f"{VICTIM}{'-dump' if dump else ''}.img"
    guest = GuestConfig(name=VICTIM, secure=True, memory_mib=4, cpus=cpus, workload=workload, image_path=str(image),
                        dump=dump)  # fmt: skip
    return RunConfig(memory_mib=3072, cpus=4, guests=(guest,), host_key_path=str(_assets() / "host.pem"),
                     guest_memory_limit_kib=limit_kib)  # fmt: skip


class _Keep:
    """A trace processor that keeps the events the judge needs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event["kind"] in _KEPT:
            self.events.append({k: v for k, v in event.items() if k != "msg"})
        return event


class SimArena:
    """One simulated attack's world: a run of the actor system with hostile threads (module docstring)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.host = HostileHost()
        self.system: System | None = None
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.performed = False
        """Set by the attack once its hostile action happened in this run."""

    # ------------------------------------------------------------ running
    def run(self, config: RunConfig, *threads: Callable[[System, SimArena], Any],
            uv_hook: Callable[[Any, Any], Any] | None = None) -> System:  # fmt: skip
        """Run ``config`` with the hostile ``threads`` (actor factories) and a snooper; collect the loot."""
        keep = _Keep()
        holder: list[System] = []

        def wire(system: System) -> None:
            holder.append(system)
            self.system = system
            _observe_uv(system, self.host, uv_hook)
            _Snooper(system, self)
            for make in threads:
                make(system, self)

        try:
            result = run(config, seed=self.seed, trace=None, max_steps=MAX_STEPS, processors=(keep,), setup=wire)
            self.problems += [str(v) for v in result.violations]
        except RunLimitReached as exc:
            self.problems.append(f"the run hung: {exc}")
        self.events = keep.events
        system = holder[0]
        self._collect(system)
        return system

    def _collect(self, system: System) -> None:
        """After the run: the swap device, the disk, the network, the dumps, canaries the host read."""
        kvm = system.hypervisor.kvm
        if kvm is not None:
            for slot in range(kvm.swap.writes):
                self.host.obtain(f"swap slot {slot} after the run", kvm.swap.read(slot))
        for (guest, block), data in sorted(system.virtio.disk.items()):
            self.host.obtain(f"disk block {block} of {guest}", data)
        for guest, seq, head in system.virtio.packets:
            self.host.obtain(f"packet {seq} of {guest}", bytes.fromhex(head))
        for vm in system.vms:
            for n, image in enumerate(vm.dumps):
                for i, blob in enumerate(image.blobs()):
                    self.host.obtain(f"dump {n} of {vm.name}, part {i}", blob)
        tag = owner_tag(VICTIM).hex()
        for event in self.events:
            if event["kind"] == "host-read" and tag in event.get("canaries", ()) and "shared" not in event["state"]:
                self.host.obtain(f"host read by {event['reader']} of guest page {event['gfn']:#x}", canary(VICTIM))

    # ------------------------------------------------------------ the victim
    def vm(self) -> Any:
        assert self.system is not None
        return next(vm for vm in self.system.vms if vm.name == VICTIM)

    def scanner(self) -> PlaintextScanner:
        """Every version of every page the victim wrote, and its canary."""
        vm = self.vm()
        pages = [make_page(VICTIM, gaddr, v) for gaddr, last in sorted(vm.guest.versions.items())
                 for v in range(1, last + 1)]  # fmt: skip
        return PlaintextScanner(pages, [canary(VICTIM)])

    def outcome(self) -> tuple[str, bool | None]:
        guest = self.vm().guest
        if guest.corruptions:
            return f"ran on with CHANGED DATA: {guest.corruptions[0]}", False
        if guest.state == "running":
            return "ran its workload to the end, data intact", True
        if guest.state == "refused":
            return f"never started: {guest.reason}", None
        return f"stopped: {guest.reason}", None

    def stops(self, cause: str) -> bool:
        return any(e["kind"] == "guest-stop" and e.get("cause") == cause for e in self.events)


def fired_any(s: SimArena, defence: Defence) -> bool:
    return any(defence.matches(f) for f in s.host.fired)


def _observe_uv(system: System, host: HostileHost, hook: Callable[[Any, Any], Any] | None) -> None:
    """Every cc 1 answer of the UV to the host is a defence that fired; ``hook`` may answer instead."""
    uv = system.uv
    execute = uv.execute

    def observed(caller: Any, request: Any) -> Any:
        response = hook(caller, request) if hook is not None else None
        if response is None:
            response = execute(caller, request)
        if response.cc == Cc.ERROR and not caller.is_guest:
            host.saw(Defence.rc(request.COMMAND, response.rc, response.rrc))
        return response

    uv.execute = observed  # type: ignore[method-assign]


def alive(vm: Any) -> bool:
    """Whether the victim still runs (its memory is there and its VM has not ended)."""
    return not vm.memory_released and vm.guest.state == "running" and vm.state.value == "running"


async def wait_for_pages(actor: Actor, vm: Any, pages: int) -> bool:
    """Wait until the victim wrote ``pages`` pages (bounded); False if it ended first."""
    for _ in range(1_000):
        if len(vm.guest.versions) >= pages:
            return True
        if not alive(vm):
            return False
        await actor.sleep(2_000)
    return False


async def running_victim(actor: Actor, system: System) -> Any:
    """Wait until the victim runs its workload; None if it never does."""
    while True:
        vm = next((vm for vm in system.vms if vm.name == VICTIM), None)
        state = getattr(getattr(vm, "guest", None), "state", "")
        if state == "running":
            return vm
        if state in ("refused", "stopped"):
            return None
        await actor.sleep(1_000)


class _Snooper(Actor):
    """The hostile host reads every page of the victim on the swap device while the guest runs."""

    def __init__(self, system: System, arena: SimArena) -> None:
        super().__init__(system.fabric, "snooper")
        self.system, self.arena = system, arena
        self.seen: set[bytes] = set()

    async def main(self) -> None:
        vm = await running_victim(self, self.system)
        if vm is None:
            return
        kvm = self.system.hypervisor.kvm
        while alive(vm):
            for gfn, slot in sorted(vm.swap_ptes.items()):
                data = kvm.swap.read(slot)
                digest = hashlib.sha256(data).digest()
                if digest not in self.seen:
                    self.seen.add(digest)
                    self.arena.host.obtain(f"swap slot {slot} (guest page {gfn:#x})", data)
            await self.sleep(5_000)


# ------------------------------------------------------------------ running one
def run_simulated(attack: Attack) -> AttackResult:
    """Run ``attack`` on the seeds of :data:`SEEDS` until its hostile action happens; judge that run."""
    arena = SimArena(SEEDS[0])
    for seed in SEEDS:
        arena = SimArena(seed)
        attack.fn(arena)
        if arena.performed:
            break
    extra = list(arena.problems)
    notes = [f"seed {arena.seed}"]
    if not arena.performed:
        extra.append(f"the hostile action never happened on seeds {SEEDS.start}..{SEEDS.stop - 1}")
    guest, intact = arena.outcome()
    leak = arena.host.leaks(arena.scanner())
    return judge(attack, attempts=arena.host.attempts, fired=arena.host.fired, guest=guest, intact=intact, leak=leak,
                 extra=extra, notes=tuple(notes))  # fmt: skip
