"""Reading traces into DuckDB: JSON Lines or Parquet in, typed tables out.

A trace file is JSON Lines (``traces/_writer.py``): a header line, then one
event a line. DuckDB's ``read_json`` reads all files of a campaign in one
parallel scan with an explicit column list (no schema guessing, so a new kind
of event with new fields never breaks the read: unknown fields are simply not
columns, and stay reachable through the ``lines`` view).

Bad input must give one line naming the file and the line. DuckDB's own
messages are not that precise, so a failed or suspicious scan is followed by a
plain Python pass over the files concerned (:func:`find_bad_line`) that finds
the first offending line; that slow path runs only when something is wrong.

Two private tables result: ``_traces`` (one row per trace: its header, where
its lines start in the scan and its totals) and ``_ev`` (one row per event,
typed, plus ``kc``: a small code for the kinds of event the UVC build and the
canned reports filter on, see :data:`KIND_CODES`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import duckdb
from attrs import frozen

from protocol import FormatError, UsageError

from ._writer import check_header

PARQUET_SUFFIXES: Final = (".parquet", ".pq")
TRACE_GLOBS: Final = ("*.jsonl", *(f"*{s}" for s in PARQUET_SUFFIXES))

_MSG: Final = (
    "STRUCT(type VARCHAR, cc INTEGER, rc INTEGER, rrc INTEGER, guest VARCHAR, guest_handle UBIGINT,"
    " cpu_handle UBIGINT, request STRUCT(type VARCHAR, gaddr UBIGINT, paddr UBIGINT, guest_handle UBIGINT,"
    " handle UBIGINT, cpu_handle UBIGINT), caller STRUCT(context VARCHAR, config_handle UBIGINT))"
)

# JSON field -> (column name, DuckDB type). Only what the views and reports
# use is typed: each typed field costs time at every load; any other field of
# any event stays reachable through the ``lines`` view.
EVENT_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "step": ("step", "BIGINT"),
    "t": ("t", "BIGINT"),
    "actor": ("actor", "VARCHAR"),
    "kind": ("kind", "VARCHAR"),
    "corr": ("corr", "BIGINT"),
    "sent": ("sent", "BIGINT"),
    "from": ("src", "VARCHAR"),
    "to": ("dst", "VARCHAR"),
    "pfn": ("pfn", "BIGINT"),
    "count": ("count", "BIGINT"),
    "owner": ("owner", "UBIGINT"),
    "guest": ("guest", "VARCHAR"),
    "gfn": ("gfn", "BIGINT"),
    "state": ("state", "VARCHAR"),
    "reason": ("reason", "VARCHAR"),
    "secure": ("secure", "BOOLEAN"),
    "msg": ("msg", _MSG),
}
# Kinds the UVC build and the canned reports select rows by. ``_ev`` is not
# compressed (see ``_analyze``), so comparing its ``kind`` strings costs about
# 10 ms per million events at each pass; the scan computes this code once and
# later passes filter on it (a one-byte column, filtered inside the scan).
# Every other kind (and a row without one) is 0. The guests table reads the kinds
# from ``violation`` on, one range of codes (``traces._duck.GUESTS_SQL``).
GUEST_KINDS: Final = (
    "violation", "vm-create", "pv-running", "guest-running", "pv-refused", "guest-halt", "vm-destroy",
    "guest-booted", "swap-out", "swap-in", "corruption",
)  # fmt: skip
KIND_CODES: Final[dict[str, int]] = {
    kind: code for code, kind in enumerate(("recv", "reply", "frame", *GUEST_KINDS), start=1)
}
GUEST_CODES: Final = (KIND_CODES[GUEST_KINDS[0]], KIND_CODES[GUEST_KINDS[-1]])
"""First and last code of :data:`GUEST_KINDS` (``kc BETWEEN ...``)."""


def kind_code_sql(column: str = "kind") -> str:
    """The SQL expression giving :data:`KIND_CODES` of ``column`` (0 for any other kind)."""
    whens = " ".join(f"WHEN '{kind}' THEN {code}" for kind, code in KIND_CODES.items())
    return f"(CASE {column} {whens} ELSE 0 END)::UTINYINT"


_REQUIRED: Final = (("step", int), ("t", int), ("actor", str), ("kind", str))
_INTEGER_TYPES: Final = frozenset({"BIGINT", "INTEGER", "UBIGINT"})


@frozen(kw_only=True)
class TraceInfo:
    """One loaded trace: where it came from and what its header says."""

    tid: int
    trace: str
    seed: int | None
    sesim: str
    strategy: str
    events: int = 0


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, directories searched (recursively) for ``*.jsonl`` and ``*.parquet``.

    Raises:
        UsageError: a directory holds no trace, or nothing was given.
        FileNotFoundError: a path does not exist (the CLI reports it as one line).
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted({p for pattern in TRACE_GLOBS for p in path.rglob(pattern) if p.is_file()})
            if not found:
                raise UsageError(f"{path}: no trace files (*.jsonl, *.parquet) in this directory")
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(2, "No such file or directory", str(path))
    if not out:
        raise UsageError("no trace given")
    return out


def is_parquet(path: Path) -> bool:
    return path.name.endswith(PARQUET_SUFFIXES)


def read_header(path: Path) -> dict[str, Any]:
    """Parse and check line 1 of a JSON Lines trace.

    Raises:
        FormatError: ``FILE:1: ...`` for an empty file, a first line that is not
            JSON, a foreign file, or a format version newer than this code reads.
    """
    with open(path, "rb") as f:
        first = f.readline(1 << 22)
    if not first.strip():
        raise FormatError(f"{path}:1: empty file, not a sesim trace")
    try:
        header = json.loads(first)
    except ValueError:
        raise FormatError(f"{path}:1: not a sesim trace (the first line is not JSON)") from None
    check_header(header, f"{path}:1")
    return header


def find_bad_line(path: Path) -> FormatError | None:
    """The slow path: the first line of ``path`` that is not a well-formed event, as an error.

    Checks what the fast scan relies on: every line after the header is a JSON
    object with an integer ``step`` and ``t`` and a string ``actor`` and
    ``kind``, and every typed field has a value of its column's type.
    """
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    ends_cleanly = data.endswith(b"\n")
    if ends_cleanly:
        lines.pop()
    for number, line in enumerate(lines, start=1):
        if number == 1 or not line.strip():
            continue
        last = number == len(lines)
        try:
            event = json.loads(line)
        except ValueError:
            if last and not ends_cleanly:
                return FormatError(f"{path}:{number}: truncated event (the file ends in the middle of a line)")
            return FormatError(f"{path}:{number}: not valid JSON")
        problem = _event_problem(event)
        if problem:
            return FormatError(f"{path}:{number}: {problem}")
    return None


def _event_problem(event: Any) -> str:
    if not isinstance(event, dict):
        return f"an event must be a JSON object, not {type(event).__name__}"
    if "format" in event:
        return "a second trace header inside the file (were traces concatenated?)"
    for name, kind in _REQUIRED:
        value = event.get(name)
        if value is None:
            return f"event has no {name!r}"
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"event field {name!r} is {value!r}, expected {'an integer' if kind is int else 'a string'}"
    for name, (_, sql_type) in EVENT_FIELDS.items():
        value = event.get(name)
        if value is None:
            continue
        if sql_type in _INTEGER_TYPES and (not isinstance(value, int) or isinstance(value, bool)):
            return f"event field {name!r} is {value!r}, expected an integer"
        if sql_type.startswith("STRUCT") and not isinstance(value, dict):
            return f"event field {name!r} is {value!r}, expected an object"
        if sql_type == "BOOLEAN" and not isinstance(value, bool):
            return f"event field {name!r} is {value!r}, expected true or false"
    return ""


def _columns_sql() -> str:
    parts = [f"{_quote(name)}: '{sql_type}'" for name, (_, sql_type) in EVENT_FIELDS.items()]
    return "{" + ", ".join(parts) + "}"


def _select_list() -> str:
    return ", ".join(f"{_quote(name)} AS {column}" for name, (column, _) in EVENT_FIELDS.items())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


EV_COLUMNS: Final = tuple(column for column, _ in EVENT_FIELDS.values())


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """``_traces`` (headers, totals) and ``_ev`` (events, header rows included as all-NULL rows).

    A file's lines go into ``_ev`` in one append, in order, so an event's line
    number is its ``rowid`` minus the file's ``base`` (no ordinality column to
    compute at load, which would cost a third of the scan). ``events``,
    ``steps`` and ``end_t`` of ``_traces`` are filled by :func:`check_loaded`.
    """
    columns = ", ".join(f"{column} {sql_type}" for column, sql_type in EVENT_FIELDS.values())
    con.execute(
        "CREATE TEMP TABLE _traces (tid INTEGER, trace VARCHAR, path VARCHAR, parquet BOOLEAN, seed BIGINT,"
        " sesim VARCHAR, format_version INTEGER, strategy VARCHAR, config VARCHAR, base BIGINT,"
        " events BIGINT, steps BIGINT, end_t BIGINT)"
    )
    con.execute(f"CREATE TEMP TABLE _ev (tid INTEGER, {columns}, kc UTINYINT)")


def load_jsonl(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], first_tid: int) -> None:
    """Scan JSON Lines traces into ``_ev`` (each file one parallel scan), then check what was read.

    Raises:
        FormatError: naming the file and line of the first bad line.
    """
    headers = [read_header(p) for p in paths]
    rows = [
        (
            first_tid + i,
            str(p),
            _abs(p),
            False,
            h.get("seed") if isinstance(h.get("seed"), int) else None,
            str(h.get("sesim", "")),
            h["format_version"],
            json.dumps(h.get("strategy"), sort_keys=True),
            json.dumps(h.get("config"), sort_keys=True),
            0,
            None,
            None,
            None,
        )
        for i, (p, h) in enumerate(zip(paths, headers, strict=True))
    ]
    con.executemany("INSERT INTO _traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    columns = _columns_sql()
    select = f"{_select_list()}, {kind_code_sql(_quote('kind'))}"
    for i, path in enumerate(paths):
        scan = (
            f"read_json({_sql_str(_abs(path))}, format='newline_delimited', columns={columns},"
            " maximum_object_size=33554432)"
        )
        try:
            con.execute(f"INSERT INTO _ev SELECT {first_tid + i}, {select} FROM {scan}")
        except duckdb.Error as exc:
            raise _locate([path], exc) from None
    check_loaded(con, paths, first_tid)


def check_loaded(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], first_tid: int) -> None:
    """Each file must have read as one run of rows: its header, then events with step/t/actor/kind.

    Sets each trace's ``base`` (rowid of its header minus one) and its totals
    (``events``: rows with a step, ``steps``: the last step, ``end_t``: the
    last time), all from the one pass over ``_ev`` that checks it.
    """
    stats = con.execute(
        "SELECT tid, min(rowid), max(rowid), count(*),"
        " count(*) FILTER (WHERE step IS NULL OR t IS NULL OR actor IS NULL OR kind IS NULL),"
        " min(rowid) FILTER (WHERE step IS NULL), count(step), max(step), max(t)"
        f" FROM _ev WHERE tid >= {first_tid} GROUP BY tid"
    ).fetchall()
    seen = {row[0] for row in stats}
    bad = [
        paths[tid - first_tid]
        for tid, lo, hi, n, nulls, hdr, *_ in stats
        if nulls != 1 or hdr != lo or hi - lo + 1 != n
    ]
    if bad:
        raise _locate(bad, None)
    for i, path in enumerate(paths):
        if first_tid + i not in seen:
            raise FormatError(f"{path}: no events could be read")
    con.executemany(
        "UPDATE _traces SET base = ?, events = ?, steps = ?, end_t = ? WHERE tid = ?",
        [(lo - 1, events, steps, end_t, tid) for tid, lo, _, _, _, _, events, steps, end_t in stats],
    )


def _locate(paths: Sequence[Path], exc: duckdb.Error | None) -> FormatError:
    for path in paths:
        error = find_bad_line(path)
        if error is not None:
            return error
    detail = str(exc).splitlines()[0] if exc is not None else "events could not be read"
    where = paths[0] if len(paths) == 1 else ", ".join(map(str, paths))
    return FormatError(f"{where}: {detail}")


def load_parquet(con: duckdb.DuckDBPyConnection, path: Path, first_tid: int) -> int:
    """Load a table written by ``sesim traces convert``; returns the number of traces in it.

    Raises:
        FormatError: not Parquet, or not a sesim trace table.
    """
    src = f"read_parquet({_sql_str(_abs(path))})"
    try:
        names = {row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
    except duckdb.Error as exc:
        raise FormatError(f"{path}: not a Parquet file ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("trace", "line", "json", *EV_COLUMNS) if c not in names]
    if missing:
        raise FormatError(
            f"{path}: not a sesim trace table (no column {missing[0]!r}; write one with `sesim traces convert`)"
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _pq AS SELECT trace, json, row_number() OVER (ORDER BY rn) - 1 AS n FROM"
        f" (SELECT trace, json, row_number() OVER () AS rn FROM {src} WHERE line = 1)"
    )
    for trace, header in con.execute("SELECT trace, json FROM _pq ORDER BY n").fetchall():
        try:
            check_header(json.loads(header), f"{path}: trace {trace}")
        except ValueError:
            raise FormatError(f"{path}: trace {trace}: its header is not JSON") from None
    count = int(con.execute("SELECT count(*) FROM _pq").fetchone()[0])  # type: ignore[index]
    if count == 0:
        raise FormatError(f"{path}: no trace headers in this table")
    con.execute(
        f"INSERT INTO _traces SELECT {first_tid} + n, trace, {_sql_str(_abs(path))}, true,"
        " TRY_CAST(json->>'$.seed' AS BIGINT), json->>'$.sesim', TRY_CAST(json->>'$.format_version' AS INTEGER),"
        " json_extract(json, '$.strategy')::VARCHAR, json_extract(json, '$.config')::VARCHAR, 0, NULL, NULL, NULL"
        " FROM _pq"
    )
    cols = f"{', '.join(EV_COLUMNS)}, {kind_code_sql()}"
    for n, trace in con.execute("SELECT n, trace FROM _pq ORDER BY n").fetchall():
        # The table was written in line order and a Parquet scan keeps it (no sort needed);
        # the order is checked below all the same.
        where = "" if count == 1 else f" WHERE trace = {_sql_str(trace)}"
        con.execute(f"INSERT INTO _ev SELECT {first_tid + n}, {cols} FROM {src}{where}")
    unordered = con.execute(  # the last row of each trace must carry its last step
        "SELECT count(*) FROM (SELECT tid, max(step) AS last, arg_max(step, rowid) AS at_end FROM _ev"
        f" WHERE tid >= {first_tid} AND step IS NOT NULL GROUP BY tid) WHERE last <> at_end"
    ).fetchone()[0]  # type: ignore[index]
    if unordered:
        raise FormatError(f"{path}: lines are not in order in this table (not written by `sesim traces convert`?)")
    con.execute("DROP TABLE _pq")
    check_loaded(con, [path] * count, first_tid)
    return count


def _abs(path: Path) -> str:
    return path.resolve().as_posix()
