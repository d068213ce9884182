"""Apply a partition plan to an observation the way PostgreSQL would (ATTACH adds a child,
DETACH/DROP removes it), so planner tests can check what the table looks like afterwards
and that planning again finds nothing to do."""

from __future__ import annotations

import copy
import re

from pgcurator.catalog.partitions import PartitionInfo, TableObservation
from pgcurator.sql.statements import Plan

_ATTACH = re.compile(r'^ALTER TABLE "(?P<ps>[^"]+)"\."(?P<p>[^"]+)" ATTACH PARTITION "(?P<cs>[^"]+)"\."(?P<c>[^"]+)" '
                     r"(?P<bound>FOR VALUES .*|DEFAULT)$")
_PARTITION_BY = re.compile(r"PARTITION BY (?P<strategy>RANGE|HASH|LIST) \(\"(?P<col>[^\"]+)\"\)")
_CREATE = re.compile(r'^CREATE TABLE IF NOT EXISTS "[^"]+"\."(?P<name>[^"]+)"')


def apply(obs: TableObservation, plan: Plan) -> TableObservation:
    out = copy.deepcopy(obs)
    created: dict[str, PartitionInfo] = {}
    for step in plan.steps:
        if step.kind in ("detach_partition", "drop_partition"):
            out.partitions = [p for p in out.partitions if p.name != step.target]
            continue
        for sql in step.statements:
            m = _CREATE.match(sql)
            if m:
                info = PartitionInfo(out.schema, m["name"], "")
                pb = _PARTITION_BY.search(sql)
                if pb:
                    info.relkind = "p"
                    info.strategy = {"RANGE": "r", "HASH": "h", "LIST": "l"}[pb["strategy"]]
                    info.key_columns = [pb["col"]]
                created[info.name] = info
                continue
            m = _ATTACH.match(sql)
            if not m:
                continue
            child = created.get(m["c"]) or PartitionInfo(out.schema, m["c"], "")
            child.bound_expr = m["bound"]
            child.is_default = m["bound"] == "DEFAULT"
            if m["p"] == out.name:
                out.partitions.append(child)
            else:
                parent = created.get(m["p"]) or next((p for p in out.partitions if p.name == m["p"]), None)
                assert parent is not None, f"attach to unknown parent {m['p']}"
                parent.children.append(child)
    out.default_rows_in = {}
    return out
