"""`pgcurator` command line: run the operator, render CRDs, plan a resource, start a dev environment."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import yaml

from .errors import CuratorError


def _cmd_run(args: argparse.Namespace) -> int:
    from .app import main as run_main

    namespaces = args.namespace or [n for n in os.environ.get("WATCH_NAMESPACES", "").split(",") if n]
    run_main(namespaces, args.http_address or args.liveness, args.log_format, args.verbose,
             election_namespace=args.leader_election_namespace)
    return 0


def _cmd_crds(args: argparse.Namespace) -> int:
    from .crdgen import render_all, write_all

    # The Helm chart ships the same files: written (and checked) together so they never drift.
    dirs = [Path(args.output)] + [Path(d) for d in args.also or [] if Path(d).parent.is_dir()]
    rendered = render_all()
    if args.check:
        stale = [str(d / name) for d in dirs for name, text in rendered.items()
                 if not (d / name).exists() or (d / name).read_text() != text]
        extra = [str(p) for d in dirs[1:] if d.is_dir() for p in sorted(d.glob("*.yaml")) if p.name not in rendered]
        if stale or extra:
            print(f"out of date: {', '.join(stale + extra)}; run `pgcurator crds`", file=sys.stderr)
            return 1
        print("CRDs are up to date")
        return 0
    for d in dirs:
        for path in write_all(d):
            print(path)
        for p in d.glob("*.yaml") if d != dirs[0] else []:
            if p.name not in rendered:
                p.unlink()  # a kind that is gone from the models is gone from the chart too
    return 0


def _load_resources(path: str) -> list[dict[str, Any]]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


async def _plan_one(doc: dict[str, Any], url: str, now: datetime) -> int:
    from .catalog.partitions import observe_table
    from .db.params import params_from_url
    from .db.pools import PoolRegistry
    from .models.partition import PartitionPolicySpec
    from .planner.partition import plan_policy
    from .runtime import format_validation_error

    kind = doc.get("kind")
    name = (doc.get("metadata") or {}).get("name", "?")
    if kind != "PartitionPolicy":
        print(f"-- {kind}/{name}: kind not supported by `plan` yet", file=sys.stderr)
        return 2
    try:
        spec = PartitionPolicySpec.model_validate(doc.get("spec") or {})
    except pydantic.ValidationError as exc:
        print(f"-- {kind}/{name}: invalid: {format_validation_error(exc)}", file=sys.stderr)
        return 2
    pools = PoolRegistry(max_size=1)
    try:
        async with pools.connection(params_from_url(url)) as conn:
            obs = await observe_table(conn, spec.table.schema_, spec.table.name, spec.key_column)
            plan, _ = plan_policy(spec, obs, now)
    finally:
        await pools.close()
    print(f"-- {kind}/{name}: {len(plan.statements())} statements")
    for note in plan.notes:
        print(f"-- note: {note}")
    for blocked in plan.blocked:
        print(f"-- blocked: {blocked}")
    for step in plan.steps:
        print(f"-- {step.kind} {step.target}" + ("" if step.transactional else " (outside a transaction)"))
        for sql in step.statements:
            print(sql + ";")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        print("--database-url (or DATABASE_URL) is required", file=sys.stderr)
        return 2
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    rc = 0
    for doc in _load_resources(args.filename):
        try:
            rc = max(rc, asyncio.run(_plan_one(doc, url, now)))
        except CuratorError as exc:
            print(f"-- error ({exc.reason}): {exc.message}", file=sys.stderr)
            rc = max(rc, 1)
    return rc


def _cmd_dev_up(args: argparse.Namespace) -> int:
    from .devenv.up import dev_up

    rc: int = dev_up(Path(args.workdir), exit_after_ready=args.exit_after_ready)
    return rc


def _cmd_monitor_trigger_sql(args: argparse.Namespace) -> int:
    from .planner.monitor_trigger import install_sql

    print(install_sql(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgcurator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); "
                     "default: all, or WATCH_NAMESPACES (comma-separated)")
    run.add_argument("--http-address", default=os.environ.get("PGCURATOR_HTTP_ADDRESS"),
                     help="serve /healthz (liveness), /readyz and /metrics here, e.g. 0.0.0.0:8080")
    run.add_argument("--liveness", default=os.environ.get("PGCURATOR_LIVENESS"),
                     help="older spelling of --http-address, as a URL: http://0.0.0.0:8080/healthz")
    run.add_argument("--leader-election-namespace",
                     help="namespace of the leader Lease (default: POD_NAMESPACE, the kubeconfig's, or default)")
    run.add_argument("--log-format", choices=["plain", "json"], default=os.environ.get("PGCURATOR_LOG_FORMAT", "plain"))
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_cmd_run)

    crds = sub.add_parser("crds", help="render the CRDs from the models")
    crds.add_argument("-o", "--output", default="crds")
    crds.add_argument("--check", action="store_true", help="fail if the files in --output are out of date")
    crds.add_argument("--also", action="append", default=["charts/pgcurator/crds"],
                      help="another directory kept identical (default: the Helm chart's crds/)")
    crds.set_defaults(func=_cmd_crds)

    plan = sub.add_parser("plan", help="print the statements a resource would run (no cluster needed)")
    plan.add_argument("-f", "--filename", required=True, help="resource YAML file, or - for stdin")
    plan.add_argument("--database-url", help="postgresql://user:password@host:port/dbname (or DATABASE_URL)")
    plan.add_argument("--now", help="plan as of this ISO time instead of now")
    plan.set_defaults(func=_cmd_plan)

    trig = sub.add_parser("monitor-trigger-sql", help="print the DatabaseMonitor event trigger SQL, for a superuser "
                          "to run in the monitored database when the operator's role may not create event triggers")
    trig.set_defaults(func=_cmd_monitor_trigger_sql)

    dev = sub.add_parser("dev", help="local development environment")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    up = dev_sub.add_parser("up", help="local control plane + embedded PostgreSQL + CRDs + example + operator")
    up.add_argument("--workdir", default=".dev")
    up.add_argument("--exit-after-ready", action="store_true", help="tear down once the example is Ready")
    up.set_defaults(func=_cmd_dev_up)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
