"""``sesim export perfetto``: Chrome trace-event JSON that ui.perfetto.dev opens."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from trace_samples import demo_trace, race_trace

from traces import TimeWindow, TraceDB, perfetto_events, write_perfetto


@pytest.fixture(name="db", scope="module")
def _db(tmp_path_factory: pytest.TempPathFactory) -> TraceDB:
    with TraceDB.open([demo_trace(tmp_path_factory.mktemp("demo"))]) as db:
        yield db


@pytest.fixture(name="doc", scope="module")
def _doc(db: TraceDB, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("perfetto") / "trace.json"
    write_perfetto(db, out)
    return json.loads(out.read_text())


def _events(doc: dict, ph: str) -> list[dict]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def _thread_names(doc: dict) -> dict[tuple[int, int], str]:
    return {(e["pid"], e["tid"]): e["args"]["name"] for e in _events(doc, "M") if e["name"] == "thread_name"}


def test_document_is_a_trace_event_object(doc: dict) -> None:
    assert isinstance(doc["traceEvents"], list)
    assert doc["displayTimeUnit"] == "ns"
    for event in doc["traceEvents"]:
        assert {"ph", "pid"} <= set(event)
        assert event["ph"] in {"M", "X", "s", "f", "i", "C"}


def test_every_actor_has_a_named_track(db: TraceDB, doc: dict) -> None:
    actors = {r[0] for r in db.query("SELECT DISTINCT actor FROM events WHERE actor <> 'machine'").rows}
    assert actors <= set(_thread_names(doc).values())
    assert any(e["name"] == "process_name" for e in _events(doc, "M"))


def test_each_uvc_is_a_slice_on_its_caller_and_on_the_ultravisor(db: TraceDB, doc: dict) -> None:
    names = _thread_names(doc)
    slices = _events(doc, "X")
    on_uv = [s for s in slices if names[(s["pid"], s["tid"])].startswith("uv")]
    on_callers = [s for s in slices if not names[(s["pid"], s["tid"])].startswith("uv")]
    uvcs = db.scalar("SELECT count(*) FROM uvcs")
    assert len(on_uv) == len(on_callers) == uvcs


def test_slice_durations_are_virtual_microseconds(db: TraceDB, doc: dict) -> None:
    latency = db.scalar("SELECT latency_ns FROM uvcs WHERE command = 'SET_SEC_CONF_PARAMS' LIMIT 1")
    durations = {s["dur"] for s in _events(doc, "X") if s["name"].startswith("SET_SEC_CONF_PARAMS")}
    assert latency / 1000 in durations
    end = db.scalar("SELECT max(t) FROM events")
    assert max(e["ts"] for e in doc["traceEvents"] if "ts" in e) <= end / 1000


def test_slices_on_one_track_nest_or_are_disjoint(doc: dict) -> None:
    tracks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for s in _events(doc, "X"):  # in whole ns, as Perfetto reads µs
        tracks[(s["pid"], s["tid"])].append((round(s["ts"] * 1000), round((s["ts"] + s["dur"]) * 1000)))
    for spans in tracks.values():
        spans.sort(key=lambda span: (span[0], -span[1]))
        open_ends: list[float] = []
        for start, end in spans:
            while open_ends and open_ends[-1] <= start:
                open_ends.pop()
            assert not open_ends or end <= open_ends[-1], (start, end, open_ends)
            open_ends.append(end)


def test_flows_pair_up(doc: dict) -> None:
    starts = Counter((e["id"], e["cat"], e["name"]) for e in _events(doc, "s"))
    ends = Counter((e["id"], e["cat"], e["name"]) for e in _events(doc, "f"))
    assert starts and set(starts) == set(ends)
    assert set(starts.values()) == {1} and set(ends.values()) == {1}


def test_flow_ends_bind_to_the_enclosing_slice(doc: dict) -> None:
    assert all(e.get("bp") == "e" for e in _events(doc, "f"))


def test_every_flow_event_lies_on_a_slice_of_its_track(doc: dict) -> None:
    slices = defaultdict(list)
    for s in _events(doc, "X"):
        slices[(s["pid"], s["tid"])].append((s["ts"], s["ts"] + s["dur"]))
    for e in _events(doc, "s") + _events(doc, "f"):
        assert any(a <= e["ts"] <= b + 1e-6 for a, b in slices[(e["pid"], e["tid"])]), e


def test_requests_flow_forward_in_time(doc: dict) -> None:
    start = {e["id"]: e["ts"] for e in _events(doc, "s")}
    assert all(e["ts"] >= start[e["id"]] for e in _events(doc, "f"))


def test_events_are_sorted_by_time(doc: dict) -> None:
    times = [e["ts"] for e in doc["traceEvents"] if e["ph"] != "M"]
    assert times == sorted(times)


def test_actor_events_are_instants_with_their_fields(doc: dict) -> None:
    refused = [e for e in _events(doc, "i") if e["cat"] == "pv-refused"]
    assert len(refused) == 1
    assert refused[0]["s"] == "t"
    assert "0x0108" in refused[0]["args"]["reason"]


def test_frame_counters_never_go_negative(doc: dict) -> None:
    counters = _events(doc, "C")
    assert counters
    assert all(v >= 0 for c in counters for v in c["args"].values())
    assert counters[0]["args"]["donated"] > 0


def test_window_keeps_only_uvcs_that_meet_it(db: TraceDB) -> None:
    window = TimeWindow.parse("500us:600us")
    doc = perfetto_events(db, window=window)
    expected = db.scalar("SELECT count(*) FROM uvcs WHERE sent <= 600000 AND reply_t >= 500000")
    assert len(_events(doc, "X")) == 2 * expected
    assert all(e["ts"] <= 600 and e["ts"] + e["dur"] >= 500 for e in _events(doc, "X"))
    assert all(500 <= e["ts"] <= 600 for e in _events(doc, "i"))


def test_actor_filter_keeps_only_those_tracks(db: TraceDB) -> None:
    doc = perfetto_events(db, actors="beta.*")
    names = set(_thread_names(doc).values())
    beta = {r[0] for r in db.query("SELECT DISTINCT actor FROM events WHERE actor LIKE 'beta.%'").rows}
    assert names == beta and {"beta.os", "beta.cpu0", "beta.cpu1"} <= names
    assert not _events(doc, "s")  # no ultravisor track, so no arrows
    assert not _events(doc, "C")


def test_ultravisor_calls_in_flight_together_get_their_own_lanes(tmp_path: Path) -> None:
    with TraceDB.open([race_trace(tmp_path / "race.jsonl")]) as db:
        doc = perfetto_events(db)
    names = _thread_names(doc)
    assert "uv #2" in names.values()  # the export holds the frame while the busy answers come
