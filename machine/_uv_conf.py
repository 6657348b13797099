"""QUI, INIT_UV, and the life of configurations and secure CPUs.

Rules from ``uv-interface.md`` §4 (rc per command, in the order checked) and
``uv-semantics.md`` §2. Donated storage becomes UV storage on success: any
host access to it takes PGM 0x3d until it is given back, zeroed, by the
matching destroy (or by a host reset).

Where §4 lists return codes, the handlers check them in the order listed,
so that a request wrong in two ways gets the earlier code. Where the
reference leaves a case open, sesim picks a code; each such code is a named
constant below whose docstring says so, and it is checked after the
documented ones of the same command.
"""

from __future__ import annotations

from attrs import evolve

from protocol._qui import QUI_LENGTH, QuiResponse, inst_calls_list_of
from protocol._uvc_codes import (
    NEED_DESTROY,
    Cc,
    CreateSecConfRc,
    CreateSecCpuRc,
    InitUvRc,
    Rc,
    UvcCommand,
)
from protocol._uvcb_base import UvcResponse

from ._cpu import SecureCpuState
from ._memory import PAGE_SIZE, FrameState
from ._uv_core import Caller, ConfigPhase, SecureConfig, Ultravisor, fail, handles, ok, partial

MIB = 1 << 20
GIB = 1 << 30
LOWCORE_LEN = 8 * 1024
"""The absolute lowcore: the first two pages (uv-interface.md §4 "first 8 KiB")."""
ASCE_PRIVATE_SPACE = 0x100
ASCE_REAL_SPACE = 0x20
ASCE_ORIGIN_MASK = ~0xFFF
INIT_UV_ALIGN = MIB
CONF_BASE_ALIGN = 16 * 1024
SCA_LEN = 64
"""Bytes of the SCA that must lie in memory (its header; sesim checks no more)."""
SIE_BLOCK_LEN = 0x200
"""Bytes of the SIE state description that must be accessible for CREATE_SEC_CPU."""

RC_INIT_UV_UNALIGNED = 0x0106
"""INIT_UV with a storage origin that is not 1 MiB aligned (sesim's choice; checked after the documented rcs)."""
RC_CPUS_REMAIN = 0x0102
"""DESTROY_SEC_CONF(_FAST) on a configuration that still has secure CPUs (sesim's choice)."""
RC_TOO_MANY_CONFIGS = 0x0103
"""CREATE_SEC_CONF beyond ``max_num_sec_conf`` live configurations (sesim's choice)."""
RC_CONF_STOR_UNALIGNED = 0x0106
"""CREATE_SEC_CONF: base storage not 16 KiB or variable storage not 4 KiB aligned (sesim's choice)."""
RC_VAR_STOR_OUTSIDE_MEMORY = 0x010A
"""CREATE_SEC_CONF: variable storage not inside memory (sesim's choice; §4 names only the base storage)."""
RC_VAR_STOR_OVERLAPS_LOWCORE = 0x010E
"""CREATE_SEC_CONF: variable storage overlaps the lowcore (sesim's choice, the code kvm-unit-tests expects)."""
RC_CPU_STOR_UNALIGNED = 0x0108
"""CREATE_SEC_CPU: CPU storage not page aligned (sesim's choice)."""


_HOST_ACCESSIBLE = (FrameState.EXPORTED, FrameState.SHARED, FrameState.SHARED_PINNED)


def _overlaps(a: int, alen: int, b: int, blen: int) -> bool:
    return a < b + blen and b < a + alen


# ---------------------------------------------------------------- QUI
def qui_response(uv: Ultravisor, caller: Caller, length: int) -> QuiResponse:
    """QUI as the caller's context sees it (uv-interface.md §5).

    The host sees every host command this UV implements and no guest-only
    command; a guest sees QUI, share and unshare (and attestation and
    secrets where installed) and no host command. A block shorter than
    0x100 gets what fits and cc 1 / rc 0x0100 (§1, §3).
    """
    limits = uv.limits
    commands = uv.guest_installed if caller.is_guest else uv.host_installed
    attest = UvcCommand.RETR_ATTEST in uv.guest_installed
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
        supp_att_req_hdr_ver=limits.supp_att_req_hdr_ver if attest else 0,
        supp_att_pflags=limits.supp_att_pflags if attest else 0,
    )
    if length >= QUI_LENGTH:
        return full
    return evolve(full.truncated(length), cc=Cc.ERROR, rc=Rc.MORE_DATA)


@handles(UvcCommand.QUI)
def _qui(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    return qui_response(uv, caller, request.length)  # type: ignore[attr-defined]


# ------------------------------------------------------------ INIT_UV
@handles(UvcCommand.INIT_UV)
def _init_uv(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Donate the UV's base storage, once per host reset (uv-interface.md §4)."""
    origin: int = request.stor_origin  # type: ignore[attr-defined]
    length: int = request.stor_len & ~(PAGE_SIZE - 1)  # type: ignore[attr-defined]  # taken 4 KiB aligned
    size = uv.memory.size
    if uv.initialized:
        fail(InitUvRc.ALREADY_INITIALIZED)
    if uv.server.operating_cpus() > 1:
        fail(InitUvRc.MULTIPLE_CPUS_OPERATING)
    if length < uv.limits.uv_base_stor_len:
        fail(InitUvRc.STOR_LEN_TOO_SMALL)
    if origin >= size:
        fail(InitUvRc.STOR_ORIGIN_OUTSIDE_MEMORY)
    if origin + length > size:
        fail(InitUvRc.STOR_END_OUTSIDE_MEMORY)
    if origin < 2 * GIB:
        fail(InitUvRc.STOR_BELOW_2G)  # Linux setup_uv allocates above 2 GiB
    if origin % INIT_UV_ALIGN:
        fail(RC_INIT_UV_UNALIGNED)
    uv.donate(origin, length)
    uv.base_storage = (origin, length)
    uv.initialized = True
    return ok(request)  # type: ignore[arg-type]


# ---------------------------------------------------- CREATE_SEC_CONF
@handles(UvcCommand.CREATE_SEC_CONF)
def _create_sec_conf(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Create a configuration from two donations (uv-interface.md §4, in its order).

    0x0101/0x0102 guest storage limits, (sesim) too many configurations,
    0x0104 storage or ASCE in use, 0x0105 ASCE, 0x0108/0x0109 base storage,
    (sesim) variable storage and alignment, 0x010c/0x010d SCA. Every error
    returns handle 0 unless :attr:`UvLimits.sca_error_needs_destroy` makes
    the SCA errors late ones (0x8000 flag, live handle).
    """
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
        uv.storage_in_use(base, base_len)
        or uv.storage_in_use(var, var_len)
        or _overlaps(base, base_len, var, var_len)
        or any(c.asce & ASCE_ORIGIN_MASK == asce & ASCE_ORIGIN_MASK for c in uv.configs.values())
    ):
        fail(CreateSecConfRc.STOR_OR_ASCE_IN_USE)
    if not asce & ASCE_PRIVATE_SPACE or asce & ASCE_REAL_SPACE:
        fail(CreateSecConfRc.ASCE_INVALID)
    if not memory.contains(base, base_len):
        fail(CreateSecConfRc.BASE_STOR_OUTSIDE_MEMORY)
    if _overlaps(base, base_len, 0, LOWCORE_LEN):
        fail(CreateSecConfRc.BASE_STOR_OVERLAPS_LOWCORE)
    if not memory.contains(var, var_len):
        fail(RC_VAR_STOR_OUTSIDE_MEMORY)
    if _overlaps(var, var_len, 0, LOWCORE_LEN):
        fail(RC_VAR_STOR_OVERLAPS_LOWCORE)
    if base % CONF_BASE_ALIGN or var % PAGE_SIZE:
        fail(RC_CONF_STOR_UNALIGNED)
    sca_rc = 0
    if sca == 0:
        sca_rc = CreateSecConfRc.SCA_ORIGIN_ZERO
    elif not memory.is_valid(sca, SCA_LEN):
        sca_rc = CreateSecConfRc.SCA_OUTSIDE_MEMORY
    if sca_rc and not limits.sca_error_needs_destroy:
        fail(sca_rc)
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
        phase=ConfigPhase.FAILED if sca_rc else ConfigPhase.CREATED,
    )
    if sca_rc:
        # The UV already took the donations: the host must destroy this handle first (§2).
        fail(NEED_DESTROY | sca_rc, guest_handle=handle)
    return ok(request, guest_handle=handle)  # type: ignore[arg-type]


# ------------------------------------------------------- destroying it
def destroy_config(uv: Ultravisor, conf: SecureConfig, *, clean_memory: bool) -> None:
    """Forget ``conf`` and give its donations back, zeroed.

    With ``clean_memory`` (DESTROY_SEC_CONF, commit ff63b9bfa56d) every page it
    still owns is cleared and becomes host memory. Without it (the FAST
    variant) its secure pages stay secure for a configuration that no longer
    exists, until the host destroys them one by one (uv-semantics.md §2.5);
    its exported pages (ciphertext nobody can import any more) and its
    shared pages (plaintext the guest gave away) are the host's at once.
    """
    if clean_memory:
        _clean_pages(uv, conf, len(conf.secure_frames))
    # Exported and shared pages are host-accessible already; with the configuration its export
    # records and its sharing go, so they stop being tracked (bytes kept). An exported frame may
    # have left ``secure_frames`` at its export, so every frame the configuration owns is looked at.
    for frame in list(uv.memory.frames()):
        if frame.owner == conf.handle and frame.state in _HOST_ACCESSIBLE:
            uv.release_frame(frame, clear=False)
    uv.reclaim(conf.base_origin, conf.base_len)
    uv.reclaim(conf.var_origin, conf.var_len)
    del uv.configs[conf.handle]


def _clean_pages(uv: Ultravisor, conf: SecureConfig, count: int) -> None:
    """Clear and hand back up to ``count`` of the pages ``conf`` still owns (exported ones keep their bytes)."""
    for pfn in sorted(conf.secure_frames)[:count]:
        frame = uv.memory.frame(pfn)
        if frame.owner == conf.handle and frame.state is not FrameState.HOST:
            uv.release_frame(frame, clear=frame.state is not FrameState.EXPORTED)
        else:
            conf.secure_frames.pop(pfn, None)


@handles(UvcCommand.DESTROY_SEC_CONF)
def _destroy_sec_conf(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Destroy a configuration without CPUs; may end partial (cc 3) and be re-issued."""
    conf = uv.config(request.handle, resuming=True)  # type: ignore[attr-defined]
    if conf.cpus:
        fail(RC_CPUS_REMAIN)
    step = uv.limits.destroy_pages_per_call
    if step and len(conf.secure_frames) > step:
        _clean_pages(uv, conf, step)
        conf.destroying = True
        return partial(request)  # type: ignore[arg-type]
    destroy_config(uv, conf, clean_memory=True)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DESTROY_SEC_CONF_FAST)
def _destroy_sec_conf_fast(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Forget a configuration at once; its pages stay secure until destroyed one by one."""
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.cpus:
        fail(RC_CPUS_REMAIN)
    destroy_config(uv, conf, clean_memory=False)
    return ok(request)  # type: ignore[arg-type]


# ----------------------------------------------------- secure CPUs
@handles(UvcCommand.CREATE_SEC_CPU)
def _create_sec_cpu(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Create a secure CPU (uv-interface.md §4: 0x0020, 0x0103 … 0x0107 in that order).

    CPU storage that is already UV storage counts as storage the host cannot
    give (0x0105, sesim's choice); a SIE block in UV storage or on an
    invalid page is not accessible (0x0107).
    """
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
    if not memory.contains(stor, length) or uv.storage_in_use(stor, length):
        fail(CreateSecCpuRc.STOR_OUTSIDE_MEMORY)
    if _overlaps(stor, length, 0, LOWCORE_LEN):
        fail(CreateSecCpuRc.STOR_OVERLAPS_LOWCORE)
    if not memory.is_valid(state, SIE_BLOCK_LEN) or uv.storage_in_use(state, SIE_BLOCK_LEN):
        fail(CreateSecCpuRc.STATE_ORIGIN_INACCESSIBLE)
    if stor % PAGE_SIZE:
        fail(RC_CPU_STOR_UNALIGNED)
    handle = uv.new_handle()
    uv.donate(stor, length)
    conf.cpus[num] = handle
    uv.cpus[handle] = SecureCpuState(
        handle=handle, config_handle=conf.handle, num=num, state_origin=state, stor_origin=stor
    )
    return ok(request, cpu_handle=handle)  # type: ignore[arg-type]


@handles(UvcCommand.DESTROY_SEC_CPU)
def _destroy_sec_cpu(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Destroy a secure CPU; its storage comes back zeroed (uv-interface.md §4: 0x0021)."""
    cpu = uv.cpu(request.handle)  # type: ignore[attr-defined]
    conf = uv.configs.get(cpu.config_handle)
    if conf is not None:
        conf.cpus.pop(cpu.num, None)
    uv.reclaim(cpu.stor_origin, uv.limits.cpu_stor_len)
    del uv.cpus[cpu.handle]
    return ok(request)  # type: ignore[arg-type]
