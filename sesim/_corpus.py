"""The regression corpus in ``traces/recorded/``: which runs it holds, and how to record them again.

Each entry is a run whose whole configuration is in its trace header, so
``sesim replay`` can re-run it; ``tests/test_recorded.py`` replays every file
and expects "identical", and checks that each trace still shows what it was
recorded for. When a change alters traces on purpose, record the corpus again
(``python -m sesim._corpus``) and say so in the commit.

Entries:

* the demo;
* one run of each race scenario of uv-semantics.md §8 (:mod:`sesim._scenarios`),
  at a seed where its race happened (``shows``: the events that prove it);
* swarm seeds that once found a false alarm or cover a rare mix: an import busy
  storm (storms once raised a false soft lockup when reclaim contended for the
  same page-table lock; they now run without memory pressure), memory pressure
  with guest I/O, a re-IPL after an asynchronous teardown without
  DESTROY_SEC_CONF_FAST;
* per fixed kernel bug (:mod:`actors._bugs`), the first seed of
  ``sesim stress --swarm --seeds 0..999 --inject-bug NAME`` that breaks a
  monitor (for ``import-without-pte-lock`` an earlier seed, 17, hangs
  instead), which must keep failing the same monitor.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from attrs import field, frozen

from machine import PgmCode
from machine._uv_storage import RC_CONFIG_HAS_CPUS

from ._campaign import CampaignOptions, run_seed
from ._simulation import demo_config, run

CORPUS_DIR = Path(__file__).resolve().parents[1] / "traces" / "recorded"


@frozen(kw_only=True)
class CorpusEntry:
    name: str
    seed: int
    options: CampaignOptions | None = None  # None: the demo
    fails: str = ""  # the failure class the run must keep (SeedOutcome.failure_class), "" for a clean run
    shows: tuple[Mapping[str, Any], ...] = field(default=())
    """Events the trace must contain, each given by fields it must have (``msg.cc``: a field
    of its message): what makes the entry worth keeping."""


def _scenario(name: str, seed: int, *shows: Mapping[str, Any]) -> CorpusEntry:
    return CorpusEntry(name=f"scenario-{name}", seed=seed, options=CampaignOptions(scenario=name), shows=shows)


def _bug(name: str, seed: int, monitor: str) -> CorpusEntry:
    options = CampaignOptions(swarm=True, bugs=(name,))
    return CorpusEntry(name=f"bug-{name}", seed=seed, fails=f"violation: {monitor}", options=options)


CORPUS: tuple[CorpusEntry, ...] = (
    CorpusEntry(name="demo-seed-0", seed=0),
    _scenario("one-page", 0, {"kind": "host-read", "reader": "qemu-reader"}),
    _scenario("random-busy", 0, {"kind": "reply", "msg.cc": 3}, {"kind": "reply", "msg.cc": 2}),
    _scenario("reference-noise", 0, {"kind": "import-ebusy"}),
    _scenario("async-reboot", 0, {"kind": "sie-exit", "pgm": int(PgmCode.SECURE_STORAGE_ACCESS)}),
    _scenario("second-cpu", 3, {"kind": "reply", "msg.type": "DestrSecStorResponse", "msg.rc": RC_CONFIG_HAS_CPUS}),
    _scenario("perform-killed", 0, {"kind": "cleanup-interrupted"}),
    _scenario("create-cpu-fails", 0, {"kind": "uvc-fault"}, {"kind": "leak"}),
    _scenario("pinned-shared", 0, {"kind": "sie-exit", "icpt": 108}),
    _scenario("tampered-swap", 0, {"kind": "tamper"}, {"kind": "guest-stop", "cause": "integrity"}),
    _scenario("dump-running", 0, {"kind": "kvm-run"}, {"kind": "dump-complete"}),
    CorpusEntry(name="swarm-import-busy-storm", seed=13, options=CampaignOptions(swarm=True)),
    CorpusEntry(name="swarm-memory-pressure-io", seed=17, options=CampaignOptions(swarm=True)),
    CorpusEntry(name="swarm-reipl-async-no-fast", seed=145, options=CampaignOptions(swarm=True)),
    _bug("busy-loop-under-lock", 1, "kernel"),
    _bug("destroy-without-export-fallback", 173, "progress"),
    _bug("no-export-before-import", 145, "progress"),
    _bug("writeback-without-ref", 36, "kernel"),
    _bug("import-without-pte-lock", 24, "kernel"),
)  # fmt: skip


def path_of(entry: CorpusEntry) -> Path:
    return CORPUS_DIR / f"{entry.name}.jsonl.gz"


def matches(event: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether ``event`` has every field of ``wanted`` (dotted names reach into its message)."""
    for key, value in wanted.items():
        where: Any = event
        for part in key.split("."):
            where = where.get(part) if isinstance(where, Mapping) else None
        if where != value:
            return False
    return True


def missing(entry: CorpusEntry, events: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The ``shows`` patterns of ``entry`` that no event of ``events`` matches."""
    return [want for want in entry.shows if not any(matches(e, want) for e in events)]


def record(entry: CorpusEntry, directory: Path = CORPUS_DIR) -> Path:
    """Run ``entry`` and write its gzip-compressed trace.

    Raises:
        RuntimeError: the run no longer fails as expected, or no longer shows its race.
    """
    directory.mkdir(parents=True, exist_ok=True)
    plain = directory / f"{entry.name}.jsonl"
    if entry.options is None:
        run(demo_config(), seed=entry.seed, trace=plain)
    else:
        outcome = run_seed(entry.seed, entry.options, trace=plain)
        if outcome.failure_class != entry.fails:
            plain.unlink()
            raise RuntimeError(f"{entry.name}: expected failure {entry.fails!r}, got {outcome.failures}")
    data = plain.read_bytes()
    plain.unlink()
    lost = missing(entry, [orjson.loads(line) for line in data.splitlines()[1:]])
    if lost:
        raise RuntimeError(f"{entry.name}: seed {entry.seed} does not show {lost}")
    target = directory / f"{entry.name}.jsonl.gz"
    target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    return target


def main() -> None:
    for entry in CORPUS:
        print(record(entry))


if __name__ == "__main__":
    main()
