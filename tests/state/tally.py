"""Counters of the state-space suite, printed per kind at the end of the session (tests/figures.py).

Every number is counted by the code that did the work: a state is counted when it was built in the
database, a spec when it was reconciled, an invariant when it was evaluated."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from ..figures import FIGURES

# The long form: `PGCURATOR_STATE_FULL=1 pytest tests/state` explores many more examples.
FULL = os.environ.get("PGCURATOR_STATE_FULL") == "1"

_SEEN: dict[tuple[str, str], set[str]] = {}


def _key(kind: str, what: str) -> str:
    return f"state-space {kind}: {what}"


def bump(kind: str, what: str, n: int = 1) -> None:
    key = _key(kind, what)
    FIGURES[key] = int(FIGURES.get(key, 0)) + n


def distinct(kind: str, what: str, value: Any) -> None:
    """Count `value` once per session (states explored, specs tried are distinct ones)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
    seen = _SEEN.setdefault((kind, what), set())
    if digest not in seen:
        seen.add(digest)
        FIGURES[_key(kind, what)] = len(seen)


def examples(quick: int, full: int = 0) -> int:
    """max_examples for hypothesis: the quick form in the default run, more on demand."""
    return (full or quick * 20) if FULL else quick
