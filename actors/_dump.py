"""Dumping a secure guest: QEMU's ``dump-guest-memory`` with ``KVM_PV_DUMP`` (uv-semantics.md §7).

The hypervisor starts a dump on its own (a guest whose specification asks
for one, some time after it runs). The steps follow KVM and QEMU:

1. ``KVM_PV_DUMP_INIT``: KVM blocks every vCPU (``kvm_s390_vcpu_block_all``:
   it waits until none is inside SIE, and from then on ``KVM_RUN`` answers
   ``-EINVAL``), then DUMP_INIT. The UV refuses unless the SE header allows
   dumping (PCF bit 34); then the vCPUs are unblocked and nothing is dumped.
2. Guest memory is read by QEMU as any host access reads it
   (:meth:`actors._kvm.Kvm.user_access`): a secure page takes 0x3d and is
   exported first, a swapped-out page is read back, so the dump holds
   ciphertext; every read is a ``host-read`` event the canary monitor checks.
3. ``KVM_PV_DUMP_CONFIG_STOR_STATE`` for each MiB that holds guest pages:
   DUMP_CONF_STOR_STATE into a bounce buffer (the pages' export tweaks).
4. ``KVM_PV_DUMP_CPU`` for every vCPU: DUMP_CPU, the CPU state sealed.
5. ``KVM_PV_DUMP_COMPLETE``: DUMP_COMPLETE, then the vCPUs are unblocked.

The result (:class:`DumpImage`) is the hypervisor's: only the image's owner,
with the customer communication key, can open it
(:func:`machine._uv_dump.open_dump_blob`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from protocol import (
    Cc,
    DumpCompleteRequest,
    DumpConfStorStateRequest,
    DumpCpuRequest,
    DumpInitRequest,
)

from ._teardown import release

if TYPE_CHECKING:
    from ._vm import VirtualMachine

PAGE = 4096
MIB = 1 << 20
DUMP_DELAY_NS = 100_000
"""How long after a guest starts running its dump begins."""
BLOCK_POLL_NS = 1_000
"""How often ``kvm_s390_vcpu_block_all`` looks whether every vCPU has left SIE."""


@frozen(kw_only=True)
class DumpRequest:
    """Hypervisor → itself: dump this guest now."""

    guest: str


@define(kw_only=True)
class DumpImage:
    """What a dump produced, as the hypervisor holds it (ciphertext and sealed blobs only)."""

    guest: str
    refused: str = ""
    memory: dict[int, bytes] = field(factory=dict)  # gaddr -> page as read (exported: ciphertext)
    stor_state: dict[int, bytes] = field(factory=dict)  # MiB-aligned gaddr -> export tweaks
    cpus: list[bytes] = field(factory=list)  # sealed CPU states
    completion: bytes = b""

    def blobs(self) -> list[bytes]:
        """Every byte string of the dump, for searching."""
        return [*self.memory.values(), *self.stor_state.values(), *self.cpus, self.completion]


async def _uvc(hv: Any, vm: VirtualMachine, request: Any) -> Any:
    return await hv.kvm.uvc(hv, vm, request)


async def dump_guest(hv: Any, vm: VirtualMachine) -> DumpImage:
    """Dump a running secure guest (module docstring); the result is also kept in ``vm.dumps``."""
    image = DumpImage(guest=vm.name)
    vm.dumps.append(image)
    if not vm.protected:
        image.refused = "not a secure guest"
        return image
    kvm = hv.kvm
    qui = kvm.qui
    vm.dumping = True  # kvm_s390_vcpu_block_all: no KVM_RUN from now on ...
    while any(vcpu.in_sie for vcpu in vm.vcpus):  # ... and wait for those inside SIE to leave
        await hv.sleep(BLOCK_POLL_NS)
    hv.record("dump-start", guest=vm.name)
    response = await _uvc(hv, vm, DumpInitRequest(handle=vm.config_handle))
    if response.cc != Cc.OK:
        vm.dumping = False
        image.refused = f"DUMP_INIT rc {response.rc:#06x}"
        hv.record("dump-refused", guest=vm.name, rc=response.rc)
        return image
    area_len = max(qui.conf_dump_storage_state_len, qui.cpu_stor_len, qui.conf_dump_finalize_len)
    area = kvm.alloc_contiguous(None, area_len)
    memory = hv.server.memory
    try:
        gfns = sorted({gfn for gfn, _ in vm.space.mappings()} | set(vm.swap_ptes))
        for gfn in gfns:  # as QEMU reads them: a secure page is exported first (§3.3)
            page = await kvm.user_access(hv, vm, gfn, reader="dump")
            if page is not None:
                image.memory[gfn * PAGE] = page
        for mib in sorted({gaddr // MIB for gaddr in image.memory}):
            request = DumpConfStorStateRequest(config_handle=vm.config_handle, dump_area_origin=area, gaddr=mib * MIB)
            if (await _uvc(hv, vm, request)).cc == Cc.OK:
                image.stor_state[mib * MIB] = memory.host_read(area, qui.conf_dump_storage_state_len)
        for handle in vm.cpu_handles:
            if (await _uvc(hv, vm, DumpCpuRequest(cpu_handle=handle, dump_area_origin=area))).cc == Cc.OK:
                image.cpus.append(memory.host_read(area, qui.cpu_stor_len))
        request = DumpCompleteRequest(config_handle=vm.config_handle, dump_area_origin=area)
        if (await _uvc(hv, vm, request)).cc == Cc.OK:
            image.completion = memory.host_read(area, qui.conf_dump_finalize_len)
    finally:
        vm.dumping = False  # kvm_s390_vcpu_unblock_all
        release(hv, vm, area, (area_len + PAGE - 1) // PAGE * PAGE)
    vm.stats.dumps += 1
    hv.record("dump-complete", guest=vm.name, pages=len(image.memory), cpus=len(image.cpus))
    return image
