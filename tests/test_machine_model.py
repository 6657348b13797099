"""The machine layer: sparse memory, owner states, the architecture's access checks."""

from __future__ import annotations

import pytest

from machine import AddressSpace, FrameState, HostMemory, PgmCode, ProgramInterrupt, guest_read, guest_write
from machine._alloc import FrameAllocator, OutOfMemory

GIB = 1 << 30


def test_a_64_gib_server_costs_nothing_until_used() -> None:
    memory = HostMemory(64 * GIB)
    assert memory.statistics().frames_touched == 0
    assert memory.host_read(40 * GIB, 16) == bytes(16)  # untouched memory reads as zeros
    assert memory.statistics().frames_touched == 0
    memory.host_write(40 * GIB, b"x")
    assert memory.statistics().frames_touched == 1


@pytest.mark.parametrize("state", [FrameState.DONATED, FrameState.SECURE])
def test_host_access_to_donated_or_secure_frames_takes_pgm_3d(state: FrameState) -> None:
    memory = HostMemory(1 * GIB)
    memory.set_state(memory.frame(5), state, owner=7)
    for access in (lambda: memory.host_read(5 * 4096 + 8, 8), lambda: memory.host_write(5 * 4096, b"a")):
        with pytest.raises(ProgramInterrupt) as pgm:
            access()
        assert pgm.value.code == PgmCode.SECURE_STORAGE_ACCESS


@pytest.mark.parametrize("state", [FrameState.HOST, FrameState.EXPORTED, FrameState.SHARED, FrameState.SHARED_PINNED])
def test_host_access_to_other_frames_is_allowed(state: FrameState) -> None:
    memory = HostMemory(1 * GIB)
    memory.set_state(memory.frame(5), state, owner=7)
    memory.host_write(5 * 4096, b"ok")
    assert memory.host_read(5 * 4096, 2) == b"ok"


def test_an_invalid_page_takes_a_translation_exception() -> None:
    memory = HostMemory(1 * GIB)
    memory.invalidate(0x3000)
    with pytest.raises(ProgramInterrupt) as pgm:
        memory.host_read(0x2FFC, 8)  # crosses into the invalid page
    assert pgm.value.code == PgmCode.PAGE_TRANSLATION


def test_every_owner_change_is_reported() -> None:
    memory = HostMemory(1 * GIB)
    seen = []
    memory.on_transition = lambda pfn, old, new, owner: seen.append((pfn, old, new, owner))
    frame = memory.frame(9)
    memory.set_state(frame, FrameState.SECURE, 3)
    memory.set_state(frame, FrameState.EXPORTED, 3)
    assert seen == [(9, FrameState.HOST, FrameState.SECURE, 3), (9, FrameState.SECURE, FrameState.EXPORTED, 3)]


def _guest() -> tuple[HostMemory, AddressSpace]:
    memory = HostMemory(1 * GIB)
    space = AddressSpace(0x1100, 1 << 20)
    space.map(0, 10)
    return memory, space


def test_a_secure_guest_touching_a_non_secure_page_takes_pgm_3e() -> None:
    memory, space = _guest()
    with pytest.raises(ProgramInterrupt) as pgm:
        guest_read(memory, space, 42, 0x10, 4)
    assert pgm.value.code == PgmCode.NON_SECURE_STORAGE_ACCESS


def test_a_secure_guest_reads_its_own_secure_page_but_not_another_configurations() -> None:
    memory, space = _guest()
    memory.set_state(memory.frame(10), FrameState.SECURE, 42)
    guest_write(memory, space, 42, 0x10, b"mine")
    assert guest_read(memory, space, 42, 0x10, 4) == b"mine"
    with pytest.raises(ProgramInterrupt) as pgm:
        guest_read(memory, space, 43, 0x10, 4)
    assert pgm.value.code == PgmCode.SECURE_STORAGE_ACCESS


def test_a_regular_guest_never_sees_secure_memory() -> None:
    memory, space = _guest()
    memory.set_state(memory.frame(10), FrameState.SECURE, 42)
    with pytest.raises(ProgramInterrupt) as pgm:
        guest_read(memory, space, 0, 0, 4)
    assert pgm.value.code == PgmCode.SECURE_STORAGE_ACCESS


def test_an_unmapped_guest_page_is_a_host_dat_fault() -> None:
    memory, space = _guest()
    with pytest.raises(ProgramInterrupt) as pgm:
        guest_read(memory, space, 0, 0x5000, 4)
    assert pgm.value.code == PgmCode.PAGE_TRANSLATION and pgm.value.address == 0x5000


def test_the_allocator_hands_out_the_lowest_free_frame_and_runs_out_cleanly() -> None:
    alloc = FrameAllocator(16, 20)
    assert [alloc.alloc() for _ in range(3)] == [16, 17, 18]
    alloc.free(16)
    assert alloc.alloc() == 16
    alloc.alloc()
    with pytest.raises(OutOfMemory):
        alloc.alloc()
