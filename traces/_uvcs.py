"""Building the ``_uvc`` table: each ultravisor call, its answer, its guest and its frame.

Materialised once per load because most views and reports read it; the rest
of the views are plain (lazy) DuckDB views. See :mod:`traces._duck` for the
order in which a call's guest is found.

Speed: ``_ev`` is stored uncompressed (see ``_analyze``), so each pass over it
costs about 10 ms per million events for every string column it filters on.
The build therefore selects rows by the kind code ``kc`` the load computed
(``traces._load.KIND_CODES``), reads the guests' names (``_names``) and the
events the context rule needs (``_ctx``) once for both queries, and joins guest
frames on equal integer types (a BIGINT/UBIGINT join widens both to HUGEINT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from protocol import REQUEST_TYPES, RESPONSE_TYPES, UvcCommand

from ._load import KIND_CODES

if TYPE_CHECKING:
    import duckdb

_NAMES: Final = f"""
CREATE OR REPLACE TEMP TABLE _names AS
SELECT DISTINCT tid, guest FROM _ev WHERE kc = {KIND_CODES["vm-create"]} AND guest IS NOT NULL
"""

# The events the context rule (_CONTEXT) may pick: those naming a guest, at the callers
# whose name is not a created guest's (``alpha.cpu0`` is). Only their calls can still
# lack a guest when _CONTEXT is asked (see ``asked`` in _HANDLES, ``need`` in _UVC).
_CTX: Final = f"""
CREATE OR REPLACE TEMP TABLE _ctx AS
SELECT tid, actor, rowid AS ord, coalesce(guest, msg.guest) AS guest FROM _ev
WHERE (guest IS NOT NULL OR msg.guest IS NOT NULL) AND actor IN (
    SELECT a.caller FROM (
        SELECT DISTINCT tid, src AS caller FROM _ev WHERE kc = {KIND_CODES["recv"]} AND msg.type = 'Uvc'
        UNION
        SELECT DISTINCT tid, actor FROM _ev WHERE kc = {KIND_CODES["reply"]}
    ) a ANTI JOIN _names n ON n.tid = a.tid AND n.guest = split_part(a.caller, '.', 1)
)
"""

# The guest a caller was last busy with: the latest event at that actor naming a
# guest (the hypervisor serves one guest's Diag308 or halt at a time). {rows} has
# tid, caller, req_ord and ``at`` (the row number of the moment asked about).
_CONTEXT: Final = """
SELECT u.tid, u.req_ord, g.guest AS ctx_guest
FROM {rows} u
ASOF JOIN (SELECT * FROM _ctx WHERE actor IN (SELECT DISTINCT caller FROM {rows})) g
    ON g.tid = u.tid AND g.actor = u.caller AND g.ord <= u.at
"""

# Handles are learnt from the answers that create them.
_HANDLES: Final = f"""
CREATE OR REPLACE TEMP TABLE _handles AS
WITH made AS MATERIALIZED (
    SELECT e.tid, e.actor AS caller, e.rowid AS req_ord, e.rowid AS at, e.msg.guest_handle AS gh,
        e.msg.cpu_handle AS ch, n.guest AS name_guest
    FROM _ev e LEFT JOIN _names n ON n.tid = e.tid AND n.guest = split_part(e.actor, '.', 1)
    WHERE e.kc = {KIND_CODES["reply"]} AND e.msg.cc = 0 AND e.msg.type IN ({{creators}})
),
asked AS MATERIALIZED (SELECT * FROM made WHERE name_guest IS NULL),
ctx AS ({_CONTEXT.format(rows="asked")}),
named AS (SELECT m.*, coalesce(m.name_guest, ctx.ctx_guest) AS guest FROM made m LEFT JOIN ctx USING (tid, req_ord))
SELECT tid, handle, any_value(guest) AS guest FROM (
    SELECT tid, gh AS handle, guest FROM named WHERE gh IS NOT NULL
    UNION ALL
    SELECT tid, ch, guest FROM named WHERE ch IS NOT NULL
) WHERE guest IS NOT NULL AND handle <> 0 GROUP BY tid, handle
"""

_UVC: Final = f"""
CREATE OR REPLACE TEMP TABLE _uvc AS
WITH req AS (
    SELECT tid, rowid AS req_ord, step AS req_step, t AS start_t, corr, src AS caller, sent,
        msg.request.type AS request_type, msg.caller.context AS context,
        msg.request.gaddr AS gaddr, msg.request.paddr AS paddr,
        CASE WHEN msg.caller.context = 'guest'
             THEN coalesce(msg.request.guest_handle, msg.request.handle, msg.caller.config_handle)
             ELSE coalesce(msg.request.guest_handle, msg.request.handle) END AS handle,
        msg.request.cpu_handle AS cpu_arg
    FROM _ev WHERE kc = {KIND_CODES["recv"]} AND msg.type = 'Uvc'
),
rep AS (
    SELECT tid, corr, actor, rowid AS reply_ord, step AS reply_step, t AS reply_t, sent AS reply_sent,
        msg.type AS response_type, msg.cc AS cc, msg.rc AS rc, msg.rrc AS rrc
    FROM _ev WHERE kc = {KIND_CODES["reply"]}
),
g0 AS MATERIALIZED (
    SELECT req.* EXCLUDE (gaddr, paddr), rep.reply_ord, rep.reply_step, rep.reply_t, rep.reply_sent, rep.response_type,
        rep.cc, rep.rc, rep.rrc,
        coalesce(c.command, upper(regexp_replace(regexp_replace(req.request_type, 'Request$', ''),
            '([a-z0-9])([A-Z])', '\\1_\\2', 'g'))) AS command,
        c.code,
        CASE WHEN req.paddr IS NOT NULL AND coalesce(req.context, 'host') <> 'guest'
             THEN (req.paddr >> 12)::BIGINT END AS pfn,
        CASE WHEN req.gaddr IS NOT NULL THEN req.gaddr >> 12
             WHEN req.paddr IS NOT NULL AND req.context = 'guest' THEN req.paddr >> 12 END AS gfn,
        coalesce(h1.guest, h2.guest, n.guest) AS guest1
    FROM req
    LEFT JOIN rep ON rep.tid = req.tid AND rep.corr = req.corr AND rep.actor = req.caller
    LEFT JOIN _commands c ON c.request_type = req.request_type
    LEFT JOIN _names n ON n.tid = req.tid AND n.guest = split_part(req.caller, '.', 1)
    LEFT JOIN _handles h1 ON h1.tid = req.tid AND h1.handle = req.handle
    LEFT JOIN _handles h2 ON h2.tid = req.tid AND h2.handle = req.cpu_arg
),
need AS MATERIALIZED (
    SELECT tid, req_ord, pfn, caller, coalesce(reply_ord, req_ord) AS at FROM g0 WHERE guest1 IS NULL
),
fo AS (
    SELECT tid, pfn, rowid AS ord, owner FROM _ev
    WHERE kc = {KIND_CODES["frame"]} AND owner <> 0 AND coalesce(count, 1) = 1 AND pfn IN (SELECT pfn FROM need)
),
fg AS (
    SELECT n.tid, n.req_ord, hf.guest AS frame_guest
    FROM need n ASOF JOIN fo ON fo.tid = n.tid AND fo.pfn = n.pfn AND fo.ord <= n.req_ord
    JOIN _handles hf ON hf.tid = fo.tid AND hf.handle = fo.owner
),
ctx AS ({_CONTEXT.format(rows="need")}),
g2 AS MATERIALIZED (
    SELECT g0.* EXCLUDE (guest1), coalesce(guest1, fg.frame_guest, ctx.ctx_guest) AS guest
    FROM g0 LEFT JOIN fg USING (tid, req_ord) LEFT JOIN ctx USING (tid, req_ord)
),
-- A call that names a guest frame acts on the host frame that backs it: the one the
-- latest event naming both (reclaim, swap-out, swap-in, host-read, ...) gives, up to its answer.
bygfn AS MATERIALIZED (
    SELECT tid, req_ord, coalesce(reply_ord, req_ord) AS at, guest, gfn::BIGINT AS gfn FROM g2
    WHERE pfn IS NULL AND gfn IS NOT NULL AND guest IS NOT NULL
),
gm AS (
    SELECT tid, rowid AS ord, guest, gfn, pfn FROM _ev
    WHERE gfn IS NOT NULL AND pfn IS NOT NULL AND guest IN (SELECT guest FROM bygfn)
),
mapped AS (
    SELECT b.tid, b.req_ord, m.pfn AS backing
    FROM bygfn b ASOF JOIN gm m ON m.tid = b.tid AND m.guest = b.guest AND m.gfn = b.gfn AND m.ord <= b.at
),
g AS (
    SELECT g2.* EXCLUDE (pfn), coalesce(g2.pfn, mapped.backing) AS pfn
    FROM g2 LEFT JOIN mapped USING (tid, req_ord)
)
SELECT *,
    CASE WHEN pfn IS NOT NULL THEN printf('pfn 0x%x', pfn)
         WHEN gfn IS NOT NULL THEN printf('%s gfn 0x%x', coalesce(guest, printf('0x%x', handle)), gfn) END AS frame,
    CASE WHEN reply_ord IS NULL THEN 'pending'
         WHEN cc = 0 THEN 'ok' WHEN cc = 1 THEN 'error' WHEN cc = 2 THEN 'busy' WHEN cc = 3 THEN 'partial'
         WHEN cc IS NOT NULL THEN printf('cc %d', cc)
         WHEN response_type = 'Intercept108' THEN 'intercept 108'
         WHEN response_type = 'GuestException' THEN 'exception'
         ELSE lower(response_type) END AS outcome
FROM g
"""

# Retry runs (computed when ``uvcs`` is queried): a run is a caller's tries of
# one command on one frame, up to and including the first answer that is not
# busy (Linux ``uv_call`` re-issues while cc is 2).
RUNS_SQL: Final = """  -- {source}: _uvc, or the part of it whose runs are wanted
WITH r AS (
    SELECT *, coalesce(frame, '') AS fkey, row_number() OVER p AS rn,
        coalesce(sum(CASE WHEN outcome = 'busy' THEN 0 ELSE 1 END)
            OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS run
    FROM {source}
    WINDOW p AS (PARTITION BY tid, caller, command, coalesce(frame, '') ORDER BY req_ord)
),
runs AS (
    SELECT tid, caller, command, fkey, run, min(rn) AS first_rn, count(*) AS attempts,
        arg_max(outcome, req_ord) AS final_outcome, arg_min(corr, req_ord) AS run_corr
    FROM r GROUP BY ALL
)
SELECT r.* EXCLUDE (run, rn, fkey), r.rn - runs.first_rn + 1 AS attempt, runs.attempts, runs.final_outcome,
    runs.run_corr
FROM r JOIN runs USING (tid, caller, command, fkey, run)
"""


def commands_rows() -> list[tuple[str, str, int]]:
    """(request class name, command name, code) for every command of the protocol."""
    return [(cls.__name__, cmd.name, int(cmd)) for cmd, cls in REQUEST_TYPES.items()]


def build_uvcs(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)build ``_commands``, ``_names``, ``_ctx``, ``_handles`` and ``_uvc`` from ``_ev``."""
    con.execute("CREATE OR REPLACE TEMP TABLE _commands (request_type VARCHAR, command VARCHAR, code INTEGER)")
    con.executemany("INSERT INTO _commands VALUES (?, ?, ?)", commands_rows())
    creators = ", ".join(
        f"'{RESPONSE_TYPES[c].__name__}'" for c in (UvcCommand.CREATE_SEC_CONF, UvcCommand.CREATE_SEC_CPU)
    )
    for sql in (_NAMES, _CTX, _HANDLES.format(creators=creators), _UVC):
        con.execute(sql)
