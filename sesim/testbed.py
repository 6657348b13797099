"""A testbed for raw ultravisor calls: UVCBs in memory, as kvm-unit-tests writes them.

The public kvm-unit-tests s390x suite (``uv-host.c``, ``uv-guest.c``) tests a
real machine's ultravisor by placing UV control blocks in memory, issuing
the UVC instruction and reading back the condition code and the rc/rrc the
firmware wrote. This module gives sesim's simulated server the same surface,
so that conformance suites (sesim's own ``tests/conformance/`` and any you
write) can be written against ``reference/uv-interface.md`` alone.

A testbed is one fresh server (host memory, host CPUs, a deterministic host
key) with its ultravisor not yet initialised. Everything is synchronous
underneath (the :mod:`machine` layer); the ``async`` methods only add a trio
checkpoint, so a testbed needs no actors and runs are deterministic: the same
calls on a testbed of the same seed give byte-identical memory.

Example (a complete pytest-trio test; build UVCBs with the request classes
of :mod:`protocol`, whose ``pack()`` gives the real big-endian bytes)::

    import pytest
    from protocol import (CreateSecConfRequest, InitUvRequest, QuiRequest,
                          SetSharedAccessRequest)
    from sesim.testbed import ProgramInterrupt, open_testbed

    def rc_of(tb, addr):
        return int.from_bytes(tb.read(addr + 4, 2), "big")

    async def test_init_then_create_a_configuration():
        async with open_testbed(memory_mib=2200, cpus=2) as tb:
            qui = tb.qui()                                   # host context
            uvcb = tb.alloc(4096)
            stor = tb.alloc(qui.uv_base_stor_len, align=1 << 20)   # above 2 GiB
            tb.write(uvcb, InitUvRequest(stor_origin=stor,
                                         stor_len=qui.uv_base_stor_len).pack())
            assert await tb.uvc(uvcb) == 0 and rc_of(tb, uvcb) == 0x0001
            with pytest.raises(ProgramInterrupt) as pgm:      # donated: UV storage
                tb.read(stor, 8)
            assert pgm.value.code == 0x3D

            msl = 1 << 20
            var_len = qui.conf_base_virt_stor_len + qui.conf_virt_var_stor_len * (msl >> 20)
            request = CreateSecConfRequest(
                conf_base_stor_origin=tb.alloc(qui.conf_base_phys_stor_len, align=16384),
                conf_virt_stor_origin=tb.alloc(var_len),
                guest_stor_origin=0, guest_stor_len=msl,
                guest_sca=tb.alloc(4096), guest_asce=tb.alloc(16384) | 0x100)
            tb.write(uvcb, request.pack())
            assert await tb.uvc(uvcb) == 0
            handle = int.from_bytes(tb.read(uvcb + 0x18, 8), "big")
            assert handle != 0

            tb.invalidate(uvcb)                              # the UV cannot read it
            with pytest.raises(ProgramInterrupt) as pgm:
                await tb.uvc(uvcb)
            assert pgm.value.code == 0x11

    async def test_a_secure_guest_shares_a_page():
        async with open_testbed() as tb:
            g = await tb.secure_guest(memory_mib=1, cpus=1)  # INIT_UV, image, boot
            g.write(0x80000, SetSharedAccessRequest(paddr=0x81000).pack())
            assert await g.uvc(0x80000) == 0                 # in guest context
            g.write(0x81000, b"hello")                       # the guest's view
            assert tb.read(g.host_addr(0x81000), 5) == b"hello"  # the host's view

What the pieces do:

* :func:`open_testbed` ``(memory_mib=2200, cpus=2)``: a fresh server; CPU 0
  is operating, the others stopped; the UV is not initialised.
* :meth:`Testbed.alloc` hands out never-used host memory from the top of
  memory downwards, so that everything allocated on a server of more than
  2 GiB lies above 2 GiB (INIT_UV requires that, uv-interface.md §4), and
  naturally aligned as the kernel's page allocator does.
* :meth:`Testbed.read` / :meth:`Testbed.write` are host accesses: donated or
  secure storage raises :class:`ProgramInterrupt` 0x3d, an invalidated page
  0x11, an address beyond memory 0x05.
* :meth:`Testbed.uvc` executes the UVC whose UVCB lies at an address and
  returns the cc; the rc, rrc and outputs are in memory afterwards. Problem
  state raises 0x02, nonzero instruction bits 16-23 raise 0x06, a UVCB that
  lies on or crosses into an invalid page (its header ``len`` bytes) 0x11.
* :meth:`Testbed.secure_guest` performs the real boot of uv-semantics.md
  §2.2 with an image built for this server (INIT_UV first if nobody did).
  :meth:`SecureGuest.uvc` takes its UVCB from guest memory and runs in guest
  context; :meth:`SecureGuest.read` / :meth:`SecureGuest.write` act as the
  guest CPU does. Where the guest's access or call needs the host first (a
  page not yet secure, an unmapped page, a pinned shared page), the testbed
  does what KVM does (import, fault in, unpin) and the guest retries, so the
  guest sees what a real guest sees.

Beyond the issue's API (for deeper tests): :attr:`Testbed.uv`,
:meth:`Testbed.build_image`, :meth:`Testbed.guest_address_space`,
:meth:`Testbed.validate`, the ``instruction_bits`` keyword of ``uvc`` and the
``seed`` / ``limits`` keywords of :func:`open_testbed`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from machine import (
    HOST,
    AddressSpace,
    PgmCode,
    ProgramInterrupt,
    Server,
    Ultravisor,
    UvLimits,
)
from protocol import (
    QUI_FULL_LENGTH,
    BuiltImage,
    ImageSpec,
    QuiRequest,
    QuiResponse,
    UsageError,
    UvcRequest,
    UvcResponse,
    create_image,
    synthetic_kernel,
)
from protocol._components import ComponentKind
from protocol._crypto import ec_private_from_scalar

from ._testbed_guest import GuestKilled, SecureGuest, boot_secure_guest

__all__ = [
    "GuestKilled",
    "PgmCode",
    "ProgramInterrupt",
    "SecureGuest",
    "Testbed",
    "open_testbed",
]

PAGE = 4096
MIB = 1 << 20
ASCE_PRIVATE_SPACE = 0x100
KERNEL_SIZE = 0x11000
"""The synthetic kernel of testbed images: the smallest whole-page size pvimg accepts."""
_NATURAL_ALIGN_MAX = MIB
_TOP_GUARD = MIB


def _derive(seed: int, label: str, n: int) -> bytes:
    """``n`` deterministic bytes for ``label`` (SHA-512 in counter mode over the seed)."""
    out = b""
    counter = 0
    while len(out) < n:
        out += hashlib.sha512(f"sesim-testbed:{seed}:{label}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


def server_host_key(seed: int) -> ec.EllipticCurvePrivateKey:
    """The P-521 host key of a testbed server: a scalar derived from the seed (64 bytes < n)."""
    return ec_private_from_scalar(_derive(seed, "host-key", 64))


async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


@asynccontextmanager
async def open_testbed(
    memory_mib: int = 2200,
    cpus: int = 2,
    *,
    seed: int = 0,
    limits: UvLimits | None = None,
    host_key: ec.EllipticCurvePrivateKey | None = None,
) -> AsyncIterator[Testbed]:
    """A fresh simulated server whose ultravisor is not initialised.

    Args:
        memory_mib: host memory in MiB (more than 2048 to leave room for
            INIT_UV's storage above 2 GiB).
        cpus: host CPUs; CPU 0 is operating, the others stopped.
        seed: fixes the host key, the UV's handles and keys: equal seeds,
            equal runs.
        limits: the UV's sizes and options (:class:`machine.UvLimits`).
        host_key: the server's private host key (P-521); default one derived
            from the seed. Give it to boot images made for a real HKD.
    """
    testbed = Testbed(memory_mib=memory_mib, cpus=cpus, seed=seed, limits=limits, host_key=host_key)
    await _checkpoint()
    yield testbed


@final
class Testbed:
    """One simulated server driven directly, without actors (see the module docstring)."""

    __test__ = False  # not a pytest test class, although users import it into test modules

    def __init__(
        self,
        *,
        memory_mib: int,
        cpus: int,
        seed: int = 0,
        limits: UvLimits | None = None,
        host_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> None:
        if memory_mib <= 0 or cpus <= 0:
            raise UsageError(f"a testbed needs memory and CPUs, got {memory_mib} MiB and {cpus} CPUs")
        self.seed = seed
        key = server_host_key(seed) if host_key is None else host_key
        self.server = Server(f"testbed-{seed}", memory_mib * MIB, cpus, key)
        self.uv = Ultravisor(self.server, seed=seed, limits=limits)
        self.memory = self.server.memory
        # The top MiB is never handed out: a UVCB with a long header len still reads valid memory.
        self._top = max(self.memory.size - _TOP_GUARD, 0)
        self._image: BuiltImage | None = None
        self._asce_count = 0

    # ------------------------------------------------------------ memory
    @property
    def memory_size(self) -> int:
        """Bytes of host memory."""
        return self.memory.size

    @property
    def host_public_key(self) -> ec.EllipticCurvePublicKey:
        """The server's public host key (images for this server are built for it)."""
        return self.server.host_public_key

    def alloc(self, size: int, align: int = PAGE) -> int:
        """Host address of ``size`` bytes of free, never-used memory, ``align``-aligned.

        Memory is handed out from the top down (below a last MiB that stays
        free, so that a UVCB whose header ``len`` runs long still lies in
        memory) and never reused. Like the
        kernel's page allocator, a block is also naturally aligned: to the
        largest power of two not above ``size``, up to 1 MiB (so
        ``alloc(qui.uv_base_stor_len)`` is fit for INIT_UV and
        ``alloc(qui.conf_base_phys_stor_len)`` for CREATE_SEC_CONF).

        Raises:
            UsageError: a size below 1, an alignment that is not a power of
                two, or no memory left above the lowcore.
        """
        if size <= 0 or align <= 0 or align & (align - 1):
            raise UsageError(f"cannot allocate {size} bytes aligned to {align}")
        align = max(align, min(_NATURAL_ALIGN_MAX, 1 << (size.bit_length() - 1)))
        start = (self._top - size) // align * align
        if start < 2 * PAGE:
            raise UsageError(f"the testbed has no {size} bytes of memory left")
        self._top = start
        return start

    def write(self, addr: int, data: bytes) -> None:
        """A host write. Raises :class:`ProgramInterrupt` (0x3d, 0x11, 0x05) where the architecture does."""
        self.memory.host_write(addr, bytes(data))

    def read(self, addr: int, n: int) -> bytes:
        """A host read. Raises :class:`ProgramInterrupt` (0x3d, 0x11, 0x05) where the architecture does."""
        return self.memory.host_read(addr, n)

    def invalidate(self, addr: int) -> None:
        """Make the page at ``addr`` invalid: host accesses and UVCB reads there take PGM 0x11."""
        self.memory.invalidate(addr)

    def validate(self, addr: int) -> None:
        """Undo :meth:`invalidate` for the page at ``addr``."""
        self.memory.validate(addr)

    # ------------------------------------------------------------ calls
    async def uvc(self, addr: int, problem_state: bool = False, *, instruction_bits: int = 0) -> int:
        """Execute the UVC whose UVCB lies at host address ``addr``; the cc.

        rc, rrc and outputs are written back into the UVCB.

        Raises:
            ProgramInterrupt: 0x02 in problem state, 0x06 for nonzero
                ``instruction_bits`` (bits 16-23 of the instruction), 0x11 if
                the UVCB cannot be read.
        """
        await _checkpoint()
        return self.uv.execute_uvcb(HOST, addr, problem_state=problem_state, instruction_bits=instruction_bits)

    def qui(self) -> QuiResponse:
        """The QUI block as the host sees it (parsed)."""
        response = self.uv.execute(HOST, QuiRequest(length=QUI_FULL_LENGTH))
        assert isinstance(response, QuiResponse)
        return response

    def host_call(self, request: UvcRequest) -> UvcResponse:
        """Issue a typed host UVC without a UVCB in memory (what the testbed itself uses)."""
        return self.uv.execute(HOST, request)

    # ------------------------------------------------------- host state
    async def start_cpu(self, n: int) -> None:
        """Put host CPU ``n`` into the operating state."""
        self._cpu(n)
        await _checkpoint()
        self.server.cpu_operating[n] = True

    async def stop_cpu(self, n: int) -> None:
        """Stop host CPU ``n`` (CPU 0 runs the testbed and cannot be stopped)."""
        self._cpu(n)
        if n == 0:
            raise UsageError("CPU 0 issues the testbed's calls and cannot be stopped")
        await _checkpoint()
        self.server.cpu_operating[n] = False

    def _cpu(self, n: int) -> None:
        if not 0 <= n < self.server.cpus:
            raise UsageError(f"the testbed has CPUs 0..{self.server.cpus - 1}, not {n}")

    async def host_reset(self) -> None:
        """DIAG 308 subcode 1 on the host (uv-interface.md §6).

        Every donation and every secure page comes back zeroed and readable,
        the UV is uninitialised, and only CPU 0 operates. Secure guests
        started before are gone: using them raises :class:`UsageError`.
        """
        await _checkpoint()
        self.uv.host_reset()
        self.server.cpu_operating[:] = [i == 0 for i in range(self.server.cpus)]
        for asce in list(self.server.address_spaces):
            self.server.remove_address_space(asce)

    # ------------------------------------------------------- guests
    def guest_address_space(self, size: int) -> AddressSpace:
        """A new guest address space of ``size`` bytes, every page mapped to a fresh host frame.

        It is registered with the server, so the UV finds it through its
        ASCE (a fresh 16 KiB table origin with the private-space bit).
        """
        if size <= 0 or size % PAGE:
            raise UsageError(f"guest memory must be a positive multiple of 4 KiB, got {size:#x}")
        asce = self.alloc(4 * PAGE, align=4 * PAGE) | ASCE_PRIVATE_SPACE
        space = AddressSpace(asce, size)
        frames = self.alloc(size)
        for gfn in range(size // PAGE):
            space.map(gfn, (frames >> 12) + gfn)
        self.server.add_address_space(space)
        return space

    def build_image(self, *, cmdline: bytes | None = None, pcf: int | None = None) -> BuiltImage:
        """A boot image for this server's host key, deterministic for the testbed's seed.

        A synthetic kernel of :data:`KERNEL_SIZE` bytes, optionally a command
        line; keys, IV and tweaks all derive from the seed. The plain call is
        cached.
        """
        if cmdline is None and pcf is None and self._image is not None:
            return self._image
        seed = self.seed
        xts = _derive(seed, "xts-key", 64)
        randoms = {kind: _derive(seed, f"tweak-{kind.name}", 6) for kind in ComponentKind}
        spec = ImageSpec(
            kernel=synthetic_kernel(KERNEL_SIZE, seed),
            cmdline=cmdline,
            host_keys=(self.host_public_key,),
            cust_private_key=ec_private_from_scalar(_derive(seed, "customer-key", 64)),
            prot_key=_derive(seed, "protection-key", 32),
            iv=_derive(seed, "iv", 12),
            cck=_derive(seed, "cck", 32),
            xts_key=xts,
            tweak_randoms=randoms,
            **({} if pcf is None else {"pcf": pcf}),
        )
        image = create_image(spec)
        if cmdline is None and pcf is None:
            self._image = image
        return image

    async def secure_guest(
        self, memory_mib: int = 1, cpus: int = 1, *, image: BuiltImage | bytes | None = None
    ) -> SecureGuest:
        """Boot a secure guest from an image built for this server (uv-semantics.md §2.2).

        ``image`` boots another image instead (a :class:`protocol.BuiltImage`
        or the bytes of an image file, from ``sesim image create`` say); it
        must have a key slot for this server's host key.

        INIT_UV (if not yet done) → the image loaded at guest address 0 →
        CREATE_SEC_CONF with storage sized from QUI → CREATE_SEC_CPU per CPU
        → SET_SEC_CONF_PARAMS with the header copied into host memory →
        UNPACK_IMG per page with the IPIB's tweaks → VERIFY_IMG →
        CPU_SET_STATE OPR_LOAD, then OPR.

        Raises:
            UsageError: a step failed (its command, rc and rrc are named);
                for example INIT_UV while a second CPU operates.
        """
        await _checkpoint()
        return boot_secure_guest(self, memory_mib, cpus, image=image)
