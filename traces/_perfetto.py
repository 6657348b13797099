"""Chrome trace-event JSON of a trace, for ui.perfetto.dev (or chrome://tracing).

The format (Trace Event Format; Perfetto's JSON importer): an object with
``traceEvents``, a list of events with ``ph`` (phase), ``ts`` in µs, ``pid``
and ``tid``. What sesim puts there:

* a process per trace (``M`` ``process_name``), a thread track per actor
  (``M`` ``thread_name`` and ``thread_sort_index``);
* each UVC as a complete slice (``X``, ``ts`` + ``dur``) on its caller's track,
  from the time it was sent to the time the answer arrived, and as a slice on
  the ultravisor's track while the ultravisor worked on it. Slices on one track
  must nest or be disjoint, and the ultravisor serves several calls at once,
  so its track is split into lanes (``uv``, ``uv #2``, ...) as needed;
* flow arrows (``s`` then ``f`` with the same ``id``, ``cat`` and ``name``):
  request (caller slice → ultravisor slice) and answer (ultravisor slice →
  caller slice). A flow event binds to the slice open on its track at its
  timestamp, so each ``s``/``f`` is placed at its slice's start (``f`` with
  ``bp: "e"``, the enclosing slice), except the answer's ``f``, at the end of
  the caller's slice, which is still the open slice there;
* actor events (vm-create, sie-exit, violation, ...) as instants (``i``, thread
  scope) with the whole event as ``args``;
* frame states over time as a counter (``C``): frames donated, secure,
  shared, exported... (``host`` is everything else and not counted).

Virtual time is the clock: ``ts`` = virtual ns / 1000. Events are written
sorted by time, ties in the order they happened in the trace.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson

from ._analyze import TraceDB
from ._window import TimeWindow

BULK_KINDS: Final = ("recv", "reply", "wake", "start", "exit", "frame", "choice")
"""Kinds that are not drawn as instants (messages become slices and arrows, frames a counter)."""

UV_ACTOR: Final = "uv"


def _us(ns: int) -> float:
    return ns / 1000


class ActorFilter:
    """``--actors a,b,alpha.*``: names or shell patterns; empty selects every actor."""

    def __init__(self, spec: str | Sequence[str] | None) -> None:
        if isinstance(spec, str):
            spec = [s.strip() for s in spec.split(",")]
        self.patterns = [p for p in (spec or []) if p]

    def __call__(self, actor: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(actor, p) for p in self.patterns)


def _lanes(intervals: Iterable[tuple[int, int]]) -> list[int]:
    """Greedy interval partitioning: a lane for each interval, lanes never overlap."""
    ends: list[int] = []
    out = []
    for start, end in intervals:
        for lane, last in enumerate(ends):
            if last <= start:
                ends[lane] = end
                out.append(lane)
                break
        else:
            ends.append(end)
            out.append(len(ends) - 1)
    return out


def actor_order(db: TraceDB, tid: int) -> list[str]:
    """Actors as a reader expects them: host-level ones (uv, lpar, kvm) in order of appearance,
    then each guest's actors (``alpha.os``, ``alpha.cpu0``, ...) in the order the guests were created."""
    con = db.con
    seen = [
        r[0]
        for r in con.execute(
            "SELECT actor FROM _ev WHERE tid = ? AND step IS NOT NULL AND actor <> 'machine'"
            " GROUP BY actor ORDER BY min(rowid)",
            [tid],
        ).fetchall()
    ]
    guests = [
        r[0]
        for r in con.execute(
            "SELECT guest FROM _ev WHERE tid = ? AND kind = 'vm-create' GROUP BY guest ORDER BY min(rowid)", [tid]
        ).fetchall()
    ]

    def key(actor: str) -> tuple[int, int, int, str, int]:
        head, _, tail = actor.partition(".")
        if head in guests:
            digits = "".join(ch for ch in tail if ch.isdigit())
            name = tail.rstrip("0123456789")
            return (1, guests.index(head), name != "os", name, int(digits) if digits else -1)
        return (0 if "." not in actor else 2, 0, 0, "", seen.index(actor))

    return sorted(seen, key=key)


def perfetto_events(
    db: TraceDB, *, window: TimeWindow | None = None, actors: str | Sequence[str] | None = None
) -> dict[str, Any]:
    """The whole Chrome trace-event document for the loaded traces."""
    window = window or TimeWindow()
    keep = ActorFilter(actors)
    events: list[tuple[int, int, int, dict[str, Any]]] = []  # (t ns, trace line, seq, event)
    meta: list[dict[str, Any]] = []
    for info in db.traces:
        events.extend(_trace_events(db, info.tid, window, keep, meta))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return {
        "traceEvents": meta + [e[3] for e in events],
        "displayTimeUnit": "ns",
        "otherData": {
            "producer": "sesim export perfetto",
            "clock": "virtual time (ts in µs = virtual ns / 1000)",
            "window": window.describe(),
            "traces": [t.trace for t in db.traces],
        },
    }


def _trace_events(
    db: TraceDB, tid: int, window: TimeWindow, keep: ActorFilter, meta: list[dict[str, Any]]
) -> list[tuple[int, int, int, dict[str, Any]]]:
    con = db.con
    pid = tid + 1
    info = db.traces[tid]
    seed = "" if info.seed is None else f" seed {info.seed}"
    meta.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": f"sesim{seed}: {info.trace}"}})
    order = actor_order(db, tid)
    tracks: dict[tuple[str, int], int] = {}

    def track(actor: str, lane: int = 0) -> int:
        key = (actor, lane)
        if key not in tracks:
            thread = len(tracks) + 1
            tracks[key] = thread
            name = actor if lane == 0 else f"{actor} #{lane + 1}"
            rank = order.index(actor) if actor in order else len(order)
            meta.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": thread, "args": {"name": name}})
            meta.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": pid,
                    "tid": thread,
                    "args": {"sort_index": rank * 100 + lane},
                }
            )
        return tracks[key]

    for actor in order:  # every selected actor gets its track, in order of first appearance
        if keep(actor):
            track(actor)
    out: list[tuple[int, int, int, dict[str, Any]]] = []
    seq = 0

    def add(t: int, line: int, event: dict[str, Any]) -> None:
        nonlocal seq
        seq += 1
        event["pid"] = pid
        event["ts"] = _us(t)
        out.append((t, line, seq, event))

    uvcs = con.execute(
        "SELECT u.corr, u.caller, u.command, u.sent, u.start_t, coalesce(u.reply_t, u.start_t),"
        " coalesce(u.reply_sent, u.reply_t, u.start_t), u.cc, u.rc, u.rrc, u.outcome, u.guest, u.frame,"
        " u.req_ord - tr.base, coalesce(u.reply_ord - tr.base, u.req_ord - tr.base), u.response_type"
        " FROM _uvc u JOIN _traces tr USING (tid) WHERE tid = ? AND "
        + window.sql("u.sent", "u.reply_t")
        + " ORDER BY u.req_ord",
        [tid],
    ).fetchall()
    uv_lanes = _lanes((r[4], r[6]) for r in uvcs)
    caller_lanes: dict[str, list[tuple[int, int]]] = {}
    for r in uvcs:
        caller_lanes.setdefault(r[1], []).append((r[3], r[5]))
    lane_of = {caller: iter(_lanes(spans)) for caller, spans in caller_lanes.items()}
    show_uv = keep(UV_ACTOR)
    for r, uv_lane in zip(uvcs, uv_lanes, strict=True):
        (
            corr,
            caller,
            command,
            sent,
            start,
            reply_t,
            reply_sent,
            cc,
            rc,
            rrc,
            outcome,
            guest,
            frame,
            rline,
            pline,
            rtype,
        ) = r
        caller_lane = next(lane_of[caller])
        args = {"corr": corr, "outcome": outcome, "guest": guest, "frame": frame, "answer": rtype}
        if cc is not None:
            args.update(cc=cc, rc=f"{rc:#06x}", rrc=f"{rrc:#06x}")
        name = command + ("" if outcome == "ok" else f" ({outcome})")
        show_caller = keep(caller)
        if show_caller:
            ct = track(caller, caller_lane)
            add(
                sent,
                rline,
                {"ph": "X", "cat": "uvc", "name": name, "tid": ct, "dur": _us(reply_t - sent), "args": args},
            )
        if show_uv:
            ut = track(UV_ACTOR, uv_lane)
            add(start, rline, {"ph": "X", "cat": "uvc", "name": name, "tid": ut, "dur": _us(reply_sent - start),
                               "args": {**args, "caller": caller}})  # fmt: skip
        if show_caller and show_uv:
            request = 2 * ((tid << 40) + corr)
            answer = request + 1
            add(sent, rline, {"ph": "s", "cat": "uvc", "name": "request", "id": request, "tid": ct})
            add(start, rline, {"ph": "f", "bp": "e", "cat": "uvc", "name": "request", "id": request, "tid": ut})
            add(start, rline, {"ph": "s", "cat": "uvc", "name": "answer", "id": answer, "tid": ut})
            add(reply_t, pline, {"ph": "f", "bp": "e", "cat": "uvc", "name": "answer", "id": answer, "tid": ct})
    kinds = ", ".join(f"'{k}'" for k in BULK_KINDS)
    instants = con.execute(
        "SELECT e.line, e.t, e.actor, e.kind, l.json FROM events e JOIN _traces tr USING (trace)"
        " JOIN lines l ON l.trace = e.trace AND l.line = e.line"
        f" WHERE tr.tid = ? AND e.kind NOT IN ({kinds}) AND " + window.sql("e.t") + " ORDER BY e.line",
        [tid],
    ).fetchall()
    for line, t, actor, kind, payload in instants:
        if not keep(actor):
            continue
        body = orjson.loads(payload)
        for key in ("step", "t", "actor", "kind"):
            body.pop(key, None)
        label = kind if not body.get("guest") or actor.startswith(str(body["guest"])) else f"{kind} {body['guest']}"
        add(t, line, {"ph": "i", "s": "t", "cat": kind, "name": label, "tid": track(actor), "args": body})
    if not keep.patterns or keep("machine"):
        _frame_counters(db, tid, window, add)
    return out


def _frame_counters(db: TraceDB, tid: int, window: TimeWindow, add: Any) -> None:
    """Counts of frames per non-host state, one counter event per moment they change."""
    rows = db.con.execute(
        "SELECT e.rowid - tr.base, e.t, e.src, e.dst, coalesce(e.count, 1) FROM _ev e JOIN _traces tr USING (tid)"
        " WHERE e.tid = ? AND e.kind = 'frame' ORDER BY e.rowid",
        [tid],
    ).fetchall()
    counts: Counter[str] = Counter()
    states: list[str] = []
    for _, _, src, dst, _ in rows:
        for s in (src, dst):
            if s and s != "host" and s not in states:
                states.append(s)
    pending: tuple[int, int] | None = None

    def emit(t: int, line: int) -> None:
        add(t, line, {"ph": "C", "name": "frames", "tid": 0, "args": {s: counts[s] for s in states}})

    lo, hi = window.start, window.end
    started = lo is None
    last = 0
    for line, t, src, dst, n in rows:
        if hi is not None and t > hi:
            break
        if pending is not None and pending[0] != t:
            emit(*pending)
            pending = None
        if not started and t >= lo:  # the state as the window opens
            emit(lo, line)
            started = True
        counts[src] -= n if src != "host" else 0
        counts[dst] += n if dst != "host" else 0
        if started:
            pending = (t, line)
        last = line
    if pending is not None:
        emit(*pending)
    elif not started and lo is not None and states:
        emit(lo, last)


def write_perfetto(
    db: TraceDB, out: Path, *, window: TimeWindow | None = None, actors: str | Sequence[str] | None = None
) -> int:
    """Write the document to ``out``; returns the number of trace events."""
    doc = perfetto_events(db, window=window, actors=actors)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(doc))
    return len(doc["traceEvents"])
