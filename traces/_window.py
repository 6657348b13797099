"""A window of virtual time, as ``--window T0:T1`` gives it."""

from __future__ import annotations

import re
from typing import Final

from attrs import frozen

from protocol import UsageError

_UNITS: Final = {"": 1, "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_TIME: Final = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s)?\s*$")


@frozen(kw_only=True)
class TimeWindow:
    """``[start, end]`` in virtual ns; ``None`` leaves that side open."""

    start: int | None = None
    end: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> TimeWindow:
        """``T0:T1``, each side a number with an optional unit (ns by default; us, ms, s), either side empty.

        Examples: ``100us:2ms``, ``:500000``, ``1.5ms:``.

        Raises:
            UsageError: not of that form, or T1 before T0.
        """
        if text is None or text.strip() in ("", ":"):
            return cls()
        if ":" not in text:
            raise UsageError(f"--window {text!r}: expected T0:T1 (virtual time, e.g. 100us:2ms)")
        left, right = text.split(":", 1)
        start, end = _time(left, text), _time(right, text)
        if start is not None and end is not None and end < start:
            raise UsageError(f"--window {text!r}: the end is before the start")
        return cls(start=start, end=end)

    @property
    def is_open(self) -> bool:
        return self.start is None and self.end is None

    def sql(self, start_col: str, end_col: str | None = None) -> str:
        """A SQL condition: the interval ``[start_col, end_col]`` (or the instant ``start_col``) meets the window."""
        end_col = end_col or start_col
        parts = []
        if self.start is not None:
            parts.append(f"coalesce({end_col}, {start_col}) >= {self.start}")
        if self.end is not None:
            parts.append(f"{start_col} <= {self.end}")
        return " AND ".join(parts) or "true"

    def describe(self) -> str:
        if self.is_open:
            return "whole trace"
        lo = "start" if self.start is None else f"{self.start / 1000:g} µs"
        hi = "end" if self.end is None else f"{self.end / 1000:g} µs"
        return f"{lo} to {hi}"


def _time(text: str, whole: str) -> int | None:
    if not text.strip():
        return None
    match = _TIME.match(text)
    if match is None:
        raise UsageError(f"--window {whole!r}: {text.strip()!r} is not a time (e.g. 250us, 1.5ms, 40000)")
    return round(float(match.group(1)) * _UNITS[match.group(2) or ""])
