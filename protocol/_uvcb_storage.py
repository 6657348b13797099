"""UVCBs of the host's page-level calls and of the dump calls.

Import (CONV_TO_SEC_STOR) and UNPIN_PAGE_SHARED share uv.h ``uv_cb_cts``;
export (CONV_FROM_SEC_STOR), DESTR_SEC_STOR and PIN_PAGE_SHARED share
``uv_cb_cfs`` (uv-interface.md §3). The dump layouts are not in the
reference tables; they are taken from Linux ``arch/s390/include/asm/uv.h``
(``uv_cb_nodata``, ``uv_cb_dump_stor_state``, ``uv_cb_dump_cpu``,
``uv_cb_dump_complete``) as KVM fills them (uv-semantics.md §7).
"""

from __future__ import annotations

from typing import final

from attrs import frozen

from ._uvc_codes import UvcCommand as C
from ._uvcb_base import UvcRequest, UvcResponse, uvcb_layout
from ._uvcb_fields import u64

# -- guest-address calls (uv_cb_cts) ------------------------------------------------


@final
@uvcb_layout(C.CONV_TO_SEC_STOR)
@frozen(kw_only=True)
class ConvToSecStorRequest(UvcRequest):
    """Import: make the guest page at ``gaddr`` secure for the configuration."""

    guest_handle: int = u64(0x18)
    gaddr: int = u64(0x20)


@final
@uvcb_layout(C.CONV_TO_SEC_STOR)
@frozen(kw_only=True)
class ConvToSecStorResponse(UvcResponse):
    """CONV_TO_SEC_STOR answer: rc only."""


@final
@uvcb_layout(C.UNPIN_PAGE_SHARED)
@frozen(kw_only=True)
class UnpinPageSharedRequest(UvcRequest):
    """Release a pin so the guest may unshare the page (KVM, after intercept 108)."""

    guest_handle: int = u64(0x18)
    gaddr: int = u64(0x20)


@final
@uvcb_layout(C.UNPIN_PAGE_SHARED)
@frozen(kw_only=True)
class UnpinPageSharedResponse(UvcResponse):
    """UNPIN_PAGE_SHARED answer: rc only."""


# -- host-absolute-address calls (uv_cb_cfs) ----------------------------------------


@final
@uvcb_layout(C.CONV_FROM_SEC_STOR)
@frozen(kw_only=True)
class ConvFromSecStorRequest(UvcRequest):
    """Export: encrypt the secure page at host address ``paddr`` in place."""

    paddr: int = u64(0x18)


@final
@uvcb_layout(C.CONV_FROM_SEC_STOR)
@frozen(kw_only=True)
class ConvFromSecStorResponse(UvcResponse):
    """CONV_FROM_SEC_STOR answer: rc only."""


@final
@uvcb_layout(C.DESTR_SEC_STOR)
@frozen(kw_only=True)
class DestrSecStorRequest(UvcRequest):
    """Destroy (clear, no encryption) the secure page at ``paddr``."""

    paddr: int = u64(0x18)


@final
@uvcb_layout(C.DESTR_SEC_STOR)
@frozen(kw_only=True)
class DestrSecStorResponse(UvcResponse):
    """DESTR_SEC_STOR answer: rc only (legacy 0x0107/0x000d on a non-secure page)."""


@final
@uvcb_layout(C.PIN_PAGE_SHARED)
@frozen(kw_only=True)
class PinPageSharedRequest(UvcRequest):
    """Pin a guest-shared page at ``paddr`` so the guest cannot unshare it."""

    paddr: int = u64(0x18)


@final
@uvcb_layout(C.PIN_PAGE_SHARED)
@frozen(kw_only=True)
class PinPageSharedResponse(UvcResponse):
    """PIN_PAGE_SHARED answer: rc only."""


# -- dumps (uv-semantics.md §7) ------------------------------------------------------


@final
@uvcb_layout(C.DUMP_INIT)
@frozen(kw_only=True)
class DumpInitRequest(UvcRequest):
    """Start dumping a configuration (uv.h ``uv_cb_nodata``, config handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.DUMP_INIT)
@frozen(kw_only=True)
class DumpInitResponse(UvcResponse):
    """DUMP_INIT answer: rc only."""


@final
@uvcb_layout(C.DUMP_CONF_STOR_STATE)
@frozen(kw_only=True)
class DumpConfStorStateRequest(UvcRequest):
    """Dump the storage state of 1 MiB at ``gaddr`` (uv.h ``uv_cb_dump_stor_state``)."""

    config_handle: int = u64(0x18)
    dump_area_origin: int = u64(0x20)
    gaddr: int = u64(0x28)


@final
@uvcb_layout(C.DUMP_CONF_STOR_STATE)
@frozen(kw_only=True)
class DumpConfStorStateResponse(UvcResponse):
    """DUMP_CONF_STOR_STATE answer: rc only; data goes to the dump area."""


@final
@uvcb_layout(C.DUMP_CPU)
@frozen(kw_only=True)
class DumpCpuRequest(UvcRequest):
    """Dump one secure CPU's encrypted state (uv.h ``uv_cb_dump_cpu``)."""

    cpu_handle: int = u64(0x18)
    dump_area_origin: int = u64(0x20)


@final
@uvcb_layout(C.DUMP_CPU)
@frozen(kw_only=True)
class DumpCpuResponse(UvcResponse):
    """DUMP_CPU answer: rc only; ``cpu_stor_len`` bytes go to the dump area."""


@final
@uvcb_layout(C.DUMP_COMPLETE)
@frozen(kw_only=True)
class DumpCompleteRequest(UvcRequest):
    """Finish a dump (uv.h ``uv_cb_dump_complete``)."""

    config_handle: int = u64(0x18)
    dump_area_origin: int = u64(0x20)


@final
@uvcb_layout(C.DUMP_COMPLETE)
@frozen(kw_only=True)
class DumpCompleteResponse(UvcResponse):
    """DUMP_COMPLETE answer: rc only; ``conf_dump_finalize_len`` bytes go to the dump area."""
