"""Index candidates from a workload, pure part (shared by IndexPolicy suggestions and the monitor).

From each statement's usage of a table (planner.advice_parse) one B-tree is proposed, the usual
composite rule made precise:
- keys: the equality columns, most selective first (pg_stats: most_common_freqs for a constant,
  n_distinct for a parameter, so a join key with few values cannot lead), then the ORDER BY
  columns when the statement is LIMITed or has no range, else the most selective range column;
- a constant test that is not a key goes into a partial index's WHERE: null tests (never keys),
  ranges on literals (`retry_count < 3`), and equalities on a rare value (`status = 'active'`
  when that value is at most RARE of the rows); a non-rare constant (`is_read = false`) stays a key;
- `doc->>'k' = v` gives an expression key; `@>`/`?` give a GIN (jsonb_path_ops when only `@>`);
- wide or non-B-tree columns (vectors, long text) are never keys.
The database side (reconcile.advice) checks every candidate with the planner, each on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..catalog.advice import ColumnStats, ExistingIndex, TableStats
from ..sql.quote import fit_identifier
from .advice_parse import Conjunct, Kind, TableKey, Usage, quote_name

RARE = 0.1  # a constant equality selecting at most this fraction of rows goes into WHERE
MAX_KEYS = 4
WIDE_BYTES = 200  # pg_stats.avg_width above this: not a key (a B-tree entry is at most ~2.7 kB)
UNKNOWN_EQ_SELECTIVITY = 0.005  # PostgreSQL's DEFAULT_EQ_SEL
NOT_BTREE_TYPES = ("vector", "halfvec", "sparsevec", "bit", "tsvector", "json", "jsonb", "xml", "point",
                   "polygon", "circle", "box", "path", "line", "lseg")


def _base_type(s: ColumnStats) -> str:
    return s.type.split("(")[0].strip()


def can_be_key(s: ColumnStats) -> bool:
    return _base_type(s) not in NOT_BTREE_TYPES and not s.type.endswith("[]") and s.avg_width <= WIDE_BYTES


def distinct(stats: TableStats, column: str) -> float:
    s = stats.columns.get(column)
    if s is None or s.n_distinct == 0:
        return 0.0
    return s.n_distinct if s.n_distinct > 0 else -s.n_distinct * max(stats.rows, 1.0)


def selectivity(stats: TableStats, c: Conjunct) -> float:
    """The fraction of rows a test keeps, from pg_stats as the planner reads it (roughly)."""
    s = stats.columns.get(c.column)
    if s is None:
        return UNKNOWN_EQ_SELECTIVITY
    if c.kind is Kind.null:
        return s.null_frac if c.is_null else 1 - s.null_frac
    if c.kind in (Kind.range, Kind.contains):
        return 1 / 3  # PostgreSQL's DEFAULT_INEQ_SEL: ranges are ordered after equalities anyway
    if c.constant is not None:
        value = _literal_text(c.constant)
        if value in s.mcv:
            return s.mcv[value]
        rest = 1 - s.null_frac - sum(s.mcv.values())
        others = distinct(stats, c.column) - len(s.mcv)
        return max(rest, 0.0) / others if others >= 1 else UNKNOWN_EQ_SELECTIVITY
    nd = distinct(stats, c.column)
    return (1 - s.null_frac) / nd if nd >= 1 else UNKNOWN_EQ_SELECTIVITY


def _literal_text(sql: str) -> str:
    """'active' -> active, 'x'::text -> x, true -> t (how pg_stats prints values)."""
    v = sql.split("::")[0].strip()
    if v.startswith("'") and v.endswith("'"):
        return v[1:-1].replace("''", "'")
    return {"true": "t", "false": "f"}.get(v.lower(), v)


@dataclass(frozen=True)
class Key:
    column: str | None = None
    expression: str | None = None
    desc: bool = False
    opclass: str | None = None
    of: str | None = None  # the column an expression key reads

    def sql(self) -> str:
        body = quote_name(self.column) if self.column is not None else f"({self.expression})"
        return body + (f" {self.opclass}" if self.opclass else "") + (" DESC" if self.desc else "")

    def target(self) -> str:
        return self.column if self.column is not None else f"({self.expression})"


@dataclass(frozen=True)
class Candidate:
    table: TableKey
    keys: tuple[Key, ...]
    method: str = "btree"
    where: str | None = None

    def name(self) -> str:
        parts = [k.column or "expr" for k in self.keys]
        return _short(f"idx_{self.table[1]}_{'_'.join(parts)}" + ("_partial" if self.where else ""))

    def definition(self, name: str | None = None, *, concurrently: bool = True, table_sql: str | None = None) -> str:
        schema, table = self.table
        using = "" if self.method == "btree" else f" USING {self.method}"
        where = f" WHERE {self.where}" if self.where else ""
        target = table_sql or f"{quote_name(schema)}.{quote_name(table)}"
        head = "CREATE INDEX " + ("CONCURRENTLY " if concurrently else "") + (f"{quote_name(name)} " if name else "")
        return f"{head}ON {target}{using} ({', '.join(k.sql() for k in self.keys)}){where}"

    def key_columns(self) -> set[str]:
        return {k.column or k.of for k in self.keys if (k.column or k.of) is not None}  # type: ignore[misc]


def _short(name: str) -> str:
    # 63 bytes, not characters, and never two long names cut to the same one
    return fit_identifier(name, "")


def _why(u: Usage, c: Candidate) -> str:
    parts = [f"{k.target()}" for k in c.keys]
    out = f"{c.method} on ({', '.join(parts)})"
    return out + (f" WHERE {c.where}" if c.where else "")


def candidates_for(u: Usage, stats: TableStats) -> list[Candidate]:
    """The candidates one statement's usage of one table motivates: B-trees (one per shape worth
    trying) and at most one GIN."""
    out: list[Candidate] = []
    cols = stats.columns

    def keyable(c: Conjunct) -> bool:
        s = cols.get(c.column)
        return s is not None and can_be_key(s)

    for c in u.conjuncts:
        if c.kind is Kind.contains and c.column in cols:
            s = cols[c.column]
            path_ops = _base_type(s) == "jsonb" and all(
                x.op == "@>" for x in u.conjuncts if x.kind is Kind.contains and x.column == c.column)
            out.append(Candidate(u.table, (Key(c.column, opclass="jsonb_path_ops" if path_ops else None),), "gin"))
            break
    predicate: list[Conjunct] = []
    eqs: list[Conjunct] = []
    ranges: list[Conjunct] = []
    for c in u.conjuncts:
        if c.kind is Kind.null:
            predicate.append(c)
        elif c.kind is Kind.json_eq:
            eqs.append(c)
        elif c.kind in (Kind.eq, Kind.join_key) and keyable(c):
            if c.constant is not None and selectivity(stats, c) <= RARE:
                predicate.append(c)
            else:
                eqs.append(c)
        elif c.kind is Kind.range and keyable(c):
            (predicate if c.constant is not None else ranges).append(c)
    eq_keys = _order_eq(eqs, stats)
    sort = [(col, d) for col, d in u.sort if col in cols and can_be_key(cols[col])]
    tails: list[list[Key]] = []
    if sort and len(sort) == len(u.sort):
        tails.append([Key(col, desc=d) for col, d in sort])
    if ranges:
        # With both a range and a sort, both shapes are proposed: the planner decides (a LIMIT
        # favours the sort, a selective range the range).
        tails.append([Key(min(ranges, key=lambda c: selectivity(stats, c)).column)])
    variants = [eq_keys + [k for k in tail if k.column not in {e.column for e in eq_keys}] for tail in tails]
    variants = [v for v in variants if v] or ([eq_keys] if eq_keys else [])
    if not variants:
        # Only constant tests: the most selective equality or range becomes the key, no WHERE.
        movable = [c for c in predicate if c.kind in (Kind.eq, Kind.range)]
        if not movable:
            return out
        lead = min(movable, key=lambda c: (c.kind is not Kind.eq, selectivity(stats, c)))
        predicate = [c for c in predicate if c.column != lead.column]
        variants = [[Key(lead.column)]]
    btrees = []
    for keys in variants:
        keyed = {k.column for k in keys}
        where_parts = sorted({sql for c in predicate if c.column not in keyed and (sql := c.predicate_sql())})
        btrees.append(Candidate(u.table, tuple(keys[:MAX_KEYS]), "btree", " AND ".join(where_parts) or None))
    return list(dict.fromkeys(btrees)) + out


def _order_eq(eqs: list[Conjunct], stats: TableStats) -> list[Key]:
    seen: dict[str, tuple[float, Key]] = {}
    for c in eqs:
        if c.kind is Kind.json_eq:
            key = Key(expression=f"{quote_name(c.column)} ->> '{(c.json_key or '').replace(chr(39), chr(39) * 2)}'",
                      of=c.column)
            sel = UNKNOWN_EQ_SELECTIVITY
        else:
            key, sel = Key(c.column), selectivity(stats, c)
        ident = key.target()
        if ident not in seen or sel < seen[ident][0]:
            seen[ident] = (sel, key)
    return [k for _, k in sorted(seen.values(), key=lambda sk: (sk[0], sk[1].target()))]


def _norm(text: str) -> str:
    t = text.strip()
    while t.startswith("(") and t.endswith(")"):
        t = t[1:-1].strip()
    return t.replace('"', "").replace(" ", "").lower()


def served_by(c: Candidate, existing: Iterable[ExistingIndex]) -> str | None:
    """An existing valid index whose leading keys are the candidate's, with the same method and
    the same partial predicate (none when the candidate has none): the candidate adds nothing."""
    want = [_norm(k.target()) for k in c.keys]
    for e in existing:
        if not e.valid or e.table != c.table or e.method != c.method:
            continue
        have = [_norm(k.split(" ")[0]) if not k.startswith("(") else _norm(k) for k in e.keys]
        if have[: len(want)] != want:
            continue
        # a partial candidate is not served by a full index on the same keys: it is smaller and
        # skips the rows its WHERE excludes (the cost check decides whether that is worth it)
        if _norm(e.predicate or "") == _norm(c.where or ""):
            return e.name
    return None


@dataclass
class Proposal:
    candidate: Candidate
    statements: list[int] = field(default_factory=list)  # indexes into the workload
    weight: float = 0.0  # total time of the motivating statements
    why: str = ""


def propose(workload: Sequence[tuple[list[Usage], float]], stats: Mapping[TableKey, TableStats],
            existing: Sequence[ExistingIndex]) -> tuple[list[Proposal], dict[Candidate, str]]:
    """Candidates for a workload of (usages, total time) per statement, merged across statements,
    heaviest first; and those an existing index already serves (candidate -> index name)."""
    found: dict[Candidate, Proposal] = {}
    served: dict[Candidate, str] = {}
    for n, (uses, weight) in enumerate(workload):
        for u in uses:
            if u.table not in stats:
                continue
            for c in candidates_for(u, stats[u.table]):
                by = served_by(c, existing)
                if by is not None:
                    served[c] = by
                    continue
                p = found.setdefault(c, Proposal(c, why=_why(u, c)))
                if n not in p.statements:
                    p.statements.append(n)
                    p.weight += weight
    return sorted(found.values(), key=lambda p: (-p.weight, p.candidate.name())), served


def distinct_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_<n>` when taken: always within PostgreSQL's 63 bytes, so it stays distinct
    after PostgreSQL would have cut it (a cut by characters could leave 120 bytes of a
    multi-byte name, which PostgreSQL then truncates into the name it collided with)."""
    name, n = base, len(taken)
    while name in taken:
        name = fit_identifier(base, f"_{n}")
        n += 1
    return name
