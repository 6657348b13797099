"""The typed messages that actors exchange besides UVC requests and responses.

A UVC travels as :class:`Uvc` (who calls, and the typed request from
:mod:`protocol`); the ultravisor answers with the typed response itself, or
with :class:`Intercept108` when a guest call becomes a notification
intercept. Everything is a frozen attrs class, so a trace can show it field
by field.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen

from machine import Caller


@frozen(kw_only=True)
class Uvc:
    """A UVC instruction: the caller's context and the request block."""

    caller: Caller
    request: Any


@frozen(kw_only=True)
class Intercept108:
    """The UV turned a guest UVC into notification intercept 108 (uv-semantics.md §4)."""

    reason: str


@frozen(kw_only=True)
class GuestException:
    """A guest UVC took a program interruption (the UVCB or its page was not accessible)."""

    code: int
    address: int | None = None


@frozen(kw_only=True)
class Start:
    """Begin your work (sent once to the hypervisor by the LPAR)."""


@frozen(kw_only=True)
class Shutdown:
    """Finish and exit."""


@frozen(kw_only=True)
class RunOp:
    """Guest → vCPU: execute one guest operation inside SIE."""

    seq: int
    op: Any


@frozen(kw_only=True)
class OpDone:
    """vCPU → guest: the operation finished (``error`` empty) or could not run."""

    seq: int
    cpu: int
    ok: bool
    value: Any = None
    error: str = ""


@frozen(kw_only=True)
class Diag308:
    """vCPU → hypervisor (QEMU): the guest issued DIAG 308 with this subcode."""

    guest: str
    cpu: int
    subcode: int
    ipib_addr: int = 0


@frozen(kw_only=True)
class Diag308Result:
    """Hypervisor → vCPU: what the guest sees after its DIAG 308 (rc 0x0001 ok)."""

    rc: int
    secure: bool
    detail: str = ""


@frozen(kw_only=True)
class GuestHalted:
    """vCPU → hypervisor: the guest entered a disabled wait (it is done)."""

    guest: str
    reason: str


@frozen(kw_only=True)
class VirtioNotify:
    """vCPU → hypervisor: DIAG 0x500 from the guest, a virtio queue notification."""

    guest: str
    queue: int


@frozen(kw_only=True)
class Ack:
    """A plain acknowledgement of a call."""

    detail: str = ""
