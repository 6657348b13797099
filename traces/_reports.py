"""The canned tables of ``sesim analyze``: SQL over the documented views.

Each report has one query for a single trace and, where a per-trace listing
would be too long for a campaign, one that summarises across traces
(medians per guest name, sums). Durations are shown in virtual µs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from attrs import frozen

from protocol import UsageError

from ._format import ResultTable
from ._load import KIND_CODES

if TYPE_CHECKING:
    from ._analyze import TraceDB

MANY_TRACES: Final = 20
"""Above this many traces, summary, lifecycle and memory are summarised per guest name."""


@frozen(kw_only=True)
class Report:
    name: str
    title: str
    sql: str
    sql_many: str = ""
    empty: str = ""
    only_if: str = ""  # a cheap count: when 0, the table is empty without running ``sql``


_VIOLATION_COUNT: Final = f"SELECT count(*) FROM _ev WHERE kc = {KIND_CODES['violation']}"  # kind = 'violation'


def _us(expr: str) -> str:
    return f"round(({expr}) / 1000.0, 1)"


REPORTS: Final[tuple[Report, ...]] = (
    Report(
        name="summary",
        title="Traces",
        sql=f"""
            SELECT trace, seed, json_extract_string(strategy, '$.name') AS strategy, events, steps,
                   {_us("end_t")} AS virtual_us, uvcs, busy,
                   (SELECT count(*) FROM guests g WHERE g.trace = t.trace) AS guests
            FROM traces t ORDER BY trace""",
        sql_many=f"""
            SELECT printf('%d traces', count(*)) AS traces, count(DISTINCT seed) AS seeds, sum(events) AS events,
                   sum(steps) AS steps, {_us("median(end_t)")} AS median_virtual_us, sum(uvcs) AS uvcs,
                   sum(busy) AS busy
            FROM traces""",
    ),
    Report(
        name="uvcs",
        title="UVCs by command and return code",
        sql=f"""
            SELECT command, printf('0x%04x', code) AS code, cc, printf('0x%04x', rc) AS rc, outcome,
                   count(*) AS calls, count(DISTINCT guest) AS guests, {_us("avg(reply_t - sent)")} AS mean_us
            FROM _uvc GROUP BY command, code, cc, rc, outcome ORDER BY code NULLS LAST, command, cc, rc""",
        empty="no UVCs",
    ),
    Report(
        name="lifecycle",
        title="Guest life cycles (virtual µs)",
        sql=f"""
            SELECT guest, CASE WHEN secure THEN 'secure' WHEN NOT secure THEN 'regular' END AS kind, state,
                   {_us("boot_ns")} AS boot_us, {_us("unpack_ns")} AS unpack_us, pages_unpacked AS pages,
                   {_us("verify_ns")} AS verify_us, {_us("run_ns")} AS run_us, {_us("teardown_ns")} AS teardown_us,
                   reason
            FROM guests ORDER BY trace, created_t NULLS LAST, guest""",
        sql_many=f"""
            SELECT guest, count(*) AS runs,
                   (SELECT string_agg(s || ' ' || n, ', ' ORDER BY n DESC) FROM
                       (SELECT state AS s, count(*) AS n FROM guests g2 WHERE g2.guest = g.guest
                        GROUP BY state)) AS states,
                   {_us("median(boot_ns)")} AS median_boot_us, {_us("median(unpack_ns)")} AS median_unpack_us,
                   {_us("median(verify_ns)")} AS median_verify_us, {_us("median(run_ns)")} AS median_run_us,
                   {_us("median(teardown_ns)")} AS median_teardown_us, {_us("max(boot_ns)")} AS max_boot_us
            FROM guests g GROUP BY guest ORDER BY guest""",
        empty="no guests",
    ),
    Report(
        name="memory",
        title="Secure memory per guest: imports, exports, swaps",
        sql="""
            SELECT guest, imports, exports, swap_outs, swap_ins, destroyed_pages, shares, unshares, busy
            FROM guests WHERE secure OR imports + exports + swap_outs + swap_ins > 0
            ORDER BY trace, created_t NULLS LAST, guest""",
        sql_many="""
            SELECT guest, sum(imports) AS imports, sum(exports) AS exports, sum(swap_outs) AS swap_outs,
                   sum(swap_ins) AS swap_ins, sum(destroyed_pages) AS destroyed_pages, sum(shares) AS shares,
                   sum(unshares) AS unshares, sum(busy) AS busy
            FROM guests WHERE secure OR imports + exports + swap_outs + swap_ins > 0 GROUP BY guest ORDER BY guest""",
        empty="no secure guests",
    ),
    Report(
        name="races",
        title="Races: overlapping UVCs on one frame",
        sql=f"""
            SELECT trace, {_us("t")} AS t_us, frame, guest, first_caller || ' ' || first_command AS first,
                   second_caller || ' ' || second_command AS second, resolution, line
            FROM races ORDER BY trace, t, frame""",
        empty="no races found",
    ),
    Report(
        name="violations",
        title="Monitor violations",
        sql=f"""
            SELECT trace, line, {_us("t")} AS t_us, actor, guest, monitor, detail
            FROM violations ORDER BY trace, line""",
        empty="no monitor violations",
        only_if=_VIOLATION_COUNT,
    ),
    Report(
        name="latency",
        title="UVC latency per command (virtual µs, reply - sent)",
        sql=f"""
            SELECT command, count(*) AS calls, {_us("quantile_disc(latency_ns, 0.5)")} AS p50_us,
                   {_us("quantile_disc(latency_ns, 0.9)")} AS p90_us,
                   {_us("quantile_disc(latency_ns, 0.99)")} AS p99_us,
                   {_us("max(latency_ns)")} AS max_us, {_us("avg(latency_ns)")} AS mean_us
            FROM (SELECT *, reply_t - sent AS latency_ns FROM _uvc) WHERE latency_ns IS NOT NULL
            GROUP BY command ORDER BY any_value(code) NULLS LAST, command""",
        empty="no answered UVCs",
    ),
)

REPORT_NAMES: Final = tuple(r.name for r in REPORTS)


def run_reports(db: TraceDB, names: Sequence[str] = ()) -> list[ResultTable]:
    """The canned tables named (all of them by default), in the order of :data:`REPORTS`.

    Raises:
        UsageError: an unknown report name.
    """
    unknown = [n for n in names if n not in REPORT_NAMES]
    if unknown:
        raise UsageError(f"no report {unknown[0]!r} (reports: {', '.join(REPORT_NAMES)})")
    many = len(db.traces) > MANY_TRACES
    tables = []
    for report in REPORTS:
        if names and report.name not in names:
            continue
        sql = report.sql_many if many and report.sql_many else report.sql
        if report.only_if and not db.scalar(report.only_if):
            sql = f"SELECT * FROM ({sql}) WHERE false"
        table = db.query(sql, name=report.name, title=report.title)
        if len(db.traces) == 1 and table.columns and table.columns[0] == "trace" and report.name != "summary":
            table = ResultTable(
                name=table.name, title=table.title, columns=table.columns[1:], rows=tuple(r[1:] for r in table.rows)
            )
        if not table.rows and report.empty:
            table = ResultTable(name=table.name, title=table.title, columns=table.columns, rows=(), note=report.empty)
        tables.append(table)
    return tables
