"""Defects already being fixed on other branches (issue 12's numbered items and the lead's shared
mechanisms). The explorer forgives a failure ONLY when it is attributed to one of these, and counts
the hit; every entry has a pinned reproduction marked `xfail(strict=True)` in test_known_defects.py,
which turns red once the fix is merged. When merging a fix: remove its marker there AND its entry
here, so the explorer stops forgiving it.

Attribution is by experiment where possible (the same state without the database-level setting,
or with the metadata schema in place, passes) and otherwise by the symptom."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .invariants import Broken


@dataclass(frozen=True)
class Known:
    key: str
    where: str  # issue item and the branch fixing it
    matches: Callable[[Broken], bool]


def _msg(b: Broken) -> str:
    text = b.detail
    if b.result is not None:
        text += " " + b.result.message + " " + " ".join(b.result.tracebacks)
    return text


KNOWN: list[Known] = [
    Known("planner-valueerror", "issue 12 item 13 (branch partition)",
          lambda b: b.invariant == "no InternalError" and bool(
              re.search(r"(ValueError|OverflowError|DatetimeFieldOverflow|date value out of range|"
                        r"year \d+ is out of range|timestamp out of range)", _msg(b)))),
]

# Found by this suite (not in issue 12's list); reported to the owner with a minimal reproduction.
FOUND: list[Known] = [
]

# Found by differential re-runs in the explorer (see exploring.explore()).
PRUNE_OTHERS = Known("prune-drops-others", "issue 12 item 7 (branch index)", lambda b: False)


def by_symptom(b: Broken) -> Known | None:
    return next((k for k in [*KNOWN, *FOUND] if k.matches(b)), None)
