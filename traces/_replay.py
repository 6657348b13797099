"""What replay needs from a recorded trace, and how two traces are compared.

A trace records every scheduling choice: an event carrying ``of`` (the
number of ready actors) names the actor that was picked at that step, and a
``choice`` event gives each data choice of a step in order. That is enough
to run the same configuration again along the same schedule
(:class:`actors.ReplayStrategy`); the first event that comes out differently
is where the code, or the determinism, changed.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from attrs import frozen

from protocol import FormatError

from ._writer import check_header


@frozen(kw_only=True)
class Recording:
    """A trace file read for replay."""

    path: str
    header: dict[str, Any]
    lines: tuple[bytes, ...]  # the event lines, without the header
    picks: dict[int, str]
    choices: dict[int, tuple[int, ...]]

    @property
    def seed(self) -> int:
        return int(self.header.get("seed", 0))

    @property
    def last_step(self) -> int:
        return int(orjson.loads(self.lines[-1])["step"]) if self.lines else 0


def read_recording(path: Path) -> Recording:
    """Read a trace and collect its scheduling and data choices.

    Raises:
        FormatError: not a sesim trace, or a line that is not a JSON event
            (the message names the file and the line).
    """
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FormatError(f"{path}: not a readable gzip file: {exc}") from None
    raw = data.splitlines()
    if not raw:
        raise FormatError(f"{path}: empty file, not a sesim trace")
    try:
        header = orjson.loads(raw[0])
    except orjson.JSONDecodeError:
        raise FormatError(f"{path}:1: not JSON, not a sesim trace") from None
    check_header(header, f"{path}:1")
    picks: dict[int, str] = {}
    choices: dict[int, list[int]] = {}
    for number, line in enumerate(raw[1:], start=2):
        try:
            event = orjson.loads(line)
            step = event["step"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise FormatError(f"{path}:{number}: not a trace event (truncated or foreign line)") from None
        if "of" in event and event.get("kind") != "choice":
            picks[step] = event["actor"]
        elif event.get("kind") == "choice":
            choices.setdefault(step, []).append(event["value"])
    return Recording(
        path=str(path),
        header=header,
        lines=tuple(raw[1:]),
        picks=picks,
        choices={step: tuple(values) for step, values in choices.items()},
    )


@frozen(kw_only=True)
class Difference:
    """Where a replay first left the recording."""

    index: int  # 0-based event index (line number minus 2)
    step: int | None
    expected: bytes | None  # None: the recording ended first
    got: bytes | None  # None: the replay ended first
    before: tuple[bytes, ...]  # the events just before, common to both


def first_difference(expected: Sequence[bytes], got: Sequence[bytes], *, context: int = 3) -> Difference | None:
    """The first event where ``got`` differs from ``expected``, or ``None`` if they are identical."""
    for index, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return _difference(expected, got, index, context)
    if len(expected) != len(got):
        return _difference(expected, got, min(len(expected), len(got)), context)
    return None


def _difference(expected: Sequence[bytes], got: Sequence[bytes], index: int, context: int) -> Difference:
    a = expected[index] if index < len(expected) else None
    b = got[index] if index < len(got) else None
    step = None
    for line in (a, b):
        if line is not None:
            try:
                step = int(orjson.loads(line)["step"])
                break
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return Difference(
        index=index, step=step, expected=a, got=b, before=tuple(expected[max(0, index - context) : index])
    )
