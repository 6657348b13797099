"""Import, export, destroy, pin and unpin of guest pages (uv-semantics.md §3, §4; uv-interface.md §4).

Secure pages are host-inaccessible (PGM 0x3d); an export makes them
host-readable ciphertext that a later import checks and decrypts; DESTR_SEC_STOR
on a page that is not secure succeeds, or answers the legacy 0x0107/0x000d.
"""

from __future__ import annotations

import pytest
from uvc_conformance import PAGE, call, expect, guest_call, init_uv, produces

from machine import UvLimits
from machine._uv_storage import RC_IMPORT_INTEGRITY, RC_NOT_SHARED
from protocol import (
    ConvFromSecStorRequest,
    ConvToSecStorRequest,
    DestrSecStorRc,
    DestrSecStorRequest,
    DestrSecStorRrc,
    PinPageSharedRequest,
    Rc,
    SetSharedAccessRequest,
    SharedAccessRc,
    UnpinPageSharedRequest,
    UvcCommand,
)
from sesim.testbed import GuestKilled, ProgramInterrupt, open_testbed

IMPORT = UvcCommand.CONV_TO_SEC_STOR
EXPORT = UvcCommand.CONV_FROM_SEC_STOR
DESTROY = UvcCommand.DESTR_SEC_STOR


@produces(IMPORT, Rc.EXECUTED)
async def test_an_imported_page_is_secure_and_reads_as_zeros_in_the_guest() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        host = g.host_addr(0xA0000)
        tb.write(host, b"host data")
        expect(await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000)), Rc.EXECUTED)
        with pytest.raises(ProgramInterrupt) as pgm:
            tb.read(host, 8)
        assert pgm.value.code == 0x3D
        assert g.read(0xA0000, 9) == bytes(9)


@produces(EXPORT, Rc.EXECUTED)
async def test_an_exported_page_is_ciphertext_for_the_host_and_plaintext_again_for_the_guest() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"guest secret")
        host = g.host_addr(0xA0000)
        expect(await call(tb, ConvFromSecStorRequest(paddr=host)), Rc.EXECUTED)
        assert b"guest secret" not in tb.read(host, PAGE)
        assert g.read(0xA0000, 12) == b"guest secret"  # the guest's access imports it again


async def test_exporting_a_page_that_is_not_secure_is_a_no_op() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        page = tb.alloc(PAGE)
        tb.write(page, b"plain")
        expect(await call(tb, ConvFromSecStorRequest(paddr=page)), Rc.EXECUTED)
        assert tb.read(page, 5) == b"plain"


async def test_a_changed_exported_page_cannot_be_imported_and_the_guest_dies() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"guest secret")
        host = g.host_addr(0xA0000)
        expect(await call(tb, ConvFromSecStorRequest(paddr=host)), Rc.EXECUTED)
        tb.write(host, bytes([tb.read(host, 1)[0] ^ 1]))
        expect(await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000)), RC_IMPORT_INTEGRITY)
        with pytest.raises(GuestKilled):
            g.read(0xA0000, 1)


@pytest.mark.parametrize("gaddr", [1 << 20, 1 << 30], ids=["end-of-memory", "far-beyond"])
async def test_importing_beyond_guest_memory_is_refused(gaddr: int) -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        answer = await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=gaddr))
        expect(answer, SharedAccessRc.ADDR_OUTSIDE_MEMORY)


async def test_importing_an_unmapped_page_answers_0x10a() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.space.unmap(0xA0000 >> 12)
        expect(await call(tb, ConvToSecStorRequest(guest_handle=g.config_handle, gaddr=0xA0000)), 0x010A)


# -- DESTR_SEC_STOR ------------------------------------------------------------------------------


@produces(DESTROY, Rc.EXECUTED)
async def test_destroying_a_page_that_is_not_secure_succeeds_on_modern_firmware() -> None:
    async with open_testbed() as tb:
        await init_uv(tb)
        page = tb.alloc(PAGE)
        tb.write(page, b"plain")
        expect(await call(tb, DestrSecStorRequest(paddr=page)), Rc.EXECUTED)
        assert tb.read(page, 5) == b"plain"


@produces(DESTROY, DestrSecStorRc.NOT_SECURE, DestrSecStorRrc.NOT_SECURE)
async def test_legacy_firmware_answers_0x107_0x0d_for_a_page_that_is_not_secure() -> None:
    async with open_testbed(limits=UvLimits(legacy_destroy_rc=True)) as tb:
        await init_uv(tb)
        answer = await call(tb, DestrSecStorRequest(paddr=tb.alloc(PAGE)))
        expect(answer, DestrSecStorRc.NOT_SECURE, DestrSecStorRrc.NOT_SECURE)


async def test_a_page_of_a_configuration_with_cpus_is_not_destroyed() -> None:
    """uv-semantics.md §3.6: only a configuration without CPUs may lose pages (rc: sesim's choice)."""
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"keep me")
        answer = await call(tb, DestrSecStorRequest(paddr=g.host_addr(0xA0000)))
        assert answer.cc == 1
        assert g.read(0xA0000, 7) == b"keep me"


# -- PIN / UNPIN_PAGE_SHARED ---------------------------------------------------------------------


@produces(UvcCommand.PIN_PAGE_SHARED, Rc.EXECUTED)
@produces(UvcCommand.UNPIN_PAGE_SHARED, Rc.EXECUTED)
async def test_a_shared_page_can_be_pinned_and_unpinned() -> None:
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        expect(await guest_call(g, SetSharedAccessRequest(paddr=0xA0000)), Rc.EXECUTED)
        host = g.host_addr(0xA0000)
        expect(await call(tb, PinPageSharedRequest(paddr=host)), Rc.EXECUTED)
        tb.write(host, b"shared")
        expect(await call(tb, UnpinPageSharedRequest(guest_handle=g.config_handle, gaddr=0xA0000)), Rc.EXECUTED)
        assert g.read(0xA0000, 6) == b"shared"


async def test_pinning_a_page_that_is_not_shared_is_refused() -> None:
    """sesim's choice of rc."""
    async with open_testbed() as tb:
        g = await tb.secure_guest()
        g.write(0xA0000, b"private")
        expect(await call(tb, PinPageSharedRequest(paddr=g.host_addr(0xA0000))), RC_NOT_SHARED)
