"""Opening a boot image: SET_SEC_CONF_PARAMS, UNPACK_IMG, VERIFY_IMG.

The UV reads the SE header from host memory, finds this host's key slot,
unwraps and authenticates it (se-format.md §6 step 3); then each UNPACK_IMG
turns one page of the image into secure storage of the configuration,
decrypting it in place with the header's XTS key and the page's tweak, and
folds the page into running PLD/ALD/TLD digests; VERIFY_IMG compares those
with the header. Unpacking is allowed only between the two (uv-interface.md
§4).
"""

from __future__ import annotations

from protocol import FormatError, VerificationError
from protocol._components import PageDigests, decrypt_page, xts_algorithm
from protocol._se_header import open_se_header
from protocol._uvc_codes import Rc, SetSecConfParamsRc, SetSecConfParamsRrc, UvcCommand, VerifyImgRc, VerifyImgRrc
from protocol._uvcb_base import UvcResponse

from ._memory import PAGE_SIZE, FrameState
from ._uv_core import Caller, ConfigPhase, Ultravisor, fail, handles, ok

MAX_HEADER_LEN = 8192
PCF_NO_COMPONENT_ENCRYPTION = 0x10000000

RC_HEADER_FORMAT = 0x0104
"""SET_SEC_CONF_PARAMS: the header is not a v1 SE header (sesim's choice of rc; stage3a.c lists 0x104)."""
RC_HEADER_INTEGRITY = 0x0106
"""SET_SEC_CONF_PARAMS: the header does not authenticate (sesim's choice; the host treats it as fatal)."""
RC_HEADER_UNSUPPORTED = 0x0109
"""SET_SEC_CONF_PARAMS: PCF flags this UV does not support."""
RC_UNPACK_PAGE_STATE = 0x0102
"""UNPACK_IMG on a page that is already secure (sesim's choice)."""


@handles(UvcCommand.SET_SEC_CONF_PARAMS)
def _set_sec_conf_params(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    origin: int = request.sec_header_origin  # type: ignore[attr-defined]
    length: int = request.sec_header_len  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.CREATED:
        fail(Rc.INV_STATE)
    memory = uv.memory
    if length == 0 or length > MAX_HEADER_LEN or not memory.is_valid(origin, length):
        fail(SetSecConfParamsRc.HEADER_INACCESSIBLE)
    data = memory.raw_read(origin, length)
    sehs = int.from_bytes(data[12:16], "big") if length >= 16 else 0
    if sehs != length:
        fail(SetSecConfParamsRc.HEADER_LEN_MISMATCH, SetSecConfParamsRrc.HEADER_LEN_MISMATCH)
    try:
        opened = open_se_header(data, uv.host_private_key)
    except FormatError:
        fail(RC_HEADER_FORMAT)
    except VerificationError as exc:
        if exc.check == "no-key-slot":
            fail(SetSecConfParamsRc.NO_KEY_SLOT, 0x0005)
        fail(RC_HEADER_INTEGRITY)
    pcf = opened.header.pcf
    if pcf & ~uv.limits.supp_se_hdr_pcf:
        fail(RC_HEADER_UNSUPPORTED)
    conf.opened = opened
    conf.digests = PageDigests()
    if not pcf & PCF_NO_COMPONENT_ENCRYPTION:
        conf.xts = xts_algorithm(opened.secrets.xts_key)
    conf.phase = ConfigPhase.UNPACKING
    return ok(request)  # type: ignore[arg-type]


@handles(UvcCommand.UNPACK_IMG)
def _unpack_img(uv: Ultravisor, caller: Caller, request: object) -> UvcResponse:
    conf = uv.config(request.guest_handle)  # type: ignore[attr-defined]
    gaddr: int = request.gaddr  # type: ignore[attr-defined]
    tweak0, tweak1 = request.tweak  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.UNPACKING:
        fail(Rc.INV_STATE)
    if gaddr & (PAGE_SIZE - 1) or gaddr >= conf.msl:
        fail(0x0101)
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
    conf = uv.config(request.handle)  # type: ignore[attr-defined]
    if conf.phase is not ConfigPhase.UNPACKING:
        fail(Rc.INV_STATE)
    header = conf.opened.header
    got = conf.digests.finish()
    for mine, theirs, rrc in (
        (got.ald, header.ald, VerifyImgRrc.ALD_MISMATCH),
        (got.pld, header.pld, VerifyImgRrc.PLD_MISMATCH),
        (got.tld, header.tld, VerifyImgRrc.TLD_MISMATCH),
        (got.nep, header.nep, VerifyImgRrc.PAGE_COUNT_MISMATCH),
    ):
        if mine != theirs:
            conf.phase = ConfigPhase.FAILED
            fail(VerifyImgRc.MISMATCH, rrc)
    conf.phase = ConfigPhase.VERIFIED
    conf.digests = None
    return ok(request)  # type: ignore[arg-type]
