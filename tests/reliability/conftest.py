"""The reliability suite (issue 8). Figures go to tests/figures.py and are printed at the end
of the session; `hack/reliability.sh --full` runs the long form."""

from __future__ import annotations

from ..figures import FULL, record

__all__ = ["FULL", "record"]
