"""Opening a boot image: SET_SEC_CONF_PARAMS, UNPACK_IMG, VERIFY_IMG.

The UV reads the SE header from host memory, finds this host's key slot,
unwraps and authenticates it (se-format.md §6 step 3); then each UNPACK_IMG
turns one page of the image into secure storage of the configuration,
decrypting it in place with the header's XTS key and the page's tweak, and
folds the page into running PLD/ALD/TLD digests; VERIFY_IMG compares those
with the header. Unpacking is allowed only between the two (uv-interface.md
§4).

SET_SEC_CONF_PARAMS checks, in this order (uv-interface.md §4 gives 0x0020,
0x0103, 0x0108, 0x010a/0x31 in that order; the other codes and rrcs are those
``rust/pvimg/boot/stage3a.c`` decodes, placed where the data they need is
first available)::

    0x0020            bad configuration handle
    0x0003            not right after CREATE_SEC_CONF (sesim's choice)
    0x0103            header not readable, of its first 8 KiB (an rc here, never a PGM;
                      also on secure or donated storage)
    0x010a / 0x0031   too short for any header (less than the fixed part and one key slot)
    0x0108 / 0x0005   no key slot for this host's key (also: no slots, or no header at all)
    0x010a / 0x0031   sec_header_len differs from the header's own size
    0x0104 / 0x0001   not an "IBMSecEx" version 0x100 header
    0x0108 / 0x000b   the customer ECDH key is not a P-521 point
    0x0106 / 0x0030   a plaintext control flag this UV does not support
    0x010a / 0x0039   the encrypted area has the wrong size (optional items)
    0x010a / 0x0036   the header does not authenticate (sesim's rrc)
    0x0109 / 0x0000   a secret control flag this UV does not support
"""

from __future__ import annotations

import struct

from protocol import FormatError, VerificationError
from protocol._components import PageDigests, decrypt_page, xts_algorithm
from protocol._crypto import KEY_SLOT_LEN, PHKH_LEN, ec_public_from_coords
from protocol._se_header import (
    HDR_FIXED_LEN,
    HDR_MAGIC,
    HDR_VERSION,
    MAX_HEADER_SIZE,
    PCF_NO_COMPONENT_ENCRYPTION,
    SCF_CCK_EXTENSION_SECRET,
    SCF_CCK_UPDATE_ALLOWED,
    open_se_header,
)
from protocol._uvc_codes import Rc, SetSecConfParamsRc, SetSecConfParamsRrc, UvcCommand, VerifyImgRc, VerifyImgRrc
from protocol._uvcb_base import UvcResponse

from ._memory import PAGE_SIZE, FrameState
from ._uv_access import host_inaccessible_in
from ._uv_core import Caller, ConfigPhase, Ultravisor, fail, handles, ok

_HEAD = struct.Struct(">8sII")
_NKS_OFFSET = 0x20
_PCF_OFFSET = 0x38
_CUST_KEY = slice(0x40, 0xE0)
SUPPORTED_SCF = SCF_CCK_EXTENSION_SECRET | SCF_CCK_UPDATE_ALLOWED

RC_WRONG_PHASE = Rc.INV_STATE
"""SET_SEC_CONF_PARAMS after the header was accepted, UNPACK_IMG outside the
SET_SEC_CONF_PARAMS..VERIFY_IMG window, VERIFY_IMG twice (sesim's choice: the
generic "invalid state")."""
RC_HEADER_VERSION = 0x0104
"""Not an SE header of a supported version (stage3a.c ``SSC_HDR_VER_MISMATCH``, rrc 0x0001)."""
RRC_HEADER_VERSION = 0x0001
RC_HEADER_PCF = 0x0106
"""An unsupported plaintext control flag (stage3a.c ``SSC_UNSUPPORTED_PCF``, rrc 0x0030)."""
RRC_HEADER_PCF = 0x0030
RRC_HOSTKEY_MISMATCH = 0x0005
"""rrc of 0x0108: no slot for this host key (stage3a.c ``HOSTKEY_MISMATCH``)."""
RRC_BAD_CUSTOMER_KEY = 0x000B
"""rrc of 0x0108: the header's customer key is no P-521 point (stage3a.c ``INVAL_ECDH_KEY_HDR``)."""
RC_HEADER_SCF = 0x0109
"""An unsupported secret control flag (stage3a.c ``SSC_UNSUPPORTED_SCF``, rrc 0)."""
RC_HEADER_CORRUPT = SetSecConfParamsRc.HEADER_LEN_MISMATCH
"""0x010a, stage3a.c ``SSC_HDR_CORRUPT``: the family of the rrcs below."""
RRC_ENCRYPTED_SIZE = 0x0039
"""stage3a.c ``HDR_SIZE_ENC_INVAL``: the encrypted area is not the v1 size."""
RRC_HEADER_TAG = 0x0036
"""The header's (or this host's key slot's) GCM tag does not verify (sesim's choice of rrc;
uv-interface.md §4 leaves the code to the UV, and the host treats it as fatal)."""
RC_UNPACK_ADDR = 0x0101
"""UNPACK_IMG at an address not page aligned or not below the guest's memory size (sesim's choice)."""
RC_UNPACK_PAGE_STATE = 0x0102
"""UNPACK_IMG on a page that is not plain host memory (already secure, say; sesim's choice)."""


def _read_header(uv: Ultravisor, origin: int, length: int) -> bytes:
    """The header bytes as the UV reads them: at most 8 KiB, each page valid host memory.

    A header on secure or donated storage is not the host's to give: it is
    "not readable" (rc 0x0103) rather than a guest's plaintext parsed as a
    header (:func:`machine._uv_access.host_inaccessible_in`).
    """
    span = min(length, MAX_HEADER_SIZE)
    if not uv.memory.is_valid(origin, span) or host_inaccessible_in(uv.memory, origin, span) is not None:
        fail(SetSecConfParamsRc.HEADER_INACCESSIBLE)
    return uv.memory.raw_read(origin, span)


def _check_plaintext(uv: Ultravisor, data: bytes, length: int) -> int:
    """The checks of the unencrypted part, in the order of the module docstring; returns pcf."""
    if length < HDR_FIXED_LEN + KEY_SLOT_LEN:
        fail(RC_HEADER_CORRUPT, SetSecConfParamsRrc.HEADER_LEN_MISMATCH)  # no header is this short
    nks = int.from_bytes(data[_NKS_OFFSET : _NKS_OFFSET + 8], "big")
    mine = uv.server.host_key_hash
    slots = min(nks, (len(data) - HDR_FIXED_LEN) // KEY_SLOT_LEN)
    starts = (HDR_FIXED_LEN + KEY_SLOT_LEN * i for i in range(slots))
    if not any(data[s : s + PHKH_LEN] == mine for s in starts):
        fail(SetSecConfParamsRc.NO_KEY_SLOT, RRC_HOSTKEY_MISMATCH)
    magic, version, sehs = _HEAD.unpack_from(data)
    if sehs != length:
        fail(RC_HEADER_CORRUPT, SetSecConfParamsRrc.HEADER_LEN_MISMATCH)
    if magic != HDR_MAGIC or version != HDR_VERSION:
        fail(RC_HEADER_VERSION, RRC_HEADER_VERSION)
    try:
        ec_public_from_coords(data[_CUST_KEY])
    except FormatError:
        fail(SetSecConfParamsRc.NO_KEY_SLOT, RRC_BAD_CUSTOMER_KEY)
    pcf = int.from_bytes(data[_PCF_OFFSET : _PCF_OFFSET + 8], "big")
    if pcf & ~uv.limits.supp_se_hdr_pcf:
        fail(RC_HEADER_PCF, RRC_HEADER_PCF)
    return pcf


@handles(UvcCommand.SET_SEC_CONF_PARAMS)
def _set_sec_conf_params(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    origin: int = request.sec_header_origin  # type: ignore[attr-defined]
    length: int = request.sec_header_len  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.CREATED:
        fail(RC_WRONG_PHASE)
    data = _read_header(uv, origin, length)
    pcf = _check_plaintext(uv, data, length)
    try:
        opened = open_se_header(data, uv.host_private_key)
    except FormatError:
        fail(RC_HEADER_CORRUPT, RRC_ENCRYPTED_SIZE)
    except VerificationError as exc:
        if exc.check == "header-optional-items":
            fail(RC_HEADER_CORRUPT, RRC_ENCRYPTED_SIZE)
        fail(RC_HEADER_CORRUPT, RRC_HEADER_TAG)
    if opened.secrets.scf & ~SUPPORTED_SCF:
        fail(RC_HEADER_SCF)
    conf.opened = opened
    conf.digests = PageDigests()
    if not pcf & PCF_NO_COMPONENT_ENCRYPTION:
        conf.xts = xts_algorithm(opened.secrets.xts_key)
    conf.phase = ConfigPhase.UNPACKING
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.UNPACK_IMG)
def _unpack_img(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Make one image page secure: decrypt it in place and account it in the digests."""
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    gaddr: int = request.gaddr  # type: ignore[attr-defined]
    tweak0, tweak1 = request.tweak  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.UNPACKING:
        fail(RC_WRONG_PHASE)
    if gaddr & (PAGE_SIZE - 1) or gaddr >= conf.msl:
        fail(RC_UNPACK_ADDR)
    gfn, frame = uv.frame_of_gaddr(conf, gaddr)
    if frame.state is not FrameState.HOST:
        fail(RC_UNPACK_PAGE_STATE)
    tweak = tweak0.to_bytes(8, "big") + tweak1.to_bytes(8, "big")
    image_page = frame.read()
    conf.digests.update(gaddr, tweak, image_page)
    plain = image_page if conf.xts is None else decrypt_page(conf.xts, tweak, image_page)
    frame.fill(plain)
    uv.make_secure(conf, gfn, frame)
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.VERIFY_IMG)
def _verify_img(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    """Compare what was unpacked with the header: page count, then ALD, PLD, TLD (rrc 0x1D, 0x1A-0x1C).

    The count comes first: a missing or extra page changes all three
    digests too, and only this order lets every rrc of uv-interface.md §4
    be told apart. The configuration never runs after a mismatch.
    """
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.UNPACKING:
        fail(RC_WRONG_PHASE)
    header = conf.opened.header
    got = conf.digests.finish()
    for mine, theirs, rrc in (
        (got.nep, header.nep, VerifyImgRrc.PAGE_COUNT_MISMATCH),
        (got.ald, header.ald, VerifyImgRrc.ALD_MISMATCH),
        (got.pld, header.pld, VerifyImgRrc.PLD_MISMATCH),
        (got.tld, header.tld, VerifyImgRrc.TLD_MISMATCH),
    ):
        if mine != theirs:
            conf.phase = ConfigPhase.FAILED
            fail(VerifyImgRc.MISMATCH, rrc)
    conf.phase = ConfigPhase.VERIFIED
    conf.digests = None
    return ok(request)  # type: ignore[arg-type]
