"""Guest address spaces: the hypervisor's mapping of guest pages to host frames.

In KVM a guest's memory is memory of the VMM process; the gmap (DAT tables
named by the guest ASCE) maps each guest page to a host frame, and the host
may unmap a page at any time (reclaim) and map another frame later (swap-in).
The ultravisor walks the same tables, through the ASCE it was given at
CREATE_SEC_CONF, to find the frame behind a guest address (import, unpack).

sesim keeps one :class:`AddressSpace` per VM: a sparse dict from guest frame
number to host frame number. Only the hypervisor changes it; the ultravisor
and the CPU in SIE only read it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import final

from ._memory import PAGE_SHIFT


@final
class AddressSpace:
    """The guest-absolute → host-physical mapping of one VM.

    Args:
        asce: the address-space-control element that names these tables
            (given to CREATE_SEC_CONF; bit 0x100 private space, see
            uv-interface.md §4).
        size: bytes of guest memory (the end of the last memslot).
    """

    def __init__(self, asce: int, size: int) -> None:
        self.asce = asce
        self.size = size
        self._map: dict[int, int] = {}

    def with_asce(self, asce: int) -> AddressSpace:
        """Another top-level table over the same lower tables (``s390_replace_asce``).

        The new space sees every mapping this one has, now and later; the old
        ASCE keeps naming this object, for a configuration that still uses it.
        """
        twin = AddressSpace(asce, self.size)
        twin._map = self._map
        return twin

    def translate(self, gaddr: int) -> int | None:
        """Host physical address behind ``gaddr``, or ``None`` if it is not mapped."""
        pfn = self._map.get(gaddr >> PAGE_SHIFT)
        if pfn is None:
            return None
        return (pfn << PAGE_SHIFT) | (gaddr & 0xFFF)

    def pfn_of(self, gfn: int) -> int | None:
        return self._map.get(gfn)

    def map(self, gfn: int, pfn: int) -> None:
        """Make guest frame ``gfn`` point at host frame ``pfn``."""
        self._map[gfn] = pfn

    def unmap(self, gfn: int) -> int | None:
        """Drop the mapping of ``gfn``; returns the host frame it had."""
        return self._map.pop(gfn, None)

    def gfn_of(self, pfn: int) -> int | None:
        """Reverse lookup (slow; for diagnostics and monitors)."""
        for gfn, p in self._map.items():
            if p == pfn:
                return gfn
        return None

    def mappings(self) -> Iterator[tuple[int, int]]:
        """(gfn, pfn) pairs in guest order."""
        for gfn in sorted(self._map):
            yield gfn, self._map[gfn]

    def __len__(self) -> int:
        return len(self._map)
