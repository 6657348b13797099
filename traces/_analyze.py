"""A DuckDB database over one trace or a whole campaign of them.

:meth:`TraceDB.open` loads JSON Lines traces (each file one parallel DuckDB
scan) and Parquet tables written by :meth:`TraceDB.to_parquet`, builds the
UVC table and creates the documented views of :mod:`traces._duck`. Everything
lives in one in-memory DuckDB connection; nothing is written unless asked.

``--sql`` queries run on that connection as they are: it is the user's own
machine and files, so DuckDB's file functions stay available.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, final

import duckdb

from protocol import UsageError

from ._duck import GUESTS_SQL, VIEWS
from ._format import ResultTable
from ._load import EV_COLUMNS, TraceInfo, create_tables, expand_paths, is_parquet, load_jsonl, load_parquet
from ._uvcs import build_uvcs


@final
class TraceDB:
    """Loaded traces and the views over them. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._traces: tuple[TraceInfo, ...] = ()

    @classmethod
    def open(cls, paths: Iterable[str | Path], *, threads: int | None = None) -> TraceDB:
        """Load traces (files, or directories searched for ``*.jsonl`` / ``*.parquet``).

        Raises:
            FormatError: a file is not a sesim trace, or a line of it is bad
                (the message names the file and the line).
            UsageError: nothing to load, or one trace given twice.
        """
        files = expand_paths(paths)
        con = duckdb.connect(":memory:")
        # An in-memory database still checkpoints (compressing its tables) once
        # 16 MiB have been written; for a load-once, query-a-few-times use that
        # costs a third of the load and saves nothing.
        con.execute("SET checkpoint_threshold = '1TB'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        db = cls(con)
        try:
            db._load(files)
        except BaseException:
            con.close()
            raise
        return db

    def _load(self, files: Sequence[Path]) -> None:
        con = self.con
        create_tables(con)
        jsonl = [p for p in files if not is_parquet(p)]
        parquet = [p for p in files if is_parquet(p)]
        tid = 0
        if jsonl:
            load_jsonl(con, jsonl, tid)
            tid += len(jsonl)
        for path in parquet:
            tid += load_parquet(con, path, tid)
        dup = con.execute("SELECT trace FROM _traces GROUP BY trace HAVING count(*) > 1 LIMIT 1").fetchone()
        if dup:
            raise UsageError(f"{dup[0]}: the same trace given twice")
        build_uvcs(con)
        con.execute(f"CREATE TEMP TABLE _guests AS {GUESTS_SQL}")
        con.execute(f"CREATE VIEW lines AS {self._lines_sql()}")
        for view in VIEWS:
            if view.sql:
                con.execute(f"CREATE VIEW {view.name} AS {view.sql}")
        rows = con.execute(
            "SELECT tid, trace, seed, sesim, strategy, coalesce(events, 0) FROM _traces ORDER BY tid"
        ).fetchall()
        self._traces = tuple(
            TraceInfo(tid=r[0], trace=r[1], seed=r[2], sesim=r[3] or "", strategy=r[4] or "", events=r[5]) for r in rows
        )

    def _lines_sql(self) -> str:
        """Each file's lines as JSON (the ``lines`` view)."""
        parts = self._per_file((), "JSON")
        return " UNION ALL ".join(parts) or "SELECT NULL::VARCHAR AS trace, NULL::BIGINT AS line, NULL::JSON AS json"

    def _per_file(self, columns: Sequence[str], json_type: str) -> list[str]:
        """One SELECT per loaded file: trace, line, ``columns`` of ``_ev``, and each line's JSON text.

        A JSON Lines file is read again (as text objects) and put beside its
        rows of ``_ev`` by position: both are the file's lines in order. A
        Parquet table written by :meth:`to_parquet` has all of it already
        (one SELECT for the table, however many traces it holds).
        """
        parts = []
        seen_parquet: set[str] = set()
        rows = self.con.execute("SELECT tid, trace, path, parquet, base FROM _traces ORDER BY tid").fetchall()
        for tid, trace, path, parquet, base in rows:
            if parquet:
                if path not in seen_parquet:
                    seen_parquet.add(path)
                    cols = "".join(f", {c}" for c in columns)
                    parts.append(f"SELECT trace, line{cols}, json::{json_type} AS json FROM read_parquet({_sql_str(path)})")
                continue
            cols = "".join(f", x.{c}" for c in columns)
            parts.append(
                f"SELECT {_sql_str(trace)} AS trace, x.r - {base} AS line{cols}, o.json::{json_type} AS json"
                f" FROM (SELECT rowid AS r{', *' if columns else ''} FROM _ev WHERE tid = {tid}) x POSITIONAL JOIN"
                f" read_json_objects({_sql_str(path)}, format='newline_delimited', maximum_object_size=33554432) o"
            )
        return parts

    # ------------------------------------------------------------ queries
    @property
    def traces(self) -> tuple[TraceInfo, ...]:
        return self._traces

    @property
    def events(self) -> int:
        return sum(t.events for t in self._traces)

    def query(
        self, sql: str, params: Sequence[Any] | None = None, *, name: str = "sql", title: str = ""
    ) -> ResultTable:
        """Run one SQL query over the views; the result as a table.

        Raises:
            UsageError: DuckDB refused the query (its message, one line).
        """
        try:
            cursor = self.con.execute(sql, params) if params is not None else self.con.execute(sql)
            if cursor.description is None:
                return ResultTable(name=name, title=title or name, columns=(), rows=())
            columns = tuple(d[0] for d in cursor.description)
            rows = cursor.fetchall()
        except duckdb.Error as exc:
            raise UsageError(f"SQL: {_first_line(exc)}") from None
        return ResultTable(name=name, title=title or name, columns=columns, rows=rows)

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self.con.execute(sql, params or []).fetchone()
        return None if row is None else row[0]

    def to_parquet(self, out: Path) -> int:
        """Write every loaded trace (typed columns plus each line's JSON) to one Parquet file.

        Returns the number of rows (header lines included). ``TraceDB.open``
        reads the file back as it reads the JSON Lines.
        """
        parts = self._per_file(EV_COLUMNS, "VARCHAR")
        out.parent.mkdir(parents=True, exist_ok=True)
        target = _sql_str(str(out))
        self.con.execute(f"COPY ({' UNION ALL '.join(parts)}) TO {target} (FORMAT parquet, COMPRESSION zstd)")
        return int(self.scalar(f"SELECT count(*) FROM read_parquet({target})"))

    # ------------------------------------------------------------ life
    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> TraceDB:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
