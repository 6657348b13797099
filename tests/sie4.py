"""Helpers for tests of format-4 SIE: a booted testbed guest with SIE blocks as the hypervisor holds them."""

from __future__ import annotations

from typing import Any

from machine import SieBlock, sie_entry, sie_exit
from protocol import ConvToSecStorRequest, CpuSetStateRequest, CpuState

PAGE = 4096


class Sie4:
    """A booted secure testbed guest, its secure CPUs and the hypervisor's SIE blocks for them."""

    def __init__(self, tb: Any, guest: Any) -> None:
        self.tb = tb
        self.g = guest
        self.uv = tb.uv
        self.now = 1_000
        self.sies = []
        for origin, handle in zip(guest.sie_blocks, guest.cpu_handles, strict=True):
            sie = SieBlock(origin=origin)
            sie.to_secure(cpu_handle=handle, config_handle=guest.config_handle)
            self.sies.append(sie)

    def cpu(self, n: int = 0) -> Any:
        """The UV's state of CPU ``n`` (what the guest's program sees: the test plays the guest)."""
        return self.uv.cpus[self.g.cpu_handles[n]]

    def regs(self, n: int = 0) -> Any:
        return self.cpu(n).cpu

    def host(self, request: Any) -> Any:
        response = self.tb.host_call(request)
        assert response.cc == 0, (request, response)
        return response

    def import_page(self, gaddr: int) -> None:
        self.host(ConvToSecStorRequest(guest_handle=self.g.config_handle, gaddr=gaddr))

    def set_state(self, n: int, state: CpuState) -> Any:
        return self.tb.host_call(CpuSetStateRequest(cpu_handle=self.g.cpu_handles[n], state=state))

    def enter(self, n: int = 0, *, asce: int | None = None, sie: SieBlock | None = None) -> Any:
        self.now += 100
        return sie_entry(self.uv, sie or self.sies[n], asce=self.g.asce if asce is None else asce, now=self.now)

    def leave(self, n: int = 0, *, spent: int = 500) -> None:
        self.now += spent
        sie_exit(self.uv, self.cpu(n), self.sies[n], now=self.now)

    def run_once(self, n: int = 0) -> Any:
        """Enter and leave at once (the guest ran a little)."""
        cpu = self.enter(n)
        self.leave(n)
        return cpu


async def booted(tb: Any, *, cpus: int = 1, memory_mib: int = 1, ready: bool = True) -> Sie4:
    """A secure testbed guest; with ``ready`` its prefix pages (0 and 4096) are already imported."""
    harness = Sie4(tb, await tb.secure_guest(memory_mib=memory_mib, cpus=cpus))
    if ready:
        harness.import_page(0)
        harness.import_page(PAGE)
    return harness
