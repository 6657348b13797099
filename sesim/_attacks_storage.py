"""Attacks on the guest's storage from outside its life: destroys, unsharing, resets, the UV as a deputy.

uv-semantics.md §2.5, §3.6, §4; uv-interface.md §4, §6. Testbed attacks, as
in :mod:`sesim._attacks_memory`; a control scenario that leaks on purpose.
"""

from __future__ import annotations

from machine import FrameState
from protocol import (
    ConvFromSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    DestroySecConfFastRequest,
    DestroySecConfRequest,
    DestroySecCpuRequest,
    DestrSecStorRequest,
    PinPageSharedRequest,
    RemoveSharedAccessRequest,
    SetSecConfParamsRequest,
    SetSharedAccessRequest,
    UnpinPageSharedRequest,
    UvcCommand,
)

from ._attacks_arena import PAGE, SECRET_PAGES, Arena, Victim
from ._attacks_base import attack
from ._attacks_memory import PGM_3D
from ._attacks_rigs import HostileBoot
from ._hostile import Defence


@attack(
    "destroy-running-page", area="memory", title="DESTR_SEC_STOR a running guest's page",
    defence="only a configuration without CPUs may lose pages: rc 0x0102", expected=(
        Defence.rc(UvcCommand.DESTR_SEC_STOR, 0x0102),),
)  # fmt: skip
async def destroy_running_page(a: Arena) -> None:
    """DESTR_SEC_STOR on the frame of each secret page while the victim runs."""
    v = await a.victim()
    for gaddr in v.pages:
        fired = a.host.call(DestrSecStorRequest(paddr=a.frame(v, gaddr)))[1]
        a.host.expect(f"destroy guest page {gaddr:#x}", Defence.rc(UvcCommand.DESTR_SEC_STOR, 0x0102), fired)


@attack(
    "read-after-unshare", area="memory", title="keep reading a page after the guest unshared it",
    defence="REMOVE_SHARED on a pinned page is intercept 108 until the host unpins; then the page is secure "
            "(PGM 0x3d, PIN_PAGE_SHARED rc 0x0103)",
    expected=(Defence.intercept(108), PGM_3D, Defence.rc(UvcCommand.PIN_PAGE_SHARED, 0x0103)),
)  # fmt: skip
async def read_after_unshare(a: Arena) -> None:
    """The victim shares a page and puts a public message there; the host pins it. The victim
    unshares it: the host holds back the unpin, then gives in. The victim writes a secret into
    the page. The host reads it, pins it again, and reads once more."""
    v = await a.victim(pages=())
    gaddr = 0xC4000
    assert v.guest is not None
    await a.guest_uvc(v, SetSharedAccessRequest(paddr=gaddr))
    v.guest.write(gaddr, b"public: a bounce buffer".ljust(PAGE, b" "))
    frame = a.frame(v, gaddr)
    a.host.read(frame, PAGE, "the shared page")
    a.host.ok(PinPageSharedRequest(paddr=frame))
    fired = a.guest_uvc_raw(v, RemoveSharedAccessRequest(paddr=gaddr))
    a.host.expect("the victim unshares the pinned page", Defence.intercept(108), fired)
    a.host.read(frame, PAGE, "the page still shared (the victim waits)")
    a.host.ok(UnpinPageSharedRequest(guest_handle=v.guest.config_handle, gaddr=gaddr))
    assert await a.guest_uvc(v, RemoveSharedAccessRequest(paddr=gaddr)) is None
    a.write_secret(v, gaddr)
    _, fired = a.host.read(frame, PAGE, "the unshared page")
    a.host.expect("host reads the page after unshare", PGM_3D, fired)
    fired = a.host.call(PinPageSharedRequest(paddr=frame))[1]
    a.host.expect("host pins the page after unshare", Defence.rc(UvcCommand.PIN_PAGE_SHARED, 0x0103), fired)


# ------------------------------------------------------------------ resets and destroys
def _frames_of(v: Victim) -> list[int]:
    assert v.guest is not None
    frames = [pfn << 12 for _, pfn in v.guest.space.mappings()]
    for origin, length in v.guest.donations.values():
        frames += range(origin, origin + length, PAGE)
    return frames


def _owned(a: Arena, frames: list[int]) -> list[int]:
    """The frames that are UV or guest storage now (donated, secure or shared): what a reset must clear."""
    return [f for f in frames if a.tb.memory.state_of(f >> 12) is not FrameState.HOST]


def _cleared(a: Arena, frames: list[int], what: str) -> bool:
    """Read every frame (each read is obtained); whether all of them read as zeros."""
    clear = True
    for addr in frames:
        data, _ = a.host.read(addr, PAGE, f"{what} frame {addr:#x}")
        clear = clear and data is not None and data.count(0) == PAGE
    return clear


@attack(
    "host-reset-steal", area="memory", title="reset the host to get donated and secure memory back with contents",
    defence="a host reset gives every donation and secure page back zeroed",
    expected=(Defence.check("cleared-on-reset"),),
)  # fmt: skip
async def host_reset_steal(a: Arena) -> None:
    """DIAG 308 subcode 1 on the host while the victim runs (secret pages, registers), then read
    INIT_UV's storage, the victim's donations and every frame of its memory."""
    v = await a.victim(registers=True)
    assert a.tb.uv.base_storage is not None
    origin, length = a.tb.uv.base_storage
    frames = _owned(a, _frames_of(v) + list(range(origin, origin + length, PAGE)))
    await a.tb.host_reset()
    v.stop("gone: the host reset it (the UV forgot the configuration)")
    clear = _cleared(a, frames, "after the reset:")
    a.host.expect("read everything the UV had", Defence.check("cleared-on-reset"),
                  Defence.check("cleared-on-reset") if clear else None)  # fmt: skip


@attack(
    "destroy-then-read", area="memory", title="destroy a running guest and read what it left",
    defence="DESTROY_SEC_CONF refuses while CPUs exist (rc 0x0102), then clears every page; "
            "after the FAST variant the pages stay secure (PGM 0x3d) until destroyed or exported, which clears them",
    expected=(Defence.rc(UvcCommand.DESTROY_SEC_CONF, 0x0102), Defence.check("cleared-on-destroy"), PGM_3D),
)  # fmt: skip
async def destroy_then_read(a: Arena) -> None:
    """Victim A: DESTROY_SEC_CONF while its CPU exists; then DESTROY_SEC_CPU, DESTROY_SEC_CONF, read
    all its frames. Victim B: DESTROY_SEC_CPU, DESTROY_SEC_CONF_FAST, read its secret frames, export
    them, read again."""
    v = await a.victim("victim")
    w = await a.victim("victim-b")
    assert v.guest is not None and w.guest is not None
    fired = a.host.call(DestroySecConfRequest(handle=v.guest.config_handle))[1]
    a.host.expect("destroy the running configuration", Defence.rc(UvcCommand.DESTROY_SEC_CONF, 0x0102), fired)
    frames = _owned(a, _frames_of(v))
    a.host.ok(CpuSetStateRequest(cpu_handle=v.guest.cpu_handles[0], state=CpuState.STP))
    a.host.ok(DestroySecCpuRequest(handle=v.guest.cpu_handles[0]))
    a.host.ok(DestroySecConfRequest(handle=v.guest.config_handle))
    v.stop("gone: destroyed by the host")
    clear = _cleared(a, frames, "destroyed guest")
    a.host.expect("read every frame the destroyed guest had", Defence.check("cleared-on-destroy"),
                  Defence.check("cleared-on-destroy") if clear else None)  # fmt: skip
    a.host.ok(DestroySecCpuRequest(handle=w.guest.cpu_handles[0]))
    a.host.ok(DestroySecConfFastRequest(handle=w.guest.config_handle))
    w.stop("gone: destroyed by the host")
    for gaddr in w.pages:
        frame = a.frame(w, gaddr)
        _, fired = a.host.read(frame, PAGE, f"fast-destroyed guest page {gaddr:#x}")
        a.host.expect(f"read fast-destroyed page {gaddr:#x}", PGM_3D, fired)
        a.host.ok(ConvFromSecStorRequest(paddr=frame))
        data, _ = a.host.read(frame, PAGE, f"exported fast-destroyed page {gaddr:#x}")
        a.host.expect(
            f"export and read fast-destroyed page {gaddr:#x}",
            Defence.check("cleared-on-destroy"),
            Defence.check("cleared-on-destroy") if data is not None and data.count(0) == PAGE else None,
        )


@attack(
    "uv-as-confused-deputy", area="memory", title="make the UV read or write secure memory for the host",
    defence="a UVCB on secure or donated storage takes PGM 0x3d; an SE header there answers rc 0x0103",
    expected=(PGM_3D, Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x0103)),
)  # fmt: skip
async def uv_as_confused_deputy(a: Arena) -> None:
    """Issue a UVC whose UVCB address is a secret page of the victim (the UV would write its answer
    there), and one in the UV's own storage; then give a new configuration a secret page of the
    victim as its SE header (the UV would parse the guest's plaintext)."""
    v = await a.victim()
    assert v.guest is not None and a.tb.uv.base_storage is not None
    for what, addr in (("a secret page", a.frame(v, SECRET_PAGES[0])), ("INIT_UV storage", a.tb.uv.base_storage[0]),
                       ("the victim's base storage", v.guest.donations["base"][0])):  # fmt: skip
        a.host.expect(f"UVC with its UVCB on {what}", PGM_3D, a.host.uvc_at(addr))
    boot = HostileBoot(a, a.image("newcomer"), name="newcomer")
    boot.load()
    request = SetSecConfParamsRequest(guest_handle=boot.handle, sec_header_origin=a.frame(v, SECRET_PAGES[1]),
                                      sec_header_len=0x280)  # fmt: skip
    a.host.expect("SET_SEC_CONF_PARAMS with a secret page as the header",
                  Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x0103), a.host.call(request)[1])  # fmt: skip


# ------------------------------------------------------------------ control
@attack(
    "control-shared-secret", area="control", control=True,
    title="(control) the guest shares a page and puts its secret there; the host reads it",
    defence="none: the guest gave the page away, so the counter must find plaintext", expected=(),
)  # fmt: skip
async def control_shared_secret(a: Arena) -> None:
    """The victim shares a page (SET_SHARED_ACCESS) and writes a secret page into it; the host reads
    the frame. The plaintext counter must count the whole page."""
    v = await a.victim(pages=())
    gaddr = 0xC4000
    assert await a.guest_uvc(v, SetSharedAccessRequest(paddr=gaddr)) is None
    a.write_secret(v, gaddr)
    a.host.read(a.frame(v, gaddr), PAGE, "the shared secret page")
