"""The host's page allocator: which frames are free for the hypervisor to use.

Deterministic on purpose: the lowest free frame is handed out first, so the
same run places the same data in the same frames.
"""

from __future__ import annotations

import heapq
from typing import final

from protocol import SesimError


class OutOfMemory(SesimError):
    """No free host frame is left."""


@final
class FrameAllocator:
    """Free frames in ``[first_pfn, end_pfn)``.

    Pages come from a min-heap of freed frames, then from a bump pointer;
    contiguous runs (UV donations, SIE blocks) come from the top down so that
    they do not fragment the page pool.
    """

    def __init__(self, first_pfn: int, end_pfn: int) -> None:
        self._next = first_pfn
        self._top = end_pfn
        self._free: list[int] = []
        self.in_use = 0

    @property
    def free_frames(self) -> int:
        return len(self._free) + (self._top - self._next)

    def alloc(self) -> int:
        """One free frame (the lowest)."""
        if self._free:
            pfn = heapq.heappop(self._free)
        elif self._next < self._top:
            pfn = self._next
            self._next += 1
        else:
            raise OutOfMemory("host memory is exhausted")
        self.in_use += 1
        return pfn

    def alloc_contiguous(self, pages: int, align_pages: int = 1) -> int:
        """``pages`` contiguous frames aligned to ``align_pages``; returns the first."""
        start = (self._top - pages) // align_pages * align_pages
        if start < self._next:
            raise OutOfMemory(f"no {pages} contiguous free frames left")
        self._top = start
        self.in_use += pages
        return start

    def free(self, pfn: int) -> None:
        """Give one frame back (contiguous runs are never given back: they may be leaked on purpose)."""
        heapq.heappush(self._free, pfn)
        self.in_use -= 1
