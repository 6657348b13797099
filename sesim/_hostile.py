"""The hostile hypervisor: everything it obtains, every defence it runs into, and the plaintext it got.

The seed's claim (issue 9) is that the hosting environment cannot observe
or modify a secure guest's memory or state. To test a claim of the form
"the host never sees plaintext", sesim gives the attacker a ledger:

* :meth:`HostileHost.obtain` records every byte string the hypervisor gets
  its hands on: host reads of guest and UV memory, the UVCBs it reads back
  after its calls (their outputs), SIE-block fields after an intercept,
  dumps, swap-device slots, attestation responses, whatever an accomplice
  guest reads;
* :meth:`HostileHost.expect` records each attack step with the defence that
  must stop it (a :class:`Defence`) and the defence that did fire;
* :class:`PlaintextScanner` counts how many bytes of the victim's known
  plaintext (its secret pages, register values, secrets) occur verbatim in
  what was obtained: every 16-byte chunk of a secret found anywhere, and
  every canary marker (:func:`actors._workload.canary`), counted once per
  byte of the obtained data they cover.

The host actions on a :class:`sesim.testbed.Testbed` (:meth:`HostileHost.read`,
:meth:`HostileHost.write`, :meth:`HostileHost.call`, :meth:`HostileHost.uvc_at`)
return the defence that fired, or ``None`` when the action went through,
and record whatever the host got.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from attrs import define, field, frozen

from machine import HOST, ProgramInterrupt, ValidityReason
from protocol import Cc, PgmCode, SesimInternalError, UvcRequest, UvcResponse, parse_response

if TYPE_CHECKING:
    from .testbed import Testbed

PAGE = 4096
CHUNK = 16
"""The unit of evidence: a 16-byte chunk of a secret found verbatim is 16 plaintext bytes."""
_ANCHOR = 8


# ------------------------------------------------------------------ defences
@frozen(kw_only=True)
class Defence:
    """A defence that fires (or must fire): one architected refusal or one named check.

    ``kind`` is ``"pgm"`` (a program interruption ``code``), ``"rc"`` (a UVC
    of ``command`` answered cc 1 with ``code`` and ``rrc``), ``"validity"``
    (SIE entry refused with reason ``code``), ``"intercept"`` (the UV turned
    the guest's instruction into intercept ``code``) or ``"check"`` (a check
    ``name``: a verification, or a property the attack observed).
    An expected defence with ``rrc`` None matches any rrc.
    """

    kind: str
    code: int = 0
    rrc: int | None = None
    command: str = ""
    name: str = ""

    @classmethod
    def pgm(cls, code: int) -> Defence:
        return cls(kind="pgm", code=int(code))

    @classmethod
    def rc(cls, command: Any, rc: int, rrc: int | None = None) -> Defence:
        return cls(kind="rc", command=getattr(command, "name", str(command)), code=int(rc),
                   rrc=None if rrc is None else int(rrc))  # fmt: skip

    @classmethod
    def validity(cls, reason: int) -> Defence:
        return cls(kind="validity", code=int(reason))

    @classmethod
    def intercept(cls, code: int) -> Defence:
        return cls(kind="intercept", code=int(code))

    @classmethod
    def check(cls, name: str) -> Defence:
        return cls(kind="check", name=name)

    @property
    def label(self) -> str:
        """How the table shows it: ``PGM 0x3d``, ``CONV_TO_SEC_STOR rc 0x0107``, ``validity 0x2005``."""
        if self.kind == "pgm":
            try:
                name = PgmCode(self.code).name
            except ValueError:
                name = "?"
            return f"PGM {self.code:#04x} {name}"
        if self.kind == "rc":
            rrc = "" if not self.rrc else f" rrc {self.rrc:#06x}"
            return f"{self.command} rc {self.code:#06x}{rrc}"
        if self.kind == "validity":
            try:
                name = ValidityReason(self.code).name
            except ValueError:
                name = "?"
            return f"validity {self.code:#06x} {name}"
        if self.kind == "intercept":
            return f"intercept {self.code}"
        return f"check {self.name}"

    def matches(self, fired: Defence | None) -> bool:
        """Whether ``fired`` is this (expected) defence."""
        if fired is None or fired.kind != self.kind:
            return False
        if self.kind == "check":
            return fired.name == self.name
        if self.command and fired.command != self.command:
            return False
        return fired.code == self.code and (self.rrc is None or fired.rrc == self.rrc)


@frozen(kw_only=True)
class Attempt:
    """One attack step: what must stop it, and what did."""

    step: str
    expected: Defence
    fired: Defence | None

    @property
    def stopped(self) -> bool:
        return self.expected.matches(self.fired)

    @property
    def problem(self) -> str:
        if self.stopped:
            return ""
        got = "nothing: it went through" if self.fired is None else self.fired.label
        return f"{self.step}: expected {self.expected.label}, got {got}"


@frozen(kw_only=True)
class Obtained:
    """A byte string the hypervisor got, and from where."""

    source: str
    data: bytes = field(repr=lambda v: f"<{len(v)} bytes>")


# ------------------------------------------------------------------ scanning
class PlaintextScanner:
    """Counts bytes of known plaintext in data the hypervisor obtained.

    Args:
        secrets: the victim's plaintexts (pages, register files, secret
            values). Each is cut into 16-byte chunks at multiples of 16; a
            chunk of at most two distinct byte values (zeros, fill) is no
            evidence and is left out.
        markers: byte strings that are plaintext wherever they occur (the
            guest's canary).

    A chunk is found at any offset of the data: the data is probed every 8
    bytes with an index of every 8-byte window of every chunk, and each hit
    is confirmed by comparing the whole chunk. The count is the number of
    bytes of the data that found chunks and markers cover.
    """

    def __init__(self, secrets: Iterable[bytes], markers: Iterable[bytes] = ()) -> None:
        index: dict[bytes, list[tuple[bytes, int]]] = {}
        for secret in secrets:
            for at in range(0, len(secret) - CHUNK + 1, CHUNK):
                chunk = bytes(secret[at : at + CHUNK])
                if len(set(chunk)) <= 2:
                    continue
                for k in range(CHUNK - _ANCHOR + 1):
                    entries = index.setdefault(chunk[k : k + _ANCHOR], [])
                    if (chunk, k) not in entries:
                        entries.append((chunk, k))
        self._index = index
        self.markers = tuple(bytes(m) for m in markers if m)

    def spans(self, data: bytes) -> list[tuple[int, int]]:
        """(start, end) of every plaintext piece found in ``data``, merged."""
        if not data or data.count(0) == len(data):
            return []
        found: list[tuple[int, int]] = []
        index = self._index
        if index:
            for i in range(0, len(data) - _ANCHOR + 1, _ANCHOR):
                candidates = index.get(data[i : i + _ANCHOR])
                if candidates is None:
                    continue
                for chunk, k in candidates:
                    start = i - k
                    if start >= 0 and data[start : start + CHUNK] == chunk:
                        found.append((start, start + CHUNK))
        for marker in self.markers:
            at = data.find(marker)
            while at >= 0:
                found.append((at, at + len(marker)))
                at = data.find(marker, at + 1)
        found.sort()
        merged: list[tuple[int, int]] = []
        for start, end in found:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def count(self, data: bytes) -> int:
        """Plaintext bytes in ``data``."""
        return sum(end - start for start, end in self.spans(data))


@frozen(kw_only=True)
class LeakReport:
    """What the scanner found in everything the hypervisor obtained."""

    obtained_bytes: int
    plaintext_bytes: int
    sources: tuple[tuple[str, int], ...]
    """(source, plaintext bytes) of every obtained item with plaintext in it."""


# ------------------------------------------------------------------ the host
@define(kw_only=True, eq=False)
class HostileHost:
    """A hypervisor that tries everything and keeps everything it gets.

    Args:
        testbed: the server it drives for testbed attacks (``None`` for
            attacks on the actor system, which feed :meth:`obtain` directly).
    """

    testbed: Testbed | None = None
    loot: list[Obtained] = field(factory=list)
    obtained_bytes: int = 0
    attempts: list[Attempt] = field(factory=list)
    fired: list[Defence] = field(factory=list)
    _scratch: int = 0

    # ------------------------------------------------------------ ledger
    def obtain(self, source: str, data: bytes) -> bytes:
        """Record ``data`` as obtained by the hypervisor (all-zero data is counted, not kept)."""
        data = bytes(data)
        self.obtained_bytes += len(data)
        if data and data.count(0) != len(data):
            self.loot.append(Obtained(source=source, data=data))
        return data

    def saw(self, defence: Defence | None) -> Defence | None:
        """Record a defence that fired (each distinct one once); returns it."""
        if defence is not None and defence not in self.fired:
            self.fired.append(defence)
        return defence

    def expect(self, step: str, expected: Defence, fired: Defence | None) -> bool:
        """Record one attack step that ``expected`` must stop; True if it did."""
        attempt = Attempt(step=step, expected=expected, fired=fired)
        self.attempts.append(attempt)
        self.saw(fired)
        return attempt.stopped

    def leaks(self, scanner: PlaintextScanner) -> LeakReport:
        """Scan everything obtained for the victim's plaintext."""
        sources = []
        total = 0
        for item in self.loot:
            n = scanner.count(item.data)
            if n:
                sources.append((item.source, n))
                total += n
        return LeakReport(obtained_bytes=self.obtained_bytes, plaintext_bytes=total, sources=tuple(sources))

    # ------------------------------------------------- host actions on a testbed
    @property
    def tb(self) -> Testbed:
        assert self.testbed is not None, "a testbed attack needs a testbed"
        return self.testbed

    def read(self, addr: int, n: int, source: str = "") -> tuple[bytes | None, Defence | None]:
        """A host read; (the bytes, None) or (None, the program interruption that stopped it)."""
        try:
            data = self.tb.read(addr, n)
        except ProgramInterrupt as pgm:
            return None, self.saw(Defence.pgm(pgm.code))
        return self.obtain(source or f"host read {addr:#x}+{n:#x}", data), None

    def write(self, addr: int, data: bytes) -> Defence | None:
        """A host write; None if it went through, else the program interruption."""
        try:
            self.tb.write(addr, data)
        except ProgramInterrupt as pgm:
            return self.saw(Defence.pgm(pgm.code))
        return None

    def call(self, request: UvcRequest) -> tuple[UvcResponse, Defence | None]:
        """A host UVC through a UVCB in host memory; the block read back afterwards is obtained.

        Returns the response and, for cc 1, the rc as a :class:`Defence`.
        """
        tb = self.tb
        if not self._scratch:
            self._scratch = tb.alloc(PAGE)
        block = request.pack()
        tb.write(self._scratch, block)
        cc = tb.uv.execute_uvcb(HOST, self._scratch)
        after = self.obtain(f"UVCB {request.COMMAND.name} after the call", tb.read(self._scratch, len(block)))
        response = parse_response(after, cc=cc)
        if cc == Cc.ERROR:
            return response, self.saw(Defence.rc(request.COMMAND, response.rc, response.rrc))
        return response, None

    def ok(self, request: UvcRequest) -> UvcResponse:
        """A host UVC that must succeed (a setup step of an attack)."""
        response, _ = self.call(request)
        if response.cc != Cc.OK:
            raise SesimInternalError(
                f"attack setup: {request.COMMAND.name} answered cc {int(response.cc)} rc {response.rc:#06x}"
            )
        return response

    def uvc_at(self, addr: int) -> Defence | None:
        """The UVC instruction on a UVCB the host placed at ``addr`` (anywhere it likes)."""
        try:
            cc = self.tb.uv.execute_uvcb(HOST, addr)
        except ProgramInterrupt as pgm:
            return self.saw(Defence.pgm(pgm.code))
        if cc == Cc.ERROR:
            try:
                rc = int.from_bytes(self.tb.read(addr + 4, 2), "big")
            except ProgramInterrupt:
                rc = 0
            return self.saw(Defence.rc("UVC", rc))
        return None
