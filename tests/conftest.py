"""Shared test helpers: where the s390-tools vectors are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_vectors() -> Path:
    env = os.environ.get("SESIM_VECTORS")
    if env:
        return Path(env)
    # The vectors live in ../shared beside the checkout (CI lays a copy there too).
    for base in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        candidate = base / "vectors" / "s390-tools"
        if candidate.is_dir():
            return candidate
    raise RuntimeError("s390-tools vectors not found; set SESIM_VECTORS to vectors/s390-tools")


VECTORS = _find_vectors()
ASSETS = VECTORS / "rust" / "pv" / "tests" / "assets"
CERTS = ASSETS / "cert"
KEYS = ASSETS / "keys"
EXP = ASSETS / "exp"


@pytest.fixture(name="vectors")
def _vectors() -> Path:
    return VECTORS


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the race scenarios over 10,000 seeds each (default: 200)",
    )


@pytest.fixture(name="seeds")
def _seeds(request: pytest.FixtureRequest) -> range:
    """Seeds of a race scenario: 200, or 10,000 with --long (the long run is marked slow)."""
    if request.config.getoption("--long"):
        request.node.add_marker(pytest.mark.slow)
        return range(10_000)
    return range(200)
