"""`pgcurator suggest`: the database's index advice as IndexPolicy YAML, ready to commit.

GitOps: the suggestions become a pull request a person reviews, never an automatic change. Each
index carries its estimated gain and the statements that motivate it as YAML comments; every
document is validated against the IndexPolicy model before it is printed.

    pgcurator suggest --database-url postgresql://... [--table public.sessions ...]
                      [--statements workload.sql] [--secret-name app-db]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from . import settings
from .catalog.advice import Statement
from .db.params import params_from_url
from .db.pools import PoolRegistry
from .errors import CuratorError
from .limits import K8S_NAME, SHOWN_ITEMS, STATUS_TEXT
from .models.index import IndexPolicySpec
from .reconcile.advice import AdviceOptions, AdviceReport, Suggestion, advise

API_VERSION = "pgcurator.io/v1alpha1"


def add_parser(sub: Any) -> None:
    """Register the subcommand on the `pgcurator` parser's subparsers."""
    p = sub.add_parser("suggest", help="print index suggestions for a database as IndexPolicy YAML")
    p.add_argument("--database-url", help="postgresql://user:password@host:port/dbname (or DATABASE_URL)")
    p.add_argument("--table", action="append", default=[], metavar="SCHEMA.NAME",
                   help="only this table (repeatable); default: every table the workload reads")
    p.add_argument("--statements", metavar="FILE",
                   help="the workload as SQL statements separated by ';' (e.g. from a log: literals kept) "
                        "instead of pg_stat_statements")
    p.add_argument("--min-calls", type=int, default=10, help="pg_stat_statements: ignore rarer statements")
    p.add_argument("--max-suggestions", type=int, default=20)
    p.add_argument("--mode", choices=("auto", "hypopg", "sample"), default="auto",
                   help="hypothetical indexes (HypoPG) or a small random sample; auto: HypoPG when installed")
    p.add_argument("--measure", action="store_true",
                   help="sample mode: also run parameter-free SELECTs on the sample copy, without and with each index")
    p.add_argument("--secret-name", default="app-db", help="spec.database.secretName of the printed policies")
    p.set_defaults(func=run)


def _tables(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    out = []
    for v in values:
        schema, _, name = v.rpartition(".")
        out.append((schema or "public", name))
    return tuple(out)


def _statements(path: str) -> tuple[Statement, ...]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    from pglast import split

    return tuple(Statement(s.strip()) for s in split(text) if s.strip())


def run(args: argparse.Namespace) -> int:
    url = args.database_url or settings.current().database_url
    if not url:
        print("--database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    options = AdviceOptions(tables=_tables(args.table), min_calls=args.min_calls, mode=args.mode,
                            max_suggestions=args.max_suggestions, measure=args.measure,
                            statements=_statements(args.statements) if args.statements else None)
    try:
        report = asyncio.run(_advise(url, options))
    except CuratorError as exc:
        print(f"# error ({exc.reason}): {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(render(report, args.secret_name))
    return 0 if report.available else 1


async def _advise(url: str, options: AdviceOptions) -> AdviceReport:
    pools = PoolRegistry(max_size=1)
    try:
        async with pools.connection(params_from_url(url)) as conn:
            return await advise(conn, options)
    finally:
        await pools.close()


def _column(key: Any) -> dict[str, str]:
    out = {"column": key.column} if key.column is not None else {"expression": key.expression}
    if key.opclass:
        out["opclass"] = key.opclass
    if key.desc:
        out["order"] = "desc"
    return out


def _decl(s: Suggestion) -> dict[str, Any]:
    c = s.candidate
    decl: dict[str, Any] = {"name": s.name, "columns": [_column(k) for k in c.keys]}
    if c.method != "btree":
        decl["method"] = c.method
    if c.where:
        decl["where"] = c.where
    return decl


def _comment(text: str) -> str:
    return "\n".join("# " + line for line in text.splitlines())


def render(report: AdviceReport, secret_name: str) -> str:
    """One IndexPolicy per table (multi-document YAML), with the report's reasons as comments."""
    head = [f"# pgcurator suggest: {len(report.suggestions)} suggestions from {report.statements_seen} statements "
            f"({report.mode or 'no check'})"]
    if not report.available:
        head.append(f"# not available: {report.reason}")
    for p in report.privileges:
        head.append(f"# missing privilege {p['privilege']} ({p['why']}): {p['grant']}")
    head += [f"# note: {n}" for n in report.notes]
    head += [f"# could not check: {f.candidate.definition(concurrently=False)}: {f.error.splitlines()[0]}"
             for f in report.failures]
    docs = []
    by_table: dict[tuple[str, str], list[Suggestion]] = {}
    for s in report.suggestions:
        by_table.setdefault(s.candidate.table, []).append(s)
    for (schema, table), items in sorted(by_table.items()):
        spec = {"database": {"secretName": secret_name}, "table": {"schema": schema, "name": table},
                "indexes": [_decl(s) for s in items]}
        IndexPolicySpec.model_validate(spec)  # what we print, the operator accepts
        name = re.sub(r"[^a-z0-9-]+", "-", f"{table}-indexes".lower()).strip("-")[:K8S_NAME]
        body = yaml.safe_dump({"apiVersion": API_VERSION, "kind": "IndexPolicy", "metadata": {"name": name},
                               "spec": spec}, sort_keys=False)
        notes = []
        for s in items:
            notes.append(f"{s.name}: estimated cost {s.cost_before:.0f} -> {s.cost_after:.0f} "
                         f"({s.gain:.0%} less) for {len(s.statements)} statement(s); {s.why}")
            if s.measured_before_ms is not None:
                notes.append(f"  measured on the sample copy: {s.measured_before_ms:.1f} ms -> "
                             f"{s.measured_after_ms or 0:.1f} ms")
            notes += [f"  {st.query[:STATUS_TEXT]}" for st in s.statements[:SHOWN_ITEMS]]
        docs.append(_comment("\n".join(notes)) + "\n" + body)
    return "\n".join(head) + "\n" + "".join("---\n" + d for d in docs)
