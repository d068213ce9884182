"""The reliability suite (issue 8): every test records its figures here, and the session ends
with one table of them. `hack/reliability.sh` runs the suite; `--full` runs the long form."""

from __future__ import annotations

import os
from typing import Any

import pytest

FULL = os.environ.get("PGCURATOR_RELIABILITY_FULL") == "1"
FIGURES: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    FIGURES[name] = value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("pgcurator reliability figures" + (" (full)" if FULL else " (quick)"))
    width = max(len(k) for k in FIGURES)
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key.ljust(width)}  {value}")


@pytest.fixture(scope="session")
def full() -> bool:
    return FULL
