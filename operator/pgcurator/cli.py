"""`pgcurator` command line: run the operator, render CRDs, plan or apply a resource without a cluster,
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import settings as settings_module
from .settings import SettingsError


def _cmd_run(args: argparse.Namespace) -> int:
    from .app import main as run_main

    namespaces = args.namespace or list(settings_module.current().watch_namespaces)
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


async def _run_local(args: argparse.Namespace, *, dry_run: bool) -> int:
    from .kinds import ALL_KINDS
    from .local import Local, load_documents, parse_now, parse_url, print_plan, print_result, resource_of

    now = parse_now(args.now)
    params = parse_url(args.database_url or settings_module.current().database_url)
    resources = [resource_of(doc, ALL_KINDS) for doc in load_documents(args.filename)]  # all checked first
    local = Local(params, sys.stdout)
    rc = 0
    try:
        for res in resources:
            outcome = await local.run(res, now=now, dry_run=dry_run)
            rc = max(rc, print_plan(local, res, outcome) if dry_run else print_result(local, res, outcome))
    finally:
        await local.close()
    return rc


def _local(args: argparse.Namespace, *, dry_run: bool) -> int:
    from .local import BadInput

    try:
        return asyncio.run(_run_local(args, dry_run=dry_run))
    except BadInput as exc:
        print(f"pgcurator: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever it quotes
        return 2


def _cmd_plan(args: argparse.Namespace) -> int:
    return _local(args, dry_run=True)


def _cmd_apply(args: argparse.Namespace) -> int:
    return _local(args, dry_run=False)


def _cmd_monitor_trigger_sql(args: argparse.Namespace) -> int:
    from .planner.monitor_trigger import install_sql

    print(install_sql(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    s = settings_module.current()
    p = argparse.ArgumentParser(prog="pgcurator", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator")
    run.add_argument("-n", "--namespace", action="append", help="watch only this namespace (repeatable); "
                     "default: all, or WATCH_NAMESPACES (comma-separated)")
    run.add_argument("--http-address", default=s.http_address or None,
                     help="serve /healthz (liveness), /readyz and /metrics here, e.g. 0.0.0.0:8080")
    run.add_argument("--liveness", default=s.liveness or None,
                     help="older spelling of --http-address, as a URL: http://0.0.0.0:8080/healthz")
    run.add_argument("--leader-election-namespace",
                     help="namespace of the leader Lease (default: POD_NAMESPACE, the kubeconfig's, or default)")
    run.add_argument("--log-format", choices=["plain", "json"], default=s.log_format)
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_cmd_run)

    crds = sub.add_parser("crds", help="render the CRDs from the models")
    crds.add_argument("-o", "--output", default="crds")
    crds.add_argument("--check", action="store_true", help="fail if the files in --output are out of date")
    crds.add_argument("--also", action="append", default=["charts/pgcurator/crds"],
                      help="another directory kept identical (default: the Helm chart's crds/)")
    crds.set_defaults(func=_cmd_crds)

    for name, func, text in (
        ("plan", _cmd_plan, "print the statements the operator's reconcile would run now (dryRun; no cluster)"),
        ("apply", _cmd_apply, "run the operator's reconcile of a resource once, without a cluster; exit code "
                              "0 Ready, 1 not Ready (Degraded, waiting), 2 bad input"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("-f", "--filename", required=True, help="resource YAML file, or - for stdin")
        cmd.add_argument("--database-url", help="postgresql://user:password@host:port/dbname (or DATABASE_URL)")
        cmd.add_argument("--now", help="as of this ISO time instead of now, e.g. 2026-11-22T10:00:00+00:00")
        cmd.set_defaults(func=func)

    from .suggest_cli import add_parser as add_suggest  # index advice as IndexPolicy YAML (issue 15)

    add_suggest(sub)
    trig = sub.add_parser("monitor-trigger-sql", help="print the DatabaseMonitor event trigger SQL, for a superuser "
                          "to run in the monitored database when the operator's role may not create event triggers")
    trig.set_defaults(func=_cmd_monitor_trigger_sql)

    return p


def main(argv: list[str] | None = None) -> int:
    try:
        settings_module.load()  # once, at start: a bad value is one line and exit code 2
    except SettingsError as exc:
        print(f"pgcurator: {exc.message}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has said what is wrong (usage); --help is 0
        return exc.code if isinstance(exc.code, int) else 2
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
