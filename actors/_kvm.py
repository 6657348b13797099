"""KVM's host-side memory work, shared by the hypervisor actor and its vCPU threads.

The rules are Linux's (uv-semantics.md §3): an import-like UVC is tried once
under the page lock (``make_hva_secure``) and the caller retries later on
busy; a page that is not mapped is faulted in first; the flag ``PG_arch_1``
(here ``VirtualMachine.maybe_secure``) over-indicates which pages may be
secure.
"""

from __future__ import annotations

from typing import Any

from machine import HOST, Server
from machine._alloc import FrameAllocator
from protocol import Cc, ConvToSecStorRequest, ImportRc

from ._fabric import Actor
from ._messages import Uvc
from ._vm import VirtualMachine

PAGE = 4096


class Kvm:
    """Host-side helpers shared by the hypervisor actor and its vCPU threads."""

    def __init__(self, server: Server, allocator: FrameAllocator, uv_actor: Actor, qui: Any) -> None:
        self.server = server
        self.memory = server.memory
        self.allocator = allocator
        self.uv_actor = uv_actor
        self.qui = qui
        self.vms: list[VirtualMachine] = []

    async def uvc(self, actor: Actor, vm: VirtualMachine | None, request: Any, *, retry: bool = True) -> Any:
        """A host UVC; with ``retry`` loop on busy (``uv_call``), else one try (``__uv_call``)."""
        while True:
            response = await actor.call(self.uv_actor, Uvc(caller=HOST, request=request))
            if vm is not None:
                vm.stats.uvcs[(request.COMMAND.name, response.rc if response.cc != Cc.BUSY else -2)] += 1
                if response.cc == Cc.BUSY:
                    vm.stats.busy += 1
            if not retry or response.cc < Cc.BUSY:
                return response

    def fault_in(self, vm: VirtualMachine, gfn: int) -> int:
        """Map a fresh host frame behind guest frame ``gfn`` (a host DAT fault)."""
        pfn = vm.space.pfn_of(gfn)
        if pfn is None:
            pfn = self.allocator.alloc()
            vm.space.map(gfn, pfn)
        return pfn

    async def make_secure(self, actor: Actor, vm: VirtualMachine, request: Any) -> str:
        """Linux ``make_hva_secure`` for an import-like UVC: a single try, under the page lock.

        Returns ``"ok"``, ``"again"`` (busy or partial: retry later), ``"fault"``
        (not mapped: fault the page in and retry), or ``"invalid"`` (-EINVAL:
        the VMM gets SIGSEGV) — uv-semantics.md §3.5.
        """
        gfn = request.gaddr >> 12
        if vm.space.pfn_of(gfn) is None:
            return "fault"
        vm.maybe_secure.add(gfn)  # PG_arch_1 is set before the UVC
        response = await self.uvc(actor, vm, request, retry=False)
        if response.cc == Cc.OK:
            return "ok"
        if response.cc >= Cc.BUSY:
            return "again"
        if response.rc == ImportRc.GADDR_NOT_MAPPED:
            return "fault"
        return "invalid"

    async def import_page(self, actor: Actor, vm: VirtualMachine, gaddr: int) -> str:
        """Handle PGM 0x3e: import the page (CONV_TO_SEC_STOR), faulting it in first if needed."""
        while True:
            result = await self.make_secure(
                actor, vm, ConvToSecStorRequest(guest_handle=vm.config_handle, gaddr=gaddr & ~0xFFF)
            )
            if result == "fault":
                self.fault_in(vm, gaddr >> 12)
                continue
            return result

    def alloc_contiguous(self, vm: VirtualMachine | None, length: int, align: int = PAGE) -> int:
        pages = (length + PAGE - 1) // PAGE
        pfn = self.allocator.alloc_contiguous(pages, max(1, align // PAGE))
        if vm is not None:
            vm.donations.append((pfn * PAGE, pages * PAGE))
        return pfn * PAGE
