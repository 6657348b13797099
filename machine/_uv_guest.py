"""The secure guest's own UVCs: RETR_ATTEST and the secret store.

All five take their requests from guest memory (uv-semantics.md §6): the
UVCB names guest absolute addresses of the ARCB/ASRCB and of the output
buffers. An address range outside the guest's memory is answered with the
command's "access exception" rc; a page inside it that the host must first
make accessible raises the program interruption the guest's own access
would take, SIE exits, and the guest re-executes the UVC
(:mod:`machine._uv_access`). Every handler reads all it needs before it
changes anything, so a re-executed call sees the store unchanged.

RETR_ATTEST (uv-interface.md §4; every check before the request is unsealed)::

    0x0101 continuation token not 0 · 0x0102 user data > 256 · 0x0103 ARCB
    outside guest memory · 0x0106 magic/version · 0x0107 rql (too small for
    nks slots, inconsistent with nks/sea, > 1 MiB) · 0x0108 nks 0 · 0x0109
    sea not the flags' size · 0x010a flags not in QUI supp_att_pflags ·
    0x010b MAI not 1 · 0x010d meas_len < 64 · 0x010e add_data_len < what the
    flags need · 0x0104/0x0105 measurement/additional buffer outside guest
    memory · 0x010c not unsealable with this host's key.

ADD_SECRET (codes of s390-tools ``AddCmd::rc_fmt``; the order is sesim's)::

    0x0102 locked · 0x010d dumping · 0x0103 ASRCB outside guest memory ·
    0x0104 magic/user-data type/version/reserved · 0x0105 sizes · 0x0106
    nks 0 · 0x0107 flags other than disable-dump · 0x0109 secret type ·
    0x010a secret length · 0x0108 not unsealable with this host's key ·
    0x010c (rrc :class:`AddSecretRrc`) header tags, CUID, extension secret,
    duplicate ID, CCK update not allowed · 0x010b store full.

The binding checks run after unsealing, so that only an authentic request
can tell which binding failed; a tampered one is 0x0108.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from protocol._arcb import ARCB_AUTH_LEN, ARCB_MAGIC, ARCB_MAX_LEN, ARCB_VERSION, arcb_sea
from protocol._asrcb import (
    ASRCB_FLAG_DISABLE_DUMP,
    ASRCB_MAGIC_PREFIX,
    ASRCB_MAX_LEN,
    ASRCB_VERSION,
    AUTH_LEN,
    EXTENSION_SECRET_LEN,
    LONG_SECRET_HDR_LEN,
    SHORT_SECRET_HDR_LEN,
    derive_extension_secret,
)
from protocol._asrcb_user import UserDataType
from protocol._attest import (
    ATTEST_FLAG_ATTEST_PHKH,
    ATTEST_FLAG_FIRMWARE_STATE,
    ATTEST_FLAG_IMAGE_PHKH,
    ATTEST_FLAG_SECRET_STORE_HASH,
    FIRMWARE_STATE_SIZE,
    MAI_HMAC_SHA512,
    MEASUREMENT_LEN,
    USER_DATA_MAX,
    BootHdrTags,
    additional_data_size,
    compute_measurement,
    measurement_items,
)
from protocol._crypto import GCM_TAG_LEN, KEY_SLOT_LEN, PUBKEY_LEN
from protocol._errors import VerificationError
from protocol._guest_rcs import (
    AddSecretRc,
    AddSecretRrc,
    ListSecretsRc,
    LockSecretsRc,
    RetrAttestAccessRc,
    RetrSecretAccessRc,
)
from protocol._request import REQUEST_HEADER_LEN
from protocol._se_header import SCF_CCK_EXTENSION_SECRET, SCF_CCK_UPDATE_ALLOWED
from protocol._secrets import LIST_MAX_ENTRIES, SecretList, SecretType
from protocol._uvc_codes import Rc, RetrAttestRc, RetrSecretRc, UvcCommand
from protocol._uvcb_base import UvcResponse
from protocol._uvreq import SealedRequest

from ._uv_access import GuestView, guest_view
from ._uv_core import Caller, ConfigPhase, SecureConfig, Ultravisor, fail, handles, ok
from ._uv_secret_store import SecretStore

FIRMWARE_STATE = b"".join(
    hashlib.sha512(b"sesim ultravisor firmware state %d" % i).digest() for i in range(5)
)[:FIRMWARE_STATE_SIZE]
"""The 320 bytes of "firmware state" additional data (sesim's choice: a fixed value per sesim version)."""

_HEADER = struct.Struct(">8sII12s4s7sB4sI")
_ASRCB_FIXED = REQUEST_HEADER_LEN + AUTH_LEN + PUBKEY_LEN
_SECRET_HDR = struct.Struct(">HHIQ")


class _Guest:
    """The calling guest's configuration and its memory, bounds-checked."""

    def __init__(self, uv: Ultravisor, caller: Caller) -> None:
        self.conf: SecureConfig = uv.config(caller.config_handle)
        if self.conf.phase is not ConfigPhase.VERIFIED or self.conf.opened is None:
            fail(Rc.INV_STATE)  # only a running guest issues these (a safety net; sesim's choice of rc)
        self.view: GuestView = guest_view(uv, self.conf.handle)
        self.limit = min(self.conf.msl, self.view.space.size)

    def inside(self, addr: int, length: int) -> bool:
        return addr >= 0 and addr + length <= self.limit

    def read(self, addr: int, length: int, rc: int) -> bytes:
        if not self.inside(addr, length):
            fail(rc)
        return self.view.read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self.view.write(addr, data)

    @property
    def store(self) -> SecretStore:
        if self.conf.secret_store is None:
            self.conf.secret_store = SecretStore.for_config(self.conf.export_key)
        store: SecretStore = self.conf.secret_store
        return store

    @property
    def tags(self) -> BootHdrTags:
        return BootHdrTags.from_header(self.conf.opened.header)


# ---------------------------------------------------------------- RETR_ATTEST
@handles(UvcCommand.RETR_ATTEST)
def _retr_attest(uv: Ultravisor, caller: Caller, request: Any) -> UvcResponse:
    g = _Guest(uv, caller)
    if request.cont_token != 0:
        fail(RetrAttestRc.INV_CONT_TOKEN)  # sesim never answers partial, so no token is valid
    if request.user_data_len > USER_DATA_MAX:
        fail(RetrAttestRc.USER_DATA_TOO_LONG)
    addr = request.arcb_addr
    head = g.read(addr, REQUEST_HEADER_LEN, RetrAttestRc.ARCB_INACCESSIBLE)
    magic, version, rql, _iv, res1, res2, nks, res3, sea = _HEADER.unpack(head)
    raw = g.read(addr, rql, RetrAttestRc.ARCB_INACCESSIBLE) if REQUEST_HEADER_LEN <= rql <= ARCB_MAX_LEN else head
    if magic != ARCB_MAGIC or version != ARCB_VERSION or any(res1 + res2 + res3):
        fail(RetrAttestRc.ARCB_VERSION_UNSUPPORTED)
    slots_end = REQUEST_HEADER_LEN + ARCB_AUTH_LEN + PUBKEY_LEN + KEY_SLOT_LEN * nks
    if rql > ARCB_MAX_LEN or rql < slots_end + GCM_TAG_LEN or rql != slots_end + sea + GCM_TAG_LEN:
        fail(RetrAttestRc.ARCB_LEN_INVALID)
    if nks == 0:
        fail(RetrAttestRc.NO_KEY_SLOT)
    flags, mai, _res = struct.unpack_from(">QII", raw, REQUEST_HEADER_LEN)
    if sea != arcb_sea(flags):
        fail(RetrAttestRc.ENCR_AREA_SIZE_INVALID)
    if flags & ~uv.limits.supp_att_pflags:
        fail(RetrAttestRc.PFLAGS_UNSUPPORTED)
    if mai != MAI_HMAC_SHA512:
        fail(RetrAttestRc.MEAS_ALG_UNSUPPORTED)
    if request.meas_len < MEASUREMENT_LEN:
        fail(RetrAttestRc.MEAS_LEN_INVALID)
    add_len = additional_data_size(flags)
    if request.add_data_len < add_len:
        fail(RetrAttestRc.ADD_DATA_LEN_INVALID)
    if not g.inside(request.meas_addr, MEASUREMENT_LEN):
        fail(RetrAttestAccessRc.MEAS_INACCESSIBLE)
    if add_len and not g.inside(request.add_data_addr, add_len):
        fail(RetrAttestAccessRc.ADD_DATA_INACCESSIBLE)
    sealed = SealedRequest.parse(raw, what="attestation request", before_len=ARCB_AUTH_LEN)
    try:
        plain, index = sealed.open_for_host(uv.host_private_key)
    except VerificationError:
        fail(RetrAttestRc.ARCB_UNSEAL_FAILED)
    nonce = plain[64:] if len(plain) > 64 else None
    additional = _additional_data(g, flags, sealed.key_slots[index].phkh)
    user = bytes(request.user_data[: request.user_data_len])
    items = measurement_items(tags=g.tags, cuid=g.conf.cuid, user_data=user, nonce=nonce, additional=additional)
    g.write(request.meas_addr, compute_measurement(plain[:64], items))
    if additional:
        g.write(request.add_data_addr, additional)
    return ok(request, config_uid=g.conf.cuid, add_data_len=len(additional))


def _additional_data(g: _Guest, flags: int, attestation_phkh: bytes) -> bytes:
    """The additional data the flags ask for, in the order of se-format.md §4.2."""
    opened = g.conf.opened
    parts = []
    if flags & ATTEST_FLAG_IMAGE_PHKH:
        parts.append(opened.header.key_slots[opened.key_slot_index].phkh)
    if flags & ATTEST_FLAG_ATTEST_PHKH:
        parts.append(attestation_phkh)
    if flags & ATTEST_FLAG_SECRET_STORE_HASH:
        parts.append(g.store.hash())
    if flags & ATTEST_FLAG_FIRMWARE_STATE:
        parts.append(FIRMWARE_STATE)
    return b"".join(parts)


# ---------------------------------------------------------------- ADD_SECRET
@handles(UvcCommand.ADD_SECRET)
def _add_secret(uv: Ultravisor, caller: Caller, request: Any) -> UvcResponse:
    g = _Guest(uv, caller)
    store = g.store
    if store.locked:
        fail(AddSecretRc.LOCKED)
    if g.conf.dumping:
        fail(AddSecretRc.DUMP_IN_PROGRESS)
    addr = request.addr
    head = g.read(addr, REQUEST_HEADER_LEN, AddSecretRc.ASRCB_INACCESSIBLE)
    magic, version, rql, _iv, res1, res2, nks, res3, sea = _HEADER.unpack(head)
    raw = g.read(addr, rql, AddSecretRc.ASRCB_INACCESSIBLE) if REQUEST_HEADER_LEN <= rql <= ASRCB_MAX_LEN else head
    known_type = int.from_bytes(magic[6:8], "big") in UserDataType._value2member_map_
    if magic[:6] != ASRCB_MAGIC_PREFIX or not known_type or version != ASRCB_VERSION or any(res1 + res2 + res3):
        fail(AddSecretRc.VERSION_UNSUPPORTED)
    slots_end = _ASRCB_FIXED + KEY_SLOT_LEN * nks
    hdr_len = rql - GCM_TAG_LEN - sea - slots_end
    if rql > ASRCB_MAX_LEN or rql < slots_end or hdr_len not in (SHORT_SECRET_HDR_LEN, LONG_SECRET_HDR_LEN):
        fail(AddSecretRc.SIZE_INVALID)
    if nks == 0:
        fail(AddSecretRc.NKS_INVALID)
    flags, reserved = struct.unpack_from(">Q", raw, REQUEST_HEADER_LEN)[0], raw[0x118:0x218]
    if any(reserved):
        fail(AddSecretRc.VERSION_UNSUPPORTED)
    if flags & ~ASRCB_FLAG_DISABLE_DUMP:
        fail(AddSecretRc.FLAGS_UNSUPPORTED)
    stype, slen, sid = _secret_header(raw[slots_end : slots_end + hdr_len])
    if not stype.valid_length(slen) or sea != slen + EXTENSION_SECRET_LEN:
        fail(AddSecretRc.SECRET_LEN_INVALID)
    sealed = SealedRequest.parse(raw, what="add-secret request", before_len=AUTH_LEN)
    try:
        plain, _index = sealed.open_for_host(uv.host_private_key)
    except VerificationError:
        fail(AddSecretRc.UNSEAL_FAILED)
    value, ext = plain[:slen], plain[slen:]
    _check_binding(g, store, raw, stype=stype, sid=sid, ext=ext)
    if store.full_for(stype):
        fail(AddSecretRc.STORE_FULL)
    # Everything checked: only now does the store change.
    if store.extension_secret is None:
        store.extension_secret = ext
    if flags & ASRCB_FLAG_DISABLE_DUMP:
        store.dump_disabled = True
    if stype is SecretType.UPDATE_CCK:
        store.cck = value
    store.add(stype=stype, sid=sid, value=value, tag=sealed.tag)
    return ok(request)


def _secret_header(data: bytes) -> tuple[SecretType, int, bytes | None]:
    """Type, length and ID of the plain secret header; rc 0x0109 for what the UV does not take."""
    res0, raw_type, slen, res8 = _SECRET_HDR.unpack_from(data)
    try:
        stype = SecretType(raw_type)
    except ValueError:
        fail(AddSecretRc.SECRET_UNSUPPORTED)
    short = len(data) == SHORT_SECRET_HDR_LEN
    sid = None if short else bytes(data[16:48])
    if res0 or res8 or short != (stype is SecretType.NULL) or (stype is SecretType.UPDATE_CCK and any(sid or b"")):
        fail(AddSecretRc.SECRET_UNSUPPORTED)
    return stype, slen, (sid if stype.listable else None)


def _check_binding(
    g: _Guest, store: SecretStore, raw: bytes, *, stype: SecretType, sid: bytes | None, ext: bytes
) -> None:
    """The checks of an authentic request against this configuration (0x010c, rrc says which)."""
    opened = g.conf.opened
    if BootHdrTags.parse(raw[0x38:0x108]) != g.tags:
        fail(AddSecretRc.NOT_ADDED, AddSecretRrc.HEADER_TAGS_MISMATCH)
    cuid = raw[0x108:0x118]
    if any(cuid) and cuid != g.conf.cuid:
        fail(AddSecretRc.NOT_ADDED, AddSecretRrc.CUID_MISMATCH)
    scf = opened.secrets.scf
    if scf & SCF_CCK_EXTENSION_SECRET:
        expected = derive_extension_secret(store.cck or opened.secrets.cck, opened.header.tag)
    else:
        expected = store.extension_secret
    if expected is not None and ext != expected:
        fail(AddSecretRc.NOT_ADDED, AddSecretRrc.EXTENSION_SECRET_MISMATCH)
    if sid is not None and store.find(sid) is not None:
        fail(AddSecretRc.NOT_ADDED, AddSecretRrc.DUPLICATE_ID)
    if stype is SecretType.UPDATE_CCK and not scf & SCF_CCK_UPDATE_ALLOWED:
        fail(AddSecretRc.NOT_ADDED, AddSecretRrc.CCK_UPDATE_NOT_ALLOWED)


# ---------------------------------------------------------- LIST / LOCK / RETR
@handles(UvcCommand.LIST_SECRETS)
def _list_secrets(uv: Ultravisor, caller: Caller, request: Any) -> UvcResponse:
    """One page of ``uv_secret_list`` from ``start_idx`` on; rc 0x0100 (cc 1) if more follow."""
    g = _Guest(uv, caller)
    page = SecretList(total=0, next_index=0, entries=())
    if not g.inside(request.list_addr, len(page.pack())):
        fail(ListSecretsRc.PAGE_INACCESSIBLE)
    secrets = g.store.secrets
    chosen = [s for s in secrets if s.index >= request.start_idx]
    rest = chosen[LIST_MAX_ENTRIES:]
    page = SecretList(
        total=len(secrets), next_index=rest[0].index if rest else 0,
        entries=[s.entry() for s in chosen[:LIST_MAX_ENTRIES]],
    )  # fmt: skip
    g.write(request.list_addr, page.pack())
    if rest:
        fail(Rc.MORE_DATA)
    return ok(request)


@handles(UvcCommand.LOCK_SECRETS)
def _lock_secrets(uv: Ultravisor, caller: Caller, request: Any) -> UvcResponse:
    """Lock the store for good (§4: afterwards ADD_SECRET and LOCK_SECRETS answer 0x0102)."""
    store = _Guest(uv, caller).store
    if store.locked:
        fail(LockSecretsRc.ALREADY_LOCKED)
    store.locked = True
    return ok(request)


@handles(UvcCommand.RETR_SECRET)
def _retr_secret(uv: Ultravisor, caller: Caller, request: Any) -> UvcResponse:
    """Hand a retrievable secret to the guest (§4: 0x010f, 0x0110, 0x0111, 0x0109; then 0x0102)."""
    g = _Guest(uv, caller)
    store = g.store
    if not store.secrets:
        fail(RetrSecretRc.STORE_EMPTY)
    secret = store.by_index(request.secret_idx)
    if secret is None:
        fail(RetrSecretRc.INV_IDX)
    if not secret.type.retrievable:
        fail(RetrSecretRc.INV_SECRET)
    data = store.handed_out(secret)
    if request.buf_size < len(data):
        fail(RetrSecretRc.BUF_TOO_SMALL)
    if not g.inside(request.buf_addr, len(data)):
        fail(RetrSecretAccessRc.BUF_INACCESSIBLE)
    g.write(request.buf_addr, data)
    return ok(request)

