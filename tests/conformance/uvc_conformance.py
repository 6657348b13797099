"""Helpers of the UV conformance suite: raw UVCBs in testbed memory, answers read back.

Every call goes the way kvm-unit-tests goes: the request's ``pack()`` bytes
are written to memory, the UVC is executed on their address, and the cc plus
the rc/rrc/outputs the UV wrote are read back from memory. Each answer is
recorded, so that :func:`produces` can check that a test really observed the
return codes it claims, and ``test_uv_rc_coverage.py`` can check that the
suite as a whole covers every rc of uv-interface.md §2 and §4.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from attrs import frozen

from protocol import (
    NEED_DESTROY,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    InitUvRequest,
    Ipib,
    QuiResponse,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    UvcCommand,
    UvcRequest,
)
from sesim.testbed import SecureGuest, Testbed

PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
ASCE_PRIVATE = 0x100
GUEST_UVCB = 0x80000
"""Guest address where guest-context tests put their UVCB."""

OBSERVED: list[Answer] = []
"""Every answer of the test that runs now (cleared by :func:`produces`)."""


@frozen(kw_only=True)
class Answer:
    """What the UV left after one call: cc, and the UVCB as it is in memory now."""

    command: int
    cc: int
    block: bytes

    @property
    def rc(self) -> int:
        return int.from_bytes(self.block[4:6], "big")

    @property
    def rrc(self) -> int:
        return int.from_bytes(self.block[6:8], "big")

    def u64(self, offset: int) -> int:
        return int.from_bytes(self.block[offset : offset + 8], "big")

    def __repr__(self) -> str:
        return f"<Answer cmd={self.command:#06x} cc={self.cc} rc={self.rc:#06x} rrc={self.rrc:#06x}>"


def _record(answer: Answer) -> Answer:
    OBSERVED.append(answer)
    return answer


# ------------------------------------------------------------------ calls
async def call_bytes(tb: Testbed, block: bytes, *, at: int | None = None) -> Answer:
    """Write ``block`` to a fresh page (or ``at``) and execute it as a host UVC."""
    addr = tb.alloc(PAGE) if at is None else at
    tb.write(addr, block)
    cc = await tb.uvc(addr)
    return _record(Answer(command=int.from_bytes(block[2:4], "big"), cc=cc, block=tb.read(addr, len(block))))


async def call(tb: Testbed, request: UvcRequest, *, length: int | None = None, at: int | None = None) -> Answer:
    """Execute ``request`` (optionally with another header ``len``) as a host UVC."""
    block = bytearray(request.pack())
    if length is not None:
        block[0:2] = length.to_bytes(2, "big")
    return await call_bytes(tb, bytes(block), at=at)


async def header_call(tb: Testbed, command: int, length: int | None = None) -> Answer:
    """A UVCB that is a header and zeros, ``length`` the command's architected one by default."""
    if length is None:
        length = UvcCommand(command).uvcb_length
    block = length.to_bytes(2, "big") + command.to_bytes(2, "big") + bytes(max(length, 8) - 4)
    return await call_bytes(tb, block)


async def guest_call_bytes(g: SecureGuest, block: bytes, *, at: int = GUEST_UVCB) -> Answer:
    """Write ``block`` into guest memory and execute it in guest context."""
    g.write(at, block)
    cc = await g.uvc(at)
    return _record(Answer(command=int.from_bytes(block[2:4], "big"), cc=cc, block=g.read(at, len(block))))


async def guest_call(g: SecureGuest, request: UvcRequest, *, length: int | None = None) -> Answer:
    """Execute ``request`` in guest context, UVCB at :data:`GUEST_UVCB`."""
    block = bytearray(request.pack())
    if length is not None:
        block[0:2] = length.to_bytes(2, "big")
    return await guest_call_bytes(g, bytes(block))


def expect(answer: Answer, rc: int, rrc: int | None = None) -> None:
    """Assert cc and rc (and rrc): cc 0 for rc 1, cc 1 otherwise."""
    want_cc = 0 if rc == 0x0001 else 1
    got = (answer.cc, answer.rc) if rrc is None else (answer.cc, answer.rc, answer.rrc)
    want = (want_cc, rc) if rrc is None else (want_cc, rc, rrc)
    assert got == want, f"{answer!r}: expected cc {want_cc} rc {rc:#06x}" + ("" if rrc is None else f" rrc {rrc:#06x}")


# ---------------------------------------------------------------- setups
async def init_uv(tb: Testbed) -> tuple[int, int]:
    """INIT_UV with storage above 2 GiB, as Linux's setup_uv does; (origin, length)."""
    qui = tb.qui()
    origin = tb.alloc(qui.uv_base_stor_len, align=MIB)
    expect(await call(tb, InitUvRequest(stor_origin=origin, stor_len=qui.uv_base_stor_len)), 0x0001)
    return origin, qui.uv_base_stor_len


def var_stor_len(qui: QuiResponse, msl: int) -> int:
    """uv-interface.md §4: ``conf_base_virt_stor_len + (MSL / 1 MiB) × conf_virt_var_stor_len``, page aligned."""
    var = qui.conf_base_virt_stor_len + (msl // MIB) * qui.conf_virt_var_stor_len
    return (var + PAGE - 1) // PAGE * PAGE


def conf_request(tb: Testbed, msl: int = 42 * MIB, **changes: Any) -> CreateSecConfRequest:
    """A valid CREATE_SEC_CONF with fresh storage (kvm-unit-tests' setup), fields overridable."""
    qui = tb.qui()
    fields: dict[str, Any] = {
        "conf_base_stor_origin": tb.alloc(qui.conf_base_phys_stor_len, align=4 * PAGE),
        "conf_virt_stor_origin": tb.alloc(var_stor_len(qui, msl)),
        "guest_stor_origin": 0,
        "guest_stor_len": msl,
        "guest_sca": tb.alloc(4 * PAGE, align=4 * PAGE),
        "guest_asce": tb.alloc(4 * PAGE, align=PAGE) | ASCE_PRIVATE,
    }
    fields.update(changes)
    return CreateSecConfRequest(**fields)


async def create_conf(tb: Testbed, **changes: Any) -> tuple[int, CreateSecConfRequest]:
    """A configuration created through a raw UVCB: (handle, the request used)."""
    request = conf_request(tb, **changes)
    answer = await call(tb, request)
    expect(answer, 0x0001)
    return answer.u64(0x18), request


def cpu_request(tb: Testbed, handle: int, num: int = 0, **changes: Any) -> CreateSecCpuRequest:
    """A valid CREATE_SEC_CPU with fresh storage and SIE block."""
    fields: dict[str, Any] = {
        "guest_handle": handle,
        "num": num,
        "stor_origin": tb.alloc(tb.qui().cpu_stor_len),
        "state_origin": tb.alloc(PAGE),
    }
    fields.update(changes)
    return CreateSecCpuRequest(**fields)


async def create_cpu(tb: Testbed, handle: int, num: int = 0) -> tuple[int, CreateSecCpuRequest]:
    request = cpu_request(tb, handle, num)
    answer = await call(tb, request)
    expect(answer, 0x0001)
    return answer.u64(0x18), request


# ------------------------------------------------------ coverage markers
@frozen(kw_only=True)
class Produces:
    """A claim that a test observes ``rc`` (and ``rrc``) from ``command`` (None: any command)."""

    command: UvcCommand | None
    rc: int
    rrc: int | None = None

    def matches(self, answer: Answer) -> bool:
        if self.command is not None and answer.command != self.command:
            return False
        if self.rc == NEED_DESTROY:
            return bool(answer.rc & NEED_DESTROY)
        rc = answer.rc & ~NEED_DESTROY if answer.command == UvcCommand.CREATE_SEC_CONF else answer.rc
        return rc == self.rc and (self.rrc is None or answer.rrc == self.rrc)

    def __str__(self) -> str:
        who = "any command" if self.command is None else self.command.name
        return f"{who} rc {self.rc:#06x}" + ("" if self.rrc is None else f" rrc {self.rrc:#06x}")


_TestFn = Callable[..., Awaitable[None]]


def produces(
    command: UvcCommand | None, rc: int, rrc: int | None = None, *, when: dict[str, Any] | None = None
) -> Callable[[_TestFn], _TestFn]:
    """Decorate a test that must observe this answer; the claim is checked after the test runs.

    ``when`` limits the claim to the parametrized cases whose arguments
    have those values (a table-driven test claims each row's rc in its row).
    """
    claim = Produces(command=command, rc=rc, rrc=rrc)
    condition = dict(when or {})

    def decorate(fn: _TestFn) -> _TestFn:
        inner = getattr(fn, "__wrapped_test__", fn)
        claims = [*getattr(fn, "claims", ()), (claim, condition)]

        @functools.wraps(inner)
        async def wrapper(*args: Any, **kwargs: Any) -> None:
            OBSERVED.clear()
            await inner(*args, **kwargs)
            for want, cond in claims:
                if all(kwargs.get(k) == v for k, v in cond.items()):
                    assert any(want.matches(a) for a in OBSERVED), f"the test never observed {want}"

        wrapper.claims = claims  # type: ignore[attr-defined]
        wrapper.produces = [c for c, _ in claims]  # type: ignore[attr-defined]
        wrapper.__wrapped_test__ = inner  # type: ignore[attr-defined]
        return wrapper

    return decorate


# --------------------------------------------------------- command lists
HOST_COMMANDS = (
    UvcCommand.INIT_UV,
    UvcCommand.CREATE_SEC_CONF,
    UvcCommand.DESTROY_SEC_CONF,
    UvcCommand.CREATE_SEC_CPU,
    UvcCommand.DESTROY_SEC_CPU,
    UvcCommand.CONV_TO_SEC_STOR,
    UvcCommand.CONV_FROM_SEC_STOR,
    UvcCommand.DESTR_SEC_STOR,
    UvcCommand.SET_SEC_CONF_PARAMS,
    UvcCommand.UNPACK_IMG,
    UvcCommand.VERIFY_IMG,
    UvcCommand.CPU_RESET,
    UvcCommand.CPU_RESET_INITIAL,
    UvcCommand.CPU_SET_STATE,
    UvcCommand.PREPARE_RESET,
    UvcCommand.CPU_RESET_CLEAR,
    UvcCommand.SET_UNSHARE_ALL,
    UvcCommand.PIN_PAGE_SHARED,
    UvcCommand.UNPIN_PAGE_SHARED,
    UvcCommand.DESTROY_SEC_CONF_FAST,
    UvcCommand.DUMP_INIT,
    UvcCommand.DUMP_CONF_STOR_STATE,
    UvcCommand.DUMP_CPU,
    UvcCommand.DUMP_COMPLETE,
)
"""The host commands of uv-interface.md §3 that this UV implements."""
HOST_AFTER_INIT = tuple(c for c in HOST_COMMANDS if c is not UvcCommand.INIT_UV)
GUEST_COMMANDS = (UvcCommand.SET_SHARED_ACCESS, UvcCommand.REMOVE_SHARED_ACCESS)
GUEST_ONLY = (
    UvcCommand.SET_SHARED_ACCESS,
    UvcCommand.REMOVE_SHARED_ACCESS,
    UvcCommand.RETR_ATTEST,
    UvcCommand.ADD_SECRET,
    UvcCommand.LIST_SECRETS,
    UvcCommand.LOCK_SECRETS,
    UvcCommand.RETR_SECRET,
)
"""Commands only a guest may issue (§3); the host gets rc 0x0002 for each."""
NOT_INSTALLED = (UvcCommand.QUERY_KEYS,)
"""Host commands this UV does not implement: not installed, so QUI leaves their bits clear."""
CONFIG_HANDLE_COMMANDS = (
    UvcCommand.DESTROY_SEC_CONF,
    UvcCommand.DESTROY_SEC_CONF_FAST,
    UvcCommand.CREATE_SEC_CPU,
    UvcCommand.CONV_TO_SEC_STOR,
    UvcCommand.SET_SEC_CONF_PARAMS,
    UvcCommand.UNPACK_IMG,
    UvcCommand.VERIFY_IMG,
    UvcCommand.PREPARE_RESET,
    UvcCommand.SET_UNSHARE_ALL,
    UvcCommand.UNPIN_PAGE_SHARED,
    UvcCommand.DUMP_INIT,
    UvcCommand.DUMP_CONF_STOR_STATE,
    UvcCommand.DUMP_COMPLETE,
)
"""Commands that name a configuration (§3): handle at 0x18, except CREATE_SEC_CPU (0x20)."""
CPU_HANDLE_COMMANDS = (
    UvcCommand.DESTROY_SEC_CPU,
    UvcCommand.CPU_RESET,
    UvcCommand.CPU_RESET_INITIAL,
    UvcCommand.CPU_RESET_CLEAR,
    UvcCommand.CPU_SET_STATE,
    UvcCommand.DUMP_CPU,
)
"""Commands that name a secure CPU (handle at 0x18)."""


def handle_offset(command: UvcCommand) -> int:
    """Where the handle lies in the command's UVCB (uv-interface.md §3)."""
    return 0x20 if command is UvcCommand.CREATE_SEC_CPU else 0x18


def block_with_handle(command: UvcCommand, handle: int) -> bytes:
    """A UVCB of ``command``, architected length, only its handle field set."""
    length = command.uvcb_length
    block = bytearray(length)
    block[0:2] = length.to_bytes(2, "big")
    block[2:4] = int(command).to_bytes(2, "big")
    off = handle_offset(command)
    block[off : off + 8] = handle.to_bytes(8, "big")
    if command is UvcCommand.CPU_SET_STATE:
        block[0x27] = 1
    return bytes(block)


# ------------------------------------------------ a guest prepared by hand
@frozen(kw_only=True)
class Prepared:
    """A configuration with one CPU and its image loaded, ready for SET_SEC_CONF_PARAMS."""

    handle: int
    cpu: int
    space: Any  # machine.AddressSpace
    image: Any  # protocol.BuiltImage
    ipib: Ipib
    header_addr: int

    @property
    def header_len(self) -> int:
        return self.ipib.hdr_size

    def pages(self) -> list[tuple[int, int, int]]:
        """(gaddr, tweak prefix, offset) of every page to unpack, in IPIB order."""
        return [
            (comp.addr + offset, comp.tweak_prefix, offset)
            for comp in self.ipib.components
            for offset in range(0, comp.length, PAGE)
        ]

    def ssc(self, **changes: Any) -> SetSecConfParamsRequest:
        fields: dict[str, Any] = {
            "guest_handle": self.handle,
            "sec_header_origin": self.header_addr,
            "sec_header_len": self.header_len,
        }
        fields.update(changes)
        return SetSecConfParamsRequest(**fields)


async def prepare(tb: Testbed, *, image: Any = None, memory_mib: int = 1) -> Prepared:
    """INIT_UV, guest memory with the image at 0, CREATE_SEC_CONF, one CREATE_SEC_CPU, the header copied."""
    await init_uv(tb)
    image = tb.build_image() if image is None else image
    space = tb.guest_address_space(memory_mib * MIB)
    data = image.data
    for offset in range(0, len(data), PAGE):
        page = data[offset : offset + PAGE]
        if page.strip(b"\0"):
            tb.write(space.translate(offset), page)
    handle, _ = await create_conf(tb, guest_stor_len=memory_mib * MIB, guest_asce=space.asce)
    cpu, _ = await create_cpu(tb, handle)
    ipib = Ipib.parse(data[image.description.ipib_addr :])
    header_addr = tb.alloc(2 * PAGE)
    tb.write(header_addr, data[ipib.hdr_addr : ipib.hdr_addr + ipib.hdr_size])
    return Prepared(handle=handle, cpu=cpu, space=space, image=image, ipib=ipib, header_addr=header_addr)


async def unpack_all(tb: Testbed, p: Prepared) -> None:
    for gaddr, prefix, offset in p.pages():
        expect(await call(tb, UnpackImgRequest(guest_handle=p.handle, gaddr=gaddr, tweak=(prefix, offset))), 0x0001)
