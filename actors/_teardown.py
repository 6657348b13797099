"""Tearing a secure configuration down: synchronous, asynchronous, and at process exit.

uv-semantics.md §2.5, following ``kvm_s390_handle_pv`` and ``pv.c``. One rule
above all: **never free memory the UV may still own**. Storage is given back
to the host's allocator only after the destroy that returns it succeeded and
only page by page as each page is plain host memory again; a failed destroy
leaks its storage on purpose (``VirtualMachine.leaked``), for good.

* **Synchronous** (``KVM_PV_DISABLE``, :func:`disable_sync`): DESTROY_SEC_CPU
  for every vCPU (failures do not stop the loop, but then the configuration
  destroy is not attempted); DESTROY_SEC_CONF, which also cleans the
  guest's memory; the leftovers of earlier asynchronous teardowns; then
  DESTR_SEC_STOR for every page still flagged, exporting where a destroy
  fails.
* **Asynchronous**, for reboots of guests over 2 GiB
  (``KVM_PV_ASYNC_CLEANUP_PREPARE`` / ``_PERFORM``): :func:`prepare_async`
  destroys the CPUs, sets the configuration aside (refused if one is already
  set aside or the guest has 2 GiB or less), destroys it at once with
  DESTROY_SEC_CONF_FAST where installed (rc 0x0104 falls back silently),
  destroys the pages below 2 GiB synchronously (the new guest's lowcore and
  prefix pages) and leaves the VM non-secure, free to build a new
  configuration. :class:`CleanupActor` (QEMU's cleanup thread, without the
  VM lock) then performs: it takes the set-aside configuration, destroys
  its remaining pages and disposes of it. A new configuration that touches
  one of those pages first meets it as 0x3d in SIE and destroys it itself
  (:func:`actors._vcpu_mm.destroy_stale`). Whatever a cleanup could not
  finish is cleaned when the VM is destroyed (:func:`destroy_vm`).
* **Process exit** (:func:`process_exit`): the MMU notifier destroys the
  CPUs and, where installed, the configuration with DESTROY_SEC_CONF_FAST;
  ``exit_mmap`` then *destroys* every flagged page (cheap, no encryption)
  instead of exporting it, falling back to export; ``kvm_arch_destroy_vm``
  destroys a configuration that is still there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final

from attrs import define, field, frozen

from machine import FrameState
from protocol import (
    Cc,
    ConvFromSecStorRequest,
    DestroySecConfFastRequest,
    DestroySecConfRequest,
    DestroySecCpuRequest,
    DestrSecStorRequest,
    UvcCommand,
)

from ._fabric import Actor, Fabric
from ._messages import Ack

if TYPE_CHECKING:
    from ._vm import VirtualMachine

PAGE = 4096
GIB = 1 << 30
LOW_GFNS = (2 * GIB) >> 12
"""Pages below 2 GiB are destroyed synchronously by an asynchronous teardown."""
LEGACY_NOT_SECURE = 0x0107
"""DESTR_SEC_STOR rc of older firmware on a page that is not secure: success for Linux."""
RC_DESTROY_FAST_APQNS = 0x0104
"""DESTROY_SEC_CONF_FAST: AP queues still bound; KVM falls back to the normal destroy later."""


@define(kw_only=True)
class Leftover:
    """A configuration set aside by an asynchronous teardown (``struct pv_vm_to_be_destroyed``)."""

    handle: int  # 0 once DESTROY_SEC_CONF_FAST destroyed it
    storage: list[tuple[int, int]] = field(factory=list)
    gfns: tuple[int, ...] = ()


# ------------------------------------------------------------ storage
def release(hv: Any, vm: VirtualMachine, addr: int, length: int) -> None:
    """Give storage back to the host allocator, page by page; a page still owned by the UV leaks."""
    memory = hv.server.memory
    for pfn in range(addr >> 12, (addr + length + PAGE - 1) >> 12):
        if memory.state_of(pfn) is FrameState.HOST:
            memory.frame(pfn).fill(None)
            hv.allocator.free(pfn)
        else:
            vm.leaked.append((pfn * PAGE, PAGE))
            vm.stats.leaked_pages += 1
    if (addr, length) in vm.donations:
        vm.donations.remove((addr, length))


def leak(hv: Any, vm: VirtualMachine, storage: list[tuple[int, int]], why: str) -> None:
    """Intended memory leak on impossible error (pv.c): the UV may still own it."""
    for addr, length in storage:
        vm.leaked.append((addr, length))
        vm.stats.leaked_pages += (length + PAGE - 1) // PAGE
        if (addr, length) in vm.donations:
            vm.donations.remove((addr, length))
    if storage:
        hv.record("leak", guest=vm.name, why=why, pages=sum((n + PAGE - 1) // PAGE for _, n in storage))


def _fast_installed(hv: Any) -> bool:
    return bool(hv.kvm.qui.installed(UvcCommand.DESTROY_SEC_CONF_FAST))


# ------------------------------------------------------------ the steps
async def cpus_from_pv(hv: Any, vm: VirtualMachine, actor: Actor | None = None) -> bool:
    """``kvm_s390_cpus_from_pv``: DESTROY_SEC_CPU for every vCPU; True if all succeeded."""
    actor = actor or hv
    all_ok = True
    for num, handle in enumerate(vm.cpu_handles):
        response = await hv.kvm.uvc(actor, vm, DestroySecCpuRequest(handle=handle))
        storage = vm.cpu_storage.pop(num, None)
        if response.cc == Cc.OK:
            if storage is not None:
                release(hv, vm, *storage)
        else:
            all_ok = False
            leak(hv, vm, [storage] if storage else [], f"DESTROY_SEC_CPU rc {response.rc:#06x}")
    vm.cpu_handles.clear()
    for sie in vm.sie_blocks:
        sie.to_normal()  # sdf 0, handles and SIDA gone
    return all_ok


async def deinit_vm(hv: Any, vm: VirtualMachine, cpus_ok: bool, actor: Actor | None = None) -> None:
    """``kvm_s390_pv_deinit_vm``: DESTROY_SEC_CONF; success frees the storage, failure leaks it."""
    actor = actor or hv
    if not vm.config_handle:
        return
    ok = False
    if cpus_ok:  # if any CPU could not be destroyed the configuration destroy is not attempted
        response = await hv.kvm.uvc(actor, vm, DestroySecConfRequest(handle=vm.config_handle))
        ok = response.cc == Cc.OK
        why = f"DESTROY_SEC_CONF rc {response.rc:#06x}"
    else:
        why = "a secure CPU could not be destroyed"
    storage, vm.conf_storage = vm.conf_storage, []
    if ok:
        for addr, length in storage:
            release(hv, vm, addr, length)
    else:
        leak(hv, vm, storage, why)
    vm.config_handle = 0


async def destroy_range(hv: Any, vm: VirtualMachine, gfns: Any, actor: Actor | None = None) -> int:
    """``s390_uv_destroy_range`` over ``gfns``: DESTR_SEC_STOR, export where that fails.

    Like :meth:`actors._kvm.Kvm.destroy_range`, but over the given pages only
    (an asynchronous teardown splits them: below 2 GiB at once, the rest in
    the cleanup thread). ``PG_arch_1`` is cleared after a destroy or export
    that succeeded. Returns how many pages were destroyed or exported.
    """
    actor = actor or hv
    kvm = hv.kvm
    done = 0
    for gfn in sorted(gfns):
        pfn = vm.space.pfn_of(gfn)
        if pfn is None:
            vm.maybe_secure.discard(gfn)  # swapped out: an exported page, nothing left to destroy
            continue
        response = await kvm.uvc(actor, vm, DestrSecStorRequest(paddr=pfn * PAGE))
        if response.cc != Cc.OK and response.rc != LEGACY_NOT_SECURE:
            response = await kvm.uvc(actor, vm, ConvFromSecStorRequest(paddr=pfn * PAGE))
        if response.cc == Cc.OK or response.rc == LEGACY_NOT_SECURE:
            page = kvm.mm.pages.get(pfn)
            if page is not None and vm.space.pfn_of(gfn) == pfn:
                kvm.clear_arch_1(page)
            vm.maybe_secure.discard(gfn)
            done += 1
    return done


async def dispose(hv: Any, vm: VirtualMachine, leftover: Leftover, actor: Actor | None = None) -> None:
    """``kvm_s390_pv_dispose_one_leftover``: destroy the set-aside configuration unless FAST did."""
    actor = actor or hv
    if leftover.handle:
        response = await hv.kvm.uvc(actor, vm, DestroySecConfRequest(handle=leftover.handle))
        if response.cc != Cc.OK:
            leak(hv, vm, leftover.storage, f"leftover DESTROY_SEC_CONF rc {response.rc:#06x}")
            return
    for addr, length in leftover.storage:
        release(hv, vm, addr, length)


# ------------------------------------------------------------ the flows
async def disable_sync(hv: Any, vm: VirtualMachine) -> None:
    """``KVM_PV_DISABLE``: CPUs, the configuration, leftovers, then the pages (§2.5)."""
    cpus_ok = await cpus_from_pv(hv, vm)
    await deinit_vm(hv, vm, cpus_ok)
    await cleanup_leftovers(hv, vm)
    await destroy_range(hv, vm, list(vm.maybe_secure))


async def cleanup_leftovers(hv: Any, vm: VirtualMachine) -> None:
    """The set-aside configuration and every ``need_cleanup`` entry (``deinit_cleanup_all``)."""
    leftovers = ([vm.set_aside] if vm.set_aside is not None else []) + vm.need_cleanup
    vm.set_aside = None
    vm.need_cleanup = []
    for leftover in leftovers:
        hv.record("cleanup-leftover", guest=vm.name, handle=leftover.handle, pages=len(leftover.gfns))
        await dispose(hv, vm, leftover)


async def prepare_async(hv: Any, vm: VirtualMachine) -> str:
    """``KVM_PV_ASYNC_CLEANUP_PREPARE``; an empty string, or why it was refused.

    A refusal after the CPUs are gone leaves the configuration in place for a
    synchronous disable, as QEMU then does.
    """
    if not await cpus_from_pv(hv, vm):
        return "a secure CPU could not be destroyed"
    # kvm_s390_pv_set_aside
    if vm.set_aside is not None:
        return "a configuration is already set aside"
    if vm.spec.memory <= 2 * GIB:
        return "the guest has 2 GiB or less (segment-table ASCE)"
    leftover = Leftover(handle=vm.config_handle, storage=vm.conf_storage, gfns=tuple(sorted(vm.maybe_secure)))
    vm.conf_storage = []
    if _fast_installed(hv):
        response = await hv.kvm.uvc(hv, vm, DestroySecConfFastRequest(handle=leftover.handle))
        if response.cc == Cc.OK:
            leftover.handle = 0
        elif response.rc != RC_DESTROY_FAST_APQNS:
            hv.record("destroy-fast-failed", guest=vm.name, rc=response.rc)
    vm.set_aside = leftover
    if leftover.handle:
        hv.kvm.replace_asce(hv, vm)  # s390_replace_asce: the old configuration keeps the old top table
    vm.config_handle = 0  # the VM is not secure any more; it may build a new configuration
    low = [gfn for gfn in leftover.gfns if gfn < LOW_GFNS]
    await destroy_range(hv, vm, low)
    leftover.gfns = tuple(gfn for gfn in leftover.gfns if gfn >= LOW_GFNS)
    return ""


async def perform(actor: Actor, hv: Any, vm: VirtualMachine, stop_after: int | None = None) -> None:
    """``KVM_PV_ASYNC_CLEANUP_PERFORM``, from the cleanup thread without the VM lock.

    ``stop_after`` pages: a fatal signal arrives; the leftover goes to
    ``need_cleanup`` and the VM's destroy finishes it.
    """
    leftover = vm.set_aside
    vm.set_aside = None
    if leftover is None:
        return
    gfns = leftover.gfns
    if stop_after is not None and stop_after < len(gfns):
        await destroy_range(hv, vm, gfns[:stop_after], actor)
        leftover.gfns = gfns[stop_after:]
        vm.need_cleanup.append(leftover)
        actor.record("cleanup-interrupted", guest=vm.name, left=len(leftover.gfns))
        return
    await destroy_range(hv, vm, gfns, actor)
    await dispose(hv, vm, leftover, actor)
    actor.record("cleanup-done", guest=vm.name, pages=len(gfns))


async def process_exit(hv: Any, vm: VirtualMachine) -> None:
    """The VMM exits: MMU-notifier release, ``exit_mmap`` destroys pages, then the VM is destroyed."""
    cpus_ok = await cpus_from_pv(hv, vm)
    if cpus_ok and vm.config_handle and _fast_installed(hv):
        response = await hv.kvm.uvc(hv, vm, DestroySecConfFastRequest(handle=vm.config_handle))
        if response.cc == Cc.OK:
            storage, vm.conf_storage = vm.conf_storage, []
            for addr, length in storage:
                release(hv, vm, addr, length)
            vm.config_handle = 0
    await destroy_range(hv, vm, list(vm.maybe_secure))  # uv_destroy_pte, export as the fallback
    await deinit_vm(hv, vm, cpus_ok)  # kvm_arch_destroy_vm: a configuration still there
    await cleanup_leftovers(hv, vm)


async def unprotect(hv: Any, vm: VirtualMachine, mode: str = "sync") -> str:
    """``s390_machine_unprotect``: asynchronously where asked and allowed, else synchronously.

    Returns what was done: "sync", "async", or "sync (async refused: ...)".
    """
    if not vm.protected and not vm.cpu_handles:
        return "none"
    if mode == "async":
        why = await prepare_async(hv, vm)
        if not why:
            start_cleaner(hv, vm)
            return "async"
        hv.record("async-refused", guest=vm.name, why=why)
        await disable_sync(hv, vm)
        return f"sync (async refused: {why})"
    if mode == "exit":
        await process_exit(hv, vm)
        return "exit"
    await disable_sync(hv, vm)
    return "sync"


def start_cleaner(hv: Any, vm: VirtualMachine) -> CleanupActor:
    """QEMU's cleanup thread, started right after the preparation."""
    cleaner = CleanupActor(hv.fabric, f"{vm.name}.cleanup{len(vm.cleaners)}", hv, vm, vm.spec.cleanup_delay)
    vm.cleaners.append(cleaner)
    return cleaner


async def destroy_vm(hv: Any, vm: VirtualMachine) -> None:
    """``kvm_arch_destroy_vm`` and the end of the VMM: leftovers, then every frame the host may free."""
    for cleaner in vm.cleaners:
        if not cleaner.finished:
            await hv.call(cleaner, WaitCleanup())
    vm.cleaners.clear()
    if vm.set_aside is not None or vm.need_cleanup:
        gfns = [gfn for left in [vm.set_aside, *vm.need_cleanup] if left is not None for gfn in left.gfns]
        await destroy_range(hv, vm, gfns)
        await cleanup_leftovers(hv, vm)
    hv.kvm.release_vm_memory(hv, vm)  # exit_mmap: frames and swap slots back; the UV's are leaked
    for addr, length in vm.own_storage:
        release(hv, vm, addr, length)
    vm.own_storage.clear()
    hv.server.remove_address_space(vm.space.asce)


@frozen(kw_only=True)
class WaitCleanup:
    """Hypervisor → cleanup thread: answer once the PERFORM is over (the VMM joins the thread)."""


@final
class CleanupActor(Actor):
    """QEMU's asynchronous cleanup thread: one ``KVM_PV_ASYNC_CLEANUP_PERFORM``.

    The guest's ``cleanup_killed_after``: the thread is killed by a fatal
    signal after that many pages (QEMU killed while it cleans up).
    """

    kind = "cleanup"

    def __init__(self, fabric: Fabric, name: str, hv: Any, vm: VirtualMachine, delay: int) -> None:
        super().__init__(fabric, name)
        self.hv = hv
        self.vm = vm
        self.delay = delay

    async def main(self) -> None:
        if self.delay:
            await self.sleep(self.delay)
        await perform(self, self.hv, self.vm, self.vm.spec.cleanup_killed_after)
        env = await self.receive()
        self.reply(env, Ack(detail="cleanup finished"))
