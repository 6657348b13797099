"""The host kernel's memory management, as far as secure guests meet it (uv-semantics.md §3.5).

Theory of operation
===================

Linux guards a page that is about to become secure with three things, and
sesim models each of them because each one closes a race of §8:

* the **page lock** (``folio_trylock``): the import path only *tries* it and
  answers -EAGAIN, because it already holds the PTE lock and must not sleep;
* the **reference count**, frozen at its expected value while the UVC runs
  (``folio_ref_freeze``): nobody can take a new reference (a GUP pin, the
  reclaim thread's isolation) while the page flips to secure. A reference
  taken with a plain ``folio_get`` is only safe under the PTE lock, which is
  why the import must hold it across the UVC (§8 #19);
* the **PTE lock** (one spinlock per page table, 256 entries on s390): a
  waiter spins. A holder that loops on a UVC stalls every waiter (§8 #1).

Besides these, a page carries ``PG_arch_1`` (it *may* be secure: set before
an import, cleared after a successful export, destroy or pin), a writeback
flag, a map count, and its swap-cache slot. The per-CPU "LRU add" batch
holds one extra reference on every new page until it is drained, which is
the most common reason for a failed freeze (§8 scenario 3).

A :class:`Page` is the ``struct page`` of one host frame: it outlives the
allocations of that frame, whose number it counts in ``gen``. Holding a
``(page, gen)`` pair without a reference and finding another ``gen`` later
is a use after free. Everything that Linux itself would report (a
``VM_BUG_ON``, "Bad page state", a soft lockup, a use after free) is
written to the trace as a ``host-bug`` event through ``report``; the kernel
monitor turns each into a violation.

All methods are synchronous except the lock waits, which spin or poll on
virtual time through the waiting actor.
"""

from __future__ import annotations

from collections import deque

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, final

from machine import FrameState, HostMemory
from machine._alloc import FrameAllocator

if TYPE_CHECKING:
    from ._fabric import Actor

PAGE: Final = 4096
PTES_PER_TABLE: Final = 256
"""An s390 page table maps 256 pages (1 MiB); one PTE lock guards it."""
SPIN_NS: Final = 500
"""One round of a spinlock waiter."""
POLL_NS: Final = 2_000
"""One round of a sleeping waiter (page lock, writeback, free memory)."""
SOFT_LOCKUP_NS: Final = 100_000
"""sesim's soft-lockup watchdog: a spin this long is reported (Linux: 20 s of real time).

A correct holder keeps a PTE lock for one UVC, or a few when ``uv_call``
re-issues a busy export (a few µs), so waits stay far below this; only a
holder that loops under the lock while the UV stays busy gets near it."""
LRU_BATCH: Final = 15
"""Pages in the per-CPU "LRU add" batch before it is drained (``folio_batch``)."""

Report = Callable[[str, str, str], None]
"""``report(actor, what, detail)``: write a ``host-bug`` event."""


@final
class Page:
    """``struct page`` of one host frame that backs guest memory."""

    __slots__ = (
        "arch_1",
        "born",
        "free",
        "frozen",
        "gen",
        "gfn",
        "in_lru_batch",
        "locked_by",
        "mapcount",
        "pfn",
        "pins",
        "refcount",
        "swap_slot",
        "vm",
        "writeback",
    )

    def __init__(self, pfn: int) -> None:
        self.pfn = pfn
        self.gen = 0
        self.free = True
        self.vm: Any = None
        self.gfn = -1
        self.refcount = 0
        self.mapcount = 0
        self.locked_by: str | None = None
        self.writeback = False
        self.arch_1 = False  # PG_arch_1: the page may be secure (cleared when the page is freed)
        self.swap_slot: int | None = None
        self.frozen = False
        self.in_lru_batch = False
        self.pins = 0  # FOLL_PIN references (a subset of refcount): DMA in flight
        self.born = 0  # when it was last allocated (a global count): the LRU's age

    def __repr__(self) -> str:
        return f"<page {self.pfn:#x} gen {self.gen} ref {self.refcount} map {self.mapcount}>"


@final
class LinuxMm:
    """Pages, PTE locks and the LRU-add batch of the host kernel.

    Args:
        memory: the server's memory (frame states, for the free path).
        allocator: where frames come from and go back to.
        report: writes a ``host-bug`` event.
        limit_pages: how many pages guest memory may use before faults wait
            for the reclaim thread (``None``: no limit).
    """

    def __init__(
        self, memory: HostMemory, allocator: FrameAllocator, report: Report, *, limit_pages: int | None = None
    ) -> None:
        self.memory = memory
        self.allocator = allocator
        self.report = report
        self.limit_pages = limit_pages
        self.pages: dict[int, Page] = {}
        self.guest_pages = 0
        self.peak_guest_pages = 0
        self.swapcache: dict[int, Page] = {}
        self._ptl: dict[tuple[str, int], str] = {}
        self._ptl_queue: dict[tuple[str, int], deque[str]] = {}
        self._batch: list[Page] = []
        self.freeze_failures = 0
        self.overcommitted = 0
        self.touched: set[tuple[str, int]] = set()  # every (guest, page) that ever got a frame
        self.lock_contended = 0
        self._born = 0

    # ------------------------------------------------------------ pages
    def page(self, pfn: int) -> Page:
        page = self.pages.get(pfn)
        if page is None:
            page = self.pages[pfn] = Page(pfn)
        return page

    @property
    def over_limit(self) -> bool:
        return self.limit_pages is not None and self.guest_pages >= self.limit_pages

    def alloc(self, vm: Any, gfn: int, who: str) -> Page:
        """A fresh page for guest frame ``gfn`` of ``vm``: one reference, not mapped yet.

        Raises:
            machine._alloc.OutOfMemory: no frame is left at all.
        """
        pfn = self.allocator.alloc()
        page = self.page(pfn)
        if not page.free:
            # Freed behind the page allocator's back (a frame of a destroyed VM): forget it.
            self.guest_pages -= 1
            page.refcount = 0
        elif page.refcount:
            # prep_new_page: a page on the free list must have no references.
            self.report(who, "bad-page", f"page {pfn:#x} allocated with refcount {page.refcount}")
        page.gen += 1
        page.free = False
        page.vm = vm
        page.gfn = gfn
        page.refcount = 1
        page.mapcount = 0
        page.locked_by = None
        page.writeback = False
        page.swap_slot = None
        page.frozen = False
        page.in_lru_batch = False
        page.pins = 0
        self._born += 1
        page.born = self._born
        if vm is not None:
            self.touched.add((vm.name, gfn))
        self.guest_pages += 1
        self.peak_guest_pages = max(self.peak_guest_pages, self.guest_pages)
        return page

    def touch(self, page: Page) -> None:
        """The page was used: it goes to the young end of the LRU."""
        self._born += 1
        page.born = self._born

    def _free(self, page: Page, who: str) -> None:
        if page.mapcount > 0:
            self.report(
                who,
                "bad-page",
                f"page {page.pfn:#x} freed while mapped {page.mapcount} time(s) "
                f"(guest {getattr(page.vm, 'name', '?')} gfn {page.gfn:#x})",
            )
        frame = self.memory.peek(page.pfn)
        if frame is not None and frame.state is FrameState.EXPORTED:
            # An exported page is ordinary host memory holding ciphertext (§3.4):
            # once freed, the label of whose ciphertext it was goes too.
            self.memory.set_state(frame, FrameState.HOST)
        if frame is not None and frame.state is FrameState.HOST:
            frame.fill(None)
        if page.swap_slot is not None:
            self.swapcache.pop(page.swap_slot, None)
            page.swap_slot = None
        page.free = True
        page.frozen = False
        page.locked_by = None
        page.arch_1 = False  # free_pages_prepare clears every page flag, PG_arch_1 too
        self.guest_pages -= 1
        self.allocator.free(page.pfn)

    # ------------------------------------------------------ references
    def get(self, page: Page, who: str) -> None:
        """``folio_get``: the caller must already hold a reference (or the PTE lock of a mapping)."""
        if page.free:
            self.report(who, "use-after-free", f"folio_get on free page {page.pfn:#x}")
        elif page.refcount == 0:
            # VM_BUG_ON_FOLIO(folio_ref_zero_or_close_to_overflow): the count was frozen
            # by someone who did not hold the lock this caller relies on.
            self.report(who, "vm-bug", f"folio_get on page {page.pfn:#x} whose refcount is frozen at 0")
        page.frozen = False
        page.refcount += 1

    def try_get(self, page: Page) -> bool:
        """``folio_try_get``: fails on a free or frozen page."""
        if page.free or page.refcount == 0:
            return False
        page.refcount += 1
        return True

    def put(self, page: Page, who: str) -> None:
        """``folio_put``: the last reference frees the page."""
        if page.refcount <= 0:
            self.report(who, "vm-bug", f"folio_put on page {page.pfn:#x} with refcount {page.refcount}")
            return
        page.refcount -= 1
        if page.refcount == 0 and not page.free:
            self._free(page, who)

    @staticmethod
    def expected_refs(page: Page) -> int:
        """``expected_folio_refs``: the map count, plus one for the swap cache (anonymous pages)."""
        return page.mapcount + (1 if page.swap_slot is not None else 0)

    def freeze(self, page: Page, expected: int) -> bool:
        """``folio_ref_freeze``: refcount ``expected`` → 0, or fail."""
        if page.free or page.frozen or page.refcount != expected:
            self.freeze_failures += 1
            return False
        page.refcount = 0
        page.frozen = True
        return True

    @staticmethod
    def unfreeze(page: Page, count: int) -> None:
        """``folio_ref_unfreeze``: an atomic *set*, so a reference taken meanwhile is lost."""
        page.frozen = False
        page.refcount = count

    # ------------------------------------------------------- page lock
    def trylock(self, page: Page, who: str) -> bool:
        if page.locked_by is not None:
            self.lock_contended += 1
            return False
        page.locked_by = who
        return True

    def unlock(self, page: Page, who: str) -> None:
        if page.locked_by != who:
            self.report(who, "vm-bug", f"{who} unlocks page {page.pfn:#x} held by {page.locked_by}")
        page.locked_by = None

    async def lock(self, actor: Actor, page: Page) -> None:
        """``folio_lock``: a sleeping lock (the caller holds a reference)."""
        while not self.trylock(page, actor.name):
            await actor.sleep(POLL_NS)

    async def wait_writeback(self, actor: Actor, page: Page, gen: int, *, holds_ref: bool) -> None:
        """``folio_wait_writeback``, which needs a reference on the page (3f29f6537f54).

        Waiting without one on a page that is freed meanwhile is a use after
        free; it is reported and the wait ends.
        """
        while True:
            if page.gen != gen or page.free:
                if not holds_ref:
                    self.report(
                        actor.name,
                        "use-after-free",
                        f"folio_wait_writeback on page {page.pfn:#x} freed while waited on without a reference",
                    )
                return
            if not page.writeback:
                return
            await actor.sleep(POLL_NS)

    # ------------------------------------------------------- PTE locks
    @staticmethod
    def ptl_key(vm: Any, gfn: int) -> tuple[str, int]:
        return (vm.name, gfn // PTES_PER_TABLE)

    def ptl_holder(self, key: tuple[str, int]) -> str | None:
        return self._ptl.get(key)

    def ptl_trylock(self, key: tuple[str, int], who: str) -> bool:
        """``spin_trylock``: only a free lock that nobody queues for (qspinlock's lock word is 0)."""
        if key in self._ptl or self._ptl_queue.get(key):
            return False
        self._ptl[key] = who
        return True

    async def ptl_lock(self, actor: Actor, key: tuple[str, int]) -> None:
        """Take a PTE lock, spinning while another actor holds it (soft lockup reported once).

        Fair, as Linux's queued spinlock is: waiters queue, and an unlock hands the lock
        to the first of them. (An unfair lock would let a holder that drops and retakes
        it at once, a vCPU retrying an intercept, starve a waiter for ever.)
        """
        if self.ptl_trylock(key, actor.name):
            return
        if self._ptl.get(key) == actor.name:
            self.report(actor.name, "deadlock", f"{actor.name} takes the PTE lock {key} it already holds")
        queue = self._ptl_queue.setdefault(key, deque())
        queue.append(actor.name)
        start = actor.now
        reported = False
        try:
            while self._ptl.get(key) != actor.name:
                if not reported and actor.now - start >= SOFT_LOCKUP_NS:
                    reported = True
                    self.report(
                        actor.name,
                        "soft-lockup",
                        f"{actor.name} spun {actor.now - start} ns on the PTE lock of {key[0]} table "
                        f"{key[1]:#x} held by {self._ptl.get(key)}",
                    )
                await actor.sleep(SPIN_NS)
        except BaseException:
            # Cancelled while queued (the run ends): leave the queue, or pass on a lock handed over.
            if actor.name in queue:
                queue.remove(actor.name)
            elif self._ptl.get(key) == actor.name:
                self.ptl_unlock(key, actor.name)
            raise

    def ptl_unlock(self, key: tuple[str, int], who: str) -> None:
        holder = self._ptl.pop(key, None)
        if holder != who:
            self.report(who, "vm-bug", f"{who} releases the PTE lock {key} held by {holder}")
        queue = self._ptl_queue.get(key)
        if queue:
            self._ptl[key] = queue.popleft()  # handed over: the waiter finds it its own
        elif queue is not None:
            del self._ptl_queue[key]

    # ------------------------------------------------------ LRU batch
    def lru_add(self, page: Page, who: str) -> None:
        """``folio_add_lru``: the per-CPU batch holds a reference until it is drained."""
        page.refcount += 1
        page.in_lru_batch = True
        self._batch.append(page)
        if len(self._batch) >= LRU_BATCH:
            self.lru_drain(who)

    def lru_drain(self, who: str) -> None:
        """``lru_add_drain_all``: drop the batch's references."""
        batch, self._batch = self._batch, []
        for page in batch:
            page.in_lru_batch = False
            self.put(page, who)

    # ------------------------------------------------------ swap cache
    def swapcache_add(self, page: Page, slot: int) -> None:
        page.swap_slot = slot
        page.refcount += 1
        self.swapcache[slot] = page

    def swapcache_del(self, page: Page) -> int | None:
        """Take ``page`` out of the swap cache (the cache's reference is the caller's to drop)."""
        slot = page.swap_slot
        if slot is not None:
            self.swapcache.pop(slot, None)
            page.swap_slot = None
        return slot
