"""pgvector's rules over a whole VectorIndex spec, twice: as CEL for the API server, and as the
model validator's checks with the change that satisfies them (the refusal's example)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import PlanError
from .examples import Example, eg
from .pgvector import MAX_INDEX_DIMENSIONS, MAX_TYPE_DIMENSIONS, OPCLASSES, select_opclass

if TYPE_CHECKING:
    from .vector import VectorIndexSpec


def _type_rules() -> list[dict[str, str]]:
    """pgvector's dimension limits and operator classes (pgvector.py) as CEL: one table, two checkers."""
    rules = [{
        "rule": f"self.type != '{t}' || self.dimensions <= {limit}",
        "message": f"{t} indexes hold at most {limit} dimensions, {eg('dimensions', limit)}",
        "fieldPath": ".dimensions",
    } for t, limit in MAX_INDEX_DIMENSIONS.items()]
    for t in MAX_TYPE_DIMENSIONS:  # every element type, in the order the CRD has always listed them
        fits = sorted(m for (ty, m) in OPCLASSES if ty == t)
        rules.append({"rule": f"self.type != '{t}' || self.metric in {fits!r}".replace('"', "'"),
                      "message": f"metric does not apply to {t}; {t} supports {', '.join(fits)}, {eg('metric', fits[0])}",
                      "fieldPath": ".metric"})
    ivf = sorted(f"{t}/{m}" for (t, m), (_, methods) in OPCLASSES.items() if "ivfflat" in methods)
    rules.append({"rule": f"!has(self.method) || self.method != 'ivfflat' || (self.type + '/' + self.metric) in "
                  f"{ivf!r}".replace('"', "'"),
                  "message": f"ivfflat cannot index this type with this metric; use method hnsw, {eg('method', 'hnsw')}",
                  "fieldPath": ".method"})
    return rules


VECTOR_INDEX_CEL: list[dict[str, str]] = [
    *_type_rules(),
    {
        "rule": "!has(self.hnsw) || !has(self.hnsw.m) || !has(self.hnsw.efConstruction) || "
        "self.hnsw.efConstruction >= 2 * self.hnsw.m",
        "message": f"hnsw.efConstruction must be at least 2*m, {eg('hnsw', {'m': 16, 'efConstruction': 64})}",
    },
    {
        "rule": "!(has(self.method) && self.method == 'ivfflat' && self.type == 'sparsevec')",
        "message": f"ivfflat cannot index sparsevec; use method hnsw, {eg('method', 'hnsw')}",
    },
    {
        "rule": "!(has(self.method) && self.method == 'ivfflat' && has(self.hnsw))",
        "message": f"hnsw parameters given for method ivfflat; remove them, {eg('hnsw', None)}",
    },
    {
        "rule": "!((!has(self.method) || self.method == 'hnsw') && has(self.ivfflat))",
        "message": f"ivfflat parameters given for method hnsw; remove them, {eg('ivfflat', None)}",
    },
]


def spec_fix(spec: VectorIndexSpec) -> Example:
    """The change that satisfies every rule spec_problems checks, for the refusal's example."""
    t, method = spec.type.value, spec.method.value
    pairs: dict[str, object] = {}
    if (t, spec.metric.value) not in OPCLASSES or method not in OPCLASSES[(t, spec.metric.value)][1]:
        fits = [m for (ty, m), (_, methods) in sorted(OPCLASSES.items()) if ty == t and method in methods]
        pairs.update({"metric": fits[0]} if fits else {"method": "hnsw"})
    limit = min(MAX_INDEX_DIMENSIONS.get(t, MAX_TYPE_DIMENSIONS[t]), MAX_TYPE_DIMENSIONS[t])
    if spec.dimensions > limit:
        pairs["dimensions"] = limit
    if pairs.get("method", method) == "hnsw" and spec.ivfflat is not None:
        pairs["ivfflat"] = None
    if method == "ivfflat" and spec.hnsw is not None:
        pairs["hnsw"] = None
    return Example(tuple(pairs.items()))


def spec_problems(spec: VectorIndexSpec) -> list[str]:
    """Every rule the spec breaks (empty: fine). Called by the model validator."""
    problems: list[str] = []
    t, metric, method = spec.type.value, spec.metric.value, spec.method.value
    try:
        select_opclass(t, metric, method)
    except PlanError as exc:
        problems.append(exc.message)
    limit = MAX_INDEX_DIMENSIONS.get(t)
    if limit is not None and spec.dimensions > limit:
        problems.append(f"{t} indexes hold at most {limit} dimensions, not {spec.dimensions}"
                        + ("; halfvec allows 4000 (cast with an expression index) or reduce dimensions"
                           if t == "vector" else ""))
    if spec.dimensions > MAX_TYPE_DIMENSIONS[t]:
        problems.append(f"{t} allows at most {MAX_TYPE_DIMENSIONS[t]} dimensions")
    if method == "hnsw" and spec.ivfflat is not None:
        problems.append("ivfflat parameters given for method hnsw")
    if method == "ivfflat" and spec.hnsw is not None:
        problems.append("hnsw parameters given for method ivfflat")
    return problems
