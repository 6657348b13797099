"""The regression corpus: every recorded trace in traces/recorded/ replays identically."""

from __future__ import annotations

import gzip

import orjson
import pytest

from sesim._corpus import CORPUS, CORPUS_DIR, missing, path_of
from sesim._replay import replay


def test_every_corpus_entry_has_its_trace_and_nothing_else_is_there() -> None:
    assert sorted(p.name for p in CORPUS_DIR.glob("*.jsonl.gz")) == sorted(path_of(e).name for e in CORPUS)


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_recorded_trace_replays_identically(entry) -> None:  # type: ignore[no-untyped-def]
    outcome = replay(path_of(entry))
    assert outcome.identical, (outcome.divergence, outcome.difference)
    events = [orjson.loads(line) for line in gzip.decompress(path_of(entry).read_bytes()).splitlines()[1:]]
    violations = [e for e in events if e["kind"] == "violation"]
    assert bool(violations) == entry.fails.startswith("violation")
    if violations:
        assert entry.fails == f"violation: {violations[0]['monitor']}"
    assert missing(entry, events) == []  # the race it was recorded for still happens
