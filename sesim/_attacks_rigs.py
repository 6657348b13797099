"""Rigs of the hostile host for testbed attacks: the boot step by step, and the SIE blocks.

:class:`HostileBoot` is QEMU's and KVM's switch into secure mode
(uv-semantics.md §2.2), one step at a time, so that a boot attack can change
any step; :class:`SieRig` holds the hypervisor's format-4 SIE blocks of a
victim (uv-interface.md §6), as ``tests/sie4.py`` does for the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from machine import AddressSpace, PrefixIntercept, SieBlock, ValidityIntercept, sie_entry, sie_exit
from protocol import (
    BuiltImage,
    ConvToSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    InitUvRequest,
    Ipib,
    SesimInternalError,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    VerifyImgRequest,
)
from protocol._ipib import METADATA_OFFSET, ImageMetadata

from ._attacks_arena import MIB, PAGE, Arena, Victim
from ._hostile import Defence
from ._testbed_guest import SecureGuest


class HostileBoot:
    """The switch into secure mode one step at a time (uv-semantics.md §2.2), each step a hostile host call.

    Every step returns the defence that refused it, or ``None``; the first
    refusal leaves the guest "never started".
    """

    def __init__(self, arena: Arena, image: BuiltImage | bytes, *, name: str = "victim", cpus: int = 1) -> None:
        self.arena = arena
        self.host = arena.host
        self.tb = arena.tb
        self.name = name
        self.data = image if isinstance(image, bytes) else image.data
        self.cpus = cpus
        self.space: AddressSpace | None = None
        self.handle = 0
        self.cpu_handles: list[int] = []
        self.sie_blocks: list[int] = []
        self.donations: dict[str, tuple[int, int]] = {}
        self.header_addr = 0
        self.refused = ""
        self.ipib = Ipib.parse(self.data[ImageMetadata.parse(self.data[METADATA_OFFSET:]).ipib_offset :])

    def _fail(self, fired: Defence | None) -> Defence | None:
        if fired is not None and not self.refused:
            self.refused = f"never started: {fired.label}"
        return fired

    def load(self) -> None:
        """INIT_UV if needed, the image into guest memory at 0 (QEMU), CREATE_SEC_CONF and the CPUs."""
        tb, host = self.tb, self.host
        qui = tb.qui()
        if not tb.uv.initialized:
            stor = tb.alloc(qui.uv_base_stor_len, align=MIB)
            host.ok(InitUvRequest(stor_origin=stor, stor_len=qui.uv_base_stor_len))
        self.space = space = tb.guest_address_space(MIB)
        for offset in range(0, len(self.data), PAGE):
            page = self.data[offset : offset + PAGE]
            if page.strip(b"\0"):
                tb.write(space.translate(offset) or 0, page)
        self.host.obtain(f"{self.name}'s boot image", self.data)
        var_len = qui.conf_base_virt_stor_len + (qui.conf_virt_var_stor_len + PAGE - 1) // PAGE * PAGE
        base = tb.alloc(qui.conf_base_phys_stor_len, align=4 * PAGE)
        var = tb.alloc(var_len)
        self.donations = {"base": (base, qui.conf_base_phys_stor_len), "var": (var, var_len)}
        create = CreateSecConfRequest(
            conf_base_stor_origin=base, conf_virt_stor_origin=var, guest_stor_origin=0, guest_stor_len=MIB,
            guest_sca=tb.alloc(4 * PAGE, align=4 * PAGE), guest_asce=space.asce,
        )  # fmt: skip
        self.handle = host.ok(create).guest_handle  # type: ignore[attr-defined]
        for num in range(self.cpus):
            stor, sie = tb.alloc(qui.cpu_stor_len), tb.alloc(PAGE)
            request = CreateSecCpuRequest(guest_handle=self.handle, num=num, stor_origin=stor, state_origin=sie)
            self.cpu_handles.append(host.ok(request).cpu_handle)  # type: ignore[attr-defined]
            self.sie_blocks.append(sie)
            self.donations[f"cpu{num}"] = (stor, qui.cpu_stor_len)

    @property
    def header(self) -> bytes:
        """The SE header as the image carries it."""
        return self.data[self.ipib.hdr_addr : self.ipib.hdr_addr + self.ipib.hdr_size]

    def set_params(self, header: bytes | None = None) -> Defence | None:
        """KVM_PV_SET_SEC_PARMS: the header (or another) copied into host memory, then SET_SEC_CONF_PARAMS."""
        header = self.header if header is None else header
        self.header_addr = self.tb.alloc(max(len(header), PAGE))
        self.tb.write(self.header_addr, header)
        request = SetSecConfParamsRequest(
            guest_handle=self.handle, sec_header_origin=self.header_addr, sec_header_len=len(header)
        )
        return self._fail(self.host.call(request)[1])

    def pages(self) -> list[tuple[int, tuple[int, int]]]:
        """(gaddr, tweak) of every page to unpack, in the IPIB's order."""
        return [
            (comp.addr + offset, (comp.tweak_prefix, offset))
            for comp in self.ipib.components
            for offset in range(0, comp.length, PAGE)
        ]

    def unpack(self, pages: Sequence[tuple[int, tuple[int, int]]] | None = None) -> Defence | None:
        """KVM_PV_UNPACK page by page; the first refusal, or None."""
        for gaddr, tweak in self.pages() if pages is None else pages:
            fired = self.host.call(UnpackImgRequest(guest_handle=self.handle, gaddr=gaddr, tweak=tweak))[1]
            if fired is not None:
                return self._fail(fired)
        return None

    def verify(self) -> Defence | None:
        return self._fail(self.host.call(VerifyImgRequest(handle=self.handle))[1])

    def start(self) -> Defence | None:
        """CPU_SET_STATE OPR_LOAD, then OPR, on every CPU."""
        for cpu in self.cpu_handles:
            for state in (CpuState.OPR_LOAD, CpuState.OPR):
                fired = self.host.call(CpuSetStateRequest(cpu_handle=cpu, state=state))[1]
                if fired is not None:
                    return self._fail(fired)
        return None

    def victim(self, *, kernel: bytes | None = None) -> Victim:
        """The guest this boot made: running, or never started."""
        guest = None
        if not self.refused:
            assert self.space is not None
            guest = SecureGuest(
                testbed=self.tb, space=self.space, config_handle=self.handle, cpu_handles=tuple(self.cpu_handles),
                sie_blocks=tuple(self.sie_blocks), donations=self.donations, image=self.data,
                header_addr=self.header_addr,
            )  # fmt: skip
        return self.arena.adopt(self.name, guest, self.refused or "running", kernel=kernel)


# ------------------------------------------------------------------- SIE
class SieRig:
    """The hypervisor's SIE blocks for a victim's CPUs; entries and exits with virtual time."""

    def __init__(self, arena: Arena, victim: Victim) -> None:
        assert victim.guest is not None
        self.arena = arena
        self.host = arena.host
        self.uv = arena.tb.uv
        self.g = victim.guest
        self.now = 1_000
        self.sies: list[SieBlock] = []
        for origin, handle in zip(self.g.sie_blocks, self.g.cpu_handles, strict=True):
            sie = SieBlock(origin=origin)
            sie.to_secure(cpu_handle=handle, config_handle=self.g.config_handle)
            self.sies.append(sie)
        for gaddr in (0, PAGE):  # the prefix pages: intercept 112 would ask for them anyway
            self.host.ok(ConvToSecStorRequest(guest_handle=self.g.config_handle, gaddr=gaddr))

    def cpu(self, n: int = 0) -> Any:
        """The UV's state of CPU ``n`` (the attack plays the guest's program through it)."""
        return self.uv.cpus[self.g.cpu_handles[n]]

    def enter(self, n: int = 0, *, sie: SieBlock | None = None, asce: int | None = None) -> Defence | None:
        """SIE entry; the validity intercept that refused it, or None (the guest runs)."""
        for _ in range(3):
            self.now += 100
            try:
                sie_entry(self.uv, sie or self.sies[n], asce=self.g.asce if asce is None else asce, now=self.now)
            except ValidityIntercept as refused:
                return self.host.saw(Defence.validity(refused.reason))
            except PrefixIntercept:  # 112: KVM imports both prefix pages and enters again
                prefix = self.cpu(n).cpu.prefix
                for gaddr in (prefix, prefix + PAGE):
                    self.host.ok(ConvToSecStorRequest(guest_handle=self.g.config_handle, gaddr=gaddr))
                continue
            return None
        raise SesimInternalError("SIE entry kept asking for the prefix pages")

    def leave(self, n: int = 0, *, spent: int = 500) -> None:
        self.now += spent
        sie_exit(self.uv, self.cpu(n), self.sies[n], now=self.now)
        self.observe(n)

    def observe(self, n: int = 0) -> None:
        """Everything the SIE block shows the hypervisor after an exit is obtained."""
        pv = self.sies[n].pv
        assert pv is not None
        self.host.obtain(
            f"SIE block {n}: pv_grregs", b"".join((r & (1 << 64) - 1).to_bytes(8, "big") for r in pv.pv_grregs)
        )
        self.host.obtain(f"SIE block {n}: SIDA", bytes(pv.sida))
        self.host.obtain(f"SIE block {n}: ipa/ipb/cputm", pv.ipa.to_bytes(2, "big") + pv.ipb.to_bytes(4, "big")
                         + pv.cputm.to_bytes(8, "big", signed=True))  # fmt: skip
