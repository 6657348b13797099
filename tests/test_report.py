"""``sesim report``: one self-contained HTML page, checked in headless Chromium.

The rendering test needs Debian's ``chromium`` package on the PATH (CI installs
it); it fails, rather than skips, without it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from trace_samples import demo_trace, future_trace, race_trace

from protocol import UsageError
from traces import TimeWindow, TraceDB, render_report
from traces._svg import latency_histogram

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


@pytest.fixture(name="db", scope="module")
def _db(tmp_path_factory: pytest.TempPathFactory) -> TraceDB:
    with TraceDB.open([demo_trace(tmp_path_factory.mktemp("demo"))]) as db:
        yield db


@pytest.fixture(name="page", scope="module")
def _page(db: TraceDB) -> str:
    return render_report(db)


def test_page_needs_no_network(page: str) -> None:
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(link|img|iframe)\b|\bsrc=|@import", page)


def test_sequence_diagram_has_a_lifeline_per_actor(db: TraceDB) -> None:
    page = render_report(db, window=TimeWindow.parse("0:"))  # from the start: the LPAR speaks first
    lifelines = re.findall(r'<g class="lifeline" data-actor="([^"]+)"', page)
    assert {"uv", "lpar", "kvm"} <= set(lifelines)
    assert len(lifelines) == len(set(lifelines))
    assert page.count('<g class="message') > 50


def test_sequence_diagram_draws_the_chosen_window(db: TraceDB) -> None:
    page = render_report(db, window=TimeWindow.parse("500us:520us"), max_messages=40)
    times = [float(t.replace(",", "")) for t in re.findall(r'class="time">([\d,.]+) µs<', page)]
    assert times and all(500 <= t <= 520 for t in times)


def test_page_has_the_three_pictures(page: str) -> None:
    for picture in ('id="sequence"', 'id="frames"', 'id="latency"'):
        assert picture in page
    assert page.count('class="state"') > 10


def test_text_from_the_trace_is_escaped(tmp_path: Path) -> None:
    with TraceDB.open([future_trace(tmp_path / "f.jsonl")]) as db:
        page = render_report(db)
    assert "<secret>" not in page
    assert "&lt;secret&gt;" in page


def test_report_starts_at_the_first_race_by_default(tmp_path: Path) -> None:
    with TraceDB.open([race_trace(tmp_path / "race.jsonl")]) as db:
        page = render_report(db)
    first = re.search(r'class="time">([\d,.]+) µs<', page)
    assert first and float(first.group(1)) >= 100


def test_report_takes_one_trace(tmp_path: Path) -> None:
    a = race_trace(tmp_path / "a.jsonl")
    b = race_trace(tmp_path / "b.jsonl")
    with TraceDB.open([a, b]) as db, pytest.raises(UsageError, match="one trace"):
        render_report(db)


def test_histogram_counts_every_sample() -> None:
    samples = [("A", 0), ("A", 800), ("B", 3000), ("B", 3500), ("B", 150_000)]
    svg = latency_histogram(samples)
    totals = [int(n) for n in re.findall(r'class="axis">(\d+)</text>', svg.split("latency (virtual")[0])]
    bars = re.findall(r"<title>(\w+): (\d+) calls, ([^<]+)</title>", svg)
    assert sum(int(n) for _, n, _ in bars) == len(samples)
    assert {(c, b) for c, _, b in bars} == {("A", "0"), ("A", "≤1"), ("B", "2–4"), ("B", "128–256")}
    assert totals


# ------------------------------------------------------------ in Chromium
def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "Debian's chromium package is needed for this test (apt-get install chromium)"
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip


def _png_pixels(path: Path) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and the unfiltered rows of an 8-bit RGB or RGBA PNG (PNG spec §9)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = zlib.decompress(b"".join(idat))
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def test_report_renders_in_chromium(tmp_path: Path, page: str) -> None:
    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")
    png = tmp_path / "shot.png"
    shot = _chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,1000", html.as_uri())
    assert png.exists(), shot.stderr[-2000:]
    width, height, bpp, rows = _png_pixels(png)
    assert (width, height) == (1400, 1000)
    pixels = [row[i : i + 3] for row in rows[::4] for i in range(0, len(row), 4 * bpp)]  # every 4th pixel
    colours = set(pixels)
    inked = sum(1 for p in pixels if p != b"\xff\xff\xff")
    assert len(colours) > 20, "the screenshot is nearly blank"
    assert inked > 0.03 * (height // 4) * (width // 4)
    dom = _chromium(tmp_path, "--dump-dom", html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<svg id="sequence"' in dom.stdout
    assert len(re.findall(r'class="lifeline"', dom.stdout)) >= 3
