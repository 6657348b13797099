"""Attacks with UV requests: foreign handles, a running guest's image calls, dumps, attestation, secrets.

uv-interface.md §4, uv-semantics.md §6-§7, se-format.md §4. The customer's
side (attestation requests, add-secret requests, verification) is done with
:mod:`protocol`, as ``pvattest``/``pvsecret`` do; the requests travel
through the hostile host, which obtains them and the responses.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from machine import ValidityReason
from machine._uv_dump import dump_key, open_dump_blob
from protocol import (
    ASRCB_FLAG_DISABLE_DUMP,
    ATTEST_FLAG_NONCE,
    PCF_ALLOW_DUMPING,
    PCF_DEFAULT,
    BootHdrTags,
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    CpuSetStateRequest,
    CpuState,
    DumpCompleteRequest,
    DumpConfStorStateRequest,
    DumpCpuRequest,
    DumpInitRequest,
    ExchangeRequest,
    ExchangeResponse,
    GuestSecret,
    SetSecConfParamsRequest,
    UnpackImgRequest,
    UvcCommand,
    VerificationError,
    VerifyImgRequest,
    build_arcb,
    build_asrcb,
    find_se_header,
    parse_se_header,
    verify_attestation,
)
from protocol._crypto import ec_private_from_scalar

from ._attacks_arena import PAGE, SECRET_PAGES, Arena, derive
from ._attacks_base import attack
from ._attacks_rigs import SieRig
from ._guest_ops import GuestCallFailed, add_secret, attest
from ._hostile import Defence
from ._testbed_guest import SecureGuest

DUMPABLE = PCF_DEFAULT | PCF_ALLOW_DUMPING
CUSTOMER = ec_private_from_scalar(derive("customer-request-key", 64))
NOT_DUMPING = 0x0102
"""DUMP_* on a configuration that is not being dumped (machine._uv_dump.RC_DUMP_STATE)."""


def _image_data(g: SecureGuest) -> bytes:
    return g.image if isinstance(g.image, bytes) else g.image.data


def _header(g: SecureGuest) -> object:
    data = _image_data(g)
    return parse_se_header(memoryview(data)[find_se_header(data) :])


def _tags(g: SecureGuest) -> BootHdrTags:
    return BootHdrTags.from_header(_header(g))  # type: ignore[arg-type]


# ------------------------------------------------------------------ handles
@attack(
    "foreign-handle-uvc", area="requests", title="issue UVCs with another configuration's (or a forged) handle",
    defence="the UV checks every handle against its own state: DUMP_* rc 0x0102 on a guest not being dumped, "
            "rc 0x0020 / 0x0021 for handles it never gave",
    expected=(Defence.rc(UvcCommand.DUMP_CPU, NOT_DUMPING), Defence.rc(UvcCommand.DUMP_CONF_STOR_STATE, NOT_DUMPING),
              Defence.rc(UvcCommand.CONV_TO_SEC_STOR, 0x0020), Defence.rc(UvcCommand.CPU_SET_STATE, 0x0021)),
)  # fmt: skip
async def foreign_handle_uvc(a: Arena) -> None:
    """Start a dump of the attacker's own (dumpable) guest, then DUMP_CPU with the victim's CPU
    handle and DUMP_CONF_STOR_STATE with the victim's configuration handle into that dump; then
    CONV_TO_SEC_STOR and CPU_SET_STATE with the victim's handles with one bit changed."""
    v = await a.victim(registers=True)
    b = await a.accomplice(pcf=DUMPABLE)
    assert v.guest is not None
    area = a.tb.alloc(4 * PAGE)
    a.host.ok(DumpInitRequest(handle=b.config_handle))
    for step, request in (
        ("DUMP_CPU of the victim's CPU during the attacker's dump", DumpCpuRequest(
            cpu_handle=v.guest.cpu_handles[0], dump_area_origin=area)),
        ("DUMP_CONF_STOR_STATE of the victim during the attacker's dump", DumpConfStorStateRequest(
            config_handle=v.guest.config_handle, dump_area_origin=area, gaddr=0)),
    ):  # fmt: skip
        fired = a.host.call(request)[1]
        a.host.read(area, 4 * PAGE, "the dump area")
        a.host.expect(step, Defence.rc(request.COMMAND, NOT_DUMPING), fired)
    a.host.ok(DumpCompleteRequest(config_handle=b.config_handle, dump_area_origin=area))
    forged = v.guest.config_handle ^ 1 << 5
    fired = a.host.call(ConvToSecStorRequest(guest_handle=forged, gaddr=SECRET_PAGES[0]))[1]
    a.host.expect("CONV_TO_SEC_STOR with a forged configuration handle",
                  Defence.rc(UvcCommand.CONV_TO_SEC_STOR, 0x0020), fired)  # fmt: skip
    request = CpuSetStateRequest(cpu_handle=v.guest.cpu_handles[0] ^ 1 << 9, state=CpuState.STP)
    a.host.expect("CPU_SET_STATE with a forged CPU handle", Defence.rc(UvcCommand.CPU_SET_STATE, 0x0021),
                  a.host.call(request)[1])  # fmt: skip


@attack(
    "inject-into-running-guest", area="requests", title="unpack new pages or a new header into a running guest",
    defence="unpacking is only between SET_SEC_CONF_PARAMS and VERIFY_IMG, once: rc 0x0003 for all three",
    expected=(Defence.rc(UvcCommand.UNPACK_IMG, 0x0003), Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x0003),
              Defence.rc(UvcCommand.VERIFY_IMG, 0x0003)),
)  # fmt: skip
async def inject_into_running_guest(a: Arena) -> None:
    """While the victim runs: UNPACK_IMG an attacker's page over a secret page (code injection),
    SET_SEC_CONF_PARAMS with the header of the attacker's image (new keys, new entry point), and
    VERIFY_IMG once more."""
    v = await a.victim()
    assert v.guest is not None
    handle = v.guest.config_handle
    fired = a.host.call(UnpackImgRequest(guest_handle=handle, gaddr=SECRET_PAGES[0], tweak=(1 << 48, 0)))[1]
    a.host.expect("UNPACK_IMG into the running guest", Defence.rc(UvcCommand.UNPACK_IMG, 0x0003), fired)
    image = a.image("attacker").data
    start = find_se_header(image)
    header = image[start : start + 0x280]
    at = a.tb.alloc(PAGE)
    a.tb.write(at, header)
    request = SetSecConfParamsRequest(guest_handle=handle, sec_header_origin=at, sec_header_len=len(header))
    a.host.expect("SET_SEC_CONF_PARAMS on the running guest", Defence.rc(UvcCommand.SET_SEC_CONF_PARAMS, 0x0003),
                  a.host.call(request)[1])  # fmt: skip
    a.host.expect("VERIFY_IMG again", Defence.rc(UvcCommand.VERIFY_IMG, 0x0003),
                  a.host.call(VerifyImgRequest(handle=handle))[1])  # fmt: skip


# ------------------------------------------------------------------ dumps
@attack(
    "dump-forbidden", area="requests", title="dump a guest whose SE header does not allow dumping",
    defence="DUMP_INIT checks PCF bit 34: rc 0x0101; without DUMP_INIT every dump call answers rc 0x0102",
    expected=(Defence.rc(UvcCommand.DUMP_INIT, 0x0101), Defence.rc(UvcCommand.DUMP_CPU, NOT_DUMPING),
              Defence.rc(UvcCommand.DUMP_CONF_STOR_STATE, NOT_DUMPING),
              Defence.rc(UvcCommand.DUMP_COMPLETE, NOT_DUMPING)),
)  # fmt: skip
async def dump_forbidden(a: Arena) -> None:
    """DUMP_INIT of the victim (default PCF: no dumping); then DUMP_CPU, DUMP_CONF_STOR_STATE and
    DUMP_COMPLETE anyway, reading the dump area after each."""
    v = await a.victim(registers=True)
    assert v.guest is not None
    area = a.tb.alloc(4 * PAGE)
    a.host.expect("DUMP_INIT", Defence.rc(UvcCommand.DUMP_INIT, 0x0101),
                  a.host.call(DumpInitRequest(handle=v.guest.config_handle))[1])  # fmt: skip
    for request in (
        DumpCpuRequest(cpu_handle=v.guest.cpu_handles[0], dump_area_origin=area),
        DumpConfStorStateRequest(config_handle=v.guest.config_handle, dump_area_origin=area, gaddr=0),
        DumpCompleteRequest(config_handle=v.guest.config_handle, dump_area_origin=area),
    ):
        fired = a.host.call(request)[1]
        a.host.read(area, 4 * PAGE, "the dump area")
        a.host.expect(f"{request.COMMAND.name} without DUMP_INIT", Defence.rc(request.COMMAND, NOT_DUMPING), fired)


@attack(
    "read-during-dump", area="requests", title="dump a dumpable guest and read everything, and run it meanwhile",
    defence="no SIE entry while dumping (validity 0x2007); the dump is ciphertext and blobs sealed with a key "
            "derived from the customer's CCK (check dump-seal)",
    expected=(Defence.validity(ValidityReason.DUMPING), Defence.check("dump-seal")),
)  # fmt: skip
async def read_during_dump(a: Arena) -> None:
    """The victim's image allows dumping. DUMP_INIT; enter SIE (the guest would change memory under
    the dump); read every page of guest memory as QEMU's dump does (export first); DUMP_CONF_STOR_STATE,
    DUMP_CPU, DUMP_COMPLETE into a host buffer; try to open the sealed CPU state with a key the host
    can make; enter SIE again after the dump."""
    v = await a.victim(pcf=DUMPABLE, registers=True)
    assert v.guest is not None
    rig = SieRig(a, v)
    area = a.tb.alloc(4 * PAGE)
    a.host.ok(DumpInitRequest(handle=v.guest.config_handle))
    a.host.expect("SIE entry during the dump", Defence.validity(ValidityReason.DUMPING), rig.enter())
    for gfn, pfn in list(v.guest.space.mappings()):
        a.host.ok(ConvFromSecStorRequest(paddr=pfn << 12))
        a.host.read(pfn << 12, PAGE, f"dump of guest page {gfn << 12:#x}")
    a.host.ok(DumpConfStorStateRequest(config_handle=v.guest.config_handle, dump_area_origin=area, gaddr=0))
    a.host.read(area, PAGE, "dump storage state")
    a.host.ok(DumpCpuRequest(cpu_handle=v.guest.cpu_handles[0], dump_area_origin=area))
    blob, _ = a.host.read(area, 4 * PAGE, "dump CPU state")
    a.host.ok(DumpCompleteRequest(config_handle=v.guest.config_handle, dump_area_origin=area))
    a.host.read(area, PAGE, "dump completion data")
    assert blob is not None
    try:
        open_dump_blob(dump_key(bytes(32), bytes(16)), blob)
        fired = None
    except VerificationError as exc:
        fired = a.host.saw(Defence.check(exc.check))
    a.host.expect("open the sealed CPU state without the CCK", Defence.check("dump-seal"), fired)
    assert rig.enter() is None  # after DUMP_COMPLETE the guest runs on
    rig.leave()


@attack(
    "dump-after-secret-forbids-it", area="requests", title="dump a guest after a secret was added that disables dumps",
    defence="an add-secret request with the disable-dump flag makes DUMP_INIT answer rc 0x0101 from then on",
    expected=(Defence.rc(UvcCommand.DUMP_INIT, 0x0101),),
)  # fmt: skip
async def dump_after_secret_forbids_it(a: Arena) -> None:
    """The victim's image allows dumping (its owner wants crash dumps). A secret provider adds a
    secret with the ASRCB flag "disable dump" (so that the image owner cannot read it out of a
    dump). The host then starts a dump."""
    v = await a.victim(pcf=DUMPABLE)
    assert v.guest is not None
    secret = derive("association-secret", 32)
    v.secrets.append(secret)
    request = _asrcb(a, v.guest, GuestSecret.association("provider-secret", secret), flags=ASRCB_FLAG_DISABLE_DUMP)
    await add_secret(v.guest, a.host.obtain("add-secret request (relayed by the host)", request))
    a.host.expect("DUMP_INIT after the secret", Defence.rc(UvcCommand.DUMP_INIT, 0x0101),
                  a.host.call(DumpInitRequest(handle=v.guest.config_handle))[1])  # fmt: skip


# ------------------------------------------------------------------ attestation
def _arcb(a: Arena, label: str) -> tuple[bytes, bytes]:
    """(ARCB, ARPK) of a fresh attestation request for this server, keys from ``label``."""
    arpk = derive(f"arpk:{label}", 32)
    arcb = build_arcb(
        host_keys=[a.tb.host_public_key], cust_private_key=CUSTOMER, arpk=arpk, iv=derive(f"iv:{label}", 12),
        flags=ATTEST_FLAG_NONCE, measurement_key=derive(f"mk:{label}", 64), nonce=derive(f"nonce:{label}", 16),
    )  # fmt: skip
    return arcb, arpk


async def _attest(a: Arena, g: SecureGuest, arcb: bytes) -> ExchangeResponse:
    """The host relays ``arcb`` into ``g`` and the response back out (both obtained)."""
    a.host.obtain("attestation request (relayed by the host)", arcb)
    response = await attest(g, ExchangeRequest.for_arcb(arcb))
    a.host.obtain("attestation response (relayed by the host)", response.pack())
    return response


def _verify(a: Arena, g: SecureGuest, response: ExchangeResponse, arpk: bytes, arcb: bytes) -> Defence | None:
    """The customer's ``pvattest verify`` against the victim's image; the check that failed, or None."""
    try:
        verify_attestation(response, header_phkhs=_header(g).phkhs, tags=_tags(g), arpk=arpk,  # type: ignore[attr-defined]
                           request_arcb=arcb)  # fmt: skip
    except VerificationError as exc:
        return a.host.saw(Defence.check(exc.check))
    return None


@attack(
    "replay-attestation", area="requests", title="answer a new attestation request with an old response",
    defence="each request seals a fresh measurement key and nonce: pvattest verify fails "
            "(check request, or check measurement when the old measurement is spliced into the new request)",
    expected=(Defence.check("request"), Defence.check("measurement")),
)  # fmt: skip
async def replay_attestation(a: Arena) -> None:
    """The customer attests the victim (request 1) and the host keeps the response. Later the
    customer sends request 2; the host answers with the old response, then with the old
    measurement, CUID and data put into a response naming request 2."""
    v = await a.victim()
    assert v.guest is not None
    arcb1, arpk1 = _arcb(a, "first")
    old = await _attest(a, v.guest, arcb1)
    assert _verify(a, v.guest, old, arpk1, arcb1) is None, "an honest attestation does not verify"
    arcb2, arpk2 = _arcb(a, "second")
    a.host.expect("replay the old response", Defence.check("request"), _verify(a, v.guest, old, arpk2, arcb2))
    spliced = ExchangeResponse(arcb=arcb2, measurement=old.measurement, additional=old.additional,
                               user_data=old.user_data, cuid=old.cuid)  # fmt: skip
    a.host.expect("splice the old measurement into a response to request 2", Defence.check("measurement"),
                  _verify(a, v.guest, spliced, arpk2, arcb2))  # fmt: skip


@attack(
    "attest-impostor-guest", area="requests", title="run the customer's attestation request in another guest",
    defence="the measurement covers the SE header's digests: pvattest verify fails (check measurement)",
    expected=(Defence.check("measurement"),),
)  # fmt: skip
async def attest_impostor_guest(a: Arena) -> None:
    """The customer asks the victim for an attestation; the host hands the request to a guest of
    its own (another image on the same server) and returns that answer."""
    v = await a.victim()
    b = await a.accomplice()
    assert v.guest is not None
    arcb, arpk = _arcb(a, "impostor")
    response = await _attest(a, b, arcb)
    a.host.expect("the impostor's response, checked against the victim's image", Defence.check("measurement"),
                  _verify(a, v.guest, response, arpk, arcb))  # fmt: skip


# ------------------------------------------------------------------ secrets
def _asrcb(
    a: Arena,
    g: SecureGuest,
    secret: GuestSecret,
    *,
    tags: BootHdrTags | None = None,
    cuid: bytes | None = None,
    host: ec.EllipticCurvePublicKey | None = None,
    flags: int = 0,
) -> bytes:
    """An add-secret request as ``pvsecret create`` makes it for ``g``'s image (or ``tags``)."""
    return build_asrcb(
        secret=secret, tags=_tags(g) if tags is None else tags, host_keys=[host or a.tb.host_public_key],
        cust_private_key=CUSTOMER, prot_key=derive("asrcb-prot", 32), iv=derive("asrcb-iv", 12), cuid=cuid,
        flags=flags,
    )  # fmt: skip


async def _add(a: Arena, g: SecureGuest, request: bytes) -> Defence | None:
    a.host.obtain("add-secret request (relayed by the host)", request)
    try:
        await add_secret(g, request)
    except GuestCallFailed as failed:
        return a.host.saw(Defence.rc(failed.command, failed.rc, failed.rrc))
    return None


@attack(
    "secret-for-other-config", area="requests", title="add a secret bound to another configuration",
    defence="the UV checks the request's header tags and CUID after unsealing: rc 0x010c rrc 0x0001 / 0x0002; "
            "a request for another server does not unseal (rc 0x0108)",
    expected=(Defence.rc(UvcCommand.ADD_SECRET, 0x010C, 0x0001), Defence.rc(UvcCommand.ADD_SECRET, 0x010C, 0x0002),
              Defence.rc(UvcCommand.ADD_SECRET, 0x0108)),
)  # fmt: skip
async def secret_for_other_config(a: Arena) -> None:
    """The customer makes a secret request for the attacker's guest image and the host delivers it
    to the victim; one bound to the victim's CUID is delivered to a second instance of the victim's
    image; one made for another server is delivered to the victim. Finally the right request."""
    v = await a.victim()
    b = await a.accomplice()
    twin = await a.tb.secure_guest(memory_mib=1, cpus=1, image=a.image(v.name))
    assert v.guest is not None
    value = derive("association-secret", 32)
    v.secrets.append(value)
    secret = GuestSecret.association("victim-secret", value)
    cuid = a.tb.uv.configs[v.guest.config_handle].cuid  # what the customer learned by attesting the victim
    a.host.expect("a request for the attacker's image, delivered to the victim",
                  Defence.rc(UvcCommand.ADD_SECRET, 0x010C, 0x0001),
                  await _add(a, v.guest, _asrcb(a, b, secret)))  # fmt: skip
    a.host.expect("a request bound to the victim's CUID, delivered to its twin",
                  Defence.rc(UvcCommand.ADD_SECRET, 0x010C, 0x0002),
                  await _add(a, twin, _asrcb(a, v.guest, secret, cuid=cuid)))  # fmt: skip
    elsewhere = ec_private_from_scalar(derive("another-server", 64)).public_key()
    a.host.expect("a request for another server", Defence.rc(UvcCommand.ADD_SECRET, 0x0108),
                  await _add(a, v.guest, _asrcb(a, v.guest, secret, host=elsewhere)))  # fmt: skip
    assert await _add(a, v.guest, _asrcb(a, v.guest, secret, cuid=cuid)) is None, "the right request was refused"
