"""The numbers of the ultravisor-call interface: commands, codes, states.

Everything here is a constant of the architecture as public host and guest
code uses it (``reference/uv-interface.md`` §1-§4, ``uv-semantics.md`` §1,
Linux ``arch/s390/include/asm/uv.h``). The command table carries, per
command, its QUI bit, the architected UVCB length (the value a correct caller
puts into the header ``len``) and the context allowed to issue it.

Return codes come in two kinds: the generic :class:`Rc` (uv-interface.md §2),
valid for every command, and one small enum per command for its own codes
(§4). They overlap on purpose (0x0102 means one thing for INIT_UV and another
for VERIFY_IMG), so command-specific codes are never mixed into :class:`Rc`.
"""

from __future__ import annotations

import enum

from attrs import frozen


class UvcContext(enum.StrEnum):
    """Who may issue a command (uv-interface.md §1: wrong context → rc 0x0002)."""

    HOST = "host"
    GUEST = "guest"
    BOTH = "both"


class UvcCommand(enum.IntEnum):
    """Every UVC command code (uv-interface.md §3, uv.h ``UVC_CMD_*``).

    Members carry their table row as properties: :attr:`qui_bit`,
    :attr:`uvcb_length` and :attr:`context`.
    """

    QUI = 0x0001
    QUERY_KEYS = 0x0002
    INIT_UV = 0x000F
    CREATE_SEC_CONF = 0x0100
    DESTROY_SEC_CONF = 0x0101
    DESTROY_SEC_CONF_FAST = 0x0102
    CREATE_SEC_CPU = 0x0120
    DESTROY_SEC_CPU = 0x0121
    CONV_TO_SEC_STOR = 0x0200
    CONV_FROM_SEC_STOR = 0x0201
    DESTR_SEC_STOR = 0x0202
    SET_SEC_CONF_PARAMS = 0x0300
    UNPACK_IMG = 0x0301
    VERIFY_IMG = 0x0302
    CPU_RESET = 0x0310
    CPU_RESET_INITIAL = 0x0311
    PREPARE_RESET = 0x0320
    CPU_RESET_CLEAR = 0x0321
    CPU_SET_STATE = 0x0330
    SET_UNSHARE_ALL = 0x0340
    PIN_PAGE_SHARED = 0x0341
    UNPIN_PAGE_SHARED = 0x0342
    DUMP_INIT = 0x0400
    DUMP_CONF_STOR_STATE = 0x0401
    DUMP_CPU = 0x0402
    DUMP_COMPLETE = 0x0403
    SET_SHARED_ACCESS = 0x1000
    REMOVE_SHARED_ACCESS = 0x1001
    RETR_ATTEST = 0x1020
    ADD_SECRET = 0x1031
    LIST_SECRETS = 0x1033
    LOCK_SECRETS = 0x1034
    RETR_SECRET = 0x1035

    @property
    def info(self) -> CommandInfo:
        """The whole table row of this command."""
        return COMMAND_TABLE[self]

    @property
    def qui_bit(self) -> int | None:
        """Index in QUI ``inst_calls_list`` (MSB-0); None for DESTR_SEC_STOR, which has none."""
        return COMMAND_TABLE[self].qui_bit

    @property
    def uvcb_length(self) -> int:
        """The architected UVCB length, i.e. the header ``len`` a correct caller sets."""
        return COMMAND_TABLE[self].uvcb_length

    @property
    def context(self) -> UvcContext:
        """Who may issue the command: host, guest or both (QUI only)."""
        return COMMAND_TABLE[self].context

    def allowed_in(self, issuer: UvcContext) -> bool:
        """Whether an issuer of this context may use the command (else rc 0x0002, §1)."""
        ctx = COMMAND_TABLE[self].context
        return ctx is UvcContext.BOTH or ctx == issuer


@frozen(kw_only=True)
class CommandInfo:
    """One row of the command table (uv-interface.md §3)."""

    command: UvcCommand
    qui_bit: int | None
    uvcb_length: int
    context: UvcContext


def _row(cmd: UvcCommand, bit: int | None, length: int, ctx: UvcContext) -> CommandInfo:
    return CommandInfo(command=cmd, qui_bit=bit, uvcb_length=length, context=ctx)


_H, _G, _B = UvcContext.HOST, UvcContext.GUEST, UvcContext.BOTH
_C = UvcCommand

# Lengths are uv-interface.md §3; where §3 defers to uv.h (QUERY_KEYS, dumps,
# secrets) or uv.h differs, the value is sizeof() of the uv.h struct that
# Linux puts into header.len:
#   DESTROY_SEC_CONF_FAST: uv-interface.md §3 (the project's authority) says
#     0x40, a nodata block; Linux sends sizeof(struct uv_cb_destroy_fast) =
#     0x48 (kvm/pv.c). sesim follows §3.
#   QUERY_KEYS uv_cb_query_keys 0x200; DUMP_INIT uv_cb_nodata 0x40 (KVM uses
#   uv_cmd_nodata); DUMP_CONF_STOR_STATE uv_cb_dump_stor_state 0x50;
#   DUMP_CPU uv_cb_dump_cpu 0x50; DUMP_COMPLETE uv_cb_dump_complete 0x50;
#   ADD_SECRET uv_cb_guest_addr 0x48; LIST_SECRETS uv_cb_list_secrets 0x48;
#   LOCK_SECRETS uv_cb_nodata 0x40 (uvdevice.c); RETR_SECRET uv_cb_retr_secr 0x48.
COMMAND_TABLE: dict[UvcCommand, CommandInfo] = {
    r.command: r
    for r in (
        _row(_C.QUI, 0, 0x100, _B),
        _row(_C.INIT_UV, 1, 0x48, _H),
        _row(_C.CREATE_SEC_CONF, 2, 0x80, _H),
        _row(_C.DESTROY_SEC_CONF, 3, 0x40, _H),
        _row(_C.CREATE_SEC_CPU, 4, 0x60, _H),
        _row(_C.DESTROY_SEC_CPU, 5, 0x40, _H),
        _row(_C.CONV_TO_SEC_STOR, 6, 0x28, _H),
        _row(_C.CONV_FROM_SEC_STOR, 7, 0x20, _H),
        _row(_C.DESTR_SEC_STOR, None, 0x20, _H),
        _row(_C.SET_SHARED_ACCESS, 8, 0x30, _G),
        _row(_C.REMOVE_SHARED_ACCESS, 9, 0x30, _G),
        _row(_C.SET_SEC_CONF_PARAMS, 11, 0x50, _H),
        _row(_C.UNPACK_IMG, 13, 0x50, _H),
        _row(_C.VERIFY_IMG, 14, 0x40, _H),
        _row(_C.CPU_RESET, 15, 0x40, _H),
        _row(_C.CPU_RESET_INITIAL, 16, 0x40, _H),
        _row(_C.CPU_SET_STATE, 17, 0x50, _H),
        _row(_C.PREPARE_RESET, 18, 0x40, _H),
        _row(_C.CPU_RESET_CLEAR, 19, 0x40, _H),
        _row(_C.SET_UNSHARE_ALL, 20, 0x40, _H),
        _row(_C.PIN_PAGE_SHARED, 21, 0x20, _H),
        _row(_C.UNPIN_PAGE_SHARED, 22, 0x28, _H),
        _row(_C.DESTROY_SEC_CONF_FAST, 23, 0x40, _H),
        _row(_C.DUMP_INIT, 24, 0x40, _H),
        _row(_C.DUMP_CONF_STOR_STATE, 25, 0x50, _H),
        _row(_C.DUMP_CPU, 26, 0x50, _H),
        _row(_C.DUMP_COMPLETE, 27, 0x50, _H),
        _row(_C.RETR_ATTEST, 28, 0x188, _G),
        _row(_C.ADD_SECRET, 29, 0x48, _G),
        _row(_C.LIST_SECRETS, 30, 0x48, _G),
        _row(_C.LOCK_SECRETS, 31, 0x40, _G),
        _row(_C.RETR_SECRET, 33, 0x48, _G),
        _row(_C.QUERY_KEYS, 34, 0x200, _H),
    )
}
del _H, _G, _B, _C


class Cc(enum.IntEnum):
    """Condition code of the UVC instruction (uv.h ``UVC_CC_*``, uv-interface.md §1)."""

    OK = 0
    ERROR = 1
    BUSY = 2
    PARTIAL = 3


class Rc(enum.IntEnum):
    """Generic return codes, valid for any command (uv-interface.md §2, uv.h ``UVC_RC_*``)."""

    EXECUTED = 0x0001
    INV_CMD = 0x0002
    INV_STATE = 0x0003
    INV_LEN = 0x0005
    NO_RESUME = 0x0007
    INV_GHANDLE = 0x0020
    INV_CHANDLE = 0x0021
    MORE_DATA = 0x0100


NEED_DESTROY = 0x8000
"""Flag ORed into a CREATE_SEC_CONF error rc: a handle was returned anyway and
must be destroyed before the donated storage is freed (uv-interface.md §2)."""


class CpuState(enum.IntEnum):
    """CPU_SET_STATE ``state`` values (uv.h ``PV_CPU_STATE_*``)."""

    OPR = 1
    STP = 2
    CHKSTP = 3
    OPR_LOAD = 5


class PgmCode(enum.IntEnum):
    """Program-interruption codes at the UVC boundary (uv-interface.md §1, §4).

    Named after their meaning in the z/Architecture: 0x11 is the
    page-translation exception, which is what an unreadable UVCB raises;
    0x02 a UVC in problem state, 0x06 nonzero instruction bits 16-23, 0x3d /
    0x3e host access to secure / guest access to non-secure storage. The
    other translation and access codes are listed so that lower-level code
    can share one enum.
    """

    PRIVILEGED_OPERATION = 0x02
    ADDRESSING = 0x05
    SPECIFICATION = 0x06
    SEGMENT_TRANSLATION = 0x10
    PAGE_TRANSLATION = 0x11
    OPERAND = 0x15
    SECURE_STORAGE_ACCESS = 0x3D
    NON_SECURE_STORAGE_ACCESS = 0x3E
    SECURE_STORAGE_VIOLATION = 0x3F  # uv-semantics.md §8 #8 (0x3d/0x3f inside SIE)


# -- command-specific return codes (cc 1), uv-interface.md §4 -------------------


class InitUvRc(enum.IntEnum):
    """INIT_UV (§4; origin 1 MiB aligned, length taken 4 KiB aligned)."""

    ALREADY_INITIALIZED = 0x0101
    MULTIPLE_CPUS_OPERATING = 0x0102
    STOR_LEN_TOO_SMALL = 0x0103
    STOR_ORIGIN_OUTSIDE_MEMORY = 0x0104
    STOR_END_OUTSIDE_MEMORY = 0x0105
    STOR_BELOW_2G = 0x0108


class CreateSecConfRc(enum.IntEnum):
    """CREATE_SEC_CONF (§4); compare after masking off :data:`NEED_DESTROY`."""

    MSO_TOO_HIGH = 0x0101
    MSO_MSL_TOO_HIGH = 0x0102
    STOR_OR_ASCE_IN_USE = 0x0104
    ASCE_INVALID = 0x0105
    BASE_STOR_OUTSIDE_MEMORY = 0x0108
    BASE_STOR_OVERLAPS_LOWCORE = 0x0109
    SCA_ORIGIN_ZERO = 0x010C
    SCA_OUTSIDE_MEMORY = 0x010D


class CreateSecConfFlags(enum.IntFlag):
    """CREATE_SEC_CONF ``flags`` (u16 @0x36, uv.h ``uv_cb_cgc.flags``; big-endian bitfield)."""

    AP_ALLOW_INSTR = 0x0001
    AP_INSTR_INTR = 0x0002


class DestroySecConfFastRc(enum.IntEnum):
    """DESTROY_SEC_CONF_FAST (uv-semantics.md §1.2: tolerated, normal destroy later)."""

    APQNS_BOUND = 0x0104


class CreateSecCpuRc(enum.IntEnum):
    """CREATE_SEC_CPU (§4); a bad guest handle is the generic :attr:`Rc.INV_GHANDLE`."""

    CPU_NUM_TOO_HIGH = 0x0103
    CPU_NUM_IN_USE = 0x0104
    STOR_OUTSIDE_MEMORY = 0x0105
    STOR_OVERLAPS_LOWCORE = 0x0106
    STATE_ORIGIN_INACCESSIBLE = 0x0107


class ImportRc(enum.IntEnum):
    """Import-like calls: CONV_TO_SEC_STOR, UNPACK_IMG, UNPIN_PAGE_SHARED.

    uv-semantics.md §1.2 (uv.c ``__make_folio_secure``): 0x010a means the
    guest page is not mapped; the host faults it in and retries.
    """

    GADDR_NOT_MAPPED = 0x010A


class DestrSecStorRc(enum.IntEnum):
    """DESTR_SEC_STOR legacy answer on a non-secure page, treated as success (§4)."""

    NOT_SECURE = 0x0107


class DestrSecStorRrc(enum.IntEnum):
    """The rrc that goes with :attr:`DestrSecStorRc.NOT_SECURE` (uv.c ``uv_destroy``)."""

    NOT_SECURE = 0x000D


class SetSecConfParamsRc(enum.IntEnum):
    """SET_SEC_CONF_PARAMS (§4; 0x0108 is QEMU's ``UV_RC_SSC_INVAL_HOSTKEY``)."""

    HEADER_INACCESSIBLE = 0x0103
    NO_KEY_SLOT = 0x0108
    HEADER_LEN_MISMATCH = 0x010A


class SetSecConfParamsRrc(enum.IntEnum):
    """The rrc of :attr:`SetSecConfParamsRc.HEADER_LEN_MISMATCH` (§4)."""

    HEADER_LEN_MISMATCH = 0x0031


class VerifyImgRc(enum.IntEnum):
    """VERIFY_IMG (§4): a digest or page count differs from the SE header."""

    MISMATCH = 0x0102


class VerifyImgRrc(enum.IntEnum):
    """Which value differs, for :attr:`VerifyImgRc.MISMATCH` (§4)."""

    ALD_MISMATCH = 0x001A
    PLD_MISMATCH = 0x001B
    TLD_MISMATCH = 0x001C
    PAGE_COUNT_MISMATCH = 0x001D


class SharedAccessRc(enum.IntEnum):
    """SET_SHARED_ACCESS / REMOVE_SHARED_ACCESS (§4)."""

    ADDR_OUTSIDE_MEMORY = 0x0101


class RetrAttestRc(enum.IntEnum):
    """RETR_ATTEST, in the order the UV checks them (§4); 0x010c comes last."""

    INV_CONT_TOKEN = 0x0101
    USER_DATA_TOO_LONG = 0x0102
    ARCB_INACCESSIBLE = 0x0103
    ARCB_VERSION_UNSUPPORTED = 0x0106
    ARCB_LEN_INVALID = 0x0107
    NO_KEY_SLOT = 0x0108
    ENCR_AREA_SIZE_INVALID = 0x0109
    PFLAGS_UNSUPPORTED = 0x010A
    MEAS_ALG_UNSUPPORTED = 0x010B
    ARCB_UNSEAL_FAILED = 0x010C
    MEAS_LEN_INVALID = 0x010D
    ADD_DATA_LEN_INVALID = 0x010E


class SecretStoreRc(enum.IntEnum):
    """ADD_SECRET / LOCK_SECRETS after the store was locked (§4, uvdevice.c)."""

    LOCKED = 0x0102


class RetrSecretRc(enum.IntEnum):
    """RETR_SECRET (§4, uv.h ``UVC_RC_RETR_SECR_*``)."""

    BUF_TOO_SMALL = 0x0109
    STORE_EMPTY = 0x010F
    INV_IDX = 0x0110
    INV_SECRET = 0x0111


class UvFeature(enum.IntEnum):
    """QUI ``uv_feature_indications`` bits, MSB-0 (uv.h ``enum uv_feat_ind``, §5)."""

    MISC = 0
    AIV = 1
    AP = 4
    AP_INTR = 5
