"""UVCBs of the commands a secure guest issues.

SET/REMOVE_SHARED_ACCESS and RETR_ATTEST follow uv-interface.md §3. The secret
calls are not laid out there; their layouts come from Linux
``arch/s390/include/asm/uv.h`` (``uv_cb_guest_addr`` for ADD_SECRET,
``uv_cb_list_secrets``, ``uv_cb_nodata`` for LOCK_SECRETS as
``drivers/s390/char/uvdevice.c`` sends it, ``uv_cb_retr_secr``).
"""

from __future__ import annotations

from typing import final

from attrs import frozen

from ._uvc_codes import UvcCommand as C
from ._uvcb_base import UvcRequest, UvcResponse, uvcb_layout
from ._uvcb_fields import raw, u16, u32, u64

RETR_ATTEST_USER_DATA_LEN = 256
"""Size of the RETR_ATTEST ``user_data`` field (§3; a longer length is rc 0x0102)."""

# -- sharing (uv_cb_share) -----------------------------------------------------------


@final
@uvcb_layout(C.SET_SHARED_ACCESS)
@frozen(kw_only=True)
class SetSharedAccessRequest(UvcRequest):
    """Share the guest page at guest-absolute ``paddr`` with the host."""

    paddr: int = u64(0x20)


@final
@uvcb_layout(C.SET_SHARED_ACCESS)
@frozen(kw_only=True)
class SetSharedAccessResponse(UvcResponse):
    """SET_SHARED_ACCESS answer: rc only."""


@final
@uvcb_layout(C.REMOVE_SHARED_ACCESS)
@frozen(kw_only=True)
class RemoveSharedAccessRequest(UvcRequest):
    """Make the guest page at ``paddr`` private again."""

    paddr: int = u64(0x20)


@final
@uvcb_layout(C.REMOVE_SHARED_ACCESS)
@frozen(kw_only=True)
class RemoveSharedAccessResponse(UvcResponse):
    """REMOVE_SHARED_ACCESS answer: rc only."""


# -- RETR_ATTEST (uv_cb_attest) --------------------------------------------------------


@final
@uvcb_layout(C.RETR_ATTEST)
@frozen(kw_only=True)
class RetrAttestRequest(UvcRequest):
    """Ask for an attestation measurement (§3, §4).

    ``user_data`` is the whole 256-byte field (a shorter value is zero
    padded); ``user_data_len`` says how much of it counts and may exceed 256
    on purpose (rc 0x0102). ``cont_token`` is uv.h's name of §3's
    ``continuation_token``.
    """

    arcb_addr: int = u64(0x18)
    cont_token: int = u64(0x20)
    user_data_len: int = u16(0x2E)
    user_data: bytes = raw(0x30, RETR_ATTEST_USER_DATA_LEN, pad=True)
    meas_len: int = u32(0x13C)
    meas_addr: int = u64(0x140)
    add_data_len: int = u32(0x15C)
    add_data_addr: int = u64(0x160)


@final
@uvcb_layout(C.RETR_ATTEST)
@frozen(kw_only=True)
class RetrAttestResponse(UvcResponse):
    """The configuration's UID; measurement and additional data go to memory.

    ``cont_token`` is an output as well (inferred, uv-interface.md §4 lists
    a bad token as rc 0x0101): a UV that answers cc 3 records its progress
    there and the caller re-issues the same block. ``add_data_len`` is in
    and out: the caller's buffer size goes in, the bytes the firmware wrote
    come back (Linux ``uvdevice.c`` copies it back to the caller since a
    2023 fix: "Additional data length ... is an in/out variable").
    """

    cont_token: int = u64(0x20)
    config_uid: bytes = raw(0x148, 16)
    add_data_len: int = u32(0x15C)


# -- secrets ---------------------------------------------------------------------------


@final
@uvcb_layout(C.ADD_SECRET)
@frozen(kw_only=True)
class AddSecretRequest(UvcRequest):
    """Add the secret in the ASRCB at guest address ``addr`` (uv.h ``uv_cb_guest_addr``)."""

    addr: int = u64(0x20)


@final
@uvcb_layout(C.ADD_SECRET)
@frozen(kw_only=True)
class AddSecretResponse(UvcResponse):
    """ADD_SECRET answer: rc only (0x0102 after LOCK_SECRETS)."""


@final
@uvcb_layout(C.LIST_SECRETS)
@frozen(kw_only=True)
class ListSecretsRequest(UvcRequest):
    """List secrets from ``start_idx`` into the 4 KiB page at ``list_addr``.

    The list itself (``uv_secret_list``, with ``next_secret_idx``) is written
    to that page, not into the UVCB; rc 0x0100 means more entries follow.
    """

    start_idx: int = u16(0x1E)
    list_addr: int = u64(0x20)


@final
@uvcb_layout(C.LIST_SECRETS)
@frozen(kw_only=True)
class ListSecretsResponse(UvcResponse):
    """LIST_SECRETS answer: rc only (0x0001 done, 0x0100 more data)."""


@final
@uvcb_layout(C.LOCK_SECRETS)
@frozen(kw_only=True)
class LockSecretsRequest(UvcRequest):
    """Lock the secret store for good (no input; uvdevice sends a zeroed ``uv_cb_nodata``)."""


@final
@uvcb_layout(C.LOCK_SECRETS)
@frozen(kw_only=True)
class LockSecretsResponse(UvcResponse):
    """LOCK_SECRETS answer: rc only (0x0102 if already locked)."""


@final
@uvcb_layout(C.RETR_SECRET)
@frozen(kw_only=True)
class RetrSecretRequest(UvcRequest):
    """Retrieve secret ``secret_idx`` into ``buf_size`` bytes at ``buf_addr``."""

    secret_idx: int = u16(0x18)
    buf_size: int = u32(0x1C)
    buf_addr: int = u64(0x20)


@final
@uvcb_layout(C.RETR_SECRET)
@frozen(kw_only=True)
class RetrSecretResponse(UvcResponse):
    """RETR_SECRET answer: rc only; the secret goes to the buffer."""
