"""The ultravisor's decision logic: state, check order and dispatch.

Theory of operation
===================

:class:`Ultravisor` is the firmware as plain, synchronous code (the sans-I/O
style of h11): :meth:`Ultravisor.execute` takes who calls (:class:`Caller`)
and a typed request and returns the typed response, changing the UV's state
and the owner state of memory frames on the way. It never waits; the
ultravisor *actor* in :mod:`actors` adds time, per-frame locks and busy
answers around it.

Every call passes the generic checks of ``uv-interface.md`` §1 in this order,
before the command's own handler sees it:

1. the command is known and allowed in the caller's context (else rc 0x0002);
2. for host commands other than QUI and INIT_UV: the UV is initialised
   (else rc 0x0003);
3. the header length is the command's length (else rc 0x0005; QUI accepts
   any length from 0xA8 and answers "more data" below 0x100);
4. the command's handler: handles first (rc 0x0020 / 0x0021; a configuration
   whose destroy was left partial answers rc 0x0007 to anything but the
   re-issued DESTROY_SEC_CONF), then its own checks in the order of §4.

The privileged-operation, specification and UVCB-access program
interruptions come before all of these; they belong to the instruction, so
:meth:`Ultravisor.execute_uvcb` (the raw path that reads a UVCB from memory)
raises them. The raw path decides the generic checks from the 8-byte header
alone, so a block that is too short for its command is answered rc 0x0005
(or an earlier generic rc), never mis-parsed.

Handlers live in ``_uv_*.py`` modules, one per family of commands, and
register themselves in :data:`HANDLERS` with :func:`handles`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NoReturn, final

from attrs import define, field, frozen

from protocol import SesimInternalError
from protocol._qui import QUI_MIN_LENGTH
from protocol._uvc_codes import COMMAND_TABLE, Cc, ImportRc, PgmCode, Rc, UvcCommand, UvcContext
from protocol._uvcb import RESPONSE_TYPES, UvcRequest, UvcResponse, parse_request
from protocol._uvcb_base import HEADER_LEN, write_rc

from ._cpu import SecureCpuState
from ._drbg import Drbg
from ._memory import PAGE_SHIFT, Frame, FrameState
from ._pgm import ProgramInterrupt
from ._server import Server
from ._uv_access import HostView, UvcbView, guest_view, uv_owned_in
from ._uv_limits import UvLimits

Handler = Callable[["Ultravisor", "Caller", Any], UvcResponse]
HANDLERS: dict[UvcCommand, Handler] = {}

UNINITIALISED_OK = frozenset({UvcCommand.QUI, UvcCommand.INIT_UV})
"""Host commands that work before INIT_UV (uv-interface.md §1: QUI; INIT_UV itself)."""


def handles(command: UvcCommand) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``command``."""

    def register(fn: Handler) -> Handler:
        if command in HANDLERS:
            raise SesimInternalError(f"two handlers for {command.name}")
        HANDLERS[command] = fn
        return fn

    return register


@frozen(kw_only=True)
class Caller:
    """Who issues a UVC: the host, or a secure guest's CPU (inside SIE)."""

    context: UvcContext = UvcContext.HOST
    config_handle: int = 0
    cpu_handle: int = 0

    @property
    def is_guest(self) -> bool:
        return self.context is UvcContext.GUEST


HOST = Caller()


class UvcFailed(Exception):
    """Raised inside a handler to answer cc 1 with ``rc``/``rrc`` (never escapes :meth:`execute`)."""

    def __init__(self, rc: int, rrc: int = 0, outputs: dict[str, Any] | None = None) -> None:
        self.rc = rc
        self.rrc = rrc
        self.outputs = outputs or {}


def fail(rc: int, rrc: int = 0, **outputs: Any) -> NoReturn:
    """Stop the current handler with cc 1, rc, rrc (and output fields, normally none)."""
    raise UvcFailed(rc, rrc, outputs)


class NotificationIntercept(Exception):
    """A guest UVC that the UV turns into notification intercept 108 (uv-semantics.md §4)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def ok(request: UvcRequest, **outputs: Any) -> UvcResponse:
    """The cc 0 / rc 0x0001 response of ``request``, with its output fields."""
    return RESPONSE_TYPES[request.COMMAND](cc=Cc.OK, rc=Rc.EXECUTED, rrc=0, **outputs)


def partial(request: UvcRequest) -> UvcResponse:
    """The cc 3 (partial) response: the caller re-issues the same UVCB (uv-interface.md §1).

    The rc of a partial answer is 0x0001 (sesim's choice; callers look at the cc only).
    """
    return RESPONSE_TYPES[request.COMMAND](cc=Cc.PARTIAL, rc=Rc.EXECUTED, rrc=0)


class ConfigPhase(enum.Enum):
    """Where a secure configuration is in its life (uv-semantics.md §2.2)."""

    CREATED = "created"  # CREATE_SEC_CONF done; SET_SEC_CONF_PARAMS next
    UNPACKING = "unpacking"  # header accepted; UNPACK_IMG pages, then VERIFY_IMG
    VERIFIED = "verified"  # VERIFY_IMG passed: the image may run
    FAILED = "failed"  # VERIFY_IMG failed, or creation failed with 0x8000: it never runs


@frozen(kw_only=True)
class ExportRecord:
    """What the UV keeps of an exported page: the tweak it used and the ciphertext digest."""

    tweak: bytes
    digest: bytes


@define(kw_only=True, eq=False)
class SecureConfig:
    """A secure configuration, as only the ultravisor knows it."""

    handle: int
    asce: int
    mso: int
    msl: int
    sca: int
    base_origin: int
    base_len: int
    var_origin: int
    var_len: int
    export_key: bytes = field(repr=False)
    export_alg: Any = field(default=None, repr=False)
    cuid: bytes
    phase: ConfigPhase = ConfigPhase.CREATED
    opened: Any = field(default=None, repr=False)  # protocol OpenedSeHeader
    digests: Any = field(default=None, repr=False)  # protocol PageDigests while unpacking
    xts: Any = field(default=None, repr=False)
    cpus: dict[int, int] = field(factory=dict)  # cpu number -> cpu handle
    secure_frames: dict[int, int] = field(factory=dict)  # pfn -> gfn, for SECURE/SHARED*/EXPORTED frames
    exports: dict[int, ExportRecord] = field(factory=dict)  # gfn -> last export
    ever_secure: set[int] = field(factory=set)  # gfns that were secure once
    dumping: bool = False
    reset_prepared: bool = False  # PREPARE_RESET ran; OPR_LOAD ends the guest reset (machine._uv_cpu)
    secret_store: Any = field(default=None, repr=False)  # machine._uv_secret_store.SecretStore, on first use
    destroying: bool = False  # a DESTROY_SEC_CONF answered cc 3 and must be re-issued


@final
class Ultravisor:
    """The firmware of one server.

    Args:
        server: the server whose memory and host key this UV owns. The host
            key is taken out of the server's sealed slot here.
        seed: the run's seed (handles, keys and tweaks come from it).
        limits: what QUI reports and the UV enforces.
    """

    def __init__(self, server: Server, *, seed: int = 0, limits: UvLimits | None = None) -> None:
        self.server = server
        self.memory = server.memory
        self.limits = limits or UvLimits()
        self._host_key = server.host_key_slot.take()
        self._drbg = Drbg(seed, f"uv:{server.name}")
        self.initialized = False
        self.base_storage: tuple[int, int] | None = None
        self.configs: dict[int, SecureConfig] = {}
        self.cpus: dict[int, SecureCpuState] = {}
        # QUI shows, and the UV answers, only what this model implements.
        self.host_installed = self.limits.host_commands() & HANDLERS.keys()
        self.guest_installed = self.limits.guest_commands() & HANDLERS.keys()
        self.memory.guest_page_of = self.guest_page_of

    def guest_page_of(self, frame: Frame) -> int | None:
        """The guest frame number ``frame`` holds for its configuration, if it is secure or shared."""
        conf = self.configs.get(frame.owner)
        return None if conf is None else conf.secure_frames.get(frame.pfn)

    # ------------------------------------------------------------ helpers
    def new_handle(self) -> int:
        """A fresh opaque 64-bit handle (never 0, never reused in a run)."""
        while True:
            handle = self._drbg.u64()
            if handle and handle not in self.configs and handle not in self.cpus:
                return handle

    def random_bytes(self, n: int) -> bytes:
        return self._drbg.bytes(n)

    @property
    def host_private_key(self) -> Any:
        return self._host_key

    def config(self, handle: int, *, resuming: bool = False) -> SecureConfig:
        """The configuration ``handle`` names, or rc 0x0020.

        A configuration whose DESTROY_SEC_CONF ended with cc 3 can only be
        resumed by re-issuing that destroy (``resuming``); anything else
        naming it answers rc 0x0007, "no resume" (sesim's use of the code
        that uv-interface.md §2 defines without a public user).
        """
        conf = self.configs.get(handle)
        if conf is None:
            fail(Rc.INV_GHANDLE)
        if conf.destroying and not resuming:
            fail(Rc.NO_RESUME)
        return conf

    def cpu(self, handle: int) -> SecureCpuState:
        """The secure CPU ``handle`` names, or rc 0x0021."""
        cpu = self.cpus.get(handle)
        if cpu is None:
            fail(Rc.INV_CHANDLE)
        return cpu

    def donate(self, origin: int, length: int) -> None:
        """Make ``[origin, origin+length)`` UV storage (host access → PGM 0x3d)."""
        self.memory.set_state_range(origin >> PAGE_SHIFT, length >> PAGE_SHIFT, FrameState.DONATED)

    def reclaim(self, origin: int, length: int) -> None:
        """Give donated storage back to the host, zeroed and readable."""
        self.memory.set_state_range(
            origin >> PAGE_SHIFT, length >> PAGE_SHIFT, FrameState.HOST, only=FrameState.DONATED
        )

    def storage_in_use(self, origin: int, length: int) -> bool:
        """Whether any page of the range is not plain host memory (UV storage or a guest's page)."""
        return uv_owned_in(self.memory, origin, length)

    def frame_of_gaddr(self, conf: SecureConfig, gaddr: int) -> tuple[int, Frame]:
        """(gfn, frame) behind guest address ``gaddr``; rc 0x010a if it is not mapped."""
        space = self.server.address_spaces.get(conf.asce)
        gfn = gaddr >> PAGE_SHIFT
        pfn = None if space is None else space.pfn_of(gfn)
        if pfn is None:
            fail(ImportRc.GADDR_NOT_MAPPED)  # uv.c __make_folio_secure: -ENXIO, the host faults it in
        return gfn, self.memory.frame(pfn)

    def make_secure(self, conf: SecureConfig, gfn: int, frame: Frame) -> None:
        conf.secure_frames[frame.pfn] = gfn
        conf.ever_secure.add(gfn)
        self.memory.set_state(frame, FrameState.SECURE, conf.handle)

    def release_frame(self, frame: Frame, *, clear: bool) -> None:
        """Drop the UV's claim on a frame: it becomes host memory again."""
        conf = self.configs.get(frame.owner)
        if conf is not None:
            conf.secure_frames.pop(frame.pfn, None)
        if clear:
            frame.fill(None)
        self.memory.set_state(frame, FrameState.HOST)

    # ------------------------------------------------------------ the call
    def generic_rc(self, caller: Caller, command: UvcCommand, length: int) -> int | None:
        """The rc of the generic checks of uv-interface.md §1 (context, state, length), or None.

        Decided from the header alone, so the raw path can answer a block
        that is too short for its command without parsing it.
        """
        installed = self.guest_installed if caller.is_guest else self.host_installed
        issuer = UvcContext.GUEST if caller.is_guest else UvcContext.HOST
        if command not in installed or not command.allowed_in(issuer):
            return Rc.INV_CMD  # unknown here: the QUI of this context leaves its bit clear (§1, §5)
        if not caller.is_guest and not self.initialized and command not in UNINITIALISED_OK:
            return Rc.INV_STATE
        if command is UvcCommand.QUI:
            # 0xA8..0xFF answers "more data"; 0x100 and longer (Linux sends 0x120) the whole block (§3).
            return Rc.INV_LEN if length < QUI_MIN_LENGTH else None
        if length != COMMAND_TABLE[command].uvcb_length:
            return Rc.INV_LEN
        return None

    def execute(self, caller: Caller, request: UvcRequest) -> UvcResponse:
        """Answer one UVC (uv-interface.md §1 check order, then the command's handler).

        Raises:
            NotificationIntercept: a guest UVC that the UV turns into intercept 108.
            ProgramInterrupt: a guest UVC whose target page the hypervisor must
                first make accessible (0x11 host DAT fault, 0x3e import, 0x3d
                stale page): SIE exits with it, and the guest re-executes the
                UVC once the host has handled it, as for any guest access
                (uv-semantics.md §3.2).
        """
        command = request.COMMAND
        response_type = RESPONSE_TYPES[command]
        rc = self.generic_rc(caller, command, request.length)
        if rc is not None:
            return response_type(cc=Cc.ERROR, rc=rc, rrc=0)
        try:
            return HANDLERS[command](self, caller, request)
        except UvcFailed as failed:
            return response_type(cc=Cc.ERROR, rc=failed.rc, rrc=failed.rrc, **failed.outputs)

    def execute_uvcb(
        self, caller: Caller, addr: int, *, problem_state: bool = False, instruction_bits: int = 0
    ) -> int:
        """Execute the UVC whose UVCB lies at ``addr``; return the cc.

        For the host ``addr`` is a host address; for a guest caller it is a
        guest absolute address, reached through the address space of the
        caller's configuration exactly as the guest's own accesses are
        (:func:`machine.guest_frame`). rc, rrc and outputs are written back
        into memory as the firmware does.

        Args:
            caller: who executes the UVC instruction.
            addr: where the UVCB starts.
            problem_state: the CPU is in problem state (PGM 0x02).
            instruction_bits: bits 16-23 of the UVC instruction (the M3 and
                M4 fields), which must be zero (PGM 0x06).

        Raises:
            ProgramInterrupt: in the order of uv-interface.md §1: 0x02 in
                problem state, 0x06 for nonzero instruction bits, 0x11 if the
                UVCB (its header ``len`` bytes, at least 8) cannot be read.
                A guest caller may also get the host-resolved exits of
                :meth:`execute` (0x11 below the end of guest memory on an
                unmapped page, 0x3e, 0x3d).
            NotificationIntercept: see :meth:`execute`.
        """
        if problem_state:
            raise ProgramInterrupt(PgmCode.PRIVILEGED_OPERATION)
        if instruction_bits:
            raise ProgramInterrupt(PgmCode.SPECIFICATION)
        view: UvcbView = guest_view(self, caller.config_handle) if caller.is_guest else HostView(self.memory)
        header = view.read(addr, HEADER_LEN)
        length = int.from_bytes(header[0:2], "big")
        block = view.read(addr, max(HEADER_LEN, length)) if length > HEADER_LEN else header
        try:
            command = UvcCommand(int.from_bytes(header[2:4], "big"))
        except ValueError:
            view.write(addr, write_rc(header, Rc.INV_CMD))
            return Cc.ERROR
        rc = self.generic_rc(caller, command, length)
        if rc is not None:
            response = RESPONSE_TYPES[command](cc=Cc.ERROR, rc=rc, rrc=0)
        else:
            response = self.execute(caller, parse_request(block))
        view.write(addr, response.write_back(block))
        return response.cc

    # ------------------------------------------------------------- resets
    def host_reset(self) -> None:
        """DIAG 308 subcode 1 on the host: the UV forgets everything (uv-interface.md §6).

        Every donation and every secure or shared guest page is zeroed and
        given back to the host; exported pages (ciphertext the host already
        holds) just stop being tracked. The UV is uninitialised afterwards, so
        host commands other than QUI and INIT_UV answer rc 0x0003 again.
        """
        memory = self.memory
        for frame in list(memory.frames()):
            if frame.state is FrameState.HOST:
                continue
            if frame.state is not FrameState.EXPORTED:
                frame.fill(None)
            memory.set_state(frame, FrameState.HOST)
        self.configs.clear()
        self.cpus.clear()
        self.base_storage = None
        self.initialized = False


def _register_handlers() -> None:
    # Importing the handler modules registers their commands.
    from . import _uv_conf, _uv_cpu, _uv_dump, _uv_guest, _uv_image, _uv_storage  # noqa: F401


__all__ = [
    "HANDLERS",
    "HOST",
    "Caller",
    "ConfigPhase",
    "NotificationIntercept",
    "SecureConfig",
    "Ultravisor",
    "fail",
    "handles",
    "ok",
    "partial",
]
