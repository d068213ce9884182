"""Figures measured by tests (reliability suite), printed as one table at the end of the session."""

from __future__ import annotations

import os
from typing import Any

FULL = os.environ.get("PGCURATOR_RELIABILITY_FULL") == "1"
FIGURES: dict[str, Any] = {}


def record(name: str, value: Any) -> None:
    FIGURES[name] = value
