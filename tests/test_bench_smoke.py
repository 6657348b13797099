"""The image benchmark runs end to end (no timing assertion)."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_image_bench_quick_prints_a_ratio_line() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "image.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^ratio create/bare: \d+\.\d+ \(target >= 0\.7\)$", run.stdout, re.M)


def test_fabric_bench_quick_prints_its_ratio_and_spread() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fabric.py"), "--quick"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^ratio UVC / ping-pong rate: +\d+\.\d+ +\(target >= 0\.5\)$", run.stdout, re.M)
    assert re.search(r"^spread across 1/8/64 guests: +\d+ %", run.stdout, re.M)


def test_stress_bench_quick_prints_its_speed_up_and_replay_ratio() -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "stress.py"), "--quick"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert re.search(r"^speed-up with 2 workers: +\d+\.\d+ +\(target >= 1\.7\)$", run.stdout, re.M)
    assert re.search(r"^replay speed / original run: +\d+\.\d+ +\(target >= 0\.9\)$", run.stdout, re.M)
