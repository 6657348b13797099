"""Record, replay, analyse and draw traces.

The analysis side (DuckDB, reports, pictures) is imported on first use: the
simulation imports ``traces._writer`` for every run and should not pay for
loading DuckDB.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._analyze import TraceDB as TraceDB
    from ._duck import VIEW_NAMES as VIEW_NAMES
    from ._duck import VIEWS as VIEWS
    from ._duck import View as View
    from ._duck import views_help as views_help
    from ._duck import views_markdown as views_markdown
    from ._format import ResultTable as ResultTable
    from ._format import cell_text as cell_text
    from ._format import table_csv as table_csv
    from ._format import table_json as table_json
    from ._html import render_report as render_report
    from ._load import TraceInfo as TraceInfo
    from ._monitors import Monitors as Monitors
    from ._monitors import Violation as Violation
    from ._monitors import standard_monitors as standard_monitors
    from ._perfetto import perfetto_events as perfetto_events
    from ._perfetto import write_perfetto as write_perfetto
    from ._reports import REPORT_NAMES as REPORT_NAMES
    from ._reports import REPORTS as REPORTS
    from ._reports import run_reports as run_reports
    from ._window import TimeWindow as TimeWindow

_LAZY = {
    "TraceDB": "._analyze",
    "VIEW_NAMES": "._duck",
    "VIEWS": "._duck",
    "View": "._duck",
    "views_help": "._duck",
    "views_markdown": "._duck",
    "ResultTable": "._format",
    "cell_text": "._format",
    "table_csv": "._format",
    "table_json": "._format",
    "render_report": "._html",
    "TraceInfo": "._load",
    "Monitors": "._monitors",
    "Violation": "._monitors",
    "standard_monitors": "._monitors",
    "perfetto_events": "._perfetto",
    "write_perfetto": "._perfetto",
    "REPORT_NAMES": "._reports",
    "REPORTS": "._reports",
    "run_reports": "._reports",
    "TimeWindow": "._window",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'traces' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
