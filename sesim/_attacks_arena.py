"""The stage of a testbed attack: a server, a victim guest with known secrets, and a hostile host.

An :class:`Arena` wraps one :class:`sesim.testbed.Testbed` and its
:class:`sesim._hostile.HostileHost`. It boots victims (secure guests whose
images are built for this server and whose kernels are plaintext only the
customer knows), lets each victim write secret pages from inside (the canary
of :func:`actors._workload.canary` plus a pattern no other byte string has),
and afterwards checks from inside the victim that every secret page still
reads as it was written. Accomplice guests are the attacker's own: whatever
they read counts as obtained by the hypervisor. The hostile host's rigs for
the boot and the SIE blocks are in :mod:`sesim._attacks_rigs`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from attrs import define, field

from actors._workload import canary
from machine import Caller, NotificationIntercept, ProgramInterrupt
from protocol import PCF_DEFAULT, BuiltImage, Cc, ImageSpec, UvcContext, UvcRequest, create_image, synthetic_kernel
from protocol._components import ComponentKind
from protocol._crypto import ec_private_from_scalar

from ._hostile import Defence, HostileHost, PlaintextScanner
from ._testbed_guest import GuestKilled, SecureGuest
from .testbed import KERNEL_SIZE, Testbed

PAGE = 4096
MIB = 1 << 20
SECRET_PAGES = (0xC0000, 0xC1000, 0xC2000, 0xC3000)
"""Guest addresses of a victim's secret pages: above any testbed image, below the last pages
where ``sesim._guest_ops`` puts its buffers."""
UVCB_AT = 0xB0000
"""Where a victim puts the UVCBs of its own calls."""


def derive(label: str, n: int) -> bytes:
    """``n`` deterministic bytes for ``label`` (SHA-512 in counter mode)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(f"sesim-attack:{label}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


def secret_page(victim: str, gaddr: int) -> bytes:
    """The secret page ``victim`` writes at ``gaddr``: its canary, then a pattern only it has (no text
    another page could share)."""
    head = canary(victim)
    return head + derive(f"page:{victim}:{gaddr:#x}", PAGE - len(head))


def secret_registers(victim: str) -> list[int]:
    """Sixteen register values the victim's program keeps (what a dump or an intercept must not show)."""
    raw = derive(f"registers:{victim}", 16 * 8)
    return [int.from_bytes(raw[8 * i : 8 * i + 8], "big") for i in range(16)]


def build_image(tb: Testbed, label: str, *, pcf: int | None = None, host_key: Any = None) -> BuiltImage:
    """An image for ``tb``'s server (or ``host_key``), every random input and its kernel derived from ``label``."""
    return create_image(image_spec(tb, label, pcf=pcf, host_key=host_key))


def image_spec(tb: Testbed, label: str, *, pcf: int | None = None, host_key: Any = None) -> ImageSpec:
    return ImageSpec(
        kernel=kernel_of(label),
        cmdline=f"console=ttysclp0 sesim-attack={label}".encode(),
        host_keys=(tb.host_public_key if host_key is None else host_key,),
        cust_private_key=ec_private_from_scalar(derive(f"customer:{label}", 64)),
        prot_key=derive(f"prot:{label}", 32),
        iv=derive(f"iv:{label}", 12),
        cck=derive(f"cck:{label}", 32),
        xts_key=derive(f"xts-a:{label}", 32) + derive(f"xts-b:{label}", 32),
        tweak_randoms={kind: derive(f"tweak:{label}:{kind.name}", 6) for kind in ComponentKind},
        pcf=PCF_DEFAULT if pcf is None else pcf,
    )


def kernel_of(label: str) -> bytes:
    """The victim's kernel: plaintext only the image's owner knows."""
    seed = int.from_bytes(hashlib.sha256(f"kernel:{label}".encode()).digest()[:8], "big")
    return synthetic_kernel(KERNEL_SIZE, seed)


@define(kw_only=True, eq=False)
class Victim:
    """A secure guest under attack and what it knows."""

    name: str
    guest: SecureGuest | None = None
    pages: dict[int, bytes] = field(factory=dict)  # gaddr -> what it wrote there
    registers: list[int] | None = None  # register values its program keeps in CPU 0
    public_registers: set[int] = field(factory=set)  # registers it shows the host on purpose (DIAG arguments)
    secrets: list[bytes] = field(factory=list)  # other plaintexts: its kernel, secret values
    state: str = "running"
    changed: list[str] = field(factory=list)

    @property
    def running(self) -> bool:
        return self.state == "running" and self.guest is not None

    def stop(self, why: str) -> None:
        if self.state == "running":
            self.state = why


class Arena:
    """One testbed attack's world (module docstring)."""

    def __init__(self, tb: Testbed, host: HostileHost) -> None:
        self.tb = tb
        self.host = host
        self.victims: list[Victim] = []

    # ------------------------------------------------------------- guests
    def image(self, label: str, *, pcf: int | None = None, host_key: Any = None) -> BuiltImage:
        return build_image(self.tb, label, pcf=pcf, host_key=host_key)

    async def victim(
        self,
        name: str = "victim",
        *,
        cpus: int = 1,
        pcf: int | None = None,
        pages: Sequence[int] = SECRET_PAGES,
        registers: bool = False,
    ) -> Victim:
        """Boot a victim from its own image and let it write its secret pages (and registers)."""
        victim = Victim(name=name, secrets=[kernel_of(name)])
        self.victims.append(victim)
        image = self.image(name, pcf=pcf)
        self.host.obtain(f"{name}'s boot image", image.data)  # the hypervisor loads it: ciphertext
        victim.guest = await self.tb.secure_guest(memory_mib=1, cpus=cpus, image=image)
        self.host.obtain(f"{name}'s SE header copy", self.tb.read(victim.guest.header_addr, 0x280))
        for gaddr in pages:
            self.write_secret(victim, gaddr)
        if registers:
            victim.registers = secret_registers(name)
            self.tb.uv.cpus[victim.guest.cpu_handles[0]].cpu.gprs[:] = victim.registers
        return victim

    def write_secret(self, victim: Victim, gaddr: int, data: bytes | None = None) -> None:
        """The victim writes (a secret page, by default) at ``gaddr`` from inside."""
        assert victim.guest is not None
        data = secret_page(victim.name, gaddr) if data is None else data
        victim.guest.write(gaddr, data)
        victim.pages[gaddr] = data

    def adopt(self, name: str, guest: SecureGuest | None, state: str, *, kernel: bytes | None = None) -> Victim:
        """A victim booted another way (by :class:`HostileBoot`); ``kernel`` is its plaintext."""
        victim = Victim(name=name, guest=guest, state=state, secrets=[] if kernel is None else [kernel])
        self.victims.append(victim)
        return victim

    async def accomplice(self, name: str = "accomplice", *, pcf: int | None = None) -> SecureGuest:
        """A secure guest of the attacker's own (its image, its plaintext): what it reads is obtained."""
        return await self.tb.secure_guest(memory_mib=1, cpus=1, image=self.image(name, pcf=pcf))

    def guest_read(self, victim: Victim, gaddr: int, n: int = PAGE) -> tuple[bytes | None, Defence | None]:
        """The victim reads its own memory. A host that cannot make the page accessible kills it."""
        assert victim.guest is not None
        try:
            return victim.guest.read(gaddr, n), None
        except GuestKilled as killed:
            victim.stop(f"stopped: {killed}")
            return None, self.host.saw(Defence.rc("CONV_TO_SEC_STOR", killed.rc, killed.rrc) if killed.rc else None)
        except ProgramInterrupt as pgm:
            victim.stop(f"stopped: the guest took PGM {int(pgm.code):#04x} at {gaddr:#x}")
            return None, self.host.saw(Defence.pgm(pgm.code))

    def accomplice_read(self, guest: SecureGuest, gaddr: int, n: int = PAGE) -> tuple[bytes | None, Defence | None]:
        """The attacker's own guest reads its memory: everything it sees is obtained."""
        try:
            data = guest.read(gaddr, n)
        except GuestKilled as killed:
            return None, self.host.saw(Defence.rc("CONV_TO_SEC_STOR", killed.rc, killed.rrc))
        except ProgramInterrupt as pgm:
            return None, self.host.saw(Defence.pgm(pgm.code))
        return self.host.obtain(f"accomplice guest read {gaddr:#x}", data), None

    async def guest_uvc(self, victim: Victim, request: UvcRequest) -> Defence | None:
        """The victim issues a UVC from inside (its UVCB at :data:`UVCB_AT`); KVM handles what it must."""
        assert victim.guest is not None
        victim.guest.write(UVCB_AT, request.pack())
        if await victim.guest.uvc(UVCB_AT) == Cc.OK:
            return None
        block = victim.guest.read(UVCB_AT, 8)
        return self.host.saw(Defence.rc(request.COMMAND, int.from_bytes(block[4:6], "big"),
                                        int.from_bytes(block[6:8], "big")))  # fmt: skip

    def guest_uvc_raw(self, victim: Victim, request: UvcRequest) -> Defence | None:
        """The victim's UVC exactly as the UV answers it, before KVM does anything (an intercept shows)."""
        assert victim.guest is not None
        g = victim.guest
        g.write(UVCB_AT, request.pack())
        caller = Caller(context=UvcContext.GUEST, config_handle=g.config_handle, cpu_handle=g.cpu_handles[0])
        try:
            cc = self.tb.uv.execute_uvcb(caller, UVCB_AT)
        except NotificationIntercept:
            return self.host.saw(Defence.intercept(108))
        if cc == Cc.OK:
            return None
        block = g.read(UVCB_AT, 8)
        return self.host.saw(Defence.rc(request.COMMAND, int.from_bytes(block[4:6], "big"),
                                        int.from_bytes(block[6:8], "big")))  # fmt: skip

    def frame(self, victim: Victim, gaddr: int) -> int:
        """Host address of the frame behind the victim's guest address ``gaddr``."""
        assert victim.guest is not None
        return victim.guest.host_addr(gaddr)

    # ------------------------------------------------------------- the end
    async def finish(self) -> None:
        """Every victim still running reads its secrets back from inside (uv-semantics.md §3.2)."""
        for victim in self.victims:
            if not victim.running:
                continue
            assert victim.guest is not None
            if victim.guest.config_handle not in self.tb.uv.configs:
                victim.stop("gone: its configuration no longer exists")
                continue
            for gaddr, want in sorted(victim.pages.items()):
                got, _ = self.guest_read(victim, gaddr, len(want))
                if got is None:
                    break
                if got != want:
                    victim.changed.append(f"page {gaddr:#x}")
            if victim.running and victim.registers is not None:
                state = self.tb.uv.cpus.get(victim.guest.cpu_handles[0])
                if state is not None and state.cpu.gprs != victim.registers:
                    diff = [i for i in range(16) if state.cpu.gprs[i] != victim.registers[i]]
                    victim.changed.append(f"registers {', '.join(f'r{i}' for i in diff)}")

    def scanner(self) -> PlaintextScanner:
        """The victims' plaintext: secret pages, kernels and secret values; their canaries and the
        values of their registers (each 8 bytes, found anywhere) except those shown on purpose."""
        secrets: list[bytes] = []
        markers = [canary(v.name) for v in self.victims if v.pages]
        for victim in self.victims:
            secrets += victim.pages.values()
            secrets += victim.secrets
            if victim.registers is not None:  # a register is 8 bytes: each secret one is a marker
                markers += [r.to_bytes(8, "big") for i, r in enumerate(victim.registers)
                            if i not in victim.public_registers]  # fmt: skip
        return PlaintextScanner(secrets, markers)

    def outcome(self) -> tuple[str, bool | None]:
        """The first victim's fate in words, and whether the victims' data are intact (None: it did not run on)."""
        if not self.victims:
            return "no guest", None
        victim = self.victims[0]
        changed = [f"{v.name}: {', '.join(v.changed)}" for v in self.victims if v.changed]
        if changed:
            fate = "keeps running" if victim.running else victim.state
            return f"{fate}, DATA CHANGED ({'; '.join(changed)})", False
        if victim.running:
            return "keeps running, data intact", True
        return victim.state, None
