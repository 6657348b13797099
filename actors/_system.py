"""Wiring one server's actors together: LPAR, ultravisor, hypervisor, vCPUs, guests."""

from __future__ import annotations

from typing import Any, final

from cryptography.hazmat.primitives.asymmetric import ec

from machine import Server, Ultravisor, UvLimits
from machine._alloc import FrameAllocator
from protocol import Cc, UvcCommand

from ._bugs import NO_BUGS, BugSwitches
from ._fabric import Fabric
from ._faults import NO_FAULTS, PARTIAL_OK, FaultPlan
from ._guest import GuestActor
from ._host_threads import HostThread, start_host_threads
from ._hypervisor import HypervisorActor
from ._lpar import LparActor
from ._reclaim import ReclaimActor
from ._ultravisor import UltravisorActor
from ._vcpu import VcpuActor
from ._virtio import VirtioActor
from ._vm import VmSpec

PAGE = 4096
FIRST_FREE_PFN = 16  # frames below 64 KiB stay with the host kernel (lowcore and friends)


@final
class System:
    """The actors of one simulated server, ready for ``fabric.run()``."""

    def __init__(
        self,
        fabric: Fabric,
        *,
        server_name: str,
        memory: int,
        cpus: int,
        host_key: ec.EllipticCurvePrivateKey,
        guests: list[VmSpec],
        seed: int,
        limits: UvLimits | None = None,
        faults: FaultPlan = NO_FAULTS,
        bugs: BugSwitches = NO_BUGS,
        guest_memory_limit: int | None = None,
        host_threads: tuple[HostThread, ...] = (),
    ) -> None:
        self.fabric = fabric
        self.server = Server(server_name, memory, cpus, host_key)
        self.uv = Ultravisor(self.server, seed=seed, limits=limits)
        self.allocator = FrameAllocator(FIRST_FREE_PFN, memory // PAGE)
        self.uv_actor = UltravisorActor(fabric, "uv", self.uv)
        self.faults = faults
        if faults.uv_busy or faults.import_busy or faults.uv_partial:
            uv_actor = self.uv_actor

            def busy(command: Any) -> Any:
                if faults.import_busy and command is UvcCommand.CONV_TO_SEC_STOR:
                    return faults.fires(uv_actor, "import-busy", faults.import_busy)
                if faults.uv_partial and command in PARTIAL_OK and faults.fires(uv_actor, "uv-partial", faults.uv_partial):
                    return Cc.PARTIAL
                return faults.fires(uv_actor, "uv-busy", faults.uv_busy)

            self.uv_actor.busy_fault = busy
        self.uv_actor.failing = faults.failing_calls()
        self.hypervisor = HypervisorActor(
            fabric,
            "kvm",
            self.server,
            self.allocator,
            self.uv_actor,
            guests,
            make_vcpu=lambda hv, vm, num: VcpuActor(fabric, f"{vm.name}.cpu{num}", hv, vm, num),
            make_guest=lambda hv, vm: GuestActor(fabric, f"{vm.name}.os", vm),
        )
        self.lpar = LparActor(fabric, "lpar", self.uv_actor, self.hypervisor, self.allocator)
        # Host kernel threads and QEMU's I/O backends (actors._reclaim, actors._virtio).
        self.reclaim = ReclaimActor(fabric, "kswapd", self.hypervisor)
        self.virtio = VirtioActor(fabric, "virtio", self.hypervisor)
        self.bugs = bugs
        self.hypervisor.kvm_options = {
            "bugs": bugs,
            "limit_pages": None if guest_memory_limit is None else guest_memory_limit // PAGE,
            "faults": faults,
            "reclaimer": self.reclaim,
            "virtio": self.virtio,
        }
        self.host_threads = start_host_threads(self, host_threads)
        self.server.memory.on_transition = self._frame_event
        self.server.memory.on_range = self._frames_event

    def _frame_event(self, pfn: int, old: Any, new: Any, owner: int) -> None:
        self.fabric.record("machine", "frame", {"pfn": pfn, "from": old.value, "to": new.value, "owner": owner})

    def _frames_event(self, first: int, count: int, old: Any, new: Any, owner: int) -> None:
        self.fabric.record(
            "machine", "frame", {"pfn": first, "count": count, "from": old.value, "to": new.value, "owner": owner}
        )

    @property
    def vms(self) -> list[Any]:
        kvm = self.hypervisor.kvm
        return [] if kvm is None else kvm.vms
