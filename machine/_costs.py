"""How long things take, in virtual nanoseconds.

Only the relative sizes matter: they decide which operations overlap, and so
which races can happen. UVCs that move a page through a cipher cost more than
bookkeeping calls; opening the SE header (an ECDH on P-521) costs most.
"""

from __future__ import annotations

from typing import Final

from protocol._uvc_codes import UvcCommand as C

UVC_COST: Final[dict[C, int]] = {
    C.QUI: 500,
    C.INIT_UV: 50_000,
    C.CREATE_SEC_CONF: 40_000,
    C.DESTROY_SEC_CONF: 60_000,
    C.DESTROY_SEC_CONF_FAST: 5_000,
    C.CREATE_SEC_CPU: 8_000,
    C.DESTROY_SEC_CPU: 6_000,
    C.CONV_TO_SEC_STOR: 3_000,
    C.CONV_FROM_SEC_STOR: 3_000,
    C.DESTR_SEC_STOR: 800,
    C.SET_SHARED_ACCESS: 1_000,
    C.REMOVE_SHARED_ACCESS: 1_000,
    C.SET_SEC_CONF_PARAMS: 150_000,
    C.UNPACK_IMG: 4_000,
    C.VERIFY_IMG: 20_000,
    C.CPU_RESET: 2_000,
    C.CPU_RESET_INITIAL: 2_000,
    C.CPU_RESET_CLEAR: 3_000,
    C.CPU_SET_STATE: 1_000,
    C.PREPARE_RESET: 5_000,
    C.SET_UNSHARE_ALL: 10_000,
    C.PIN_PAGE_SHARED: 800,
    C.UNPIN_PAGE_SHARED: 800,
}
"""Virtual duration of each UVC; a command not listed costs ``DEFAULT_UVC_COST``."""

DEFAULT_UVC_COST: Final = 2_000

SIE_ENTRY: Final = 300
SIE_EXIT: Final = 300
INTERCEPT_HANDLING: Final = 1_500
PAGE_FAULT_HANDLING: Final = 2_000
GUEST_PAGE_WRITE: Final = 600
GUEST_PAGE_READ: Final = 400
HOST_PAGE_COPY: Final = 700

# Host memory under pressure and guest I/O (uv-semantics.md §3.4, §4).
UVC_REISSUE: Final = 200
"""A UVC re-issued after a busy or partial answer (``uv_call``'s loop): the instruction's own time."""
SWAP_WRITE: Final = 12_000
"""Writing one page to the swap device."""
SWAP_READ: Final = 10_000
"""Reading one page back from the swap device."""
RECLAIM_SCAN: Final = 500
"""The reclaim thread picking its next victim."""
VIRTIO_BLOCK_IO: Final = 8_000
"""One block request of the virtio block device (per page)."""
VIRTIO_NET_IO: Final = 3_000
"""One packet of the virtio network device (per page)."""
GUEST_BOUNCE_COPY: Final = 700
"""The guest copying (and encrypting) one page into or out of a bounce buffer."""
