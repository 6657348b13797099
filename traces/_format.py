"""Result tables and their text forms (JSON, CSV); the CLI draws the rich tables."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from attrs import field, frozen


@frozen(kw_only=True)
class ResultTable:
    """A named result: column names and rows of plain Python values.

    ``note`` says what a reader should know (rows cut, nothing found).
    """

    name: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...] = field(converter=tuple)
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts (column -> value), JSON-ready."""
        return [{c: _plain(v) for c, v in zip(self.columns, row, strict=True)} for row in self.rows]


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def table_json(tables: Sequence[ResultTable], *, meta: dict[str, Any] | None = None, single: bool = False) -> str:
    """One JSON document.

    ``single`` (an ``--sql`` result): a list of row objects. Otherwise an object
    with ``traces`` (``meta``) and one list of row objects per table name.
    """
    if single:
        return json.dumps(tables[0].records(), indent=2, sort_keys=False)
    doc: dict[str, Any] = {}
    if meta is not None:
        doc.update(meta)
    for table in tables:
        doc[table.name] = table.records()
    return json.dumps(doc, indent=2, sort_keys=False)


def table_csv(tables: Sequence[ResultTable]) -> str:
    """CSV: one table plain; several as sections, each after a ``# name`` line and a blank line between."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, table in enumerate(tables):
        if len(tables) > 1:
            if i:
                out.write("\n")
            out.write(f"# {table.name}\n")
        writer.writerow(table.columns)
        for row in table.rows:
            writer.writerow(["" if v is None else _csv_value(v) for v in row])
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    plain = _plain(value)
    if isinstance(plain, (dict, list)):
        return json.dumps(plain, sort_keys=True)
    return plain


def cell_text(value: Any) -> str:
    """How a value shows in a drawn table."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(_plain(value))
