"""The three pictures of the HTML report, drawn as inline SVG (no script, no network).

Each function takes plain rows (already queried) and returns one ``<svg>``
element as text; every label is escaped. Native ``<title>`` children give the
details on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any, Final

from attrs import frozen

STATE_COLOURS: Final = {
    "host": "#d9d9d9",
    "donated": "#9e7bb5",
    "secure": "#2e7d32",
    "exported": "#f9a825",
    "shared": "#1e88e5",
    "shared-pinned": "#0d47a1",
}
PALETTE: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _t(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs"


@frozen(kw_only=True)
class Message:
    """One arrow of the sequence diagram (or a note, when ``sender`` is None)."""

    line: int
    t: int
    sender: str | None
    receiver: str
    label: str
    style: str  # request, answer, busy, error, other, note
    detail: str


def sequence_diagram(actors: Sequence[str], messages: Sequence[Message]) -> str:
    """Actors as lifelines (columns), messages as arrows in trace order, top to bottom."""
    col, left, top, row = 118, 86, 46, 21
    width = left + col * len(actors) + 20
    height = top + row * (len(messages) + 1) + 10
    x = {a: left + col * i + col // 2 for i, a in enumerate(actors)}
    out = [
        f'<svg id="sequence" class="diagram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="sequence diagram">',
        "<defs>"
        + "".join(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7"'
            f' orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
            for name, colour in _ARROWS.items()
        )
        + "</defs>",
    ]
    for actor in actors:
        ax = x[actor]
        out.append(
            f'<g class="lifeline" data-actor="{escape(actor)}">'
            f'<rect x="{ax - col // 2 + 6}" y="6" width="{col - 12}" height="24" rx="4" class="actor-box"/>'
            f'<text x="{ax}" y="22" text-anchor="middle" class="actor-name">{escape(_short(actor, 16))}</text>'
            f'<line x1="{ax}" y1="30" x2="{ax}" y2="{height - 6}" class="lifeline-line"/></g>'
        )
    last_t = None
    for i, m in enumerate(messages):
        y = top + row * i + row // 2
        if m.t != last_t:
            out.append(f'<text x="{left - 8}" y="{y + 4}" text-anchor="end" class="time">{_t(m.t)}</text>')
            last_t = m.t
        tip = f"<title>line {m.line}, t = {_t(m.t)}: {escape(m.detail)}</title>"
        if m.sender is None or m.sender not in x:
            rx = x[m.receiver]
            out.append(
                f'<g class="note" data-to="{escape(m.receiver)}">{tip}'
                f'<rect x="{rx - 50}" y="{y - 8}" width="100" height="15" rx="7"/>'
                f'<text x="{rx}" y="{y + 3}" text-anchor="middle">{escape(_short(m.label, 18))}</text></g>'
            )
            continue
        x1, x2 = x[m.sender], x[m.receiver]
        colour = _ARROWS.get(m.style, _ARROWS["other"])
        dash = ' stroke-dasharray="5,3"' if m.style in ("answer", "busy", "error") else ""
        if x1 == x2:
            path = (
                f'<path d="M{x1},{y - 6} h22 v12 h-20" fill="none" stroke="{colour}"{dash}'
                f' marker-end="url(#arrow-{m.style})"/>'
            )
            lx, anchor = x1 + 26, "start"
        else:
            path = (
                f'<line x1="{x1}" y1="{y}" x2="{x2 + (-3 if x2 > x1 else 3)}" y2="{y}" stroke="{colour}"{dash}'
                f' stroke-width="1.4" marker-end="url(#arrow-{m.style})"/>'
            )
            lx, anchor = (x1 + x2) / 2, "middle"
        out.append(
            f'<g class="message {m.style}" data-from="{escape(m.sender)}" data-to="{escape(m.receiver)}">{tip}{path}'
            f'<text x="{lx}" y="{y - 3}" text-anchor="{anchor}" class="label">{escape(_short(m.label, 30))}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


_ARROWS: Final = {
    "request": "#1a4f8b",
    "answer": "#2e7d32",
    "busy": "#c62828",
    "error": "#ef6c00",
    "other": "#6d6d6d",
}


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def frame_timeline(frames: Sequence[tuple[int, int]], spans: Sequence[tuple[Any, ...]], t0: int, t1: int) -> str:
    """A row per frame: its states as coloured bars over virtual time.

    Args:
        frames: ``(pfn, transitions)``, hottest first.
        spans: ``(pfn, state, guest, t_from, t_to)``; ``t_to`` None means until ``t1``.
    """
    left, top, row, width = 150, 28, 22, 1100
    plot = width - left - 20
    span_ns = max(t1 - t0, 1)
    height = top + row * len(frames) + 60
    y_of = {pfn: top + i * row for i, (pfn, _) in enumerate(frames)}

    def px(t: int) -> float:
        return left + plot * (min(max(t, t0), t1) - t0) / span_ns

    out = [
        f'<svg id="frames" class="diagram" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="frame timeline">'
    ]
    for pfn, n in frames:
        y = y_of[pfn]
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" class="axis">pfn {pfn:#x} ({n})</text>')
        out.append(f'<rect x="{left}" y="{y + 3}" width="{plot}" height="{row - 6}" class="frame-bg"/>')
    for pfn, state, guest, t_from, t_to in spans:
        if pfn not in y_of:
            continue
        end = t1 if t_to is None else t_to
        if end < t0 or t_from > t1:
            continue
        x1, x2 = px(t_from), px(end)
        colour = STATE_COLOURS.get(state, "#999999")
        who = f" ({guest})" if guest else ""
        out.append(
            f'<rect class="state" x="{x1:.1f}" y="{y_of[pfn] + 3}" width="{max(x2 - x1, 1.5):.1f}" height="{row - 6}"'
            f' fill="{colour}"><title>pfn {pfn:#x}: {escape(state)}{escape(who)} from {_t(t_from)}'
            f"{'' if t_to is None else ' to ' + _t(t_to)}</title></rect>"
        )
    axis_y = top + row * len(frames) + 4
    for i in range(6):
        t = t0 + span_ns * i // 5
        out.append(
            f'<line x1="{px(t):.1f}" y1="{top}" x2="{px(t):.1f}" y2="{axis_y}" class="grid"/>'
            f'<text x="{px(t):.1f}" y="{axis_y + 14}" text-anchor="middle" class="axis">{_t(t)}</text>'
        )
    lx = left
    for state, colour in STATE_COLOURS.items():
        out.append(
            f'<rect x="{lx}" y="{axis_y + 26}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{axis_y + 36}" class="axis">{state}</text>'
        )
        lx += 24 + 8 * len(state)
    out.append("</svg>")
    return "".join(out)


def latency_histogram(samples: Sequence[tuple[str, int]]) -> str:
    """UVC latencies (virtual µs) in power-of-two bins, bars stacked by command.

    Args:
        samples: ``(command, latency_ns)``.
    """
    edges = [0.0]  # bin 0 holds exactly 0 µs; then (0, 1], (1, 2], (2, 4], ...
    top_us = max((lat / 1000 for _, lat in samples), default=1.0)
    edge = 1.0
    while True:
        edges.append(edge)
        if edge >= top_us:
            break
        edge *= 2
    counts: dict[str, list[int]] = {}
    for command, lat in samples:
        us = lat / 1000
        b = 0 if us <= 0 else 1 if us <= 1 else min(len(edges) - 1, math.ceil(math.log2(us)) + 1)
        counts.setdefault(command, [0] * len(edges))[b] += 1
    ranked = sorted(counts, key=lambda c: -sum(counts[c]))
    shown = ranked[: len(PALETTE) - 1]
    if len(ranked) > len(shown):
        other = [sum(counts[c][i] for c in ranked[len(shown) :]) for i in range(len(edges))]
        counts = {**{c: counts[c] for c in shown}, "other": other}
        shown.append("other")
    totals = [sum(counts[c][i] for c in shown) for i in range(len(edges))]
    left, top, width, height, legend_w = 60, 20, 900, 300, 230
    bw = (width - left - 20) / len(edges)
    ymax = max(totals + [1])
    out = [
        f'<svg id="latency" class="diagram" xmlns="http://www.w3.org/2000/svg" width="{width + legend_w}"'
        f' height="{height + 50}" viewBox="0 0 {width + legend_w} {height + 50}" role="img"'
        ' aria-label="latency histogram">'
    ]
    for i in range(5):
        v = ymax * i / 4
        y = top + height * (1 - i / 4)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{v:,.0f}</text>'
        )
    for i in range(len(edges)):
        x = left + i * bw
        base = top + height
        for j, command in enumerate(shown):
            n = counts[command][i]
            if not n:
                continue
            h = height * n / ymax
            base -= h
            out.append(
                f'<rect x="{x + 3:.1f}" y="{base:.1f}" width="{bw - 6:.1f}" height="{h:.1f}" fill="{PALETTE[j]}">'
                f"<title>{escape(command)}: {n} calls, {_bin_label(edges, i)}</title></rect>"
            )
        if totals[i]:
            out.append(
                f'<text x="{x + bw / 2:.1f}" y="{base - 4:.1f}" text-anchor="middle" class="axis">{totals[i]}</text>'
            )
        out.append(
            f'<text x="{x + bw / 2:.1f}" y="{top + height + 16}" text-anchor="middle" class="axis">'
            f"{_bin_label(edges, i)}</text>"
        )
    out.append(f'<text x="{left + (width - left) / 2}" y="{top + height + 40}" text-anchor="middle" class="axis">'
               "latency (virtual µs, reply − sent)</text>")  # fmt: skip
    for j, command in enumerate(shown):
        y = top + 10 + j * 20
        out.append(
            f'<rect x="{width + 10}" y="{y - 10}" width="12" height="12" fill="{PALETTE[j]}"/>'
            f'<text x="{width + 28}" y="{y}" class="axis">{escape(command)} ({sum(counts[command])})</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _bin_label(edges: Sequence[float], i: int) -> str:
    if i == 0:
        return "0"
    lo = 0 if i == 1 else edges[i - 1]
    return f"≤{edges[i]:g}" if lo == 0 else f"{lo:g}–{edges[i]:g}"
