"""Attacks on a secure guest's memory and on the ultravisor's storage (uv-semantics.md §3, uv-interface.md §4).

Each function is one attack of the catalogue, performed on a testbed by the
hostile host; its docstring lists the steps. The victim writes its secret
pages first (:meth:`sesim._attacks_arena.Arena.victim`).
"""

from __future__ import annotations

from protocol import (
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    CreateSecConfRequest,
    CreateSecCpuRequest,
    InitUvRequest,
    PgmCode,
    UvcCommand,
)

from ._attacks_arena import PAGE, SECRET_PAGES, Arena, Victim, secret_page
from ._attacks_base import attack
from ._hostile import Defence, PlaintextScanner

PGM_3D = Defence.pgm(PgmCode.SECURE_STORAGE_ACCESS)
RC_INTEGRITY = Defence.rc(UvcCommand.CONV_TO_SEC_STOR, 0x0107)
"""The import of an exported page whose ciphertext is not the one the UV exported (machine._uv_storage)."""
RC_OWNED_ELSEWHERE = Defence.rc(UvcCommand.CONV_TO_SEC_STOR, 0x0108)
EXPORT_ENCRYPTS = Defence.check("export-encrypts")
FIRST_IMPORT_CLEARS = Defence.check("first-import-clears")


def _flip(data: bytes, offset: int = 0x100) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def _export(a: Arena, v: Victim, gaddr: int) -> bytes:
    """The host exports the victim's page (CONV_FROM_SEC_STOR) and reads the ciphertext."""
    frame = a.frame(v, gaddr)
    a.host.ok(ConvFromSecStorRequest(paddr=frame))
    data, fired = a.host.read(frame, PAGE, f"exported guest page {gaddr:#x}")
    assert data is not None, fired
    return data


def _encrypted(scanner: PlaintextScanner, data: bytes, plain: bytes) -> Defence | None:
    """The export-encrypts check: what the host read is not the plaintext and holds none of it."""
    return Defence.check("export-encrypts") if data != plain and scanner.count(data) == 0 else None


# ------------------------------------------------------------------ plain accesses
@attack(
    "read-secure-page", area="memory", title="read the guest's secret pages from the host",
    defence="a host access to secure storage takes PGM 0x3d", expected=(PGM_3D,),
)  # fmt: skip
async def read_secure_page(a: Arena) -> None:
    """The victim writes four secret pages. The host reads the frame behind each of them."""
    v = await a.victim()
    for gaddr in v.pages:
        _, fired = a.host.read(a.frame(v, gaddr), PAGE, f"frame of guest page {gaddr:#x}")
        a.host.expect(f"host reads guest page {gaddr:#x}", PGM_3D, fired)


@attack(
    "write-secure-page", area="memory", title="overwrite the guest's secret pages from the host",
    defence="a host write to secure storage takes PGM 0x3d; the guest's data stay as they were",
    expected=(PGM_3D,),
)  # fmt: skip
async def write_secure_page(a: Arena) -> None:
    """The host writes its own bytes over the frame behind each secret page; the victim reads them back."""
    v = await a.victim()
    for gaddr in v.pages:
        fired = a.host.write(a.frame(v, gaddr), b"\x66" * PAGE)
        a.host.expect(f"host writes guest page {gaddr:#x}", PGM_3D, fired)


@attack(
    "read-donated-storage", area="memory", title="read and write the ultravisor's donated storage",
    defence="donated storage is UV storage: PGM 0x3d on every host access", expected=(PGM_3D,),
)  # fmt: skip
async def read_donated_storage(a: Arena) -> None:
    """Read and write the first and last page of INIT_UV's storage, and of the victim's base,
    variable and CPU storage."""
    v = await a.victim(registers=True)
    assert v.guest is not None and a.tb.uv.base_storage is not None
    regions = {"INIT_UV storage": a.tb.uv.base_storage, **{f"{k} storage": r for k, r in v.guest.donations.items()}}
    for what, (origin, length) in regions.items():
        for addr in (origin, origin + length - PAGE):
            _, fired = a.host.read(addr, PAGE, f"{what} at {addr:#x}")
            a.host.expect(f"host reads {what} at {addr:#x}", PGM_3D, fired)
            a.host.expect(f"host writes {what} at {addr:#x}", PGM_3D, a.host.write(addr, b"\x66" * 16))


@attack(
    "reuse-uv-storage", area="memory", title="hand the UV's or a guest's storage to a new configuration",
    defence="CREATE_SEC_CONF rc 0x0104 (storage or ASCE in use), CREATE_SEC_CPU rc 0x0105, INIT_UV rc 0x0101",
    expected=(Defence.rc(UvcCommand.CREATE_SEC_CONF, 0x0104), Defence.rc(UvcCommand.CREATE_SEC_CPU, 0x0105),
              Defence.rc(UvcCommand.INIT_UV, 0x0101)),
)  # fmt: skip
async def reuse_uv_storage(a: Arena) -> None:
    """Create a configuration whose base storage is the victim's, one whose variable storage is
    the victim's secure page, one on the victim's ASCE; a CPU whose storage is the victim's CPU
    storage; and INIT_UV a second time on fresh memory, to make the UV give something back."""
    v = await a.victim()
    tb = a.tb
    assert v.guest is not None
    qui = tb.qui()

    def conf(**change: int) -> CreateSecConfRequest:
        var_len = qui.conf_base_virt_stor_len + PAGE
        fields = {
            "conf_base_stor_origin": tb.alloc(qui.conf_base_phys_stor_len, align=4 * PAGE),
            "conf_virt_stor_origin": tb.alloc(var_len), "guest_stor_origin": 0, "guest_stor_len": 1 << 20,
            "guest_sca": tb.alloc(4 * PAGE, align=4 * PAGE), "guest_asce": tb.alloc(4 * PAGE, align=4 * PAGE) | 0x100,
        }  # fmt: skip
        fields.update(change)
        return CreateSecConfRequest(**fields)

    in_use = Defence.rc(UvcCommand.CREATE_SEC_CONF, 0x0104)
    for what, change in (
        ("the victim's base storage", {"conf_base_stor_origin": v.guest.donations["base"][0]}),
        ("a secret page as variable storage", {"conf_virt_stor_origin": a.frame(v, SECRET_PAGES[0])}),
        ("the victim's ASCE", {"guest_asce": v.guest.asce}),
    ):
        a.host.expect(f"CREATE_SEC_CONF with {what}", in_use, a.host.call(conf(**change))[1])
    cpu = CreateSecCpuRequest(guest_handle=v.guest.config_handle, num=5, stor_origin=v.guest.donations["cpu0"][0],
                              state_origin=tb.alloc(PAGE))  # fmt: skip
    a.host.expect("CREATE_SEC_CPU on the victim's CPU storage", Defence.rc(UvcCommand.CREATE_SEC_CPU, 0x0105),
                  a.host.call(cpu)[1])  # fmt: skip
    init = InitUvRequest(stor_origin=tb.alloc(qui.uv_base_stor_len, align=1 << 20), stor_len=qui.uv_base_stor_len)
    a.host.expect("INIT_UV again", Defence.rc(UvcCommand.INIT_UV, 0x0101), a.host.call(init)[1])


@attack(
    "preload-guest-memory", area="memory", title="plant data in guest memory outside the image before boot",
    defence="a page that was never secure is cleared on its first import: the guest reads zeros",
    expected=(FIRST_IMPORT_CLEARS,),
)  # fmt: skip
async def preload_guest_memory(a: Arena) -> None:
    """Before the victim first touches some of its pages, the host writes its own bytes (code it
    would like run, data it would like believed) into the frames behind them; the victim reads."""
    v = await a.victim(pages=())
    assert v.guest is not None
    for gaddr in (0xD0000, 0xD1000, 0xE0000):
        a.host.write(a.frame(v, gaddr), b"\x07\xfe host-planted code ".ljust(PAGE, b"\x90"))
        data, _ = a.guest_read(v, gaddr)
        cleared = FIRST_IMPORT_CLEARS if data is not None and data.count(0) == PAGE else None
        a.host.expect(f"the victim reads planted page {gaddr:#x}", FIRST_IMPORT_CLEARS, cleared)
        v.pages[gaddr] = bytes(PAGE)


# ------------------------------------------------------------------ export / import
@attack(
    "export-and-read", area="memory", title="export the guest's pages and read them",
    defence="an exported page is AES-XTS ciphertext under a key only the UV holds; the guest imports it back",
    expected=(EXPORT_ENCRYPTS,),
)  # fmt: skip
async def export_and_read(a: Arena) -> None:
    """CONV_FROM_SEC_STOR every secret page (as swapping does), then read each frame. The victim
    reads its pages afterwards (import: decrypt and check)."""
    v = await a.victim()
    scanner = a.scanner()
    for gaddr, plain in v.pages.items():
        data = _export(a, v, gaddr)
        a.host.expect(f"host reads exported page {gaddr:#x}", EXPORT_ENCRYPTS, _encrypted(scanner, data, plain))


@attack(
    "tamper-exported-page", area="memory", title="flip a bit in an exported page's ciphertext",
    defence="the import checks the ciphertext against the digest the UV kept: rc 0x0107, the guest stops",
    expected=(RC_INTEGRITY,),
)  # fmt: skip
async def tamper_exported_page(a: Arena) -> None:
    """Export a secret page, flip one bit of its ciphertext, let the victim touch the page."""
    v = await a.victim()
    gaddr = SECRET_PAGES[0]
    data = _export(a, v, gaddr)
    a.host.write(a.frame(v, gaddr), _flip(data))
    a.host.expect("the victim touches the tampered page", RC_INTEGRITY, a.guest_read(v, gaddr)[1])


@attack(
    "replay-exported-page", area="memory", title="replay an old exported copy of a page",
    defence="only the latest export imports (the UV keeps one digest per page): rc 0x0107",
    expected=(RC_INTEGRITY,),
)  # fmt: skip
async def replay_exported_page(a: Arena) -> None:
    """Export a page and keep its ciphertext; the victim imports it and writes a new version;
    export again; write the old ciphertext back; the victim touches the page."""
    v = await a.victim()
    gaddr = SECRET_PAGES[0]
    old = _export(a, v, gaddr)
    a.write_secret(v, gaddr, secret_page(v.name + "-v2", gaddr))
    _export(a, v, gaddr)
    a.host.write(a.frame(v, gaddr), old)
    a.host.expect("the victim touches the replayed page", RC_INTEGRITY, a.guest_read(v, gaddr)[1])


@attack(
    "move-exported-page", area="memory", title="move an exported page to another guest address",
    defence="the digest the UV kept belongs to one guest address: rc 0x0107",
    expected=(RC_INTEGRITY,),
)  # fmt: skip
async def move_exported_page(a: Arena) -> None:
    """Export two secret pages; copy the first one's ciphertext over the second; the victim
    touches the second."""
    v = await a.victim()
    first, second = SECRET_PAGES[0], SECRET_PAGES[1]
    data = _export(a, v, first)
    _export(a, v, second)
    a.host.write(a.frame(v, second), data)
    a.host.expect("the victim touches the page the host moved", RC_INTEGRITY, a.guest_read(v, second)[1])


@attack(
    "exchange-pages-between-guests", area="memory", title="exchange exported pages between two guests",
    defence="each configuration's pages import only as themselves: rc 0x0107 in both guests",
    expected=(RC_INTEGRITY,),
)  # fmt: skip
async def exchange_pages_between_guests(a: Arena) -> None:
    """Two victims export the same guest page; the host swaps the two frames in their address
    spaces; each victim touches its page."""
    v = await a.victim("victim")
    w = await a.victim("victim-b")
    assert v.guest is not None and w.guest is not None
    gaddr = SECRET_PAGES[0]
    _export(a, v, gaddr)
    _export(a, w, gaddr)
    gfn = gaddr >> 12
    pv, pw = v.guest.space.pfn_of(gfn), w.guest.space.pfn_of(gfn)
    assert pv is not None and pw is not None
    v.guest.space.map(gfn, pw)
    w.guest.space.map(gfn, pv)
    for who in (v, w):
        a.host.expect(f"{who.name} touches the exchanged page", RC_INTEGRITY, a.guest_read(who, gaddr)[1])


@attack(
    "map-frame-into-other-guest", area="memory", title="map guest A's secure frame into guest B",
    defence="a frame is secure for one configuration: rc 0x0108; B's first touch clears it, B sees zeros",
    expected=(RC_OWNED_ELSEWHERE, FIRST_IMPORT_CLEARS),
)  # fmt: skip
async def map_frame_into_other_guest(a: Arena) -> None:
    """The attacker's own guest B maps A's secret frame at one of its addresses. The host imports it
    for B (CONV_TO_SEC_STOR with B's handle); then B reads the address (KVM resolves B's 0x3d by
    exporting A's page, and B's import of it)."""
    v = await a.victim()
    b = await a.accomplice()
    gaddr, bgaddr = SECRET_PAGES[0], 0xD0000
    b.space.map(bgaddr >> 12, a.frame(v, gaddr) >> 12)
    fired = a.host.call(ConvToSecStorRequest(guest_handle=b.config_handle, gaddr=bgaddr))[1]
    a.host.expect("import A's secure frame with B's handle", RC_OWNED_ELSEWHERE, fired)
    data, _ = a.accomplice_read(b, bgaddr)
    cleared = Defence.check("first-import-clears") if data is not None and data.count(0) == PAGE else None
    a.host.expect("B reads the frame", FIRST_IMPORT_CLEARS, cleared)


@attack(
    "import-into-non-owner", area="memory", title="import guest A's exported page into guest B",
    defence="B's import checks B's own digest (rc 0x0107), or clears a page B never had: no decryption with A's key",
    expected=(RC_INTEGRITY, FIRST_IMPORT_CLEARS),
)  # fmt: skip
async def import_into_non_owner(a: Arena) -> None:
    """A exports a secret page. The attacker's guest B exports one of its own pages; the host maps
    A's ciphertext there and B touches it. Then the host maps A's ciphertext at an address B never
    used, and B reads it."""
    v = await a.victim()
    b = await a.accomplice()
    gaddr = SECRET_PAGES[0]
    cipher = _export(a, v, gaddr)
    own = 0xD0000
    b.write(own, b"accomplice page".ljust(PAGE, b"."))
    a.host.ok(ConvFromSecStorRequest(paddr=b.host_addr(own)))
    a.host.write(b.host_addr(own), cipher)
    _, fired = a.accomplice_read(b, own)
    a.host.expect("B imports A's ciphertext as its own exported page", RC_INTEGRITY, fired)
    fresh = 0xD8000
    b.space.map(fresh >> 12, a.frame(v, gaddr) >> 12)
    data, _ = a.accomplice_read(b, fresh)
    cleared = Defence.check("first-import-clears") if data is not None and data.count(0) == PAGE else None
    a.host.expect("B imports A's ciphertext at a fresh address", FIRST_IMPORT_CLEARS, cleared)


@attack(
    "alias-secure-frame", area="memory", title="map one secure frame at two guest addresses, or move it",
    defence="the UV records which guest page a secure frame holds: an access through another address takes "
            "PGM 0x3f (secure-storage violation)",
    expected=(Defence.pgm(PgmCode.SECURE_STORAGE_VIOLATION),),
)  # fmt: skip
async def alias_secure_frame(a: Arena) -> None:
    """Victim A: map its second secret address onto the frame of its first one (no export, no
    import: the frame stays secure) and let A read the second address. Victim B: unmap its first
    secret address and map that frame at a new address (a move without export), and let B read
    there. Either guest would find one page's data at another address."""
    violation = Defence.pgm(PgmCode.SECURE_STORAGE_VIOLATION)
    v = await a.victim("victim")
    w = await a.victim("victim-b")
    assert v.guest is not None and w.guest is not None
    first, second, elsewhere = SECRET_PAGES[0], SECRET_PAGES[1], 0xC8000
    v.guest.space.map(second >> 12, a.frame(v, first) >> 12)
    data, fired = a.guest_read(v, second)
    if data is not None and data != v.pages[second]:
        v.changed.append(f"page {second:#x} reads as page {first:#x}")
    a.host.expect("A reads the aliased address", violation, fired)
    pfn = a.frame(w, first) >> 12
    w.guest.space.unmap(first >> 12)
    w.guest.space.map(elsewhere >> 12, pfn)
    data, fired = a.guest_read(w, elsewhere)
    if data is not None and data.count(0) != len(data):
        w.changed.append(f"new page {elsewhere:#x} holds page {first:#x}")
    a.host.expect("B reads the moved frame at its new address", violation, fired)
