"""ADD_SECRET, LIST_SECRETS, LOCK_SECRETS and RETR_SECRET from a secure guest.

uv-interface.md §4 (lock, retrieve codes), uv-semantics.md §6, se-format.md
§4.3, Linux uv.h (``uv_secret_list``); the other ADD_SECRET codes are those
s390-tools prints (``protocol.AddSecretRc``). Every refused request is
checked to leave the store exactly as it was, as far as the guest can see:
the list and the attestation secret-store hash.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvc_conformance import PAGE, Answer, expect, guest_call, produces
from uvc_guest_requests import (
    ADD_AT,
    ASRCB_AT,
    BUF_AT,
    OTHER_HOST,
    add,
    arcb_for,
    asrcb_for,
    ec_key,
    guest_tags,
    plain,
    retr_attest,
)

import machine._uv_secret_store as store_module
from protocol import (
    ASRCB_FLAG_DISABLE_DUMP,
    ATTEST_FLAG_NONCE,
    ATTEST_FLAG_SECRET_STORE_HASH,
    SCF_CCK_EXTENSION_SECRET,
    SCF_CCK_UPDATE_ALLOWED,
    AddSecretRc,
    AddSecretRrc,
    BootHdrTags,
    GuestSecret,
    ImageSpec,
    ListSecretsRc,
    LockSecretsRc,
    Rc,
    RetrSecretAccessRc,
    RetrSecretRc,
    SecretList,
    SecretStoreRc,
    SecretType,
    UvcCommand,
    create_image,
    derive_extension_secret,
    plaintext_payload,
    secret_id,
    synthetic_kernel,
)
from protocol._components import ComponentKind
from protocol._crypto import ec_private_from_scalar
from protocol._guest_calls import add_secret_uvcb, list_secrets_uvcb, retr_secret_uvcb
from protocol._uvcb_guest import LockSecretsRequest
from sesim._testbed_guest import boot_secure_guest
from sesim.testbed import SecureGuest, Testbed, open_testbed

ADD, LIST, LOCK, RETR = (UvcCommand.ADD_SECRET, UvcCommand.LIST_SECRETS, UvcCommand.LOCK_SECRETS,
                         UvcCommand.RETR_SECRET)  # fmt: skip
CCK = b"\xcc" * 32


async def lock(g: SecureGuest) -> Answer:
    return await guest_call(g, LockSecretsRequest())


async def listing(g: SecureGuest, start: int = 0) -> tuple[Answer, SecretList]:
    answer = await guest_call(g, list_secrets_uvcb(BUF_AT, start))
    return answer, SecretList.parse(g.read(BUF_AT, PAGE))


async def retrieve(g: SecureGuest, index: int, size: int = 0x2000, at: int = BUF_AT) -> Answer:
    return await guest_call(g, retr_secret_uvcb(index, at, size))


async def visible_store(g: SecureGuest) -> tuple[bytes, bytes]:
    """What a guest can see of its store: the list page and the attestation secret-store hash."""
    _answer, page = await listing(g)
    flags = ATTEST_FLAG_NONCE | ATTEST_FLAG_SECRET_STORE_HASH
    expect(await retr_attest(g, arcb_for(g.testbed, flags=flags)), Rc.EXECUTED)
    return page.pack(), g.read(ADD_AT, 64)


def image_with(tb: Testbed, *, scf: int) -> bytes:
    """A testbed-like image with secret control flags ``scf`` and the CCK :data:`CCK`."""
    spec = ImageSpec(
        kernel=synthetic_kernel(0x11000, 1), host_keys=(tb.host_public_key,),
        cust_private_key=ec_private_from_scalar(b"\x07" * 64), prot_key=b"\x08" * 32, iv=b"\x09" * 12, cck=CCK,
        xts_key=b"\x42" * 32 + b"\x43" * 32, tweak_randoms={k: bytes([k.value]) * 6 for k in ComponentKind}, scf=scf,
    )  # fmt: skip
    return create_image(spec).data


# -- ADD_SECRET ----------------------------------------------------------------------------------


@produces(ADD, Rc.EXECUTED)
@produces(LIST, Rc.EXECUTED)
async def test_added_secrets_are_listed_in_order_and_meta_secrets_are_not() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        secrets = [GuestSecret.null(), GuestSecret.association("assoc", b"\x11" * 32), plain("pw", b"hunter2"),
                   GuestSecret.retrievable("ec", "ec", _pem(ec_key()))]  # fmt: skip
        for s in secrets:
            expect(await add(g, asrcb_for(g, s)), Rc.EXECUTED)
        answer, page = await listing(g)
        expect(answer, Rc.EXECUTED)
        assert page.total == 3 and page.next_index == 0
        assert [(e.index, e.type, e.id) for e in page.entries] == [
            (0, SecretType.ASSOCIATION, secret_id("assoc")),
            (1, SecretType.PLAINTEXT, secret_id("pw")),
            (2, SecretType.ECDSA_P521, secret_id("ec")),
        ]
        assert [e.length for e in page.entries] == [32 + 32, 16, 80 + 32]  # handed-out sizes


def _pem(key: Any) -> bytes:
    return bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))


@produces(ADD, SecretStoreRc.LOCKED)
@produces(LOCK, Rc.EXECUTED)
@produces(LOCK, LockSecretsRc.ALREADY_LOCKED)
async def test_lock_is_one_way_after_it_add_and_lock_answer_0x102() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await add(g, asrcb_for(g)), Rc.EXECUTED)
        expect(await lock(g), Rc.EXECUTED)
        before = await visible_store(g)
        expect(await add(g, asrcb_for(g, plain("late", b"x"))), SecretStoreRc.LOCKED)
        expect(await lock(g), LockSecretsRc.ALREADY_LOCKED)
        assert await visible_store(g) == before


def _patched(request: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(request)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _resized(request: bytes, delta: int) -> bytes:
    """``request`` with ``rql`` changed by ``delta`` (and the bytes to match)."""
    rql = int.from_bytes(request[12:16], "big") + delta
    return _patched(request, 12, ">I", rql)[:rql].ljust(rql, b"\0")


Build = Callable[[SecureGuest], bytes]

REFUSED: list[tuple[str, int, int, Build]] = [
    ("magic", AddSecretRc.VERSION_UNSUPPORTED, 0, lambda g: b"asrcbX" + asrcb_for(g)[6:]),
    ("user-data-type", AddSecretRc.VERSION_UNSUPPORTED, 0, lambda g: _patched(asrcb_for(g), 6, ">H", 7)),
    ("version", AddSecretRc.VERSION_UNSUPPORTED, 0, lambda g: _patched(asrcb_for(g), 8, ">I", 0x200)),
    ("reserved", AddSecretRc.VERSION_UNSUPPORTED, 0, lambda g: _patched(asrcb_for(g), 0x200, ">B", 1)),
    ("rql", AddSecretRc.SIZE_INVALID, 0, lambda g: _resized(asrcb_for(g), 16)),
    ("rql-over-1MiB", AddSecretRc.SIZE_INVALID, 0, lambda g: _patched(asrcb_for(g), 12, ">I", (1 << 20) + 16)),
    ("nks-0", AddSecretRc.NKS_INVALID, 0, lambda g: _resized(_patched(asrcb_for(g), 0x24, ">I", 0), -80)),
    ("flags", AddSecretRc.FLAGS_UNSUPPORTED, 0, lambda g: _patched(asrcb_for(g), 0x30, ">Q", 1 << 62)),
    ("secret-type", AddSecretRc.SECRET_UNSUPPORTED, 0,
     lambda g: _patched(asrcb_for(g, plain("x", b"x")), 0x4B8 + 80 + 2, ">H", 0x000C)),
    ("secret-len", AddSecretRc.SECRET_LEN_INVALID, 0,
     lambda g: _patched(asrcb_for(g, plain("x", b"x")), 0x4B8 + 80 + 4, ">I", 17)),
    ("other-host", AddSecretRc.UNSEAL_FAILED, 0, lambda g: asrcb_for(g, host=OTHER_HOST.public_key())),
    ("tampered", AddSecretRc.UNSEAL_FAILED, 0, lambda g: _patched(asrcb_for(g), 0x108, ">B", 0x42)),
    ("other-image", AddSecretRc.NOT_ADDED, AddSecretRrc.HEADER_TAGS_MISMATCH,
     lambda g: asrcb_for(g, tags=BootHdrTags(pld=b"\1" * 64, ald=b"\2" * 64, tld=b"\3" * 64, tag=b"\4" * 16))),
    ("other-cuid", AddSecretRc.NOT_ADDED, AddSecretRrc.CUID_MISMATCH, lambda g: asrcb_for(g, cuid=b"\x42" * 16)),
    ("cck-update", AddSecretRc.NOT_ADDED, AddSecretRrc.CCK_UPDATE_NOT_ALLOWED,
     lambda g: asrcb_for(g, GuestSecret.update_cck(b"\x01" * 32))),
]  # fmt: skip


@pytest.mark.parametrize(("case", "rc", "rrc", "build"), REFUSED, ids=[c[0] for c in REFUSED])
@produces(ADD, AddSecretRc.VERSION_UNSUPPORTED, when={"case": "magic"})
@produces(ADD, AddSecretRc.SIZE_INVALID, when={"case": "rql"})
@produces(ADD, AddSecretRc.NKS_INVALID, when={"case": "nks-0"})
@produces(ADD, AddSecretRc.FLAGS_UNSUPPORTED, when={"case": "flags"})
@produces(ADD, AddSecretRc.SECRET_UNSUPPORTED, when={"case": "secret-type"})
@produces(ADD, AddSecretRc.SECRET_LEN_INVALID, when={"case": "secret-len"})
@produces(ADD, AddSecretRc.UNSEAL_FAILED, when={"case": "other-host"})
@produces(ADD, AddSecretRc.NOT_ADDED, AddSecretRrc.HEADER_TAGS_MISMATCH, when={"case": "other-image"})
@produces(ADD, AddSecretRc.NOT_ADDED, AddSecretRrc.CUID_MISMATCH, when={"case": "other-cuid"})
async def test_a_refused_request_leaves_the_store_unchanged(case: str, rc: int, rrc: int, build: Build) -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await add(g, asrcb_for(g, plain("kept", b"kept"))), Rc.EXECUTED)
        before = await visible_store(g)
        expect(await add(g, build(g)), rc, rrc)
        assert await visible_store(g) == before


@produces(ADD, AddSecretRc.ASRCB_INACCESSIBLE)
async def test_a_request_beyond_guest_memory_is_inaccessible() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        request = asrcb_for(g)
        at = g.memory_size - 0x100
        g.write(at, request[:0x100])
        expect(await guest_call(g, add_secret_uvcb(at)), AddSecretRc.ASRCB_INACCESSIBLE)
        expect(await guest_call(g, add_secret_uvcb(g.memory_size)), AddSecretRc.ASRCB_INACCESSIBLE)


@pytest.mark.parametrize(
    ("first", "later"),
    [("nks", "flags"), ("flags", "type"), ("type", "len"), ("len", "host"), ("host", "binding")],
)
async def test_checks_before_unsealing_win_over_later_ones(first: str, later: str) -> None:
    """The plain checks come in a fixed order, all before unsealing, bindings after (sesim's order)."""
    steps = ["nks", "flags", "type", "len", "host", "binding"]
    rcs = {"flags": AddSecretRc.FLAGS_UNSUPPORTED, "nks": AddSecretRc.NKS_INVALID,
           "type": AddSecretRc.SECRET_UNSUPPORTED, "len": AddSecretRc.SECRET_LEN_INVALID,
           "host": AddSecretRc.UNSEAL_FAILED, "binding": AddSecretRc.NOT_ADDED}  # fmt: skip
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        faults = set(steps[steps.index(first) :])
        request = asrcb_for(g, plain("x", b"x"), host=OTHER_HOST.public_key() if "host" in faults else None,
                            cuid=b"\x42" * 16 if "binding" in faults else None)  # fmt: skip
        if "len" in faults:
            request = _patched(request, 0x4B8 + 80 + 4, ">I", 17)
        if "type" in faults:
            request = _patched(request, 0x4B8 + 80 + 2, ">H", 0x000C)
        if "flags" in faults:
            request = _patched(request, 0x30, ">Q", 1 << 62)
        if "nks" in faults:
            request = _resized(_patched(request, 0x24, ">I", 0), -80)
        expect(await add(g, request), rcs[first])
        assert later in faults


@produces(ADD, AddSecretRc.NOT_ADDED, AddSecretRrc.DUPLICATE_ID)
async def test_a_second_secret_with_the_same_id_is_refused() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await add(g, asrcb_for(g, plain("same", b"one"))), Rc.EXECUTED)
        expect(await add(g, asrcb_for(g, plain("same", b"two"))), AddSecretRc.NOT_ADDED,
               AddSecretRrc.DUPLICATE_ID)  # fmt: skip


@produces(ADD, AddSecretRc.NOT_ADDED, AddSecretRrc.EXTENSION_SECRET_MISMATCH)
async def test_without_scf_the_first_request_sets_the_extension_secret() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await add(g, asrcb_for(g, extension_secret=b"\x17" * 32)), Rc.EXECUTED)
        expect(await add(g, asrcb_for(g, plain("a", b"a"), extension_secret=b"\x17" * 32)), Rc.EXECUTED)
        expect(await add(g, asrcb_for(g, plain("b", b"b"))), AddSecretRc.NOT_ADDED,
               AddSecretRrc.EXTENSION_SECRET_MISMATCH)  # fmt: skip


async def test_an_image_with_scf_bit_1_requires_the_cck_derived_extension_secret() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest(image=image_with(tb, scf=SCF_CCK_EXTENSION_SECRET))
        derived = derive_extension_secret(CCK, guest_tags(g).tag)
        for ext in (None, b"\x17" * 32):
            expect(await add(g, asrcb_for(g, extension_secret=ext)), AddSecretRc.NOT_ADDED,
                   AddSecretRrc.EXTENSION_SECRET_MISMATCH)  # fmt: skip
        expect(await add(g, asrcb_for(g, extension_secret=derived)), Rc.EXECUTED)


async def test_an_update_cck_secret_is_taken_where_the_image_allows_it() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest(image=image_with(tb, scf=SCF_CCK_UPDATE_ALLOWED))
        expect(await add(g, asrcb_for(g, GuestSecret.update_cck(b"\x01" * 32))), Rc.EXECUTED)
        _answer, page = await listing(g)
        assert page.total == 0  # update-CCK secrets are not listed
        assert tb.uv.configs[g.config_handle].secret_store.cck == b"\x01" * 32


async def test_the_disable_dump_flag_is_recorded() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await add(g, asrcb_for(g, flags=ASRCB_FLAG_DISABLE_DUMP)), Rc.EXECUTED)
        assert tb.uv.configs[g.config_handle].secret_store.dump_disabled


@produces(ADD, AddSecretRc.DUMP_IN_PROGRESS)
async def test_no_secret_is_added_while_the_configuration_is_dumped() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        tb.uv.configs[g.config_handle].dumping = True  # DUMP_INIT is another issue's; set the state directly
        expect(await add(g, asrcb_for(g)), AddSecretRc.DUMP_IN_PROGRESS)


@produces(ADD, AddSecretRc.STORE_FULL)
async def test_a_full_store_refuses_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_ASSOC_SECRETS", 2)
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        for n in range(2):
            expect(await add(g, asrcb_for(g, GuestSecret.association(f"a{n}", b"\1" * 32))), Rc.EXECUTED)
        before = await visible_store(g)
        expect(await add(g, asrcb_for(g, GuestSecret.association("a2", b"\1" * 32))), AddSecretRc.STORE_FULL)
        expect(await add(g, asrcb_for(g, plain("p", b"p"))), Rc.EXECUTED)  # retrievables have their own limit
        assert (await visible_store(g))[1] != before[1]


async def test_each_configuration_has_its_own_store() -> None:
    async with open_testbed() as tb:
        a, b = await tb.secure_guest(), await tb.secure_guest()
        expect(await add(a, asrcb_for(a, plain("mine", b"a"))), Rc.EXECUTED)
        _answer, page = await listing(b)
        assert page.total == 0


# -- LIST_SECRETS --------------------------------------------------------------------------------


@produces(LIST, Rc.MORE_DATA)
async def test_more_than_85_secrets_are_listed_page_by_page() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        for n in range(90):
            expect(await add(g, asrcb_for(g, plain(f"s{n}", bytes([n])))), Rc.EXECUTED)
        answer, first = await listing(g)
        expect(answer, Rc.MORE_DATA)
        assert (first.total, len(first.entries), first.next_index) == (90, 85, 85)
        answer, second = await listing(g, first.next_index)
        expect(answer, Rc.EXECUTED)
        assert [e.index for e in second.entries] == [85, 86, 87, 88, 89] and second.next_index == 0
        assert g.read(BUF_AT + 16 + 5 * 48, 48) == bytes(48)


@produces(LIST, ListSecretsRc.PAGE_INACCESSIBLE)
async def test_a_list_page_beyond_guest_memory_is_refused() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await guest_call(g, list_secrets_uvcb(g.memory_size - 0x800)), ListSecretsRc.PAGE_INACCESSIBLE)


# -- RETR_SECRET ---------------------------------------------------------------------------------


@produces(RETR, Rc.EXECUTED)
@produces(RETR, RetrSecretRc.STORE_EMPTY)
@produces(RETR, RetrSecretRc.INV_IDX)
@produces(RETR, RetrSecretRc.INV_SECRET)
@produces(RETR, RetrSecretRc.BUF_TOO_SMALL)
@produces(RETR, RetrSecretAccessRc.BUF_INACCESSIBLE)
async def test_retrieve_answers_as_documented() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await retrieve(g, 0), RetrSecretRc.STORE_EMPTY)
        expect(await add(g, asrcb_for(g)), Rc.EXECUTED)  # a meta secret leaves the store "empty"
        expect(await retrieve(g, 0), RetrSecretRc.STORE_EMPTY)
        expect(await add(g, asrcb_for(g, GuestSecret.association("a", b"\1" * 32))), Rc.EXECUTED)
        expect(await add(g, asrcb_for(g, plain("p", b"the plaintext"))), Rc.EXECUTED)
        expect(await retrieve(g, 2), RetrSecretRc.INV_IDX)
        expect(await retrieve(g, 0), RetrSecretRc.INV_SECRET)
        expect(await retrieve(g, 1, size=15), RetrSecretRc.BUF_TOO_SMALL)
        expect(await retrieve(g, 1, size=16, at=g.memory_size - 8), RetrSecretAccessRc.BUF_INACCESSIBLE)
        expect(await retrieve(g, 1, size=16), Rc.EXECUTED)
        assert plaintext_payload(g.read(BUF_AT, 16)) == b"the plaintext"


async def test_keys_are_handed_out_as_protected_keys_bound_to_the_configuration() -> None:
    async with open_testbed() as tb:
        a, b = await tb.secure_guest(), await tb.secure_guest()
        key = b"\x5a" * 32
        for g in (a, b):
            expect(await add(g, asrcb_for(g, GuestSecret.retrievable("aes", "k", key))), Rc.EXECUTED)
            expect(await retrieve(g, 0, size=64), Rc.EXECUTED)
        pa, pb = a.read(BUF_AT, 64), b.read(BUF_AT, 64)
        assert key not in pa and key not in pb
        assert pa[:32] != pb[:32]  # another configuration, another wrapping key


async def test_asrcb_in_several_pages_is_read_whole() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        big = plain("big", b"\x99" * 8000)
        expect(await add(g, asrcb_for(g, big)), Rc.EXECUTED)
        expect(await retrieve(g, 0), Rc.EXECUTED)
        assert plaintext_payload(g.read(BUF_AT, 8016)) == b"\x99" * 8000
        assert ASRCB_AT + len(asrcb_for(g, big)) < BUF_AT


# -- no request bytes make the UV fail other than with an rc ----------------------------------------

_FUZZ: dict[str, Any] = {}


def _fuzz_guest() -> SecureGuest:
    """One guest for every example (hypothesis runs examples inside one test call)."""
    if "guest" not in _FUZZ:
        tb = Testbed(memory_mib=2200, cpus=2)
        _FUZZ["guest"] = boot_secure_guest(tb, 1, 1)
        _FUZZ["seeds"] = [asrcb_for(_FUZZ["guest"], s) for s in (None, plain("p", b"x" * 40),
                          GuestSecret.association("a", b"\1" * 32))]  # fmt: skip
    guest: SecureGuest = _FUZZ["guest"]
    return guest


@st.composite
def _asrcb_bytes(draw: st.DrawFn) -> bytes:
    _fuzz_guest()
    data = bytearray(draw(st.sampled_from(_FUZZ["seeds"])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.one_of(st.integers(0, 0x60), st.integers(0, len(data) - 1)))
        data[at] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_asrcb_bytes())
def test_any_request_bytes_get_an_rc_and_a_refused_one_changes_nothing(request: bytes) -> None:
    g = _fuzz_guest()
    store = g.testbed.uv.configs[g.config_handle].secret_store
    before = None if store is None else (list(store.secrets), list(store.tags), store.extension_secret)
    g.write(ASRCB_AT, request)
    g.write(BUF_AT, add_secret_uvcb(ASRCB_AT).pack())
    cc = trio.run(g.uvc, BUF_AT)
    store = g.testbed.uv.configs[g.config_handle].secret_store
    after = None if store is None else (list(store.secrets), list(store.tags), store.extension_secret)
    assert cc in (0, 1)
    if cc == 1:
        assert before is None or after == before
