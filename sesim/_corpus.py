"""The regression corpus in ``traces/recorded/``: which runs it holds, and how to record them again.

Each entry is a run whose whole configuration is in its trace header, so
``sesim replay`` can re-run it; ``tests/test_recorded.py`` replays every file
and expects "identical". When a change alters traces on purpose, record the
corpus again (``python -m sesim._corpus``) and say so in the commit.

Entries: the demo; swarm seed 188, an import busy storm that once raised a
false soft lockup (storms now run without memory pressure: a vCPU retrying
its imports and the reclaim thread took the same page-table lock in turn
for over 100 µs); swarm seeds with memory pressure and guest I/O, and with
a re-IPL after an asynchronous teardown without DESTROY_SEC_CONF_FAST; and
the first failing seed of a swarm campaign with the ``import-without-pte-lock``
switch, which must keep failing the same monitor.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from attrs import frozen

from ._campaign import CampaignOptions, run_seed
from ._simulation import demo_config, run

CORPUS_DIR = Path(__file__).resolve().parents[1] / "traces" / "recorded"


@frozen(kw_only=True)
class CorpusEntry:
    name: str
    seed: int
    options: CampaignOptions | None = None  # None: the demo
    fails: str = ""  # the failure class the run must keep, "" for a clean run


CORPUS: tuple[CorpusEntry, ...] = (
    CorpusEntry(name="demo-seed-0", seed=0),
    CorpusEntry(name="swarm-import-busy-storm", seed=188, options=CampaignOptions(swarm=True)),
    CorpusEntry(name="swarm-memory-pressure-io", seed=3, options=CampaignOptions(swarm=True)),
    CorpusEntry(name="swarm-reipl-async-no-fast", seed=6, options=CampaignOptions(swarm=True)),
    CorpusEntry(
        name="bug-import-without-pte-lock", seed=57, fails="violation",
        options=CampaignOptions(swarm=True, bugs=("import-without-pte-lock",)),
    ),
)  # fmt: skip


def path_of(entry: CorpusEntry) -> Path:
    return CORPUS_DIR / f"{entry.name}.jsonl.gz"


def record(entry: CorpusEntry, directory: Path = CORPUS_DIR) -> Path:
    """Run ``entry`` and write its gzip-compressed trace."""
    directory.mkdir(parents=True, exist_ok=True)
    plain = directory / f"{entry.name}.jsonl"
    if entry.options is None:
        run(demo_config(), seed=entry.seed, trace=plain)
    else:
        outcome = run_seed(entry.seed, entry.options, trace=plain)
        if outcome.failure_class != entry.fails:
            raise RuntimeError(f"{entry.name}: expected failure {entry.fails!r}, got {outcome.failures}")
    target = directory / f"{entry.name}.jsonl.gz"
    target.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=9, mtime=0))
    plain.unlink()
    return target


def main() -> None:
    for entry in CORPUS:
        print(record(entry))


if __name__ == "__main__":
    main()
