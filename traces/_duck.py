"""The documented views over loaded traces (what ``sesim analyze --sql`` can query).

Each view is declared once, as data: its name, what a row is, its columns
with their meaning, and its SQL. The README, ``--help`` and the tests all read
this table, so the documentation cannot drift from the SQL.

Times are virtual nanoseconds (``t`` of the trace), durations ``*_ns``.

How a UVC is put together (``uvcs``): the ultravisor's ``recv`` of a ``Uvc``
message (request, caller, ``sent``) joined on ``corr`` to the caller's
``reply`` event (response, ``t``). Its guest is found, most precise first,
from the configuration or CPU handle it names (handles are learnt from the
CREATE_SEC_CONF / CREATE_SEC_CPU answers), from the owner of the host frame it
names, from the caller's name (``alpha.cpu0`` belongs to ``alpha``), and
last from the guest the caller was last busy with (the hypervisor serves one
guest's request at a time).
"""

from __future__ import annotations

from typing import Final

from attrs import frozen

from ._load import GUEST_CODES, GUEST_KINDS
from ._uvcs import RUNS_SQL


@frozen(kw_only=True)
class View:
    """A documented view: ``columns`` pairs each column with its meaning."""

    name: str
    doc: str
    columns: tuple[tuple[str, str], ...]
    sql: str


_EVENTS_SQL: Final = """
SELECT tr.trace, e.rowid - tr.base AS line, e.step, e.t, e.actor, e.kind, e.corr, e.sent, e.src, e.dst,
       e.msg.type AS msg_type, e.guest, e.gfn, e.pfn, e.count, e.owner, e.state, e.reason, e.secure, e.msg
FROM _ev e JOIN _traces tr USING (tid)
WHERE e.step IS NOT NULL
"""

# events, steps and end_t are counted when the load checks ``_ev`` (``traces._load.check_loaded``).
_TRACES_SQL: Final = """
SELECT tr.trace, tr.seed, tr.sesim, tr.strategy, tr.config, coalesce(tr.events, 0) AS events,
       tr.steps, tr.end_t, coalesce(u.uvcs, 0) AS uvcs, coalesce(u.busy, 0) AS busy
FROM _traces tr
LEFT JOIN (SELECT tid, count(*) AS uvcs, count(*) FILTER (WHERE cc = 2) AS busy FROM _uvc GROUP BY tid) u USING (tid)
"""

_UVCS_SQL: Final = f"""
SELECT tr.trace, u.corr, u.caller, u.guest, u.context, u.command, u.code, u.request_type, u.response_type,
       u.sent, u.start_t, u.reply_t, u.reply_t - u.sent AS latency_ns, u.reply_sent - u.start_t AS service_ns,
       u.cc, u.rc, u.rrc, u.outcome, u.handle, u.pfn, u.gfn, u.frame, u.attempt, u.attempts, u.final_outcome,
       u.run_corr, u.req_ord - tr.base AS req_line, u.reply_ord - tr.base AS reply_line, u.req_step, u.reply_step
FROM ({RUNS_SQL.format(source="_uvc")}) u JOIN _traces tr USING (tid)
"""

_FRAMES_SQL: Final = """
SELECT tr.trace, e.rowid - tr.base AS line, e.step, e.t,
       unnest(range(e.pfn, e.pfn + coalesce(e.count, 1))) AS pfn, coalesce(e.count, 1) AS count,
       e.src AS from_state, e.dst AS to_state, e.owner, h.guest
FROM _ev e JOIN _traces tr USING (tid)
LEFT JOIN _handles h ON h.tid = e.tid AND h.handle = e.owner
WHERE e.kind = 'frame'
"""

_FRAME_STATES_SQL: Final = """
SELECT trace, pfn, to_state AS state, owner, guest, t AS t_from,
       lead(t) OVER (PARTITION BY trace, pfn ORDER BY line) AS t_to, line
FROM frames
"""

GUESTS_SQL: Final = f"""
-- materialised once per load as _guests (three reports read it)
WITH ev AS (
    SELECT tid, kind, t, rowid AS r, coalesce(guest, msg.guest) AS guest, secure, state, reason
    FROM _ev
    WHERE kc BETWEEN {GUEST_CODES[0]} AND {GUEST_CODES[1]}  -- kind IN {GUEST_KINDS}
),
g AS (
    SELECT tid, guest,
        min(t) FILTER (WHERE kind = 'vm-create') AS created_t,
        any_value(secure) FILTER (WHERE kind = 'vm-create') AS secure,
        min(t) FILTER (WHERE kind IN ('pv-running', 'guest-running')) AS running_t,
        min(t) FILTER (WHERE kind = 'guest-booted') AS booted_t,
        min(t) FILTER (WHERE kind = 'pv-refused') AS refused_t,
        min(t) FILTER (WHERE kind = 'guest-halt') AS halt_t,
        max(t) FILTER (WHERE kind = 'vm-destroy') AS destroyed_t,
        -- the last one recorded (line order, not t: a guest-halt and its vm-destroy share a t)
        arg_max(state, r) FILTER (WHERE kind IN ('guest-halt', 'vm-destroy')) AS state,
        arg_max(reason, r) FILTER (WHERE kind IN ('pv-refused', 'guest-halt', 'vm-destroy') AND reason <> '') AS reason,
        count(*) FILTER (WHERE kind = 'swap-out') AS swap_outs,
        count(*) FILTER (WHERE kind = 'swap-in') AS swap_ins,
        count(*) FILTER (WHERE kind = 'corruption') AS corruptions,
        count(*) FILTER (WHERE kind = 'violation') AS violations
    FROM ev WHERE guest IS NOT NULL GROUP BY tid, guest
),
u AS (
    SELECT tid, guest,
        min(sent) FILTER (WHERE command = 'CREATE_SEC_CONF') AS pv_start_t,
        min(sent) FILTER (WHERE command = 'UNPACK_IMG') AS unpack_start_t,
        max(reply_t) FILTER (WHERE command = 'UNPACK_IMG') AS unpack_end_t,
        count(*) FILTER (WHERE command = 'UNPACK_IMG' AND cc = 0) AS pages_unpacked,
        min(sent) FILTER (WHERE command = 'VERIFY_IMG') AS verify_start_t,
        max(reply_t) FILTER (WHERE command = 'VERIFY_IMG') AS verify_end_t,
        count(*) AS uvcs,
        count(*) FILTER (WHERE cc = 2) AS busy,
        count(*) FILTER (WHERE command = 'CONV_TO_SEC_STOR' AND cc = 0) AS imports,
        count(*) FILTER (WHERE command = 'CONV_FROM_SEC_STOR' AND cc = 0) AS exports,
        count(*) FILTER (WHERE command = 'DESTR_SEC_STOR' AND cc = 0) AS destroyed_pages,
        count(*) FILTER (WHERE command = 'SET_SHARED_ACCESS' AND cc = 0) AS shares,
        count(*) FILTER (WHERE command = 'REMOVE_SHARED_ACCESS' AND cc = 0) AS unshares
    FROM _uvc WHERE guest IS NOT NULL GROUP BY tid, guest
)
SELECT tr.trace, guest, secure, g.state, g.reason,
    created_t, pv_start_t, unpack_start_t, unpack_end_t, verify_start_t, verify_end_t, running_t, booted_t,
    refused_t, halt_t, destroyed_t,
    running_t - created_t AS boot_ns,
    unpack_end_t - unpack_start_t AS unpack_ns,
    verify_end_t - verify_start_t AS verify_ns,
    halt_t - running_t AS run_ns,
    destroyed_t - halt_t AS teardown_ns,
    coalesce(pages_unpacked, 0) AS pages_unpacked, coalesce(uvcs, 0) AS uvcs, coalesce(busy, 0) AS busy,
    coalesce(imports, 0) AS imports, coalesce(exports, 0) AS exports,
    coalesce(g.swap_outs, 0) AS swap_outs, coalesce(g.swap_ins, 0) AS swap_ins,
    coalesce(destroyed_pages, 0) AS destroyed_pages, coalesce(shares, 0) AS shares,
    coalesce(unshares, 0) AS unshares, coalesce(g.corruptions, 0) AS corruptions,
    coalesce(g.violations, 0) AS violations
FROM g FULL JOIN u USING (tid, guest) JOIN _traces tr USING (tid)
"""

_RACER_RUNS: Final = RUNS_SQL.format(
    source="(SELECT * FROM _uvc u WHERE (tid, caller, command, frame) IN (SELECT (tid, caller, command, frame) FROM w))"
)

_RACES_SQL: Final = f"""
WITH w AS MATERIALIZED (  -- the calls that began while an earlier call on their frame was still in flight
    SELECT * FROM (
        SELECT tid, req_ord, frame, sent, caller, command, corr, outcome, guest,
            max(reply_t) OVER (PARTITION BY tid, frame ORDER BY sent, req_ord
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_end
        FROM _uvc WHERE frame IS NOT NULL AND reply_t IS NOT NULL
    ) WHERE sent < prev_end
),
f AS (SELECT * FROM _uvc WHERE reply_t IS NOT NULL AND frame IN (SELECT frame FROM w)),
runs AS MATERIALIZED (  -- retry runs, only of the callers and frames concerned
    {_RACER_RUNS}
),
pairs AS (
    SELECT b.tid, b.frame, coalesce(b.guest, a.guest) AS guest,
        a.caller AS first_caller, a.command AS first_command, a.corr AS first_corr, a.outcome AS first_outcome,
        b.caller AS second_caller, b.command AS second_command, b.corr AS second_corr, b.outcome AS second_outcome,
        b.sent AS second_sent, r.attempts, r.final_outcome, r.run_corr, b.req_ord
    FROM w b JOIN f a ON a.tid = b.tid AND a.frame = b.frame AND a.sent <= b.sent AND b.sent < a.reply_t
    JOIN runs r ON r.req_ord = b.req_ord
    WHERE a.sent < b.sent OR a.req_ord < b.req_ord
)
SELECT tr.trace, frame, any_value(guest) AS guest, min(second_sent) AS t,
    first_caller, first_command, first_corr, any_value(first_outcome) AS first_outcome,
    second_caller, second_command, min(second_corr) AS second_corr,
    count(*) AS overlapping_tries, max(attempts) AS attempts, any_value(final_outcome) AS final_outcome,
    CASE
        WHEN bool_and(second_outcome = 'busy') AND any_value(final_outcome) = 'busy'
            THEN 'busy (cc 2), not retried to success'
        WHEN bool_or(second_outcome = 'busy')
            THEN printf('busy (cc 2), retried: %s after %d tries', any_value(final_outcome), max(attempts))
        ELSE printf('both answered: %s / %s', any_value(first_outcome), any_value(second_outcome))
    END AS resolution,
    min(req_ord) - any_value(tr.base) AS line
FROM pairs JOIN _traces tr USING (tid)
GROUP BY tr.trace, frame, first_caller, first_command, first_corr, second_caller, second_command, run_corr
"""

_VIOLATIONS_SQL: Final = """
SELECT e.trace, e.line, e.step, e.t, e.actor, coalesce(e.guest, l.json->>'$.guest') AS guest,
       coalesce(l.json->>'$.monitor', l.json->>'$.rule', l.json->>'$.check') AS monitor,
       coalesce(l.json->>'$.detail', l.json->>'$.message', l.json->>'$.why', e.reason) AS detail,
       l.json AS payload
FROM events e LEFT JOIN lines l ON l.trace = e.trace AND l.line = e.line
WHERE e.kind = 'violation'
"""

VIEWS: Final[tuple[View, ...]] = (
    View(
        name="traces",
        doc="one row per trace file: its header and totals",
        columns=(
            ("trace", "the file (as given, or as recorded in a Parquet table)"),
            ("seed", "the run's seed (header)"),
            ("sesim", "the sesim version that wrote it"),
            ("strategy", "scheduling strategy (JSON)"),
            ("config", "run configuration (JSON)"),
            ("events", "number of events"),
            ("steps", "last scheduler step"),
            ("end_t", "virtual time of the last event (ns)"),
            ("uvcs", "number of UVCs"),
            ("busy", "UVCs answered busy (cc 2)"),
        ),
        sql=_TRACES_SQL,
    ),
    View(
        name="events",
        doc="every event; the fields the reports use are typed columns (absent: NULL), the rest is in `lines`",
        columns=(
            ("trace", "the file"),
            ("line", "line number in the file (the header is line 1)"),
            ("step", "scheduler step"),
            ("t", "virtual time (ns)"),
            ("actor", "who recorded it (uv, kvm, lpar, machine, alpha.cpu0, alpha.os, ...)"),
            ("kind", "recv, reply, frame, wake, start, exit, choice, crash, vm-create, sie-exit, violation, ..."),
            ("corr", "correlation id of a message (a reply has its request's)"),
            ("sent", "virtual time the message was sent (ns)"),
            ("src", "the event's `from`: a message's sender, a frame's old state"),
            ("dst", "the event's `to`: a frame's new state"),
            ("msg_type", "type of the message (Uvc, Diag308, <Cmd>Response, ...)"),
            ("guest", "guest named by an actor event"),
            ("gfn", "guest frame named by an actor event (swap-out, swap-in, reclaim, ...)"),
            ("pfn", "host frame number (frame events: the first of `count` frames)"),
            ("count", "frame events: number of consecutive frames that changed together (NULL: 1)"),
            ("owner", "configuration handle owning the frame (0: none)"),
            ("state", "state named by the event (guest-halt, vm-destroy)"),
            ("reason", "reason given (pv-refused, guest-halt, vm-destroy, ...)"),
            ("secure", "vm-create: a secure guest?"),
            (
                "msg",
                "the message as a STRUCT: msg.type, msg.cc, msg.rc, msg.rrc, msg.request.type, msg.request.gaddr,"
                " msg.request.paddr, msg.caller.context, ...",
            ),
        ),
        sql=_EVENTS_SQL,
    ),
    View(
        name="uvcs",
        doc="one row per ultravisor call: request joined to its answer",
        columns=(
            ("trace", "the file"),
            ("corr", "correlation id (request and answer share it)"),
            ("caller", "actor that issued it (kvm, lpar, alpha.cpu0, ...)"),
            (
                "guest",
                "guest it acted for: from the handle it names, the owner of its frame, the caller's name,"
                " or the guest the caller was serving",
            ),
            ("context", "host or guest (the caller field of the UVC)"),
            ("command", "UVC command (UNPACK_IMG, CONV_TO_SEC_STOR, ...)"),
            ("code", "UVC command code (0x0301, ...)"),
            ("request_type", "request class (UnpackImgRequest, ...)"),
            ("response_type", "answer class (UnpackImgResponse, Intercept108, GuestException, ...)"),
            ("sent", "virtual time the caller sent it (ns)"),
            ("start_t", "virtual time the ultravisor took it (ns)"),
            ("reply_t", "virtual time the caller got the answer (ns; NULL: never answered)"),
            ("latency_ns", "reply_t - sent"),
            ("service_ns", "time inside the ultravisor (answer sent - start_t)"),
            ("cc", "condition code (0 ok, 1 error, 2 busy, 3 partial)"),
            ("rc", "return code"),
            ("rrc", "return reason code"),
            ("outcome", "ok, error, busy, partial, intercept 108, exception, pending"),
            ("handle", "configuration handle it names"),
            (
                "pfn",
                "host frame it acts on: named by absolute address, or its guest frame's backing frame as the"
                " latest event naming both (reclaim, swap-out, swap-in, ...) gives",
            ),
            ("gfn", "guest frame it names (by guest address)"),
            ("frame", "frame key for races: 'pfn 0x..', or '<guest> gfn 0x..' where no host frame is known"),
            ("attempt", "1 for a first try, n for the n-th try after busy answers"),
            ("attempts", "tries in its retry run (same caller, command and frame)"),
            ("final_outcome", "outcome of the last try of its retry run"),
            ("run_corr", "corr of the first try of its retry run"),
            ("req_line", "line of the ultravisor's recv"),
            ("reply_line", "line of the caller's reply"),
            ("req_step", "step of the recv"),
            ("reply_step", "step of the reply"),
        ),
        sql=_UVCS_SQL,
    ),
    View(
        name="frames",
        doc="every change of a host frame's owner state, one row per frame (a range event gives a row per frame)",
        columns=(
            ("trace", "the file"),
            ("line", "line number"),
            ("step", "scheduler step"),
            ("t", "virtual time (ns)"),
            ("pfn", "host frame number"),
            ("count", "frames the event changed together"),
            ("from_state", "old state (host, donated, secure, exported, shared, shared-pinned)"),
            ("to_state", "new state"),
            ("owner", "configuration handle (0: none)"),
            ("guest", "guest of that handle"),
        ),
        sql=_FRAMES_SQL,
    ),
    View(
        name="frame_states",
        doc="each frame's states as intervals (from one change to the next)",
        columns=(
            ("trace", "the file"),
            ("pfn", "host frame number"),
            ("state", "state during the interval"),
            ("owner", "configuration handle (0: none)"),
            ("guest", "guest of that handle"),
            ("t_from", "start (ns)"),
            ("t_to", "end (ns; NULL: still so at the end of the trace)"),
            ("line", "line of the change that began it"),
        ),
        sql=_FRAME_STATES_SQL,
    ),
    View(
        name="guests",
        doc="one row per guest and trace: life cycle in virtual time and memory traffic",
        columns=(
            ("trace", "the file"),
            ("guest", "guest name"),
            ("secure", "a secure guest?"),
            ("state", "last state reported (halted, refused, stopped, ...)"),
            ("reason", "last reason reported"),
            ("created_t", "vm-create (ns)"),
            ("pv_start_t", "CREATE_SEC_CONF sent: the switch to secure mode begins"),
            ("unpack_start_t", "first UNPACK_IMG sent"),
            ("unpack_end_t", "last UNPACK_IMG answered"),
            ("verify_start_t", "VERIFY_IMG sent"),
            ("verify_end_t", "VERIFY_IMG answered"),
            ("running_t", "pv-running (secure) or guest-running (regular)"),
            ("booted_t", "guest-booted: the guest OS runs its workload"),
            ("refused_t", "pv-refused"),
            ("halt_t", "guest-halt"),
            ("destroyed_t", "vm-destroy"),
            ("boot_ns", "running_t - created_t"),
            ("unpack_ns", "unpack_end_t - unpack_start_t"),
            ("verify_ns", "verify_end_t - verify_start_t"),
            ("run_ns", "halt_t - running_t"),
            ("teardown_ns", "destroyed_t - halt_t"),
            ("pages_unpacked", "UNPACK_IMG answered cc 0"),
            ("uvcs", "UVCs made for it"),
            ("busy", "of which answered busy"),
            ("imports", "CONV_TO_SEC_STOR answered cc 0"),
            ("exports", "CONV_FROM_SEC_STOR answered cc 0"),
            ("swap_outs", "swap-out events"),
            ("swap_ins", "swap-in events"),
            ("destroyed_pages", "DESTR_SEC_STOR answered cc 0"),
            ("shares", "SET_SHARED_ACCESS answered cc 0"),
            ("unshares", "REMOVE_SHARED_ACCESS answered cc 0"),
            ("corruptions", "corruption events"),
            ("violations", "violation events naming it"),
        ),
        sql="SELECT * FROM _guests",
    ),
    View(
        name="races",
        doc="overlapping UVCs on one frame ([sent, reply_t] intervals) and how they resolved",
        columns=(
            ("trace", "the file"),
            ("frame", "the frame both name"),
            ("guest", "guest concerned"),
            ("t", "when the second call was first sent (ns)"),
            ("first_caller", "caller of the call in flight"),
            ("first_command", "its command"),
            ("first_corr", "its corr"),
            ("first_outcome", "its outcome"),
            ("second_caller", "caller of the overlapping call"),
            ("second_command", "its command"),
            ("second_corr", "corr of its first overlapping try"),
            ("overlapping_tries", "its tries that overlapped the first call"),
            ("attempts", "tries in its retry run"),
            ("final_outcome", "outcome of its last try"),
            ("resolution", "e.g. 'busy (cc 2), retried: ok after 3 tries'"),
            ("line", "line of its first overlapping try"),
        ),
        sql=_RACES_SQL,
    ),
    View(
        name="violations",
        doc="events of kind 'violation' (monitors), with the whole line as JSON",
        columns=(
            ("trace", "the file"),
            ("line", "line number"),
            ("step", "scheduler step"),
            ("t", "virtual time (ns)"),
            ("actor", "who recorded it"),
            ("guest", "guest named"),
            ("monitor", "monitor or rule that fired"),
            ("detail", "what it says"),
            ("payload", "the whole event (JSON)"),
        ),
        sql=_VIOLATIONS_SQL,
    ),
    View(
        name="lines",
        doc="every line of every file as JSON (the header too); re-reads the files, for fields events lacks",
        columns=(("trace", "the file"), ("line", "line number"), ("json", "the line (JSON)")),
        sql="",  # built per load: it names the files
    ),
)

VIEW_NAMES: Final = tuple(v.name for v in VIEWS)


def views_help() -> str:
    """The views and their columns as ``--help`` text (click keeps ``\\b`` paragraphs as they are)."""
    out = ["Views for --sql (times in virtual ns):"]
    for view in VIEWS:
        lines = ["\b", f"{view.name}: {view.doc}"]
        lines += [f"  {name:<16} {doc}" for name, doc in view.columns]
        out.append("\n".join(lines))
    out.append(
        "\b\nExamples:\n"
        '  sesim analyze run.jsonl --sql "SELECT command, count(*) FROM uvcs WHERE cc = 2 GROUP BY 1"\n'
        "  sesim analyze campaign/ --format json --table races"
    )
    return "\n\n".join(out)


def views_markdown() -> str:
    """The views and their columns as Markdown (the README's table)."""
    out = []
    for view in VIEWS:
        out.append(f"**`{view.name}`**: {view.doc}.\n")
        out.append("| column | meaning |\n|---|---|")
        out += [f"| `{name}` | {doc.replace('|', '/')} |" for name, doc in view.columns]
        out.append("")
    return "\n".join(out)
