"""Benchmark: ``sesim analyze`` throughput against a plain ``json.loads`` loop.

Runs the demo once for a real trace, then builds a trace of at least a
million events from it: the demo's events repeated with step, virtual time
and correlation ids shifted so that each copy follows the last (a long run
in which the same four guests boot, work and stop again and again; every
line is in the real format, written by orjson with sorted keys as the trace
writer writes them).

In the same run it times, best of ``--repeat``, each measurement in a fresh
Python process of its own (as a user runs them; one process's leftover heap
otherwise slows the next measurement down), timing only the work, not the
interpreter's start-up or imports:

* a plain loop of ``json.loads`` over the file's lines (nothing kept);
* ``sesim analyze FILE`` (the click command, all canned tables drawn, output
  captured);
* the same on the Parquet table ``sesim traces convert`` writes.

and prints events per second and the ratio analyze / json.loads
(target ≥ 3).

Usage: ``python bench/analyze.py [--events 1000000] [--repeat 3] [--dir D] [--quick]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sesim._cli import main  # noqa: E402
from sesim._simulation import demo_config, run  # noqa: E402


def build_trace(path: Path, events: int, seed: int = 1) -> int:
    """Write a trace of at least ``events`` events; returns how many it has."""
    demo = path.with_name("demo-source.jsonl")
    run(demo_config(), seed=seed, trace=demo)
    lines = demo.read_bytes().splitlines()
    head, body = lines[0], [orjson.loads(line) for line in lines[1:]]
    span_t = max(e["t"] for e in body) + 1_000
    span_step = max(e["step"] for e in body)
    span_corr = max(e.get("corr", 0) for e in body)
    written = 0
    with open(path, "wb") as out:
        out.write(head + b"\n")
        copy = 0
        while written < events:
            chunk = []
            for e in body:
                e = dict(e)
                e["step"] += copy * span_step
                e["t"] += copy * span_t
                if "sent" in e:
                    e["sent"] += copy * span_t
                if "corr" in e:
                    e["corr"] += copy * span_corr
                chunk.append(orjson.dumps(e, option=orjson.OPT_SORT_KEYS))
            out.write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
            copy += 1
    demo.unlink()
    return written


_JSON_LOOP = """
import json, sys, time
start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    for line in f:
        json.loads(line)
print(time.perf_counter() - start)
"""

_ANALYZE = """
import sys, time
sys.path.insert(0, sys.argv[2])
from click.testing import CliRunner
from sesim._cli import main
import traces._analyze  # import DuckDB before the clock starts
start = time.perf_counter()
result = CliRunner().invoke(main, ["analyze", sys.argv[1]])
elapsed = time.perf_counter() - start
if result.exit_code != 0:
    raise SystemExit(result.output + result.stderr)
print(elapsed)
"""

REPO = Path(__file__).resolve().parents[1]


def _child(code: str, *args: str) -> float:
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SystemExit(f"measurement failed: {run.stdout}{run.stderr}")
    return float(run.stdout.strip().splitlines()[-1])


def json_loads_loop(path: Path) -> float:
    return _child(_JSON_LOOP, str(path))


def analyze(path: Path) -> float:
    return _child(_ANALYZE, str(path), str(REPO))


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the trace (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the trace (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a small trace, one run (CI smoke test)")
    args = parser.parse_args()
    events = 20_000 if args.quick else args.events
    repeat = 1 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        trace = Path(tmp) / "big.jsonl"
        start = time.perf_counter()
        n = build_trace(trace, events)
        size = trace.stat().st_size
        print(f"trace: {n:,} events, {size / 1e6:.0f} MB (built in {time.perf_counter() - start:.1f} s)")
        loads, analysed = [], []
        for _ in range(repeat):  # alternate, so that a busy moment of the machine hits both
            loads.append(json_loads_loop(trace))
            analysed.append(analyze(trace))
        parquet = Path(tmp) / "big.parquet"
        convert = time.perf_counter()
        CliRunner().invoke(main, ["traces", "convert", str(trace), "-o", str(parquet)])
        convert = time.perf_counter() - convert
        from_parquet = min(analyze(parquet) for _ in range(repeat))
        best_loads, best_analyze = min(loads), min(analysed)
        print(f"json.loads loop:          {n / best_loads:12,.0f} events/s  ({best_loads:.2f} s)")
        print(f"sesim analyze (JSONL):    {n / best_analyze:12,.0f} events/s  ({best_analyze:.2f} s)")
        print(f"sesim analyze (Parquet):  {n / from_parquet:12,.0f} events/s  ({from_parquet:.2f} s;"
              f" convert {convert:.1f} s, {parquet.stat().st_size / 1e6:.0f} MB)")  # fmt: skip
        print(f"ratio analyze/json.loads: {best_loads / best_analyze:.2f} (target >= 3)")


if __name__ == "__main__":
    main_()
