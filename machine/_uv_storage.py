"""Secure storage: import, export, destroy, and shared pages.

Frame transitions of uv-semantics.md §3.1:

* CONV_TO_SEC_STOR (import, host, by guest address): a page that was never
  secure is cleared; a page that was exported is checked against the digest
  the UV kept at export and decrypted. A replayed older ciphertext, a
  ciphertext moved to another guest address, or one from another
  configuration does not match and the import fails (cc 1); the frame is
  left as it was. A guest page that is still secure in another frame (the
  host remapped it without an export) fails too (:data:`RC_GADDR_ALIASED`).
  A frame secure for another configuration is refused; a frame *shared* by
  another configuration is refused too unless the UV has the MISC feature,
  which hands it over (uv-semantics.md §1.4; without MISC the host must
  export it first, §3.5). An exported frame is ordinary host memory: any
  configuration may import into it.
* CONV_FROM_SEC_STOR (export, host, by host address): AES-256-XTS with the
  configuration's own key and a fresh tweak per export, in place; the UV
  keeps (tweak, SHA-512 of the ciphertext) for that guest page and forgets
  the frame, which is the host's now. Exporting a page that is not secure is
  a no-op ("UV calls will become a no-op if the folio is already exported",
  uv.c). A *shared* page is exported as it is (the host may read it anyway,
  sesim's choice); the UV remembers only that it was shared, and its next
  import makes it shared again.
* DESTR_SEC_STOR: clears a secure page and gives it to the host; on a page
  that is not secure it answers success, or rc 0x0107 rrc 0x000d with
  :attr:`UvLimits.legacy_destroy_rc` (the legacy interface that Linux
  treats as success, uv-interface.md §4).
* SET/REMOVE_SHARED_ACCESS (guest): rc 0x0101 beyond the guest's memory
  (§4); a target page the guest could not access itself (not mapped, not
  secure, secure for another configuration) is the host's to fix first, so
  the call exits SIE with the interruption that access would take and the
  guest re-executes it (:func:`machine.guest_frame`, uv-semantics.md §3.2).
* PIN/UNPIN_PAGE_SHARED (host), SET_UNSHARE_ALL: uv-semantics.md §4.
"""

from __future__ import annotations

import hashlib

from protocol._components import decrypt_page, encrypt_page, xts_algorithm
from protocol._uvc_codes import (
    DestrSecStorRc,
    DestrSecStorRrc,
    SharedAccessRc,
    UvcCommand,
    UvFeature,
)
from protocol._uvcb_base import UvcResponse

from ._memory import PAGE_SIZE, Frame, FrameState
from ._sie import guest_frame
from ._uv_core import (
    Caller,
    ExportRecord,
    NotificationIntercept,
    SecureConfig,
    Ultravisor,
    fail,
    handles,
    ok,
)

RC_IMPORT_INTEGRITY = 0x0107
"""Import of an exported page whose ciphertext does not match (sesim's choice; Linux maps any cc 1 to -EINVAL)."""
RC_OWNED_ELSEWHERE = 0x0108
"""Import of a frame that is secure for another configuration (sesim's choice)."""
RC_NOT_SECURE = 0x0102
"""Share/export-like call on a page that is not in the required state (sesim's choice)."""
RC_NOT_SHARED = 0x0103
"""PIN_PAGE_SHARED / UNPIN on a page that is not shared (sesim's choice)."""
RC_DONATED = 0x0104
"""The frame is UV storage, not guest memory (sesim's choice)."""
RC_GADDR_ALIASED = 0x0109
"""Import of a guest page that is secure in another frame right now (sesim's choice)."""
RC_CONFIG_HAS_CPUS = RC_NOT_SECURE
"""DESTR_SEC_STOR on a page of a configuration that still has secure CPUs (sesim's choice;
the host falls back to export, uv-semantics.md §3.3)."""

_SHARED = (FrameState.SHARED, FrameState.SHARED_PINNED)
_OWNED = (FrameState.SECURE, *_SHARED)

SHARED_EXPORT = ExportRecord(tweak=b"", digest=b"shared")
"""The record of an exported *shared* page: no ciphertext, its next import makes it shared again."""
UNSHARED_EXPORT = ExportRecord(tweak=b"", digest=b"unshared")
"""An exported shared page that SET_UNSHARE_ALL made private: its next import keeps its bytes, private."""


def _misc(uv: Ultravisor) -> bool:
    """The MISC feature (QUI feature bit 0, MSB-0): a shared page of another configuration changes hands."""
    return bool(uv.limits.uv_feature_indications >> (63 - UvFeature.MISC) & 1)


def export_frame(uv: Ultravisor, conf: SecureConfig, frame: Frame) -> None:
    """Encrypt a secure frame in place and remember how (CONV_FROM_SEC_STOR); the frame is the host's now."""
    gfn = conf.secure_frames.pop(frame.pfn)
    if frame.state is FrameState.SECURE:
        tweak = uv.random_bytes(16)
        cipher = encrypt_page(_key(conf), tweak, frame.read())
        frame.fill(cipher)
        conf.exports[gfn] = ExportRecord(tweak=tweak, digest=hashlib.sha512(cipher).digest())
    else:
        conf.exports[gfn] = SHARED_EXPORT  # shared: the host sees these bytes anyway
    uv.memory.set_state(frame, FrameState.EXPORTED, conf.handle)


def _secure_frame_of(conf: SecureConfig, gfn: int) -> int | None:
    """The frame in which guest page ``gfn`` of ``conf`` is secure (or shared) now, if any."""
    for pfn, page in conf.secure_frames.items():
        if page == gfn:
            return pfn
    return None


def import_frame(uv: Ultravisor, conf: SecureConfig, gfn: int, frame: Frame) -> None:
    """Make ``frame`` the secure page ``gfn`` of ``conf`` (CONV_TO_SEC_STOR); rc on failure.

    Nothing changes when the import fails: the data is never accepted.
    """
    state = frame.state
    if state is FrameState.DONATED:
        fail(RC_DONATED)
    if state in _OWNED:
        if frame.owner == conf.handle:
            if conf.secure_frames.get(frame.pfn) != gfn:
                fail(RC_OWNED_ELSEWHERE)  # another page of this configuration
            return  # already secure for this page: nothing to do
        if state is FrameState.SECURE or not _misc(uv):
            fail(RC_OWNED_ELSEWHERE)  # a frame is secure for one configuration at most
    elsewhere = _secure_frame_of(conf, gfn)
    if elsewhere is not None and elsewhere != frame.pfn:
        fail(RC_GADDR_ALIASED)
    record = conf.exports.get(gfn)
    if record is not None and record is not SHARED_EXPORT and record is not UNSHARED_EXPORT:
        cipher = frame.read()
        if hashlib.sha512(cipher).digest() != record.digest:
            fail(RC_IMPORT_INTEGRITY)
    if state in _OWNED:
        # MISC: the other configuration's shared page changes hands.
        previous = uv.configs.get(frame.owner)
        if previous is not None:
            previous.secure_frames.pop(frame.pfn, None)
    if record is None:
        # First use, or secure once and destroyed since: the page reads as zeros.
        frame.fill(None)
    elif record is SHARED_EXPORT or record is UNSHARED_EXPORT:
        del conf.exports[gfn]
        if record is SHARED_EXPORT:
            conf.secure_frames[frame.pfn] = gfn
            conf.ever_secure.add(gfn)
            uv.memory.set_state(frame, FrameState.SHARED, conf.handle)
            return
    else:
        frame.fill(decrypt_page(_key(conf), record.tweak, frame.read()))
        del conf.exports[gfn]
    uv.make_secure(conf, gfn, frame)


def _key(conf: SecureConfig) -> object:
    if conf.export_alg is None:
        conf.export_alg = xts_algorithm(conf.export_key)
    return conf.export_alg


@handles(UvcCommand.CONV_TO_SEC_STOR)
def _import(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    gaddr: int = request.gaddr  # type: ignore[attr-defined]
    if gaddr >= conf.msl:
        fail(SharedAccessRc.ADDR_OUTSIDE_MEMORY)
    gfn, frame = uv.frame_of_gaddr(conf, gaddr)
    import_frame(uv, conf, gfn, frame)
    return ok(request)  # type: ignore[arg-type]


def _host_frame(uv: Ultravisor, paddr: int) -> Frame:
    """The frame a host-address UVC names: rc 0x0101 outside memory, RC_DONATED on UV storage."""
    if not uv.memory.contains(paddr, PAGE_SIZE):
        fail(0x0101)
    frame = uv.memory.frame(paddr >> 12)
    if frame.state is FrameState.DONATED:
        fail(RC_DONATED)
    return frame


@handles(UvcCommand.CONV_FROM_SEC_STOR)
def _export(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    frame = _host_frame(uv, request.paddr)  # type: ignore[attr-defined]
    if frame.state not in _OWNED:
        return ok(request)  # type: ignore[arg-type]  # already accessible: a no-op
    conf = uv.configs.get(frame.owner)
    if conf is None:
        # Secure for a configuration that is gone (after DESTROY_SEC_CONF_FAST): nothing
        # to keep, so the page is cleared and handed back.
        uv.release_frame(frame, clear=True)
        return ok(request)  # type: ignore[arg-type]
    export_frame(uv, conf, frame)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DESTR_SEC_STOR)
def _destroy_page(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    frame = _host_frame(uv, request.paddr)  # type: ignore[attr-defined]
    if frame.state not in (FrameState.SECURE, *_SHARED):
        if uv.limits.legacy_destroy_rc:
            # Older firmware (uv-interface.md §4 "Legacy"; uv.c uv_destroy treats it as success).
            fail(DestrSecStorRc.NOT_SECURE, DestrSecStorRrc.NOT_SECURE)
        return ok(request)  # type: ignore[arg-type]  # nothing to destroy
    conf = uv.configs.get(frame.owner)
    if conf is not None and conf.cpus:
        fail(RC_CONFIG_HAS_CPUS)  # only a configuration without CPUs may lose pages (uv-semantics.md §3.6)
    if conf is not None:
        conf.exports.pop(conf.secure_frames.get(frame.pfn, -1), None)
    uv.release_frame(frame, clear=True)
    return ok(request)  # type: ignore[arg-type]


# ----------------------------------------------------------- shared pages
def _guest_frame(uv: Ultravisor, caller: Caller, gaddr: int) -> tuple[SecureConfig, Frame]:
    """The frame behind a guest's share/unshare target, as the guest's own access reaches it."""
    conf = uv.config(caller.config_handle)
    space = uv.server.address_spaces.get(conf.asce)
    if gaddr >= conf.msl or space is None or gaddr >= space.size:
        fail(SharedAccessRc.ADDR_OUTSIDE_MEMORY)
    return conf, guest_frame(uv.memory, space, conf.handle, gaddr & ~(PAGE_SIZE - 1))


@handles(UvcCommand.SET_SHARED_ACCESS)
def _set_shared(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf, frame = _guest_frame(uv, caller, request.paddr)  # type: ignore[attr-defined]
    if frame.state is FrameState.SECURE:
        uv.memory.set_state(frame, FrameState.SHARED, conf.handle)
    return ok(request)  # type: ignore[arg-type]  # already shared: nothing to do


@handles(UvcCommand.REMOVE_SHARED_ACCESS)
def _remove_shared(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf, frame = _guest_frame(uv, caller, request.paddr)  # type: ignore[attr-defined]
    if frame.state is FrameState.SHARED_PINNED:
        raise NotificationIntercept("remove-shared on a pinned page")
    if frame.state is FrameState.SHARED:
        uv.memory.set_state(frame, FrameState.SECURE, conf.handle)
    return ok(request)  # type: ignore[arg-type]  # already private: nothing to do


@handles(UvcCommand.PIN_PAGE_SHARED)
def _pin_shared(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    paddr: int = request.paddr  # type: ignore[attr-defined]
    if not uv.memory.contains(paddr, PAGE_SIZE):
        fail(0x0101)
    frame = uv.memory.frame(paddr >> 12)
    if frame.state is FrameState.SHARED_PINNED:
        return ok(request)  # type: ignore[arg-type]
    if frame.state is not FrameState.SHARED:
        fail(RC_NOT_SHARED)
    uv.memory.set_state(frame, FrameState.SHARED_PINNED, frame.owner)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.UNPIN_PAGE_SHARED)
def _unpin_shared(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    gaddr: int = request.gaddr  # type: ignore[attr-defined]
    if gaddr >= conf.msl:
        fail(SharedAccessRc.ADDR_OUTSIDE_MEMORY)
    _, frame = uv.frame_of_gaddr(conf, gaddr)
    if frame.owner != conf.handle or frame.state not in _SHARED:
        fail(RC_NOT_SHARED)
    uv.memory.set_state(frame, FrameState.SHARED, conf.handle)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.SET_UNSHARE_ALL)
def _unshare_all(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    for pfn in list(conf.secure_frames):
        frame = uv.memory.frame(pfn)
        if frame.state in _SHARED and frame.owner == conf.handle:
            uv.memory.set_state(frame, FrameState.SECURE, conf.handle)
    for gfn, record in list(conf.exports.items()):
        if record is SHARED_EXPORT:
            conf.exports[gfn] = UNSHARED_EXPORT
    return ok(request)  # type: ignore[arg-type]
