"""The secure guests of a testbed: booting one, and acting from inside it.

:func:`boot_secure_guest` runs the real switch into secure mode
(uv-semantics.md §2.2) the way QEMU and KVM drive it, with raw UVCs of the
host. :class:`SecureGuest` then acts as the guest's CPU: its accesses and
its UVCs go through the same machine functions as a vCPU's in SIE, and
where the guest needs the host first (a page that is not secure yet, an
unmapped page, a stale secure page, a pinned shared page), it does what KVM
does and lets the guest retry, so the guest sees what a real guest sees.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, final

import trio

from machine import (
    HOST,
    AddressSpace,
    Caller,
    NotificationIntercept,
    PgmCode,
    ProgramInterrupt,
    guest_read,
    guest_write,
)
from protocol import (
    BuiltImage,
    Cc,
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    DestrSecStorRequest,
    ImportRc,
    InitUvRequest,
    Ipib,
    RemoveSharedAccessRequest,
    SesimError,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    UnpinPageSharedRequest,
    UsageError,
    UvcCommand,
    UvcContext,
    UvcRequest,
    UvcResponse,
    VerifyImgRequest,
)

from protocol._ipib import METADATA_OFFSET, ImageMetadata

if TYPE_CHECKING:
    from .testbed import Testbed

PAGE = 4096
MIB = 1 << 20
_MAX_RETRIES = 1024
"""How often one guest access or UVC may fault before the host gives up: RETR_ATTEST's buffers
(an ARCB of up to 1 MiB, measurement and additional data) span up to ~270 pages, and each page may
need a fault-in and an import."""
_T = TypeVar("_T")


async def _checkpoint() -> None:
    await trio.lowlevel.checkpoint()


class GuestKilled(SesimError):
    """The host could not resolve what a guest access needed (KVM would SIGSEGV the VMM).

    For example the import of a page whose exported ciphertext was changed
    (uv-semantics.md §3.4). ``rc``/``rrc`` are the UV's answer that failed.
    """

    def __init__(self, message: str, rc: int = 0, rrc: int = 0) -> None:
        super().__init__(message)
        self.rc = rc
        self.rrc = rrc


def boot_secure_guest(
    tb: Testbed, memory_mib: int, cpus: int, *, image: BuiltImage | bytes | None = None
) -> SecureGuest:
    """Boot a secure guest on ``tb`` (see :meth:`Testbed.secure_guest`)."""
    qui = tb.qui()
    if not tb.uv.initialized:  # the host's setup_uv at boot
        stor = tb.alloc(qui.uv_base_stor_len, align=MIB)
        _host(tb, InitUvRequest(stor_origin=stor, stor_len=qui.uv_base_stor_len))
    size = memory_mib * MIB
    image = tb.build_image() if image is None else image
    data = image if isinstance(image, bytes) else image.data
    if len(data) > size:
        raise UsageError(f"the image needs {len(data):#x} bytes of guest memory, the guest has {size:#x}")
    space = tb.guest_address_space(size)
    for offset in range(0, len(data), PAGE):  # QEMU loads the image at guest address 0
        page = data[offset : offset + PAGE]
        if page.strip(b"\0"):
            tb.write(space.translate(offset) or 0, page)
    # KVM_PV_ENABLE: CREATE_SEC_CONF with storage sized from QUI (uv-semantics.md §1.4), then the CPUs.
    var_len = qui.conf_base_virt_stor_len + (qui.conf_virt_var_stor_len * memory_mib + PAGE - 1) // PAGE * PAGE
    donations = {
        "base": (tb.alloc(qui.conf_base_phys_stor_len, align=4 * PAGE), qui.conf_base_phys_stor_len),
        "var": (tb.alloc(var_len), var_len),
    }
    create = CreateSecConfRequest(
        conf_base_stor_origin=donations["base"][0],
        conf_virt_stor_origin=donations["var"][0],
        guest_stor_origin=0,
        guest_stor_len=size,
        guest_sca=tb.alloc(4 * PAGE, align=4 * PAGE),
        guest_asce=space.asce,
    )
    handle: int = _host(tb, create).guest_handle  # type: ignore[attr-defined]
    cpu_handles = []
    sie_blocks = []
    for num in range(cpus):
        stor, sie = tb.alloc(qui.cpu_stor_len), tb.alloc(PAGE)
        request = CreateSecCpuRequest(guest_handle=handle, num=num, stor_origin=stor, state_origin=sie)
        cpu_handles.append(_host(tb, request).cpu_handle)  # type: ignore[attr-defined]
        sie_blocks.append(sie)
        donations[f"cpu{num}"] = (stor, qui.cpu_stor_len)
    # The header, copied into host memory; then every IPIB component page by page; then verify.
    ipib = Ipib.parse(data[ImageMetadata.parse(data[METADATA_OFFSET:]).ipib_offset :])
    header = tb.alloc(ipib.hdr_size)
    tb.write(header, data[ipib.hdr_addr : ipib.hdr_addr + ipib.hdr_size])
    _host(tb, SetSecConfParamsRequest(guest_handle=handle, sec_header_origin=header, sec_header_len=ipib.hdr_size))
    for comp in ipib.components:
        for offset in range(0, comp.length, PAGE):
            tweak = (comp.tweak_prefix, offset)
            _host(tb, UnpackImgRequest(guest_handle=handle, gaddr=comp.addr + offset, tweak=tweak))
    _host(tb, VerifyImgRequest(handle=handle))
    # s390_do_cpu_load_normal: LOAD, then OPERATING (uv-semantics.md §2.2 step 3).
    for cpu in cpu_handles:
        _host(tb, CpuSetStateRequest(cpu_handle=cpu, state=CpuState.OPR_LOAD))
        _host(tb, CpuSetStateRequest(cpu_handle=cpu, state=CpuState.OPR))
    return SecureGuest(
        testbed=tb,
        space=space,
        config_handle=handle,
        cpu_handles=tuple(cpu_handles),
        sie_blocks=tuple(sie_blocks),
        donations=donations,
        image=image,
        header_addr=header,
    )


def _host(tb: Testbed, request: UvcRequest) -> UvcResponse:
    """One host UVC of the boot sequence; a failure names the step."""
    response = tb.uv.execute(HOST, request)
    if response.cc != Cc.OK:
        raise UsageError(
            f"{request.COMMAND.name} failed: cc {int(response.cc)} rc {response.rc:#06x} rrc {response.rrc:#06x}"
        )
    return response


@final
class SecureGuest:
    """A booted secure guest of a :class:`Testbed`: act from inside it.

    Attributes:
        config_handle, cpu_handles: what the UV returned (the SIE block
            handles of its CPUs).
        space: its address space (guest absolute → host frames).
        donations: name → (host address, length) of every donation made for
            it: ``"base"``, ``"var"``, ``"cpu0"``, …
        sie_blocks: host addresses of its CPUs' SIE blocks.
        image: the image it booted; ``header_addr``: the host copy of its SE header.
    """

    def __init__(
        self,
        *,
        testbed: Testbed,
        space: AddressSpace,
        config_handle: int,
        cpu_handles: tuple[int, ...],
        sie_blocks: tuple[int, ...],
        donations: dict[str, tuple[int, int]],
        image: BuiltImage | bytes,
        header_addr: int,
    ) -> None:
        self.testbed = testbed
        self.space = space
        self.config_handle = config_handle
        self.cpu_handles = cpu_handles
        self.sie_blocks = sie_blocks
        self.donations = donations
        self.image = image
        self.header_addr = header_addr

    @property
    def memory_size(self) -> int:
        """Bytes of guest memory."""
        return self.space.size

    @property
    def asce(self) -> int:
        return self.space.asce

    def host_addr(self, gaddr: int) -> int:
        """The host address behind guest address ``gaddr`` (what export or pin take)."""
        addr = self.space.translate(gaddr)
        if addr is None:
            raise UsageError(f"guest address {gaddr:#x} is not mapped")
        return addr

    # ------------------------------------------------- the guest's view
    async def uvc(self, gaddr: int, problem_state: bool = False, *, cpu: int = 0, instruction_bits: int = 0) -> int:
        """Execute a UVC in guest context whose UVCB lies at guest address ``gaddr``; the cc.

        Raises:
            ProgramInterrupt: what the guest itself takes: 0x02, 0x06, or
                0x11 for a UVCB beyond guest memory.
            GuestKilled: the host could not make a page accessible.
        """
        await _checkpoint()
        if not 0 <= cpu < len(self.cpu_handles):
            raise UsageError(f"the guest has CPUs 0..{len(self.cpu_handles) - 1}, not {cpu}")
        caller = Caller(context=UvcContext.GUEST, config_handle=self._handle(), cpu_handle=self.cpu_handles[cpu])
        uv = self.testbed.uv

        def call() -> int:
            try:
                return uv.execute_uvcb(
                    caller, gaddr, problem_state=problem_state, instruction_bits=instruction_bits
                )
            except NotificationIntercept:
                self._notification(gaddr)
                raise _Retry from None

        return self._resolving(call)

    def write(self, gaddr: int, data: bytes) -> None:
        """Store ``data`` at guest address ``gaddr`` as the guest CPU does."""
        handle = self._handle()
        memory = self.testbed.memory
        pos = 0
        while pos < len(data):
            addr = gaddr + pos
            chunk = data[pos : pos + PAGE - (addr & (PAGE - 1))]
            self._resolving(lambda: guest_write(memory, self.space, handle, addr, chunk))
            pos += len(chunk)

    def read(self, gaddr: int, n: int) -> bytes:
        """Fetch ``n`` bytes at guest address ``gaddr`` as the guest CPU does."""
        handle = self._handle()
        memory = self.testbed.memory
        out = bytearray()
        while len(out) < n:
            addr = gaddr + len(out)
            chunk = min(n - len(out), PAGE - (addr & (PAGE - 1)))
            out += self._resolving(lambda: guest_read(memory, self.space, handle, addr, chunk))
        return bytes(out)

    # ------------------------------------------------- KVM's side of it
    def _handle(self) -> int:
        if self.config_handle not in self.testbed.uv.configs:
            raise UsageError("this secure guest no longer exists (destroyed, or a host reset)")
        return self.config_handle

    def _resolving(self, access: Callable[[], _T]) -> _T:
        """Run a guest access or UVC; resolve the exits KVM resolves and retry."""
        for _ in range(_MAX_RETRIES):
            try:
                return access()
            except _Retry:
                continue
            except ProgramInterrupt as pgm:
                if not self._resolve(pgm):
                    raise
        raise GuestKilled("the guest access kept faulting: the host gave up")

    def _resolve(self, pgm: ProgramInterrupt) -> bool:
        """Handle one SIE exit as KVM does (uv-semantics.md §3.2, §3.3); False if it is the guest's."""
        gaddr = pgm.address
        if gaddr is None or not 0 <= gaddr < self.space.size:
            return False
        page = gaddr & ~(PAGE - 1)
        if pgm.code == PgmCode.PAGE_TRANSLATION:
            if self.space.pfn_of(page >> 12) is not None:
                return False
            self.space.map(page >> 12, self.testbed.alloc(PAGE) >> 12)  # fault it in
            return True
        if pgm.code == PgmCode.NON_SECURE_STORAGE_ACCESS:
            response = self.testbed.host_call(ConvToSecStorRequest(guest_handle=self.config_handle, gaddr=page))
            if response.cc == Cc.OK:
                return True
            if response.rc == ImportRc.GADDR_NOT_MAPPED:
                self.space.map(page >> 12, self.testbed.alloc(PAGE) >> 12)
                return True
            raise GuestKilled(
                f"import of guest page {page:#x} failed rc {response.rc:#06x}: the VMM gets SIGSEGV",
                response.rc,
                response.rrc,
            )
        if pgm.code == PgmCode.SECURE_STORAGE_ACCESS:
            paddr = self.host_addr(page)
            for request in (DestrSecStorRequest(paddr=paddr), ConvFromSecStorRequest(paddr=paddr)):
                if self.testbed.host_call(request).cc == Cc.OK:
                    return True
            raise GuestKilled(f"guest page {page:#x} is secure storage the host cannot reclaim")
        return False

    def _notification(self, uvcb_gaddr: int) -> None:
        """Intercept 108 for a guest UVC: KVM unpins the page a REMOVE_SHARED names (uv-semantics.md §4)."""
        frame = self.testbed.memory.frame(self.space.pfn_of(uvcb_gaddr >> 12) or 0)
        offset = uvcb_gaddr & (PAGE - 1)
        block = frame.read(offset, min(0x30, PAGE - offset))
        if int.from_bytes(block[2:4], "big") != UvcCommand.REMOVE_SHARED_ACCESS or len(block) < 0x30:
            raise GuestKilled("an intercept 108 for a UVC the host does not handle")
        request = RemoveSharedAccessRequest.parse(block)
        response = self.testbed.host_call(
            UnpinPageSharedRequest(guest_handle=self.config_handle, gaddr=request.paddr & ~(PAGE - 1))
        )
        if response.cc != Cc.OK:
            raise GuestKilled(f"UNPIN_PAGE_SHARED failed rc {response.rc:#06x}", response.rc, response.rrc)

    def __repr__(self) -> str:
        return f"<SecureGuest handle={self.config_handle:#018x} memory={self.space.size:#x}>"


class _Retry(Exception):
    """The host handled an intercept; the guest re-executes its instruction."""
