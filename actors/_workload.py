"""The guest workload language, and the self-checking page format guests write.

A workload is a list of operations, one a string, written per guest in the
run configuration. The guest hands them to its vCPUs in order (an idle vCPU
takes the next one; two operations on the same page never overlap, unless
both are reads):

==========================  ===================================================
``write ADDR [pages=N]``    write N pages from guest address ADDR (a new
                            version of each, with checksum and canary)
``read ADDR [pages=N]``     read N pages and check them against what this
                            guest last wrote there (never-written pages must
                            read as zeros)
``compute NS``              compute for NS nanoseconds of virtual time
``diag500 [queue=Q] [fn=F]``  DIAG 0x500: virtio notification (intercept 104);
                            a function code F other than 3 is answered with a
                            specification exception
``diag288 [fn=F] [timeout=S]``  DIAG 0x288: the watchdog (intercept 104); an
                            invalid function or a timeout below 15 s is a
                            specification exception
``diag9c [cpu=C]``          DIAG 0x9c: yield to CPU C (intercept 108)
``diag44``                  DIAG 0x44: voluntary time-slice end (intercept 108)
``reboot clear|normal``     DIAG 308 subcode 0 (modified clear) or 1 (load
                            normal): the guest stores its restart PSW at
                            absolute 0 and resets; it stays secure, its memory
                            is kept, and it boots again at that PSW
``reboot reipl``            DIAG 308 subcode 3: re-IPL, through non-secure mode
                            (the configuration is torn down and a new one is
                            built from the image; memory contents are lost)
``spx ADDR``                SET PREFIX to ADDR (intercept 108, prefix in the SIDA)
``share ADDR``              SET_SHARED_ACCESS on the page at ADDR
``unshare ADDR``            REMOVE_SHARED_ACCESS on the page at ADDR
``uvc qui``                 a QUI from inside the guest
``attest [user=TEXT]``      RETR_ATTEST of the owner's request; the owner checks
                            the measurement (secure guests)
``secret NAME``             ADD_SECRET of the owner's request for NAME, then
                            LIST_SECRETS and RETR_SECRET; the guest checks the value
``io-write BLOCK ADDR [pages=N]``  write N private pages to the virtio block
                            device from block BLOCK on, through shared bounce
                            buffers (encrypted with the guest's disk key)
``io-read BLOCK ADDR [pages=N]``   read N blocks back into private memory at
                            ADDR and check them against what was written
``net-send ADDR [pages=N]`` send N pages on the virtio network device
                            (encrypted with the guest's network key)
``halt``                    stop: the guest is done
==========================  ===================================================

Numbers may be decimal or 0x-hex. Addresses are guest absolute addresses and
must be page aligned.

Every page a guest writes carries a header and a checksum, so that any
corruption (by the hypervisor, a lost export/import, a replayed page) is
detected when the guest reads it back::

    0x000  "SESIMPG1"           magic
    0x008  owner tag (8)        first 8 bytes of SHA-256(guest name)
    0x010  gaddr (BE u64)       the page's own guest address
    0x018  version (BE u64)     how many times this guest wrote this page
    0x020  canary (32)          "\\xcaSESIM-CANARY:" + owner tag, padded: a
                                secret marker that a host must never read
    0x040  payload              SHA-256 stream of (tag, gaddr, version)
    0xFE0  SHA-256 of 0x000..0xFDF
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import frozen

from protocol import UsageError

PAGE: Final = 4096
MAGIC: Final = b"SESIMPG1"
CHECK_AT: Final = PAGE - 32


@frozen(kw_only=True)
class Write:
    addr: int
    pages: int = 1


@frozen(kw_only=True)
class Read:
    addr: int
    pages: int = 1


@frozen(kw_only=True)
class Compute:
    ns: int


@frozen(kw_only=True)
class Diag500:
    queue: int = 0
    fn: int = 3  # KVM_S390_VIRTIO_CCW_NOTIFY


@frozen(kw_only=True)
class Diag288:
    fn: int = 0  # WDT_DIAG288_INIT
    timeout: int = 30


@frozen(kw_only=True)
class Diag44:
    pass


REBOOT_SUBCODES = {"clear": 0, "normal": 1, "reipl": 3}
"""DIAG 308 subcodes of ``reboot KIND``."""


@frozen(kw_only=True)
class Reboot:
    kind: str = "normal"

    @property
    def subcode(self) -> int:
        return REBOOT_SUBCODES[self.kind]


@frozen(kw_only=True)
class Diag9c:
    cpu: int = 0


@frozen(kw_only=True)
class SetPrefix:
    addr: int


@frozen(kw_only=True)
class Share:
    addr: int


@frozen(kw_only=True)
class Unshare:
    addr: int


@frozen(kw_only=True)
class GuestQui:
    pass


@frozen(kw_only=True)
class IoWrite:
    block: int
    addr: int
    pages: int = 1


@frozen(kw_only=True)
class IoRead:
    block: int
    addr: int
    pages: int = 1


@frozen(kw_only=True)
class NetSend:
    addr: int
    pages: int = 1


@frozen(kw_only=True)
class Attest:
    """RETR_ATTEST of the owner's attestation request (actors._guest_attest)."""

    user: str = ""


@frozen(kw_only=True)
class ReceiveSecret:
    """ADD_SECRET of the owner's request for secret ``name``, then retrieve and use it."""

    name: str


@frozen(kw_only=True)
class Halt:
    pass


@frozen(kw_only=True)
class Stage3b:
    """Internal, not part of the language: the stage3b loader's work after the secure IPL."""


@frozen(kw_only=True)
class SigpStart:
    """Internal, not part of the language: SIGP START of CPU ``cpu`` (a reboot restarts the others)."""

    cpu: int


Op = (
    Write | Read | Compute | Diag500 | Diag288 | Diag9c | Diag44 | SetPrefix | Share | Unshare | GuestQui | Reboot
    | IoWrite | IoRead | NetSend | Attest | ReceiveSecret | Halt
)


def _int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def _addr(text: str, what: str) -> int:
    value = _int(text, what)
    if value < 0 or value % PAGE:
        raise UsageError(f"{what}: address {text} must be a non-negative multiple of 4096")
    return value


def parse_op(text: str) -> Op:
    """One operation from its text form.

    Raises:
        UsageError: the text is not an operation of the language.
    """
    words = text.split()
    if not words:
        raise UsageError("empty workload operation")
    name, args = words[0].lower(), words[1:]
    positional = [a for a in args if "=" not in a]
    options = dict(a.split("=", 1) for a in args if "=" in a)
    where = f"workload operation {text!r}"

    def need(n: int) -> list[str]:
        if len(positional) != n:
            raise UsageError(f"{where}: expected {n} argument(s), got {len(positional)}")
        return positional

    def only(*allowed: str) -> None:
        extra = set(options) - set(allowed)
        if extra:
            raise UsageError(f"{where}: unknown option {sorted(extra)[0]!r}")

    if name in ("write", "read"):
        (addr,) = need(1)
        only("pages")
        pages = _int(options.get("pages", "1"), where)
        if pages < 1:
            raise UsageError(f"{where}: pages must be at least 1")
        cls = Write if name == "write" else Read
        return cls(addr=_addr(addr, where), pages=pages)
    if name == "compute":
        (ns,) = need(1)
        only()
        value = _int(ns, where)
        if value < 0:
            raise UsageError(f"{where}: time must not be negative")
        return Compute(ns=value)
    if name == "diag500":
        need(0)
        only("queue", "fn")
        return Diag500(queue=_int(options.get("queue", "0"), where), fn=_int(options.get("fn", "3"), where))
    if name == "diag288":
        need(0)
        only("fn", "timeout")
        return Diag288(fn=_int(options.get("fn", "0"), where), timeout=_int(options.get("timeout", "30"), where))
    if name == "diag44":
        need(0)
        only()
        return Diag44()
    if name == "reboot":
        (kind,) = need(1)
        only()
        if kind.lower() not in REBOOT_SUBCODES:
            raise UsageError(f"{where}: reboot takes {', '.join(REBOOT_SUBCODES)}, not {kind!r}")
        return Reboot(kind=kind.lower())
    if name == "diag9c":
        need(0)
        only("cpu")
        return Diag9c(cpu=_int(options.get("cpu", "0"), where))
    if name == "spx":
        (addr,) = need(1)
        only()
        return SetPrefix(addr=_addr(addr, where))
    if name in ("share", "unshare"):
        (addr,) = need(1)
        only()
        return (Share if name == "share" else Unshare)(addr=_addr(addr, where))
    if name == "uvc":
        (what,) = need(1)
        only()
        if what.lower() != "qui":
            raise UsageError(f"{where}: only 'uvc qui' is supported from a workload")
        return GuestQui()
    if name == "halt":
        need(0)
        only()
        return Halt()
    if name == "attest":
        need(0)
        only("user")
        user = options.get("user", "")
        if len(user.encode()) > 256:
            raise UsageError(f"{where}: user data is at most 256 bytes")
        return Attest(user=user)
    if name == "secret":
        (secret_name,) = need(1)
        only()
        return ReceiveSecret(name=secret_name)
    if name in ("io-write", "io-read", "net-send"):
        only("pages")
        pages = _int(options.get("pages", "1"), where)
        if not 1 <= pages <= 4096:
            raise UsageError(f"{where}: pages must be 1..4096")
        if name == "net-send":
            (addr,) = need(1)
            return NetSend(addr=_addr(addr, where), pages=pages)
        block, addr = need(2)
        first = _int(block, where)
        if first < 0 or first + pages > 1 << 32:
            raise UsageError(f"{where}: block numbers must stay in 0..2**32-1")
        cls = IoWrite if name == "io-write" else IoRead
        return cls(block=first, addr=_addr(addr, where), pages=pages)
    raise UsageError(f"{where}: unknown operation {name!r}")


def parse_workload(lines: Iterable[str]) -> tuple[Op, ...]:
    """A whole workload; an implicit ``halt`` ends it if it has none."""
    ops = [parse_op(line) for line in lines]
    if not ops or not isinstance(ops[-1], Halt):
        ops.append(Halt())
    return tuple(ops)


def pages_of(op: Op) -> Sequence[int]:
    """Guest frame numbers the operation touches (for the no-overlap rule)."""
    if isinstance(op, Write | Read | IoWrite | IoRead | NetSend):
        first = op.addr // PAGE
        return range(first, first + op.pages)
    if isinstance(op, SetPrefix):
        return (op.addr // PAGE, op.addr // PAGE + 1)
    if isinstance(op, Share | Unshare):
        return (op.addr // PAGE,)
    return ()


# ------------------------------------------------------------- page format
def owner_tag(guest: str) -> bytes:
    return hashlib.sha256(guest.encode()).digest()[:8]


def canary(guest: str) -> bytes:
    """The secret marker in every page ``guest`` writes; no host read may ever see it."""
    return (b"\xcaSESIM-CANARY:" + owner_tag(guest)).ljust(32, b"\xca")


def make_page(guest: str, gaddr: int, version: int) -> bytes:
    """The content ``guest`` writes at ``gaddr`` for ``version``."""
    tag = owner_tag(guest)
    head = MAGIC + tag + gaddr.to_bytes(8, "big") + version.to_bytes(8, "big") + canary(guest)
    seed = hashlib.sha256(head).digest()
    body = (seed * ((CHECK_AT - len(head)) // 32 + 1))[: CHECK_AT - len(head)]
    data = head + body
    return data + hashlib.sha256(data).digest()


def check_page(guest: str, gaddr: int, expected_version: int, data: bytes) -> str:
    """Why ``data`` is not what ``guest`` last wrote at ``gaddr`` (empty if it is)."""
    if expected_version == 0:
        return "" if data == bytes(PAGE) else "a page never written does not read as zeros"
    if data[:8] != MAGIC:
        return "page header lost"
    if hashlib.sha256(data[:CHECK_AT]).digest() != data[CHECK_AT:]:
        return "checksum mismatch"
    if data[8:16] != owner_tag(guest):
        return "page belongs to another guest"
    if int.from_bytes(data[16:24], "big") != gaddr:
        return "page moved from another address"
    version = int.from_bytes(data[24:32], "big")
    if version != expected_version:
        return f"stale page: version {version}, expected {expected_version}"
    return ""
