"""``sesim report``: one self-contained HTML page about one trace.

Everything is inline (CSS, SVG, a few lines of script to highlight an actor's
messages): the page opens from a file with no network. It shows the trace's
summary tables, a sequence diagram of a window, the hottest frames' states
over time, and a histogram of UVC latencies.

The sequence diagram needs a window small enough to read: with no
``--window`` it starts at the first race (else the first busy answer, else
the first violation, else the start of the trace) and shows at most
``max_messages`` messages from there.
"""

from __future__ import annotations

from html import escape
from typing import Any, Final

from protocol import UsageError

from ._analyze import TraceDB
from ._format import ResultTable, cell_text
from ._perfetto import actor_order
from ._reports import run_reports
from ._svg import Message, frame_timeline, latency_histogram, sequence_diagram
from ._window import TimeWindow

HOT_FRAMES: Final = 12
_INTERNAL_PREFIX: Final = "_"  # the ultravisor's own timer messages (_Complete) are not drawn

_CSS: Final = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #202124; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
.sub { color: #5f6368; margin-bottom: 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f1f3f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note-text { color: #5f6368; font-style: italic; }
.scroll { overflow: auto; max-height: 760px; border: 1px solid #eee; }
svg text { font: 11px system-ui, sans-serif; fill: #202124; }
.actor-box { fill: #e8f0fe; stroke: #1a4f8b; } .actor-name { font-weight: 600; }
.lifeline-line { stroke: #9aa0a6; stroke-dasharray: 4,4; }
.time, .axis { fill: #5f6368; } .grid { stroke: #eee; }
.note rect { fill: #fff8e1; stroke: #f9a825; } .frame-bg { fill: #fafafa; }
.lifeline.dim, .message.dim, .note.dim { opacity: 0.15; }
.legend span { display: inline-block; margin-right: 14px; }
"""

_SCRIPT: Final = """
document.querySelectorAll('#sequence .lifeline').forEach(function (g) {
  g.style.cursor = 'pointer';
  g.addEventListener('click', function () {
    var a = g.getAttribute('data-actor'), on = g.classList.contains('chosen');
    document.querySelectorAll('#sequence .lifeline').forEach(function (x) { x.classList.remove('chosen'); });
    document.querySelectorAll('#sequence .message, #sequence .note').forEach(function (m) {
      m.classList.toggle('dim', !on && m.getAttribute('data-from') !== a && m.getAttribute('data-to') !== a);
    });
    if (!on) g.classList.add('chosen');
  });
});
"""


def render_report(db: TraceDB, *, window: TimeWindow | None = None, max_messages: int = 150) -> str:
    """The whole HTML page for the single trace loaded in ``db``.

    Raises:
        UsageError: more than one trace is loaded.
    """
    if len(db.traces) != 1:
        raise UsageError(f"sesim report draws one trace; {len(db.traces)} were given")
    window = window or TimeWindow()
    info = db.traces[0]
    end_t = int(db.scalar("SELECT coalesce(max(t), 0) FROM _ev WHERE tid = 0"))
    t0 = window.start if window.start is not None else 0
    t1 = window.end if window.end is not None else end_t
    seq_window = window if not window.is_open else TimeWindow(start=_interesting_start(db))
    messages = _messages(db, seq_window, max_messages)
    actors = [a for a in actor_order(db, 0) if any(a in (m.sender, m.receiver) for m in messages)]
    tables = {t.name: t for t in run_reports(db)}
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f"<title>sesim report: {escape(info.trace)}</title><style>{_CSS}</style></head><body>",
        f'<h1>sesim report</h1><div class="sub">{escape(info.trace)} · seed {info.seed} · '
        f"{info.events:,} events · {end_t / 1000:,.1f} µs of virtual time · window: {escape(window.describe())}</div>",
        _table(tables["summary"]),
        "<h2>Sequence diagram</h2>",
        f'<div class="sub">{len(messages)} messages from {messages[0].t / 1000 if messages else 0:,.1f} µs '
        f"({escape(seq_window.describe())}); solid: requests and messages, dashed: answers; red: busy. "
        "Hover an arrow for details, click an actor to highlight its messages.</div>",
        f'<div class="scroll">{sequence_diagram(actors, messages)}</div>',
        f'<h2>Hottest frames</h2><div class="sub">The {HOT_FRAMES} frames that changed state most often, '
        f"{t0 / 1000:,.1f} to {t1 / 1000:,.1f} µs.</div>",
        _frames_svg(db, window, t0, t1),
        "<h2>UVC latency</h2>",
        _latency_svg(db, window),
        _table(tables["latency"]),
        "<h2>UVCs by command and return code</h2>",
        _table(tables["uvcs"]),
        "<h2>Guests</h2>",
        _table(tables["lifecycle"]),
        _table(tables["memory"]),
        "<h2>Races</h2>",
        _table(tables["races"]),
        "<h2>Monitor violations</h2>",
        _table(tables["violations"]),
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def _interesting_start(db: TraceDB) -> int:
    for sql in (
        "SELECT min(t) FROM races",
        "SELECT min(sent) FROM _uvc WHERE cc = 2",
        "SELECT min(t) FROM _ev WHERE kind = 'violation'",
    ):
        t = db.scalar(sql)
        if t is not None:
            return max(0, int(t) - 2000)  # a little before, for context
    return 0


def _messages(db: TraceDB, window: TimeWindow, limit: int) -> list[Message]:
    rows = db.con.execute(
        "SELECT e.line, e.t, e.src, e.actor, e.kind, e.msg_type, e.msg.request.type, c.command, e.msg.cc,"
        " e.msg.rc, e.corr, e.guest, e.reason, e.state FROM events e"
        " LEFT JOIN _commands c ON c.request_type = e.msg.request.type"
        " WHERE e.kind NOT IN ('wake', 'start', 'exit', 'frame', 'choice')"
        f" AND NOT (e.kind = 'recv' AND e.src = e.actor AND starts_with(e.msg_type, '{_INTERNAL_PREFIX}'))"
        f" AND {window.sql('e.t')} ORDER BY e.line LIMIT {int(limit)}"
    ).fetchall()
    out = []
    for line, t, src, actor, kind, mtype, rtype, command, cc, rc, corr, guest, reason, state in rows:
        if kind in ("recv", "reply"):
            label, style = _label(kind, mtype, rtype, command, cc)
            rc_text = "" if rc is None else f" rc {rc:#06x}"
            detail = f"{src} → {actor}: {label}{rc_text} (corr {corr}, {kind})"
            out.append(Message(line=line, t=t, sender=src, receiver=actor, label=label, style=style, detail=detail))
        else:
            bits = [kind] + [str(v) for v in (guest, state, reason) if v]
            out.append(
                Message(line=line, t=t, sender=None, receiver=actor, label=kind, style="note", detail=" ".join(bits))
            )
    return out


def _label(kind: str, mtype: str | None, rtype: str | None, command: str | None, cc: int | None) -> tuple[str, str]:
    if mtype == "Uvc":
        return (command or (rtype or "UVC").removesuffix("Request")), "request"
    name = (mtype or "?").removesuffix("Response")
    if kind == "reply":
        if cc is None:
            return name, "answer"
        style = {0: "answer", 2: "busy"}.get(cc, "error")
        return f"{name} cc {cc}", style
    return name, "other"


def _frames_svg(db: TraceDB, window: TimeWindow, t0: int, t1: int) -> str:
    hot = db.con.execute(
        f"SELECT pfn, count(*) AS n FROM frames WHERE {window.sql('t')}"
        f" GROUP BY pfn ORDER BY n DESC, pfn LIMIT {HOT_FRAMES}"
    ).fetchall()
    if not hot:
        return '<p class="note-text">No frame changed state in this window.</p>'
    pfns = ", ".join(str(p) for p, _ in hot)
    spans = db.con.execute(
        f"SELECT pfn, state, guest, t_from, t_to FROM frame_states WHERE pfn IN ({pfns}) ORDER BY pfn, t_from"
    ).fetchall()
    return frame_timeline(hot, spans, t0, max(t1, t0 + 1))


def _latency_svg(db: TraceDB, window: TimeWindow) -> str:
    samples = db.con.execute(
        f"SELECT command, reply_t - sent FROM _uvc WHERE reply_t IS NOT NULL AND {window.sql('sent', 'reply_t')}"
    ).fetchall()
    if not samples:
        return '<p class="note-text">No answered UVC in this window.</p>'
    return latency_histogram(samples)


def _table(table: ResultTable) -> str:
    if not table.rows:
        return f'<p class="note-text">{escape(table.title)}: {escape(table.note or "none")}.</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows[:500])
    more = f'<p class="note-text">{len(table.rows) - 500} more rows not shown.</p>' if len(table.rows) > 500 else ""
    return f"<table><caption>{escape(table.title)}</caption><tr>{head}</tr>{body}</table>{more}"


def _cell(value: Any) -> str:
    cls = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{cls}>{escape(cell_text(value))}</td>"
