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
    # A first-level partition someone sub-partitioned on the key, with leaves missing, while the spec
    # declares no sub-level: counted as coverage (test_known_defects.py pins it). Only that symptom: the
    # row is refused by a partition of the table, not by the table itself.
    Known("unmanaged-sub-level-holes", "found by the range sub-level explorer (reported to the lead)",
          lambda b: b.invariant == "no gap inside the window while Ready" and b.result is not None
          and not b.result.spec.get("subpartition") and any(
              m != b.result.spec["table"]["name"] for m in re.findall(r'no partition of relation "([^"]+)"', b.detail))),
    # Leaves built LIKE the table (no identity) and attached before their parent: PostgreSQL 17+ refuses
    # to DETACH the parent (it drops the identity it gave it). New children are attached first now; a
    # DEFAULT-row move still builds its child detached.
    Known("detach-identity-leaves", "a DEFAULT-row move into a sub-partitioned partition; pinned by "
          "tests/integration/test_partition_reconcile.py (the plain creation path is fixed)",
          lambda b: b.invariant == "no planned statement fails" and "is not an identity column" in b.detail),
    # After a conversion's swap, the dry run omits dropping the original (convert.dropOriginal) that the
    # real run executes. test_known_defects.py pins it.
    Known("dry-run-omits-drop-original", "found by the range sub-level explorer (reported to the lead)",
          lambda b: b.invariant == "dry-run plan equals what runs"
          and re.search(r"ran but not planned \[[^\]]*DROP TABLE IF EXISTS [^\]]*_unpartitioned", b.detail) is not None),
]

# Found by differential re-runs in the explorer (see exploring.explore()).
PRUNE_OTHERS = Known("prune-drops-others", "issue 12 item 7 (branch index)", lambda b: False)


def by_symptom(b: Broken) -> Known | None:
    return next((k for k in [*KNOWN, *FOUND] if k.matches(b)), None)
