"""``sesim analyze``, ``sesim traces convert``, ``sesim export perfetto``, ``sesim report``.

Options are parsed here; the work is done by :mod:`traces`.
"""

from __future__ import annotations

import re
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
        plain = not console.is_terminal and console.color_system is None
        for result in results:
            if result.note and not result.rows:
                if plain and _plain_ok(result.title) and _plain_ok(result.note):
                    click.echo(f"{result.title}: {result.note}\n")
                else:
                    console.print(f"[bold]{result.title}[/bold]: {result.note}\n")
                continue
            text = _plain(result, console.width) if plain else None
            if text is None:
                console.print(_rich(result))
            else:
                click.echo(text, nl=False)


def _shown(result: ResultTable) -> tuple[Sequence[tuple[object, ...]], str | None, list[bool]]:
    """The rows drawn, the caption saying how many are not, and which columns are numeric."""
    shown = result.rows[:_TABLE_ROWS]
    caption = None
    if len(result.rows) > len(shown):
        caption = f"{len(result.rows) - len(shown)} more rows: use --format csv or json for all"
    numeric = [
        any(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in shown[:20])
        for i in range(len(result.columns))
    ]
    return shown, caption, numeric


def _rich(result: ResultTable) -> Table:
    shown, caption, numeric = _shown(result)
    table = Table(title=result.title, caption=caption, title_justify="left")
    for name, is_numeric in zip(result.columns, numeric, strict=True):
        if is_numeric:
            table.add_column(name, justify="right", no_wrap=True)
        else:
            table.add_column(name, overflow="ellipsis", no_wrap=True, max_width=_TEXT_WIDTH)
    for row in shown:
        table.add_row(*(cell_text(v) for v in row))
    return table


_TEXT_WIDTH = 60  # widest text column drawn; longer cells end in an ellipsis
_PLAIN_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"["} | {"µ"}
_EMOJI_LIKE = re.compile(r":\S*:")


def _plain_ok(text: str) -> bool:
    # Characters one cell wide that rich draws as they are: no markup ``[``, nothing like ``:emoji:``.
    return _PLAIN_CHARS.issuperset(text) and not _EMOJI_LIKE.search(text)


def _plain(result: ResultTable, width: int) -> str | None:
    """The text rich draws for ``_rich(result)`` on a console without colours, drawn directly.

    rich lays out and measures every cell through its renderables, about as long
    as a whole canned report takes to compute; a table whose columns fit the
    console needs none of that. Returns None where rich would do more than pad
    and cut (folding a table wider than the console, wrapping a long title,
    markup, wide characters): rich draws those.
    """
    shown, caption, numeric = _shown(result)
    if not shown or not result.columns:
        return None
    cells = [[cell_text(v) for v in row] for row in shown]
    texts = [result.title, *result.columns, *(caption and [caption] or [])]
    if not all(_plain_ok(t) for t in texts) or not all(_plain_ok(c) for row in cells for c in row):
        return None
    widths = []
    for i, name in enumerate(result.columns):
        w = max(len(name), *(len(row[i]) for row in cells))
        if not numeric[i]:
            if len(name) > _TEXT_WIDTH:
                return None
            w = min(w, _TEXT_WIDTH)
        widths.append(w)
    total = sum(widths) + 3 * len(widths) + 1
    if total > width or len(result.title) > total or (caption and len(caption) > total):
        return None

    def line(cols: Sequence[str]) -> str:
        out = []
        for text, w, right in zip(cols, widths, numeric, strict=True):
            if len(text) > w:
                text = text[: w - 1] + "\u2026"
            out.append(text.rjust(w) if right else text.ljust(w))
        return " " + " \u2502 ".join(out) + " "

    def rule(left: str, fill: str, mid: str, right: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    lines = [result.title.ljust(total), rule("\u250f", "\u2501", "\u2533", "\u2513")]
    lines.append("\u2503" + line(result.columns).replace(" \u2502 ", " \u2503 ") + "\u2503")
    lines.append(rule("\u2521", "\u2501", "\u2547", "\u2529"))
    lines += ["\u2502" + line(row) + "\u2502" for row in cells]
    lines.append(rule("\u2514", "\u2500", "\u2534", "\u2518"))
    if caption:
        left = (total - len(caption)) // 2
        lines.append(" " * left + caption + " " * (total - len(caption) - left))
    return "\n".join(lines) + "\n"


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
