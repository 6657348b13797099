"""Trace analysis: loading, the documented views, the canned tables, Parquet, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from trace_samples import HANDLE_A, demo_trace, future_trace, race_trace, swap_race_trace, write_trace

from protocol import FormatError, UsageError
from traces import REPORT_NAMES, VIEWS, TimeWindow, TraceDB, _reports, run_reports


@pytest.fixture(name="trace", scope="module")
def _trace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_trace(tmp_path_factory.mktemp("demo"))


@pytest.fixture(name="db", scope="module")
def _db(trace: Path) -> TraceDB:
    with TraceDB.open([trace]) as db:
        yield db


@pytest.fixture(name="lines", scope="module")
def _lines(trace: Path) -> list[dict]:
    return [json.loads(line) for line in trace.read_text().splitlines()]


# ------------------------------------------------------------------ views
@pytest.mark.parametrize("view", VIEWS, ids=lambda v: v.name)
def test_every_view_has_exactly_its_documented_columns(db: TraceDB, view) -> None:
    columns = [row[0] for row in db.con.execute(f"DESCRIBE {view.name}").fetchall()]
    assert columns == [name for name, _ in view.columns]


def test_events_view_has_every_line_but_the_header(db: TraceDB, lines: list[dict]) -> None:
    assert db.scalar("SELECT count(*) FROM events") == len(lines) - 1


def test_event_line_numbers_point_into_the_file(db: TraceDB, lines: list[dict]) -> None:
    rows = db.query("SELECT line, step, kind, actor FROM events ORDER BY random() LIMIT 50").rows
    for line, step, kind, actor in rows:
        assert (lines[line - 1]["step"], lines[line - 1]["kind"], lines[line - 1]["actor"]) == (step, kind, actor)


def test_uvcs_pair_every_request_with_its_answer(db: TraceDB, lines: list[dict]) -> None:
    requests = [e for e in lines[1:] if e["kind"] == "recv" and e["msg"].get("type") == "Uvc"]
    assert db.scalar("SELECT count(*) FROM uvcs") == len(requests)
    assert db.scalar("SELECT count(*) FROM uvcs WHERE outcome = 'pending' OR latency_ns < 0") == 0


def test_uvcs_name_the_command_and_its_code(db: TraceDB) -> None:
    rows = dict(db.query("SELECT DISTINCT command, code FROM uvcs").rows)
    assert rows["UNPACK_IMG"] == 0x0301
    assert rows["VERIFY_IMG"] == 0x0302
    assert rows["CONV_TO_SEC_STOR"] == 0x0200


def test_uvcs_are_attributed_to_their_guest(db: TraceDB) -> None:
    unpacked = dict(db.query("SELECT guest, count(*) FROM uvcs WHERE command = 'UNPACK_IMG' GROUP BY guest").rows)
    assert set(unpacked) == {"alpha", "beta"}
    refused = db.query("SELECT guest, rc FROM uvcs WHERE command = 'SET_SEC_CONF_PARAMS' AND cc = 1").rows
    assert refused == (("gamma", 0x0108),)
    assert db.scalar("SELECT count(*) FROM uvcs WHERE guest IS NULL AND caller = 'kvm' AND command <> 'QUI'") == 0


def test_guest_uvcs_name_their_frame_by_host_frame_or_guest_address(db: TraceDB) -> None:
    rows = db.query("SELECT frame, gfn FROM uvcs WHERE command = 'CONV_TO_SEC_STOR'").rows
    assert rows
    # A host frame where an event (swap, reclaim) named it, else the guest address.
    assert all(frame.startswith("pfn ") or frame.endswith(f"gfn {gfn:#x}") for frame, gfn in rows)


def test_frames_view_has_a_row_per_frame_of_a_range_event(db: TraceDB, lines: list[dict]) -> None:
    frames = sum(e.get("count", 1) for e in lines[1:] if e["kind"] == "frame")
    assert db.scalar("SELECT count(*) FROM frames") == frames


def test_frame_states_follow_each_other_without_gaps(db: TraceDB) -> None:
    gaps = db.scalar(
        "SELECT count(*) FROM (SELECT t_to, lead(t_from) OVER (PARTITION BY pfn ORDER BY line) AS nxt"
        " FROM frame_states)"
        " WHERE nxt IS NOT NULL AND nxt <> t_to"
    )
    assert gaps == 0


def test_guest_life_cycle_phases_come_in_order(db: TraceDB) -> None:
    rows = db.query(
        "SELECT guest, created_t, pv_start_t, unpack_start_t, unpack_end_t, verify_start_t, verify_end_t, running_t,"
        " halt_t, destroyed_t, pages_unpacked FROM guests WHERE guest IN ('alpha', 'beta')"
    ).rows
    assert len(rows) == 2
    for guest, *times, pages in rows:
        assert times == sorted(times), guest
        assert pages > 0


def test_refused_guest_is_reported_refused_with_its_reason(db: TraceDB) -> None:
    state, reason, running = db.query("SELECT state, reason, running_t FROM guests WHERE guest = 'gamma'").rows[0]
    assert state == "refused"
    assert "0x0108" in reason
    assert running is None


def test_guest_imports_count_successful_conv_to_sec_stor(db: TraceDB) -> None:
    imports = dict(db.query("SELECT guest, imports FROM guests").rows)
    counted = dict(
        db.query("SELECT guest, count(*) FROM uvcs WHERE command = 'CONV_TO_SEC_STOR' AND cc = 0 GROUP BY guest").rows
    )
    assert {g: n for g, n in imports.items() if n} == counted


def test_traces_view_reads_the_header(db: TraceDB, lines: list[dict]) -> None:
    seed, events, steps = db.query("SELECT seed, events, steps FROM traces").rows[0]
    assert seed == lines[0]["seed"]
    assert events == len(lines) - 1
    assert steps == lines[-1]["step"]


def test_lines_view_gives_fields_the_events_view_lacks(db: TraceDB) -> None:
    pgm = db.scalar("SELECT count(*) FROM lines WHERE json->>'$.kind' = 'sie-exit' AND json->>'$.pgm' IS NOT NULL")
    assert pgm > 0


# ---------------------------------------------------------- canned tables
@pytest.mark.parametrize("name", REPORT_NAMES)
def test_each_canned_table_runs(db: TraceDB, name: str) -> None:
    (table,) = run_reports(db, [name])
    assert table.name == name
    assert table.columns
    assert table.rows or table.note


def test_uvc_table_counts_every_uvc(db: TraceDB) -> None:
    (table,) = run_reports(db, ["uvcs"])
    calls = table.columns.index("calls")
    assert sum(row[calls] for row in table.rows) == db.scalar("SELECT count(*) FROM uvcs")


def test_latency_percentiles_are_ordered(db: TraceDB) -> None:
    (table,) = run_reports(db, ["latency"])
    for row in table.records():
        assert row["p50_us"] <= row["p90_us"] <= row["p99_us"] <= row["max_us"]


def test_set_sec_conf_params_latency_is_its_virtual_cost(db: TraceDB) -> None:
    (table,) = run_reports(db, ["latency"])
    row = next(r for r in table.records() if r["command"] == "SET_SEC_CONF_PARAMS")
    assert row["p50_us"] > 0


def test_unknown_report_name_is_a_usage_error(db: TraceDB) -> None:
    with pytest.raises(UsageError, match="no report 'nope'"):
        run_reports(db, ["nope"])


def test_campaigns_summarise_life_cycles_per_guest(
    tmp_path: Path, trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(2):
        shutil.copy(trace, tmp_path / f"seed-{i}.jsonl")
    monkeypatch.setattr(_reports, "MANY_TRACES", 1)
    with TraceDB.open([tmp_path]) as db:
        (table,) = run_reports(db, ["lifecycle"])
    runs = {r["guest"]: r["runs"] for r in table.records()}
    assert runs == {"alpha": 2, "beta": 2, "gamma": 2, "delta": 2}


# ------------------------------------------------------------- races etc.
def test_overlapping_uvcs_on_one_frame_are_a_race(tmp_path: Path) -> None:
    with TraceDB.open([race_trace(tmp_path / "race.jsonl")]) as db:
        races = db.query("SELECT * FROM races").records()
    assert len(races) == 1
    race = races[0]
    assert (race["frame"], race["guest"]) == ("pfn 0x4242", "alpha")
    assert (race["first_caller"], race["first_command"]) == ("kvm.reclaim", "CONV_FROM_SEC_STOR")
    assert (race["second_caller"], race["second_command"]) == ("kvm", "DESTR_SEC_STOR")
    assert race["overlapping_tries"] == 2
    assert race["resolution"] == "busy (cc 2), retried: ok after 3 tries"


def test_a_guest_frame_and_its_backing_host_frame_race(tmp_path: Path) -> None:
    with TraceDB.open([swap_race_trace(tmp_path / "swap.jsonl")]) as db:
        races = db.query("SELECT * FROM races").records()
        assert db.scalar("SELECT count(DISTINCT frame) FROM uvcs WHERE command LIKE 'CONV_%'") == 1
    assert [(r["frame"], r["first_caller"], r["second_command"], r["resolution"]) for r in races] == [
        ("pfn 0x99", "kswapd", "CONV_TO_SEC_STOR", "busy (cc 2), retried: ok after 2 tries")
    ]


def test_busy_tries_and_their_retry_form_one_run(tmp_path: Path) -> None:
    with TraceDB.open([race_trace(tmp_path / "race.jsonl")]) as db:
        rows = db.query(
            "SELECT corr, outcome, attempt, attempts, final_outcome, run_corr FROM uvcs"
            " WHERE command = 'DESTR_SEC_STOR' ORDER BY corr"
        ).rows
    assert rows == ((3, "busy", 1, 3, "ok", 3), (4, "busy", 2, 3, "ok", 3), (5, "ok", 3, 3, "ok", 3))


def test_a_call_without_a_handle_gets_its_guest_from_the_frame_owner(tmp_path: Path) -> None:
    with TraceDB.open([race_trace(tmp_path / "race.jsonl")]) as db:
        assert db.scalar("SELECT guest FROM uvcs WHERE caller = 'kvm.reclaim'") == "alpha"
        assert db.scalar("SELECT guest FROM frames WHERE owner = ? LIMIT 1", [HANDLE_A]) == "alpha"


def test_violations_keep_the_whole_event(tmp_path: Path) -> None:
    with TraceDB.open([future_trace(tmp_path / "future.jsonl")]) as db:
        (v,) = db.query("SELECT * FROM violations").records()
    assert (v["monitor"], v["guest"], v["line"]) == ("no-plaintext-read", "alpha", 7)
    assert json.loads(v["payload"])["nested"] == {"a": [1, {"b": 2}]}


def test_new_kinds_and_fields_are_tolerated(tmp_path: Path) -> None:
    with TraceDB.open([future_trace(tmp_path / "future.jsonl")]) as db:
        assert db.scalar("SELECT count(*) FROM events WHERE kind = 'brand-new-kind'") == 1
        assert db.query("SELECT swap_outs, swap_ins FROM guests WHERE guest = 'alpha'").rows == ((1, 1),)
        tables = {t.name: t for t in run_reports(db)}
    assert len(tables["violations"].rows) == 1


# --------------------------------------------------------------- loading
def test_a_directory_loads_every_trace_in_it(tmp_path: Path, trace: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.jsonl", "b.jsonl", "sub/c.jsonl"):
        shutil.copy(trace, tmp_path / name)
    with TraceDB.open([tmp_path]) as db:
        assert len(db.traces) == 3
        per_trace = db.query("SELECT min(line), count(*) FROM events GROUP BY trace").rows
    assert set(per_trace) == {(2, len(trace.read_text().splitlines()) - 1)}


def test_the_same_trace_twice_is_refused(trace: Path) -> None:
    with pytest.raises(UsageError, match="the same trace given twice"):
        TraceDB.open([trace, trace])


def test_sql_runs_over_the_views(db: TraceDB) -> None:
    table = db.query("SELECT command, count(*) AS n FROM uvcs GROUP BY command ORDER BY n DESC LIMIT 1")
    assert table.columns == ("command", "n")
    assert table.rows[0][1] > 0


def test_bad_sql_is_one_line_usage_error(db: TraceDB) -> None:
    with pytest.raises(UsageError, match=r"^SQL: .*nope") as info:
        db.query("SELECT nope FROM uvcs")
    assert "\n" not in str(info.value)


def test_parquet_round_trip_keeps_every_view(tmp_path: Path, db: TraceDB) -> None:
    out = tmp_path / "t.parquet"
    rows = db.to_parquet(out)
    assert rows == db.scalar("SELECT count(*) FROM lines")
    with TraceDB.open([out]) as back:
        for view in ("events", "uvcs", "guests", "lines"):
            query = f"SELECT * FROM {view} ORDER BY ALL"
            assert back.query(query).rows == db.query(query).rows, view
        assert [t.rows for t in run_reports(back)] == [t.rows for t in run_reports(db)]


# ------------------------------------------------------------ bad input
def _demo_lines(trace: Path) -> list[str]:
    return trace.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("make", "where", "message"),
    [
        (lambda L: "".join(L)[: len("".join(L[:40])) + 17], ":41:", "truncated event"),
        (lambda L: "".join(L[:30]) + "{not json\n" + "".join(L[30:]), ":31:", "not valid JSON"),
        (lambda L: "".join(L[:10]) + L[0] + "".join(L[10:]), ":11:", "a second trace header"),
        (lambda L: "".join(L[:5]) + '{"step": 1, "t": 0, "actor": "kvm"}\n', ":6:", "event has no 'kind'"),
        (lambda L: "".join(L[:5]) + '{"step": "x", "t": 0, "actor": "a", "kind": "k"}\n', ":6:", "expected an integer"),
        (lambda L: "".join(L[:5]) + "[1, 2]\n", ":6:", "must be a JSON object"),
        (lambda L: "hello, world\n", ":1:", "not a sesim trace"),
        (lambda L: '{"format": "other"}\n', ":1:", "not a sesim trace"),
        (lambda L: L[0].replace('"format_version":1', '"format_version":9') + "".join(L[1:]), ":1:", "newer"),
        (lambda L: "", ":1:", "empty file"),
    ],
    ids=[
        "truncated",
        "not-json",
        "second-header",
        "no-kind",
        "bad-type",
        "array",
        "foreign",
        "other-format",
        "future-version",
        "empty",
    ],  # fmt: skip
)
def test_bad_input_names_the_file_and_line(tmp_path: Path, trace: Path, make, where: str, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(make(_demo_lines(trace)))
    with pytest.raises(FormatError) as info:
        TraceDB.open([bad])
    text = str(info.value)
    assert text.startswith(f"{bad}{where}"), text
    assert message in text
    assert "\n" not in text


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(FormatError, match=rf"^{bad}: not a Parquet file"):
        TraceDB.open([bad])


def test_a_parquet_file_of_something_else_is_named(tmp_path: Path, db: TraceDB) -> None:
    other = tmp_path / "other.parquet"
    db.con.execute(f"COPY (SELECT 1 AS x) TO '{other}' (FORMAT parquet)")
    with pytest.raises(FormatError, match="not a sesim trace table"):
        TraceDB.open([other])


def test_an_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no trace files"):
        TraceDB.open([tmp_path])


def test_a_trace_with_only_a_header_has_no_events(tmp_path: Path) -> None:
    with TraceDB.open([write_trace(tmp_path / "h.jsonl", [])]) as db:
        assert db.events == 0
        assert all(t.rows == () or t.name == "summary" for t in run_reports(db))


# ---------------------------------------------------------------- windows
@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("100us:2ms", 100_000, 2_000_000),
        (":500", None, 500),
        ("1.5ms:", 1_500_000, None),
        ("", None, None),
        ("0:1s", 0, 1_000_000_000),
        ("10 µs:20µs", 10_000, 20_000),
    ],  # fmt: skip
)
def test_window_parses_virtual_times(text: str, start: int | None, end: int | None) -> None:
    window = TimeWindow.parse(text)
    assert (window.start, window.end) == (start, end)


@pytest.mark.parametrize("text", ["100", "a:b", "5:3", "1h:2h", "-1:5"])
def test_bad_window_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--window"):
        TimeWindow.parse(text)


def test_a_guest_state_is_the_last_one_recorded_even_at_the_same_virtual_time(tmp_path: Path) -> None:
    """A regular guest's guest-halt (its OS still 'running') and its vm-destroy share a t."""
    events = [
        {"actor": "kvm", "kind": "vm-create", "guest": "delta", "secure": False, "t": 10},
        {"actor": "delta.os", "kind": "guest-halt", "guest": "delta", "state": "running", "reason": "halt", "t": 90},
        {"actor": "kvm", "kind": "vm-destroy", "guest": "delta", "state": "halted", "t": 90},
    ]
    with TraceDB.open([write_trace(tmp_path / "tie.jsonl", events)]) as db:
        (table,) = run_reports(db, ["lifecycle"])
    assert [r["state"] for r in table.records()] == ["halted"]
