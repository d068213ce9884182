"""Pure judgements over observed indexes: duplicates, redundant prefixes, unused ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

from ..catalog.indexes import IndexInfo


@dataclass(frozen=True)
class Overlap:
    index: str  # the one that could go
    other: str  # the one that covers it
    kind: str  # duplicate | redundant
    reason: str


def _per_key(info: IndexInfo) -> list[tuple[str, ...]]:
    """Key text plus its opclass, ordering option and collation, one tuple per key."""
    opts = [o.split() for o in info.key_options] if info.key_options else []
    out = []
    for n, key in enumerate(info.key_columns):
        out.append((key, *(col[n] if n < len(col) else "" for col in opts)))
    return out


def _keep_first(a: IndexInfo, b: IndexInfo) -> bool:
    """Of two duplicates, which one stays: constraint-backing, then unique, then the older name order."""
    return (a.backs_constraint, a.unique, b.name) > (b.backs_constraint, b.unique, a.name)


def find_overlaps(indexes: Sequence[IndexInfo]) -> list[Overlap]:
    """Duplicate: same method, keys (with opclass/order/collation), predicate and INCLUDE set.
    Redundant: a non-unique index whose keys are a leading prefix of another's (btree), with the
    same method and predicate — the longer index answers every query the shorter one does."""
    valid = [i for i in indexes if i.valid]
    out: list[Overlap] = []
    for a in valid:
        for b in valid:
            if a is b or a.method != b.method or (a.predicate or "") != (b.predicate or ""):
                continue
            ka, kb = _per_key(a), _per_key(b)
            if ka == kb:
                if a.unique != b.unique:
                    # The unique one enforces something; the other is redundant with it.
                    if not a.unique and not a.backs_constraint:
                        out.append(Overlap(a.name, b.name, "redundant", f"same keys as unique index {b.name}"))
                    continue
                if set(a.include_columns) == set(b.include_columns):
                    if not _keep_first(a, b):
                        out.append(Overlap(a.name, b.name, "duplicate", f"same definition as {b.name}"))
                elif set(a.include_columns) < set(b.include_columns) and not a.backs_constraint:
                    out.append(Overlap(a.name, b.name, "redundant", f"{b.name} has the same keys and more INCLUDE"))
                continue
            if (
                a.method == "btree"
                and not a.unique
                and not a.backs_constraint
                and len(ka) < len(kb)
                and kb[: len(ka)] == ka
                and set(a.include_columns) <= {k[0] for k in kb} | set(b.include_columns)
            ):
                cols = ", ".join(k[0] for k in ka)
                out.append(Overlap(a.name, b.name, "redundant", f"({cols}) is a leading prefix of {b.name}"))
    return out


@dataclass(frozen=True)
class Usage:
    unused: bool
    scans_in_window: int | None  # None: not observed for the whole window yet
    observed_since: datetime | None


def usage_over_window(
    snapshots: Sequence[tuple[datetime, int]], current: int, now: datetime, window: timedelta
) -> Usage:
    """Scans over the window from usage snapshots (time, idx_scan), robust to statistics resets:
    a counter that went down was reset, so its new value is all new scans."""
    if not snapshots:
        return Usage(False, None, None)
    ordered = sorted(snapshots)
    first = ordered[0][0]
    if first > now - window:
        return Usage(False, None, first)
    start = now - window
    baseline = [s for s in ordered if s[0] <= start][-1:]
    points = [*baseline, *[s for s in ordered if s[0] > start], (now, current)]
    scans = 0
    for (_, prev), (_, cur) in pairwise(points):
        scans += cur - prev if cur >= prev else cur
    return Usage(scans == 0, scans, first)
