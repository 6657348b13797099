"""QUI, INIT_UV, and the life of configurations and secure CPUs.

Rules from ``uv-interface.md`` §4 (rc per command, in the order checked) and
``uv-semantics.md`` §2. Donated storage becomes UV storage on success: any
host access to it takes PGM 0x3d until it is given back.
"""

from __future__ import annotations

from protocol._qui import QUI_LENGTH, QUI_MIN_LENGTH, QuiResponse, inst_calls_list_of
from protocol._uvc_codes import (
    Cc,
    CreateSecConfRc,
    CreateSecCpuRc,
    InitUvRc,
    Rc,
    UvcCommand,
)
from protocol._uvcb_base import UvcResponse

from ._cpu import SecureCpuState
from ._memory import FrameState
from ._uv_core import HANDLERS, Caller, ConfigPhase, SecureConfig, Ultravisor, fail, handles, ok

MIB = 1 << 20
GIB = 1 << 30
LOWCORE_LEN = 8 * 1024
ASCE_PRIVATE_SPACE = 0x100
ASCE_REAL_SPACE = 0x20
RC_CPUS_REMAIN = 0x0102
"""DESTROY_SEC_CONF on a configuration that still has secure CPUs (rc chosen by sesim)."""
RC_TOO_MANY_CONFIGS = 0x0103
"""CREATE_SEC_CONF beyond ``max_num_sec_conf`` (rc chosen by sesim)."""


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


# ---------------------------------------------------------------- QUI
def qui_response(uv: Ultravisor, caller: Caller, length: int) -> QuiResponse:
    """QUI as the caller's context sees it (uv-interface.md §5)."""
    limits = uv.limits
    commands = uv.guest_installed if caller.is_guest else uv.host_installed
    full = QuiResponse(
        cc=Cc.OK,
        rc=Rc.EXECUTED,
        rrc=0,
        length=max(length, QUI_LENGTH),
        inst_calls_list=inst_calls_list_of(c for c in commands if c.qui_bit is not None),
        uv_base_stor_len=limits.uv_base_stor_len,
        conf_base_phys_stor_len=limits.conf_base_phys_stor_len,
        conf_base_virt_stor_len=limits.conf_base_virt_stor_len,
        conf_virt_var_stor_len=limits.conf_virt_var_stor_len,
        cpu_stor_len=limits.cpu_stor_len,
        max_num_sec_conf=limits.max_num_sec_conf,
        max_guest_stor_addr=limits.max_guest_stor_addr,
        max_guest_cpu_id=limits.max_guest_cpu_id,
        uv_feature_indications=limits.uv_feature_indications,
        supp_se_hdr_versions=limits.supp_se_hdr_versions,
        supp_se_hdr_pcf=limits.supp_se_hdr_pcf,
        conf_dump_storage_state_len=limits.conf_dump_storage_state_len,
        conf_dump_finalize_len=limits.conf_dump_finalize_len,
        supp_att_req_hdr_ver=limits.supp_att_req_hdr_ver if limits.attestation else 0,
        supp_att_pflags=limits.supp_att_pflags if limits.attestation else 0,
    )
    if length >= QUI_LENGTH:
        return full.truncated(length) if length < full.length else full
    # A short block (0xA8..0xFF): what fits, and "more data" (cc 1, rc 0x0100).
    short = full.truncated(length)
    from attrs import evolve

    return evolve(short, cc=Cc.ERROR, rc=Rc.MORE_DATA)


@handles(UvcCommand.QUI)
def _qui(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    length = request.length  # type: ignore[attr-defined]
    if length < QUI_MIN_LENGTH:
        fail(Rc.INV_LEN)
    return qui_response(uv, caller, length)


# ------------------------------------------------------------ INIT_UV
@handles(UvcCommand.INIT_UV)
def _init_uv(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    origin: int = request.stor_origin  # type: ignore[attr-defined]
    length: int = request.stor_len & ~0xFFF  # type: ignore[attr-defined]  # taken 4 KiB aligned
    memory = uv.memory
    if uv.initialized:
        fail(InitUvRc.ALREADY_INITIALIZED)
    if uv.server.operating_cpus() > 1:
        fail(InitUvRc.MULTIPLE_CPUS_OPERATING)
    if length < uv.limits.uv_base_stor_len:
        fail(InitUvRc.STOR_LEN_TOO_SMALL)
    if origin >= memory.size:
        fail(InitUvRc.STOR_ORIGIN_OUTSIDE_MEMORY)
    if origin + length > memory.size:
        fail(InitUvRc.STOR_END_OUTSIDE_MEMORY)
    if origin < 2 * GIB:
        fail(0x0108)  # donated storage must lie above 2 GiB
    origin &= ~(MIB - 1)  # the origin is taken 1 MiB aligned
    uv.donate(origin, length)
    uv.base_storage = (origin, length)
    uv.initialized = True
    return ok(request)  # type: ignore[arg-type]


# ---------------------------------------------------- CREATE_SEC_CONF
@handles(UvcCommand.CREATE_SEC_CONF)
def _create_sec_conf(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    r = request
    limits = uv.limits
    memory = uv.memory
    mso: int = r.guest_stor_origin  # type: ignore[attr-defined]
    msl: int = r.guest_stor_len  # type: ignore[attr-defined]
    asce: int = r.guest_asce  # type: ignore[attr-defined]
    base: int = r.conf_base_stor_origin  # type: ignore[attr-defined]
    var: int = r.conf_virt_stor_origin  # type: ignore[attr-defined]
    sca: int = r.guest_sca  # type: ignore[attr-defined]
    base_len = limits.conf_base_phys_stor_len
    var_len = limits.conf_var_stor_len(msl)
    if mso > limits.max_guest_stor_addr:
        fail(CreateSecConfRc.MSO_TOO_HIGH)
    if mso + msl > limits.max_guest_stor_addr:
        fail(CreateSecConfRc.MSO_MSL_TOO_HIGH)
    if len(uv.configs) >= limits.max_num_sec_conf:
        fail(RC_TOO_MANY_CONFIGS)
    if (
        uv.storage_in_use(base, min(base_len, max(0, memory.size - base)))
        or uv.storage_in_use(var, min(var_len, max(0, memory.size - var)))
        or any(c.asce == asce for c in uv.configs.values())
    ):
        fail(CreateSecConfRc.STOR_OR_ASCE_IN_USE)
    if not asce & ASCE_PRIVATE_SPACE or asce & ASCE_REAL_SPACE:
        fail(CreateSecConfRc.ASCE_INVALID)
    if not memory.contains(base, base_len) or not memory.contains(var, var_len):
        fail(CreateSecConfRc.BASE_STOR_OUTSIDE_MEMORY)
    if _overlaps(base, base_len, 0, LOWCORE_LEN) or _overlaps(var, var_len, 0, LOWCORE_LEN):
        fail(CreateSecConfRc.BASE_STOR_OVERLAPS_LOWCORE)
    if sca == 0:
        fail(CreateSecConfRc.SCA_ORIGIN_ZERO)
    if not memory.contains(sca, 64):
        fail(CreateSecConfRc.SCA_OUTSIDE_MEMORY)
    base &= ~0x3FFF  # base storage is 16 KiB aligned
    var &= ~0xFFF
    handle = uv.new_handle()
    key = uv.random_bytes(64)
    while key[:32] == key[32:]:  # XTS refuses equal halves
        key = uv.random_bytes(64)
    uv.donate(base, base_len)
    uv.donate(var, var_len)
    uv.configs[handle] = SecureConfig(
        handle=handle,
        asce=asce,
        mso=mso,
        msl=msl,
        sca=sca,
        base_origin=base,
        base_len=base_len,
        var_origin=var,
        var_len=var_len,
        export_key=key,
        cuid=uv.random_bytes(16),
    )
    return ok(request, guest_handle=handle)  # type: ignore[arg-type]


def destroy_config(uv: Ultravisor, conf: SecureConfig, *, clean_memory: bool) -> None:
    """Forget ``conf`` and give its donations back.

    With ``clean_memory`` (DESTROY_SEC_CONF, commit ff63b9bfa56d) every page it
    still owns is cleared and becomes host memory. Without it (the FAST
    variant) its secure pages stay secure for a configuration that no longer
    exists, until the host destroys them one by one (uv-semantics.md §2.5).
    """
    if clean_memory:
        for pfn in list(conf.secure_frames):
            frame = uv.memory.frame(pfn)
            if frame.owner == conf.handle and frame.state is not FrameState.HOST:
                uv.release_frame(frame, clear=frame.state is not FrameState.EXPORTED)
    uv.reclaim(conf.base_origin, conf.base_len)
    uv.reclaim(conf.var_origin, conf.var_len)
    del uv.configs[conf.handle]


@handles(UvcCommand.DESTROY_SEC_CONF)
def _destroy_sec_conf(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.cpus:
        fail(RC_CPUS_REMAIN)
    destroy_config(uv, conf, clean_memory=True)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DESTROY_SEC_CONF_FAST)
def _destroy_sec_conf_fast(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.cpus:
        fail(RC_CPUS_REMAIN)
    destroy_config(uv, conf, clean_memory=False)
    return ok(request)  # type: ignore[arg-type]


# ----------------------------------------------------- secure CPUs
@handles(UvcCommand.CREATE_SEC_CPU)
def _create_sec_cpu(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    r = request
    conf = uv.config(r.guest_handle)  # type: ignore[attr-defined]
    num: int = r.num  # type: ignore[attr-defined]
    stor: int = r.stor_origin  # type: ignore[attr-defined]
    state: int = r.state_origin  # type: ignore[attr-defined]
    length = uv.limits.cpu_stor_len
    memory = uv.memory
    if num > uv.limits.max_guest_cpu_id:
        fail(CreateSecCpuRc.CPU_NUM_TOO_HIGH)
    if num in conf.cpus:
        fail(CreateSecCpuRc.CPU_NUM_IN_USE)
    if not memory.contains(stor, length):
        fail(CreateSecCpuRc.STOR_OUTSIDE_MEMORY)
    if _overlaps(stor, length, 0, LOWCORE_LEN):
        fail(CreateSecCpuRc.STOR_OVERLAPS_LOWCORE)
    if (
        not memory.is_valid(state, 0x200)
        or memory.state_of(state >> 12) is not FrameState.HOST
        or uv.storage_in_use(stor & ~0xFFF, length)
    ):
        fail(CreateSecCpuRc.STATE_ORIGIN_INACCESSIBLE)
    stor &= ~0xFFF
    handle = uv.new_handle()
    uv.donate(stor, length)
    conf.cpus[num] = handle
    uv.cpus[handle] = SecureCpuState(
        handle=handle, config_handle=conf.handle, num=num, state_origin=state, stor_origin=stor
    )
    return ok(request, cpu_handle=handle)  # type: ignore[arg-type]


@handles(UvcCommand.DESTROY_SEC_CPU)
def _destroy_sec_cpu(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    cpu = uv.cpu(request.handle)  # type: ignore[attr-defined]
    conf = uv.configs.get(cpu.config_handle)
    if conf is not None:
        conf.cpus.pop(cpu.num, None)
    uv.reclaim(cpu.stor_origin, uv.limits.cpu_stor_len)
    del uv.cpus[cpu.handle]
    return ok(request)  # type: ignore[arg-type]

