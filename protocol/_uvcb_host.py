"""UVCBs of the host commands that build, run and tear down configurations.

Layouts: uv-interface.md §3 and Linux ``arch/s390/include/asm/uv.h`` (the
struct named in each docstring). Offsets are written beside each field.
Page-level calls (import, export, pin) and dumps are in ``_uvcb_storage.py``.
"""

from __future__ import annotations

from typing import final

from attrs import frozen

from ._uvc_codes import UvcCommand as C
from ._uvcb_base import UvcRequest, UvcResponse, uvcb_layout
from ._uvcb_fields import raw_array, u8, u16, u32, u64, u64_array

# -- INIT_UV (uv_cb_init) ----------------------------------------------------------


@final
@uvcb_layout(C.INIT_UV)
@frozen(kw_only=True)
class InitUvRequest(UvcRequest):
    """Donate ``uv_base_stor_len`` bytes to the UV, once per host reset (§4)."""

    stor_origin: int = u64(0x18)
    stor_len: int = u64(0x20)


@final
@uvcb_layout(C.INIT_UV)
@frozen(kw_only=True)
class InitUvResponse(UvcResponse):
    """INIT_UV answer: rc only."""


# -- CREATE_SEC_CONF (uv_cb_cgc) ---------------------------------------------------


@final
@uvcb_layout(C.CREATE_SEC_CONF)
@frozen(kw_only=True)
class CreateSecConfRequest(UvcRequest):
    """Create a secure configuration from two donations (§3, §4).

    ``flags`` is the u16 at 0x36 of uv.h ``uv_cb_cgc`` (AP pass-through, see
    :class:`CreateSecConfFlags`), inside what §3 calls ``rsvd(8)`` at 0x30.
    ``conf_virt_stor_origin`` is uv.h's name of §3's ``conf_var_stor_origin``.
    """

    conf_base_stor_origin: int = u64(0x20)
    conf_virt_stor_origin: int = u64(0x28)
    flags: int = u16(0x36)
    guest_stor_origin: int = u64(0x38)
    guest_stor_len: int = u64(0x40)
    guest_sca: int = u64(0x48)
    guest_asce: int = u64(0x50)


@final
@uvcb_layout(C.CREATE_SEC_CONF)
@frozen(kw_only=True)
class CreateSecConfResponse(UvcResponse):
    """The new configuration's handle (0 on an error rc without ``NEED_DESTROY``, §2)."""

    guest_handle: int = u64(0x18)


# -- handle-only calls on a configuration (uv_cb_nodata) ---------------------------


@final
@uvcb_layout(C.DESTROY_SEC_CONF)
@frozen(kw_only=True)
class DestroySecConfRequest(UvcRequest):
    """Destroy a configuration that has no secure CPUs left (§4)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.DESTROY_SEC_CONF)
@frozen(kw_only=True)
class DestroySecConfResponse(UvcResponse):
    """DESTROY_SEC_CONF answer: rc only."""


@final
@uvcb_layout(C.DESTROY_SEC_CONF_FAST)
@frozen(kw_only=True)
class DestroySecConfFastRequest(UvcRequest):
    """Asynchronous-teardown destroy. uv-interface.md §3 gives 0x40 (a nodata block); Linux sends 0x48."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.DESTROY_SEC_CONF_FAST)
@frozen(kw_only=True)
class DestroySecConfFastResponse(UvcResponse):
    """DESTROY_SEC_CONF_FAST answer: rc only (0x0104: APQNs still bound)."""


@final
@uvcb_layout(C.VERIFY_IMG)
@frozen(kw_only=True)
class VerifyImgRequest(UvcRequest):
    """Check the unpacked image against the SE header's digests (§4)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.VERIFY_IMG)
@frozen(kw_only=True)
class VerifyImgResponse(UvcResponse):
    """VERIFY_IMG answer: rc 0x0102 with an rrc naming the digest that differs."""


@final
@uvcb_layout(C.PREPARE_RESET)
@frozen(kw_only=True)
class PrepareResetRequest(UvcRequest):
    """Prepare the configuration for a guest reset (config handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.PREPARE_RESET)
@frozen(kw_only=True)
class PrepareResetResponse(UvcResponse):
    """PREPARE_RESET answer: rc only."""


@final
@uvcb_layout(C.SET_UNSHARE_ALL)
@frozen(kw_only=True)
class SetUnshareAllRequest(UvcRequest):
    """Make every shared page of the configuration private again (config handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.SET_UNSHARE_ALL)
@frozen(kw_only=True)
class SetUnshareAllResponse(UvcResponse):
    """SET_UNSHARE_ALL answer: rc only."""


# -- CREATE_SEC_CPU (uv_cb_csc) and CPU handle calls -------------------------------


@final
@uvcb_layout(C.CREATE_SEC_CPU)
@frozen(kw_only=True)
class CreateSecCpuRequest(UvcRequest):
    """Create a secure CPU: ``num`` is the CPU address, ``state_origin`` the SIE block."""

    guest_handle: int = u64(0x20)
    stor_origin: int = u64(0x28)
    num: int = u16(0x36)
    state_origin: int = u64(0x38)


@final
@uvcb_layout(C.CREATE_SEC_CPU)
@frozen(kw_only=True)
class CreateSecCpuResponse(UvcResponse):
    """The new secure CPU's handle."""

    cpu_handle: int = u64(0x18)


@final
@uvcb_layout(C.DESTROY_SEC_CPU)
@frozen(kw_only=True)
class DestroySecCpuRequest(UvcRequest):
    """Destroy a secure CPU (CPU handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.DESTROY_SEC_CPU)
@frozen(kw_only=True)
class DestroySecCpuResponse(UvcResponse):
    """DESTROY_SEC_CPU answer: rc only."""


@final
@uvcb_layout(C.CPU_RESET)
@frozen(kw_only=True)
class CpuResetRequest(UvcRequest):
    """Normal CPU reset (CPU handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.CPU_RESET)
@frozen(kw_only=True)
class CpuResetResponse(UvcResponse):
    """CPU_RESET answer: rc only."""


@final
@uvcb_layout(C.CPU_RESET_INITIAL)
@frozen(kw_only=True)
class CpuResetInitialRequest(UvcRequest):
    """Initial CPU reset (CPU handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.CPU_RESET_INITIAL)
@frozen(kw_only=True)
class CpuResetInitialResponse(UvcResponse):
    """CPU_RESET_INITIAL answer: rc only."""


@final
@uvcb_layout(C.CPU_RESET_CLEAR)
@frozen(kw_only=True)
class CpuResetClearRequest(UvcRequest):
    """Clear CPU reset (CPU handle)."""

    handle: int = u64(0x18)


@final
@uvcb_layout(C.CPU_RESET_CLEAR)
@frozen(kw_only=True)
class CpuResetClearResponse(UvcResponse):
    """CPU_RESET_CLEAR answer: rc only."""


@final
@uvcb_layout(C.CPU_SET_STATE)
@frozen(kw_only=True)
class CpuSetStateRequest(UvcRequest):
    """Set a secure CPU's state (uv_cb_cpu_set_state; values in :class:`CpuState`).

    ``state`` is any u8, not only a :class:`CpuState`, so that a test can
    send an undefined state and see the UV's answer.
    """

    cpu_handle: int = u64(0x18)
    state: int = u8(0x27)


@final
@uvcb_layout(C.CPU_SET_STATE)
@frozen(kw_only=True)
class CpuSetStateResponse(UvcResponse):
    """CPU_SET_STATE answer: rc only."""


# -- image: SET_SEC_CONF_PARAMS (uv_cb_ssc), UNPACK_IMG (uv_cb_unp) ------------------


@final
@uvcb_layout(C.SET_SEC_CONF_PARAMS)
@frozen(kw_only=True)
class SetSecConfParamsRequest(UvcRequest):
    """Hand the SE header to the UV (§4)."""

    guest_handle: int = u64(0x18)
    sec_header_origin: int = u64(0x20)
    sec_header_len: int = u32(0x28)


@final
@uvcb_layout(C.SET_SEC_CONF_PARAMS)
@frozen(kw_only=True)
class SetSecConfParamsResponse(UvcResponse):
    """SET_SEC_CONF_PARAMS answer: rc only."""


@final
@uvcb_layout(C.UNPACK_IMG)
@frozen(kw_only=True)
class UnpackImgRequest(UvcRequest):
    """Unpack one image page: ``tweak[0]`` component tweak prefix, ``tweak[1]`` offset.

    uv-semantics.md §1.3, §2.2 (KVM ``unpack_one``).
    """

    guest_handle: int = u64(0x18)
    gaddr: int = u64(0x20)
    tweak: tuple[int, int] = u64_array(0x28, 2)


@final
@uvcb_layout(C.UNPACK_IMG)
@frozen(kw_only=True)
class UnpackImgResponse(UvcResponse):
    """UNPACK_IMG answer: rc only."""


# -- QUERY_KEYS (uv_cb_query_keys) ---------------------------------------------------

QUERY_KEYS_IDX_HK = 0
"""Index of the host key's hash in ``key_hashes`` (uv.h ``UVC_QUERY_KEYS_IDX_HK``)."""
QUERY_KEYS_IDX_BACK_HK = 1
"""Index of the backup host key's hash (uv.h ``UVC_QUERY_KEYS_IDX_BACK_HK``)."""


@final
@uvcb_layout(C.QUERY_KEYS)
@frozen(kw_only=True)
class QueryKeysRequest(UvcRequest):
    """Ask for the hashes of the keys the UV holds (uv.h, uv-semantics.md §1.3)."""


@final
@uvcb_layout(C.QUERY_KEYS)
@frozen(kw_only=True)
class QueryKeysResponse(UvcResponse):
    """Fifteen 32-byte key hashes at 0x20; index 0 host key, 1 backup host key."""

    key_hashes: tuple[bytes, ...] = raw_array(0x20, 32, 15)
