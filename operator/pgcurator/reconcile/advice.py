"""Index advice for a database (or some of its tables): the one runner IndexPolicy's suggestions
and the DatabaseMonitor both call.

    report = await advise(conn, AdviceOptions(tables=(("public", "sessions"),)))
    report.to_status()   # what goes on a resource's status

Reads the workload (pg_stat_statements, or statements given), proposes candidates (planner.advice),
checks each one with the planner on its own (reconcile.advice_check: HypoPG when installed in the
database, else a small random sample), keeps those that cut the motivating statements' cost by
at least `min_gain` and that the planner still uses when all of them exist together. Nothing is
built on the real table; a missing privilege or extension is reported with the statement that
fixes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from ..catalog.advice import (
    Statement,
    TableKey,
    hypopg,
    load_indexes,
    load_stats,
    load_tables,
    load_workload,
    read_all_stats,
)
from ..limits import DETAIL_TEXT, SHOWN_ITEMS, STATUS_TEXT
from ..planner.advice import Candidate, Proposal, distinct_name, propose
from ..planner.advice_parse import usages
from ..sql.quote import ident
from .advice_check import Failure, HypoCheck, SampleCheck, TableCheck

log = logging.getLogger("pgcurator")
Mode = Literal["auto", "hypopg", "sample"]
HYPOPG_METHODS = ("btree", "brin", "hash")  # what hypopg_create_index() simulates (not GIN, GiST)


@dataclass(frozen=True)
class AdviceOptions:
    tables: tuple[TableKey, ...] = ()  # empty: every table the workload reads
    statements: tuple[Statement, ...] | None = None  # None: read pg_stat_statements
    min_calls: int = 1
    max_suggestions: int = 20
    min_gain: float = 0.1  # a candidate must cut its statements' estimated cost by this fraction
    mode: Mode = "auto"
    sample_rows: int = 20_000
    max_statements: int = 500
    measure: bool = False  # run parameter-free SELECTs on the sample copy, before and after


@dataclass
class Suggestion:
    candidate: Candidate
    name: str
    cost_before: float
    cost_after: float
    statements: list[Statement]
    why: str
    measured_before_ms: float | None = None  # on the sample copy, where measuring is allowed
    measured_after_ms: float | None = None

    @property
    def gain(self) -> float:
        return 0.0 if self.cost_before <= 0 else 1 - self.cost_after / self.cost_before


@dataclass
class AdviceReport:
    available: bool = True
    reason: str | None = None
    mode: str = ""
    statements_seen: int = 0
    suggestions: list[Suggestion] = field(default_factory=list)
    served: list[tuple[Candidate, str]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    privileges: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: list[tuple[Candidate, str]] = field(default_factory=list)
    sample_rows: dict[str, int] = field(default_factory=dict)

    def to_status(self, max_items: int = 20) -> dict[str, Any]:
        out: dict[str, Any] = {"available": self.available, "mode": self.mode, "statementsSeen": self.statements_seen,
                               "items": [_item(s) for s in self.suggestions[:max_items]],
                               "alreadyCovered": [{"columns": [k.target() for k in c.keys], "by": by,
                                                   "table": ".".join(c.table)} for c, by in self.served][:max_items],
                               "failures": [{"table": ".".join(f.candidate.table),
                                             "definition": f.candidate.definition(concurrently=False),
                                             "error": f.error[:STATUS_TEXT]} for f in self.failures][:max_items]}
        if self.reason:
            out["reason"] = self.reason
        if self.privileges:
            out["missingPrivileges"] = self.privileges
        if self.notes:
            out["notes"] = self.notes
        out["rejected"] = len(self.rejected)
        return out


def _item(s: Suggestion) -> dict[str, Any]:
    c = s.candidate
    return {
        "table": ".".join(c.table), "index": s.name, "method": c.method,
        "columns": [k.target() for k in c.keys], "where": c.where,
        "definition": c.definition(s.name),
        "estimatedCostBefore": round(s.cost_before, 2), "estimatedCostAfter": round(s.cost_after, 2),
        "estimatedGain": round(s.gain, 3), "why": s.why,
        **({"measuredMsBefore": round(s.measured_before_ms, 3), "measuredMsAfter": round(s.measured_after_ms or 0, 3),
            "sampleOnly": True} if s.measured_before_ms is not None else {}),
        "statements": [{"queryId": st.query_id, "query": st.query[:DETAIL_TEXT], "calls": st.calls,
                        "meanMs": round(st.mean_ms, 3), "totalMs": round(st.total_ms, 1)} for st in s.statements[:SHOWN_ITEMS]],
    }


async def advise(conn: Any, options: AdviceOptions = AdviceOptions()) -> AdviceReport:
    """Index advice for the database `conn` is connected to. Reads, and plans inside a transaction
    that is rolled back; never changes the database."""
    report = AdviceReport()
    granted, role = await read_all_stats(conn)
    if options.statements is not None:
        statements = list(options.statements)
    else:
        workload = await load_workload(conn, options.min_calls, options.max_statements)
        if workload is None:
            return AdviceReport(available=False, reason="pg_stat_statements is not installed in this database "
                                "(CREATE EXTENSION pg_stat_statements)")
        statements = workload.statements
        if not granted and workload.hidden:
            # Without it, other roles' statements show as <insufficient privilege>: the advice would
            # silently see only this role's own statements.
            report.privileges.append({"privilege": "pg_read_all_stats", "grant": f"GRANT pg_read_all_stats TO {ident(role)};",
                                      "why": f"{workload.hidden} statements of other roles are hidden from {role}"})
    report.statements_seen = len(statements)
    columns, rows = await load_tables(conn)
    known = {t: set(c) for t, c in columns.items()}
    parsed = [(usages(s.query, known), s.total_ms or float(s.calls)) for s in statements]
    tables = {u.table for uses, _ in parsed for u in uses}
    if options.tables:
        tables &= set(options.tables)
    stats = {t: await load_stats(conn, t, columns[t], rows[t]) for t in sorted(tables)}
    index_rows = await load_indexes(conn, sorted(tables))
    proposals, served = propose(parsed, stats, [r.existing for r in index_rows])
    report.served = list(served.items())
    installed, available = await hypopg(conn)
    use_hypo = options.mode == "hypopg" or (options.mode == "auto" and installed is not None)
    if use_hypo and installed is None:
        return AdviceReport(available=False, reason="hypopg is not installed in this database (CREATE EXTENSION hypopg)")
    report.mode = "hypopg" if use_hypo else "sample"
    if not use_hypo and available:
        report.notes.append("CREATE EXTENSION hypopg in this database makes advice cheaper (no sample copy)")
    by_table: dict[TableKey, list[Proposal]] = {}
    for p in proposals:
        by_table.setdefault(p.candidate.table, []).append(p)
    for table, props in sorted(by_table.items()):
        if rows[table] <= 0:
            report.notes.append(f"{'.'.join(table)} has no statistics yet (ANALYZE it): not advised")
            continue
        hypo = [p for p in props if use_hypo and p.candidate.method in HYPOPG_METHODS]
        # what HypoPG cannot simulate (GIN) is checked on a sample, in its own transaction
        sampled = [p for p in props if not (use_hypo and p.candidate.method in HYPOPG_METHODS)]
        if hypo and sampled:
            report.mode = "hypopg+sample"
        for subset, hypothetical in ((hypo, True), (sampled, False)):
            if subset:
                report.suggestions += await _table(conn, table, subset, hypothetical, statements, stats,
                                                   [r for r in index_rows if r.existing.table == table], known,
                                                   options, report)
    report.suggestions.sort(key=lambda s: -(s.cost_before - s.cost_after) * sum(st.calls for st in s.statements))
    report.suggestions = report.suggestions[: options.max_suggestions]
    return report


async def _table(conn: Any, table: TableKey, props: list[Proposal], hypothetical: bool, statements: list[Statement],
                 stats: dict[TableKey, Any], existing: list[Any], known: dict[TableKey, set[str]],
                 options: AdviceOptions, report: AdviceReport) -> list[Suggestion]:
    tr = conn.transaction()
    await tr.start()
    try:
        # generic plans: `$1` placeholders are planned for any value, as the application runs them
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # one backend only: the advice's cost stays small and measurable
        await conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
        if hypothetical:
            check: TableCheck = HypoCheck(conn, table, known)
        else:
            sample = SampleCheck(conn, table, known)
            await sample.copy(stats[table], [statements[i] for p in props for i in p.statements],
                              [p.candidate for p in props], existing, options.sample_rows)
            report.sample_rows[".".join(table)] = sample.sample_rows
            check = sample
        return await _check_table(check, props, statements, options, report)
    finally:
        await tr.rollback()
        if hypothetical:
            await conn.execute("/*pgcurator*/ SELECT hypopg_reset()")


async def _check_table(check: TableCheck, props: list[Proposal], statements: list[Statement],
                       options: AdviceOptions, report: AdviceReport) -> list[Suggestion]:
    involved = sorted({i for p in props for i in p.statements})
    local = {i: n for n, i in enumerate(involved)}
    chosen = [statements[i] for i in involved]
    before = [cost for cost, _ in await check.costs(chosen)]
    winners: list[tuple[int, Proposal, float, float]] = []
    for n, p in enumerate(props):
        after = await check.with_candidate(p.candidate, n, chosen)
        if isinstance(after, Failure):
            report.failures.append(after)
            continue
        pairs = [(before[local[i]], after[local[i]]) for i in p.statements]
        weights = [statements[i].calls for i in p.statements]
        ok = [(b * w, a * w) for (b, a), w in zip(pairs, weights, strict=True) if b is not None and a is not None]
        if not ok:
            report.rejected.append((p.candidate, "no motivating statement could be planned"))
            continue
        cb, ca = sum(b for b, _ in ok), sum(a for _, a in ok)
        if cb > 0 and ca <= cb * (1 - options.min_gain):
            winners.append((n, p, cb, ca))
        else:
            report.rejected.append((p.candidate, f"estimated gain {1 - ca / cb if cb else 0:.0%}"))
    used = await check.used_together([(n, p.candidate) for n, p, _, _ in winners], chosen)
    names: set[str] = set()
    out = []
    for n, p, cb, ca in winners:
        if n not in used:
            report.rejected.append((p.candidate, "another suggestion serves its statements better"))
            continue  # another suggestion serves its statements better
        name = distinct_name(p.candidate.name(), names)
        names.add(name)
        sug = Suggestion(p.candidate, name, cb, ca, [statements[i] for i in p.statements], p.why)
        if options.measure:
            await _measure(check, n, sug, chosen, local, p.statements)
        out.append(sug)
    return out


async def _measure(check: TableCheck, n: int, sug: Suggestion, chosen: list[Statement], local: dict[int, int],
                   mine: list[int]) -> None:
    """Measured gain on the sample: the suggestion's statements run without and with its index."""
    mine_stmts = [chosen[local[i]] for i in mine]
    before = await check.measure(mine_stmts)
    after = await check.measured_with(sug.candidate, n, mine_stmts)
    pairs = [(b, a) for b, a in zip(before, after, strict=True) if b is not None and a is not None]
    if pairs:
        sug.measured_before_ms = sum(b for b, _ in pairs)
        sug.measured_after_ms = sum(a for _, a in pairs)
