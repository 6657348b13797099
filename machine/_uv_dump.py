"""Dumping a secure configuration: DUMP_INIT, DUMP_CONF_STOR_STATE, DUMP_CPU, DUMP_COMPLETE.

uv-semantics.md §7. A dump is allowed only when the SE header's plaintext
control flags allow it (PCF bit 34, ``PCF_ALLOW_DUMPING``) and no accepted
add-secret request asked to disable dumps (ASRCB flag bit 0, se-format.md
§4.3: a secret's provider may forbid what the image's owner allowed, since
the owner could open a dump with the CCK); while it runs no
CPU of the configuration may enter SIE (validity 0x2007 in
:mod:`machine._uv_sie`; KVM blocks its vCPUs before DUMP_INIT so that never
happens). Nothing the UV writes into the host's dump area is plaintext of
the guest:

* the guest's memory itself is read by the host as for any host access, so
  each secure page is exported first and the dump holds its ciphertext;
* DUMP_CONF_STOR_STATE writes, per 1 MiB of guest memory, the tweak of each
  page's last export (``conf_dump_storage_state_len`` bytes: 256 × 16);
* DUMP_CPU writes the CPU's state sealed with AES-256-GCM
  (``cpu_stor_len`` bytes);
* DUMP_COMPLETE writes the configuration's export key, sealed the same way
  (``conf_dump_finalize_len`` bytes), and ends the dump.

The sealing key is derived from the customer communication key (CCK) of
the SE header, so the owner of the image, and only they, can open the CPU
states and the export key and then decrypt the exported pages with the
tweaks (:func:`open_dump_blob`, :func:`dump_key`; "inferred" in the
reference). The layouts and the return codes below are sesim's choices:
the reference defers them to ``uv.h`` and names no rc.

Layout of a sealed blob (CPU state or completion data)::

    0x00 magic (8)   b"SESIMDC1" (CPU) or b"SESIMDF1" (completion)
    0x08 u16         CPU number (0 for completion)
    0x0a u16         plaintext length
    0x0c nonce (12)
    0x18 ciphertext + 16-byte GCM tag; zero padding to the buffer's length
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol import FormatError, VerificationError
from protocol._se_header import PCF_ALLOW_DUMPING
from protocol._uvc_codes import UvcCommand
from protocol._uvcb_base import UvcResponse

from ._cpu import CpuState, Psw
from ._memory import PAGE_SHIFT
from ._uv_core import Caller, ConfigPhase, SecureConfig, Ultravisor, fail, handles, ok

MIB = 1 << 20
PAGES_PER_MIB = MIB >> PAGE_SHIFT
TWEAK_LEN = 16

RC_DUMP_NOT_ALLOWED = 0x0101
"""DUMP_INIT: the configuration's SE header does not allow dumping (PCF bit 34), an accepted
add-secret request carried the disable-dump flag, or it never verified an image (sesim's choice
of rc)."""
RC_DUMP_STATE = 0x0102
"""DUMP_INIT while a dump runs; DUMP_CONF_STOR_STATE, DUMP_CPU or DUMP_COMPLETE while none
runs (sesim's choice)."""
RC_DUMP_GADDR = 0x0103
"""DUMP_CONF_STOR_STATE: gaddr not 1 MiB aligned, or not below the guest's memory size (sesim's choice)."""
RC_DUMP_AREA = 0x0104
"""The dump area is not host memory the UV can write (beyond memory, an invalid page, UV or
guest storage; sesim's choice)."""

CPU_MAGIC = b"SESIMDC1"
FINAL_MAGIC = b"SESIMDF1"
_BLOB = struct.Struct(">8sHH12s")
_CPU_STATE = struct.Struct(">QQ16Q16QQq")


def dump_key(cck: bytes, cuid: bytes) -> bytes:
    """The key that seals dump data: HKDF-SHA-512 of the image's CCK, bound to the configuration."""
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=None, info=b"sesim-dump:" + cuid).derive(cck)


def seal(key: bytes, magic: bytes, num: int, nonce: bytes, plain: bytes, size: int) -> bytes:
    """A sealed blob (module docstring), zero padded to ``size`` bytes."""
    head = _BLOB.pack(magic, num, len(plain), nonce)
    blob = head + AESGCM(key).encrypt(nonce, plain, head)
    return blob.ljust(size, b"\0")


def open_dump_blob(key: bytes, blob: bytes) -> tuple[bytes, int, bytes]:
    """(magic, number, plaintext) of a sealed blob; what the image's owner does with a dump.

    Raises:
        FormatError: the blob is too short for what its header says.
        VerificationError: the blob was not sealed with ``key`` or was changed.
    """
    if len(blob) < _BLOB.size + 16:
        raise FormatError(f"a sealed dump blob has at least {_BLOB.size + 16} bytes, got {len(blob)}")
    magic, num, length, nonce = _BLOB.unpack_from(blob)
    end = _BLOB.size + length + 16
    if end > len(blob):
        raise FormatError(f"the dump blob says {length} bytes of plaintext, more than it holds")
    try:
        plain = AESGCM(key).decrypt(nonce, bytes(blob[_BLOB.size : end]), bytes(blob[: _BLOB.size]))
    except InvalidTag:
        raise VerificationError("the dump blob does not open with this key", check="dump-seal") from None
    return magic, num, plain


def pack_cpu_state(state: CpuState) -> bytes:
    """The CPU state a DUMP_CPU seals: PSW, 16 GPRs, 16 CRs, prefix, CPU timer."""
    mask64 = (1 << 64) - 1
    return _CPU_STATE.pack(
        state.psw.mask, state.psw.addr, *(g & mask64 for g in state.gprs), *(c & mask64 for c in state.crs),
        state.prefix, state.cpu_timer,
    )  # fmt: skip


def unpack_cpu_state(plain: bytes) -> CpuState:
    """Inverse of :func:`pack_cpu_state` (the owner's side)."""
    values = _CPU_STATE.unpack(plain)
    return CpuState(
        psw=Psw(mask=values[0], addr=values[1]),
        gprs=list(values[2:18]),
        crs=list(values[18:34]),
        prefix=values[34],
        cpu_timer=values[35],
    )


def _key_of(conf: SecureConfig) -> bytes:
    return dump_key(conf.opened.secrets.cck, conf.cuid)


def _check_area(uv: Ultravisor, origin: int, length: int) -> None:
    if not uv.memory.is_valid(origin, length) or uv.storage_in_use(origin, length):
        fail(RC_DUMP_AREA)


def _dumping(uv: Ultravisor, handle: int) -> SecureConfig:
    conf = uv.config(handle)
    if not conf.dumping:
        fail(RC_DUMP_STATE)
    return conf


@handles(UvcCommand.DUMP_INIT)
def _dump_init(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.VERIFIED or not conf.opened.header.pcf & PCF_ALLOW_DUMPING:
        fail(RC_DUMP_NOT_ALLOWED)
    if conf.secret_store is not None and conf.secret_store.dump_disabled:
        fail(RC_DUMP_NOT_ALLOWED)  # an add-secret request said "disable dump" (se-format.md §4.3)
    if conf.dumping:
        fail(RC_DUMP_STATE)
    conf.dumping = True
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DUMP_CONF_STOR_STATE)
def _dump_stor_state(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """The export tweaks of the 256 pages of one MiB, 16 bytes each (zero: never exported)."""
    conf = _dumping(uv, request.config_handle)  # type: ignore[attr-defined]
    gaddr: int = request.gaddr  # type: ignore[attr-defined]
    if gaddr % MIB or gaddr >= conf.msl:
        fail(RC_DUMP_GADDR)
    length = uv.limits.conf_dump_storage_state_len
    origin: int = request.dump_area_origin  # type: ignore[attr-defined]
    _check_area(uv, origin, length)
    first = gaddr >> PAGE_SHIFT
    out = bytearray()
    for gfn in range(first, first + PAGES_PER_MIB):
        record = conf.exports.get(gfn)
        out += record.tweak if record is not None else bytes(TWEAK_LEN)
    uv.memory.raw_write(origin, bytes(out[:length]).ljust(length, b"\0"))
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DUMP_CPU)
def _dump_cpu(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    cpu = uv.cpu(request.cpu_handle)  # type: ignore[attr-defined]
    conf = _dumping(uv, cpu.config_handle)
    length = uv.limits.cpu_stor_len
    origin: int = request.dump_area_origin  # type: ignore[attr-defined]
    _check_area(uv, origin, length)
    blob = seal(_key_of(conf), CPU_MAGIC, cpu.num, uv.random_bytes(12), pack_cpu_state(cpu.cpu), length)
    uv.memory.raw_write(origin, blob)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.DUMP_COMPLETE)
def _dump_complete(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = _dumping(uv, request.config_handle)  # type: ignore[attr-defined]
    length = uv.limits.conf_dump_finalize_len
    origin: int = request.dump_area_origin  # type: ignore[attr-defined]
    _check_area(uv, origin, length)
    blob = seal(_key_of(conf), FINAL_MAGIC, 0, uv.random_bytes(12), conf.export_key + conf.cuid, length)
    uv.memory.raw_write(origin, blob)
    conf.dumping = False
    return ok(request)  # type: ignore[arg-type]
