"""``sesim analyze``, ``sesim traces convert``, ``sesim export perfetto``, ``sesim report``.

Options are parsed here; the work is done by :mod:`traces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from protocol import UsageError
from traces import REPORT_NAMES, ResultTable, TimeWindow, cell_text, table_csv, table_json, views_help

# TraceDB and what draws pictures load DuckDB: imported in the commands, so that
# `sesim demo` and friends do not pay for it.

_TABLE_ROWS = 60  # rows drawn per table; --format csv/json give them all

_PATHS = click.Path(exists=False, path_type=Path)


@click.command(epilog=views_help(), context_settings={"max_content_width": 110})
@click.argument("paths", nargs=-1, required=True, type=_PATHS, metavar="TRACE_OR_DIR...")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--sql", default=None, metavar="QUERY", help="Run this query over the views below instead of the tables.")
@click.option(
    "--table",
    "tables",
    multiple=True,
    type=click.Choice(REPORT_NAMES),
    help="Only these canned tables (repeatable).",
)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="DuckDB threads (default: all cores).")
def analyze(paths: Sequence[Path], fmt: str, sql: str | None, tables: Sequence[str], threads: int | None) -> None:
    """Analyse traces: UVCs by command and rc, guest life cycles, secure memory traffic,
    races, monitor violations and UVC latencies.

    Takes JSON Lines traces, Parquet tables from `sesim traces convert`, and
    directories (searched for *.jsonl and *.parquet: a whole campaign at once).
    Times are virtual. With --sql, runs one query over the views instead.
    """
    from traces import TraceDB, run_reports

    with TraceDB.open(paths, threads=threads) as db:
        if sql is not None:
            results = [db.query(sql)]
        else:
            results = run_reports(db, tables)
        _emit(results, fmt, single=sql is not None, meta={"traces": [t.trace for t in db.traces], "events": db.events})


def _emit(results: Sequence[ResultTable], fmt: str, *, single: bool, meta: dict[str, object]) -> None:
    if fmt == "json":
        click.echo(table_json(results, meta=None if single else meta, single=single))
    elif fmt == "csv":
        click.echo(table_csv(results), nl=False)
    else:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)  # a file or a pipe: do not fold tables to 80 columns
        for result in results:
            if result.note and not result.rows:
                console.print(f"[bold]{result.title}[/bold]: {result.note}\n")
            else:
                console.print(_rich(result))


def _rich(result: ResultTable) -> Table:
    shown = result.rows[:_TABLE_ROWS]
    caption = None
    if len(result.rows) > len(shown):
        caption = f"{len(result.rows) - len(shown)} more rows: use --format csv or json for all"
    table = Table(title=result.title, caption=caption, title_justify="left")
    for name in result.columns:
        i = result.columns.index(name)
        numeric = any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in shown[:20])
        if numeric:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=60)
    for row in shown:
        table.add_row(*(cell_text(v) for v in row))
    return table


@click.group()
def traces() -> None:
    """Trace files: convert campaigns to Parquet."""


@traces.command()
@click.argument("paths", nargs=-1, required=True, type=_PATHS, metavar="TRACE_OR_DIR...")
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The Parquet file to write."
)
def convert(paths: Sequence[Path], output: Path) -> None:
    """Write traces (JSON Lines, or directories of them) to one Parquet table.

    The table keeps every line (typed columns plus the line's JSON), so
    `sesim analyze out.parquet` gives what the JSON Lines give, faster and
    from a file several times smaller.
    """
    if not output.name.endswith((".parquet", ".pq")):
        raise UsageError(f"{output}: the output must end in .parquet (that is how analyze recognises it)")
    from traces import TraceDB

    with TraceDB.open(paths) as db:
        rows = db.to_parquet(output)
        click.echo(f"{output}: {len(db.traces)} traces, {rows:,} lines")


@click.group()
def export() -> None:
    """Export traces for other tools."""


@export.command()
@click.argument("trace", type=_PATHS)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="JSON file to write."
)
@click.option("--window", default=None, metavar="T0:T1", help="Only this virtual time, e.g. 100us:2ms (ns by default).")
@click.option("--actors", default=None, metavar="A,B,...", help="Only these actors (names or patterns: 'uv,alpha.*').")
def perfetto(trace: Path, output: Path, window: str | None, actors: str | None) -> None:
    """Chrome trace-event JSON of TRACE for ui.perfetto.dev: a track per actor,
    each UVC a slice with arrows from request to answer, virtual time as the clock.
    """
    from traces import TraceDB, write_perfetto

    span = TimeWindow.parse(window)
    with TraceDB.open([trace]) as db:
        n = write_perfetto(db, output, window=span, actors=actors)
    click.echo(f"{output}: {n:,} trace events ({span.describe()}); open it in ui.perfetto.dev")


@click.command()
@click.argument("trace", type=_PATHS)
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="HTML file to write."
)
@click.option("--window", default=None, metavar="T0:T1", help="Virtual time to draw, e.g. 500us:600us.")
@click.option(
    "--max-messages", type=click.IntRange(min=1), default=150, show_default=True, help="Arrows in the sequence diagram."
)
def report(trace: Path, output: Path, window: str | None, max_messages: int) -> None:
    """One self-contained HTML page about TRACE (no network needed): a sequence
    diagram of a window, the hottest frames' states, UVC latencies, and the
    tables of `sesim analyze`.
    """
    from traces import TraceDB, render_report

    span = TimeWindow.parse(window)
    with TraceDB.open([trace]) as db:
        page = render_report(db, window=span, max_messages=max_messages)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    click.echo(f"{output}: {len(page):,} bytes")
