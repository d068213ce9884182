"""Recall arithmetic for VectorIndex: the search values tried, recall@k, percentiles and the
recommended value. Pure."""

from __future__ import annotations

import math

# ----------------------------------------------------------------------------- recall

HNSW_SEARCH_VALUES = (10, 20, 40, 80, 160, 320)
HNSW_MAX_EF_SEARCH = 1000


def search_parameter(method: str) -> str:
    return "hnsw.ef_search" if method == "hnsw" else "ivfflat.probes"


def search_values(method: str, requested: list[int] | None, lists: int | None) -> list[int]:
    if method == "hnsw":
        vals = requested or list(HNSW_SEARCH_VALUES)
        return sorted({min(v, HNSW_MAX_EF_SEARCH) for v in vals})
    cap = max(1, lists or 1)
    if requested:
        return sorted({min(v, cap) for v in requested})
    out: list[int] = []
    v = 1
    while v < cap and len(out) < 10:
        out.append(v)
        v *= 2
    out.append(cap)
    return sorted(set(out))


def recall_at_k(exact: list[list[object]], approx: list[list[object]], k: int) -> float:
    """Mean over queries of |approx ∩ exact| / |exact| (exact truncated to k)."""
    if not exact:
        return 0.0
    total = 0.0
    for e, a in zip(exact, approx, strict=True):
        truth = set(e[:k])
        total += len(truth & set(a[:k])) / len(truth) if truth else 1.0
    return total / len(exact)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return 0.0
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[rank - 1]


def recommend(results: list[tuple[int, float]], target: float) -> int | None:
    """The smallest search value whose recall reaches the target (results: (value, recall))."""
    for value, recall in sorted(results):
        if recall >= target:
            return value
    return None
