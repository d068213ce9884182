"""pgvector's rules, as data: operator classes per type and metric, the distance operators,
dimension limits and the oldest safe version. Used by the model (to refuse a spec) and by the
planner; depends on nothing above it."""

from __future__ import annotations

import re

from ..errors import PlanError

# (type, metric) -> (operator class, the methods that support it). From pgvector 0.8's README:
# ivfflat has no l1 / jaccard / sparsevec support.
OPCLASSES: dict[tuple[str, str], tuple[str, frozenset[str]]] = {
    ("vector", "l2"): ("vector_l2_ops", frozenset({"hnsw", "ivfflat"})),
    ("vector", "innerProduct"): ("vector_ip_ops", frozenset({"hnsw", "ivfflat"})),
    ("vector", "cosine"): ("vector_cosine_ops", frozenset({"hnsw", "ivfflat"})),
    ("vector", "l1"): ("vector_l1_ops", frozenset({"hnsw"})),
    ("halfvec", "l2"): ("halfvec_l2_ops", frozenset({"hnsw", "ivfflat"})),
    ("halfvec", "innerProduct"): ("halfvec_ip_ops", frozenset({"hnsw", "ivfflat"})),
    ("halfvec", "cosine"): ("halfvec_cosine_ops", frozenset({"hnsw", "ivfflat"})),
    ("halfvec", "l1"): ("halfvec_l1_ops", frozenset({"hnsw"})),
    ("bit", "hamming"): ("bit_hamming_ops", frozenset({"hnsw", "ivfflat"})),
    ("bit", "jaccard"): ("bit_jaccard_ops", frozenset({"hnsw"})),
    ("sparsevec", "l2"): ("sparsevec_l2_ops", frozenset({"hnsw"})),
    ("sparsevec", "innerProduct"): ("sparsevec_ip_ops", frozenset({"hnsw"})),
    ("sparsevec", "cosine"): ("sparsevec_cosine_ops", frozenset({"hnsw"})),
    ("sparsevec", "l1"): ("sparsevec_l1_ops", frozenset({"hnsw"})),
}

# The distance operator each metric is queried with.
OPERATORS: dict[str, str] = {
    "l2": "<->", "innerProduct": "<#>", "cosine": "<=>", "l1": "<+>", "hamming": "<~>", "jaccard": "<%>",
}

# Largest indexable dimension per type (HNSW and IVFFlat alike); sparsevec: non-zero elements.
MAX_INDEX_DIMENSIONS: dict[str, int] = {"vector": 2000, "halfvec": 4000, "bit": 64000}
# What the types themselves allow (a column can be wider than an index can cover).
MAX_TYPE_DIMENSIONS: dict[str, int] = {"vector": 16000, "halfvec": 16000, "bit": 83886080,
                                       "sparsevec": 1_000_000_000}

# Known data-corrupting bugs were fixed in pgvector 0.8.4: older installs are reported, not used.
MIN_PGVECTOR = (0, 8, 4)


def select_opclass(type_: str, metric: str, method: str) -> str:
    """The operator class for type x metric x method, or PlanError with what would work instead."""
    entry = OPCLASSES.get((type_, metric))
    if entry is None:
        fits = sorted(m for (t, m) in OPCLASSES if t == type_)
        raise PlanError(f"metric {metric} does not apply to {type_}; {type_} supports {', '.join(fits)}",
                        reason="InvalidSpec")
    opclass, methods = entry
    if method not in methods:
        raise PlanError(f"{method} cannot index {type_} with metric {metric}; use method "
                        f"{' or '.join(sorted(methods))}", reason="InvalidSpec")
    return opclass


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def version_ok(text: str) -> bool:
    return parse_version(text) >= MIN_PGVECTOR
