"""A testbed guest attests itself and uses its secret store, as ``pvattest``/``pvsecret`` would.

Each function does inside a :class:`~sesim.testbed.SecureGuest` what the
guest's ``/dev/uv`` driver does (uv-semantics.md §6, ``uvdevice.c``): it
copies the request into guest memory, writes the UVCB there, issues the UVC
in guest context and reads the results back. The layouts and UVCBs come from
the pure helpers of :mod:`protocol` (``AttestationLayout``,
``attestation_response``), which the actors' guests can use the same way.

By default the buffers go into the last pages of guest memory, above any
image; ``base`` puts them elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import (
    AttestationLayout,
    ExchangeRequest,
    ExchangeResponse,
    Rc,
    SecretEntry,
    SecretList,
    SesimError,
    UvcCommand,
    UvcRequest,
    attestation_response,
)
from protocol._guest_calls import add_secret_uvcb, list_secrets_uvcb, retr_secret_uvcb
from protocol._guest_rcs import guest_rc_text
from protocol._secrets import LIST_PAGE_LEN, RETRIEVE_MAX
from protocol._uvcb_guest import LockSecretsRequest

if TYPE_CHECKING:
    from ._testbed_guest import SecureGuest

PAGE = 4096


class GuestCallFailed(SesimError):
    """A guest UVC answered cc 1 (``command``, ``rc``, ``rrc`` say how)."""

    def __init__(self, command: UvcCommand, rc: int, rrc: int = 0) -> None:
        text = guest_rc_text(command, rc, rrc)
        super().__init__(f"{command.name} failed: rc {rc:#06x} rrc {rrc:#06x}" + (f" ({text})" if text else ""))
        self.command = command
        self.rc = rc
        self.rrc = rrc


def _pages(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


def _top(guest: SecureGuest, size: int) -> int:
    return (guest.memory_size - _pages(size)) // PAGE * PAGE


async def _call(guest: SecureGuest, request: UvcRequest, at: int) -> tuple[int, bytes]:
    """Write ``request`` at guest address ``at``, execute it, return (cc, the block afterwards)."""
    block = request.pack()
    guest.write(at, block)
    cc = await guest.uvc(at)
    return cc, guest.read(at, len(block))


def _check(command: UvcCommand, cc: int, block: bytes, *, accept: tuple[int, ...] = ()) -> int:
    rc = int.from_bytes(block[4:6], "big")
    if cc != 0 and rc not in accept:
        raise GuestCallFailed(command, rc, int.from_bytes(block[6:8], "big"))
    return rc


async def attest(
    guest: SecureGuest, request: ExchangeRequest, *, user_data: bytes | None = None, base: int | None = None
) -> ExchangeResponse:
    """Perform ``request`` (RETR_ATTEST) inside ``guest``; the response ``pvattest perform`` writes.

    Raises:
        GuestCallFailed: the ultravisor refused it (rc 0x010c: the request
            was not made for this server's host key; see uv-interface.md §4).
    """
    size = AttestationLayout.size_for(request)
    layout = AttestationLayout.at(_top(guest, size) if base is None else base, request)
    guest.write(layout.arcb, request.arcb)
    cc, block = await _call(guest, layout.uvcb_request(request, user_data), layout.uvcb)
    _check(UvcCommand.RETR_ATTEST, cc, block)
    add_len = int.from_bytes(block[0x15C:0x160], "big")
    return attestation_response(
        request, measurement=guest.read(layout.measurement, request.measurement_size),
        additional=guest.read(layout.additional, add_len) if add_len else b"",
        cuid=block[0x148:0x158], user_data=user_data,
    )  # fmt: skip


async def add_secret(guest: SecureGuest, asrcb: bytes, *, base: int | None = None) -> None:
    """ADD_SECRET of the request ``asrcb`` (``pvsecret add``)."""
    at = _top(guest, PAGE + len(asrcb)) if base is None else base
    guest.write(at + PAGE, asrcb)
    cc, block = await _call(guest, add_secret_uvcb(at + PAGE), at)
    _check(UvcCommand.ADD_SECRET, cc, block)


async def lock_secrets(guest: SecureGuest, *, base: int | None = None) -> None:
    """LOCK_SECRETS (``pvsecret lock``)."""
    at = _top(guest, PAGE) if base is None else base
    cc, block = await _call(guest, LockSecretsRequest(), at)
    _check(UvcCommand.LOCK_SECRETS, cc, block)


async def list_secrets(guest: SecureGuest, *, base: int | None = None) -> list[SecretEntry]:
    """Every listed secret, page after page while the UV answers rc 0x0100 (Linux ``uv_find_secret``)."""
    at = _top(guest, PAGE + LIST_PAGE_LEN) if base is None else base
    entries: list[SecretEntry] = []
    start = 0
    while True:
        cc, block = await _call(guest, list_secrets_uvcb(at + PAGE, start), at)
        rc = _check(UvcCommand.LIST_SECRETS, cc, block, accept=(Rc.MORE_DATA,))
        page = SecretList.parse(guest.read(at + PAGE, LIST_PAGE_LEN))
        entries.extend(page.entries)
        if rc != Rc.MORE_DATA:
            return entries
        start = page.next_index


async def retrieve_secret(
    guest: SecureGuest, index: int, size: int = RETRIEVE_MAX, *, base: int | None = None
) -> bytes:
    """RETR_SECRET of secret ``index`` into a ``size``-byte buffer; the bytes the UV wrote.

    The length comes from the list (``pvsecret retrieve``); with the default
    size the whole buffer is returned, trailing bytes zero.
    """
    at = _top(guest, PAGE + size) if base is None else base
    guest.write(at + PAGE, bytes(size))
    cc, block = await _call(guest, retr_secret_uvcb(index, at + PAGE, size), at)
    _check(UvcCommand.RETR_SECRET, cc, block)
    return guest.read(at + PAGE, size)
