"""Historical kernel bugs, re-created as hypervisor switches (uv-semantics.md §8).

Each switch puts one fixed bug of Linux/KVM back into sesim's hypervisor,
the way the kernel had it before the fix named in its row of §8. With every
switch off (the default) the hypervisor follows today's rules; with one on,
some seeds break a monitor or hang a vCPU (``tests/test_races.py`` finds
them). The switches live in one frozen value, handed to :class:`Kvm` and
through it to every actor that does host memory work.

========================================  ====  ==============================================
name                                      §8    what the hypervisor does wrong
========================================  ====  ==============================================
``busy-loop-under-lock``                  #1    the import UVC loops on busy (``uv_call``)
                                                while it holds the PTE lock and the page
                                                lock (f0a1a0615a6f made it one try, -EAGAIN)
``destroy-without-export-fallback``       #8    PGM 0x3d inside SIE: DESTR_SEC_STOR only; when
                                                that fails the VMM gets SIGSEGV (b108f7f0a29b
                                                exports instead)
``no-export-before-import``               #9    an import never exports first, even when
                                                several configurations share the address
                                                space and MISC is off (72b1daff2671)
``writeback-without-ref``                 #17   the import path waits for writeback after it
                                                dropped its folio reference (3f29f6537f54)
``import-without-pte-lock``               #19   the import looks the folio up, drops the PTE
                                                lock, and makes it secure without it
                                                (5cbe24350b7d; fixed by d8dfda5af0be)
========================================  ====  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from attrs import fields, frozen

from protocol import UsageError


@frozen(kw_only=True)
class BugInfo:
    """One switch: its name, its row in uv-semantics.md §8, and what it breaks."""

    name: str
    field: str
    row: int
    commit: str
    summary: str


BUGS: Final[tuple[BugInfo, ...]] = (
    BugInfo(
        name="busy-loop-under-lock",
        field="busy_loop_under_lock",
        row=1,
        commit="f0a1a0615a6f",
        summary="the import UVC loops on busy while holding the PTE and page locks",
    ),
    BugInfo(
        name="destroy-without-export-fallback",
        field="destroy_without_export_fallback",
        row=8,
        commit="b108f7f0a29b",
        summary="0x3d inside SIE destroys only; a failed destroy kills the guest",
    ),
    BugInfo(
        name="no-export-before-import",
        field="no_export_before_import",
        row=9,
        commit="72b1daff2671",
        summary="no export before import although several configurations share the mm",
    ),
    BugInfo(
        name="writeback-without-ref",
        field="writeback_without_ref",
        row=17,
        commit="3f29f6537f54",
        summary="waits for writeback on a folio after dropping its reference",
    ),
    BugInfo(
        name="import-without-pte-lock",
        field="import_without_pte_lock",
        row=19,
        commit="d8dfda5af0be",
        summary="makes a page secure without holding its PTE lock",
    ),
)
BUG_NAMES: Final = tuple(b.name for b in BUGS)
_BY_NAME: Final = {b.name: b for b in BUGS}


@frozen(kw_only=True)
class BugSwitches:
    """Which historical bugs the hypervisor re-creates (all off: today's kernel)."""

    busy_loop_under_lock: bool = False
    destroy_without_export_fallback: bool = False
    no_export_before_import: bool = False
    writeback_without_ref: bool = False
    import_without_pte_lock: bool = False

    @classmethod
    def from_names(cls, names: Iterable[str]) -> BugSwitches:
        """The switches named (``--inject-bug NAME`` values).

        Raises:
            UsageError: a name that is not one of :data:`BUG_NAMES`.
        """
        on = {}
        for name in names:
            info = _BY_NAME.get(name)
            if info is None:
                raise UsageError(f"unknown bug {name!r} (known: {', '.join(BUG_NAMES)})")
            on[info.field] = True
        return cls(**on)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the switches that are on, in table order."""
        return tuple(b.name for b in BUGS if getattr(self, b.field))

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(BugSwitches))


NO_BUGS: Final = BugSwitches()
