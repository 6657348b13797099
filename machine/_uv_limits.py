"""What a simulated ultravisor supports: QUI values, limits, installed calls.

The defaults are chosen so that small servers work (the testbed's 2200 MiB
server has room for UV storage above 2 GiB) while every check of
``uv-interface.md`` §4 can still fire. A run configuration may override any
of them. Beside the QUI values it carries the behaviours where firmware
levels differ or where sesim offers a knob to reach a documented answer:
``legacy_destroy_rc`` (DESTR_SEC_STOR of older firmware),
``sca_error_needs_destroy`` (CREATE_SEC_CONF errors with the 0x8000 flag) and
``destroy_pages_per_call`` (DESTROY_SEC_CONF ending partial, cc 3). All are
off by default.
"""

from __future__ import annotations

from attrs import field, frozen
from attrs.validators import ge

from protocol._uvc_codes import COMMAND_TABLE, UvcCommand, UvcContext

MIB = 1 << 20
GIB = 1 << 30

GUEST_BASE_COMMANDS = frozenset({UvcCommand.QUI, UvcCommand.SET_SHARED_ACCESS, UvcCommand.REMOVE_SHARED_ACCESS})
GUEST_ATTEST_COMMANDS = frozenset(
    {
        UvcCommand.RETR_ATTEST,
        UvcCommand.ADD_SECRET,
        UvcCommand.LIST_SECRETS,
        UvcCommand.LOCK_SECRETS,
        UvcCommand.RETR_SECRET,
    }
)


@frozen(kw_only=True)
class UvLimits:
    """The ultravisor's sizes and limits, as QUI reports them (uv-interface.md §5)."""

    uv_base_stor_len: int = 8 * MIB
    conf_base_phys_stor_len: int = 64 * 1024
    conf_base_virt_stor_len: int = 32 * 1024
    conf_virt_var_stor_len: int = 512  # per 1 MiB of guest memory
    cpu_stor_len: int = 16 * 1024
    max_num_sec_conf: int = 1024
    max_guest_stor_addr: int = 4 * (1 << 40)  # 4 TiB
    max_guest_cpu_id: int = 247
    uv_feature_indications: int = 0  # MISC off: export-before-import is needed (uv-semantics.md §3.5)
    supp_se_hdr_versions: int = 0x0100  # bit for version 0x100
    supp_se_hdr_pcf: int = 0x00000000_30000000 | 0xF2  # dump, no-encryption, PCKMO bits, backup keys
    conf_dump_storage_state_len: int = 4096
    conf_dump_finalize_len: int = 4096
    supp_att_req_hdr_ver: int = 0x0100
    supp_att_pflags: int = 0x7C00000000000000
    destroy_fast: bool = True
    attestation: bool = True
    legacy_destroy_rc: bool = False
    """DESTR_SEC_STOR on a page that is not secure answers rc 0x0107 rrc 0x000d,
    as older firmware does (uv-interface.md §4 "Legacy", uv.c ``uv_destroy``);
    off, it answers success as current firmware does. Linux accepts both."""
    sca_error_needs_destroy: bool = False
    """CREATE_SEC_CONF takes the donations before it checks the SCA, so rc 0x010c
    and 0x010d come with the 0x8000 flag and a live handle that the host must
    destroy (uv-interface.md §2). Off (the default), every error returns handle 0."""
    destroy_pages_per_call: int = field(default=0, validator=ge(0))
    """At most this many secure pages are cleared per DESTROY_SEC_CONF call; if
    more remain the call ends with cc 3 (partial) and the host re-issues it
    (uv-interface.md §1). 0: the destroy always completes in one call."""

    def host_commands(self) -> frozenset[UvcCommand]:
        """Every host command (and QUI); DESTROY_SEC_CONF_FAST only where installed."""
        commands = {
            cmd for cmd, info in COMMAND_TABLE.items() if info.context in (UvcContext.HOST, UvcContext.BOTH)
        }
        if not self.destroy_fast:
            commands.discard(UvcCommand.DESTROY_SEC_CONF_FAST)
        return frozenset(commands)

    def guest_commands(self) -> frozenset[UvcCommand]:
        """QUI, share and unshare; attestation and secrets where installed."""
        return GUEST_BASE_COMMANDS | (GUEST_ATTEST_COMMANDS if self.attestation else frozenset())

    def conf_var_stor_len(self, msl: int) -> int:
        """Variable storage for a guest of ``msl`` bytes (uv-semantics.md §1.4), page aligned."""
        var = self.conf_virt_var_stor_len * (msl // MIB)
        return ((var + 0xFFF) & ~0xFFF) + self.conf_base_virt_stor_len
