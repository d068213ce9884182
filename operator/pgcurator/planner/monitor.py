"""DatabaseMonitor decisions about schema changes, without I/O: the schema version of a
fingerprint, what changed between two fingerprints, which of those the event trigger already
explained, which resources manage what a change touched, and the Events to post."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydantic

from ..limits import STATUS_TEXT
from ..models.index import IndexPolicySpec
from ..models.partition import PartitionPolicySpec
from ..models.vector import VectorIndexSpec, default_index_name
from ..timefmt import k8s_time_or_none

UNKNOWN_WHO = "unknown (found by fingerprint)"

# Text that may carry a password never reaches a status: the status and Events are readable by
# far more people than the database's catalogs.
_SECRET_TEXT = re.compile(r"password|secret|user\s+mapping|create\s+server|alter\s+server", re.IGNORECASE)
HIDDEN = "(statement not shown: it may hold a password)"


def redact(text: str | None) -> str | None:
    return HIDDEN if text and _SECRET_TEXT.search(text) else text

# Kinds of fingerprint object a GRANT/REVOKE on an object type reaches (the trigger records the
# type but no identity for these commands).
_GRANT_FAMILIES = {
    "table": {"table", "view", "materialized view", "foreign table", "sequence"},
    "sequence": {"sequence"},
    "schema": {"schema"},
    "function": {"function", "procedure", "aggregate"},
    "procedure": {"function", "procedure"},
    "routine": {"function", "procedure"},
    "type": {"type", "domain"},
    "domain": {"type", "domain"},
    "tables": {"default acl"}, "sequences": {"default acl"}, "functions": {"default acl"},
    "routines": {"default acl"}, "types": {"default acl"}, "schemas": {"default acl"},
}

Definitions = dict[str, list[Any]]  # "kind\tidentity" -> [hash, parent]


def definitions(objects: Iterable[Any]) -> Definitions:
    """From catalog.fingerprint.CatalogObject rows."""
    return {f"{o.kind}\t{o.identity}": [o.hash, o.parent] for o in objects}


def schema_version(defs: Definitions) -> str:
    """One hash for the whole observed schema: equal versions, equal definitions."""
    h = hashlib.sha256()
    for key in sorted(defs):
        h.update(f"{key}\t{defs[key][0]}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Diff:
    action: str  # added | removed | changed
    kind: str
    identity: str
    parent: str | None

    @property
    def command_tag(self) -> str:
        verb = {"added": "CREATE", "removed": "DROP", "changed": "ALTER"}[self.action]
        return f"{verb} {self.kind.upper()}"


def diff(before: Definitions, after: Definitions) -> list[Diff]:
    out = []
    for key in sorted(set(before) | set(after)):
        kind, identity = key.split("\t", 1)
        if key not in before:
            out.append(Diff("added", kind, identity, after[key][1]))
        elif key not in after:
            out.append(Diff("removed", kind, identity, before[key][1]))
        elif before[key][0] != after[key][0]:
            out.append(Diff("changed", kind, identity, after[key][1]))
    return out


def _column_owner(identity: str) -> str:
    return identity.rsplit(".", 1)[0]


def explain(diffs: list[Diff], trigger_rows: list[dict[str, Any]]) -> tuple[list[Diff], set[int]]:
    """Split the fingerprint's diff into what the trigger did not record (returned) and the ids
    of trigger rows the fingerprint confirms. A diff is explained by a trigger row on the same
    object, on its table, on one of its columns, by a GRANT/REVOKE on its kind of object, or as
    the other half of a rename (or a child of an explained object)."""
    by_identity: dict[str, list[int]] = {}
    grants: dict[str, list[int]] = {}
    altered = {r["object_identity"] for r in trigger_rows
               if r.get("object_identity") and (r.get("command_tag") or "").startswith("ALTER ")}
    for r in trigger_rows:
        ident = r.get("object_identity")
        if ident:
            by_identity.setdefault(ident, []).append(r["id"])
            if (r.get("object_type") or "").endswith("column"):
                by_identity.setdefault(_column_owner(ident), []).append(r["id"])
        elif (r.get("command_tag") or "") in ("GRANT", "REVOKE", "ALTER DEFAULT PRIVILEGES"):
            for kind in _GRANT_FAMILIES.get((r.get("object_type") or "").lower(), set()):
                grants.setdefault(kind, []).append(r["id"])
    confirmed: set[int] = set()
    explained: set[str] = set()
    left: list[Diff] = []
    for d in diffs:
        ids = by_identity.get(d.identity, []) + (by_identity.get(d.parent, []) if d.parent else [])
        if not ids and d.action == "changed":
            ids = grants.get(d.kind, [])
        if ids:
            confirmed.update(ids)
            explained.add(d.identity)
        else:
            left.append(d)
    # Renames (ALTER ... RENAME): the trigger names only the new identity; the old one disappears
    # in the same diff.
    added_kinds = {d.kind for d in diffs if d.action == "added" and d.identity in altered}
    renamed_parents = {d.identity for d in diffs if d.action == "removed" and d.kind in added_kinds}
    still = []
    for d in left:
        if d.action == "removed" and d.kind in added_kinds:
            continue
        if d.parent and (d.parent in explained or d.parent in renamed_parents):
            continue
        still.append(d)
    return still, confirmed


def fingerprint_rows(diffs: list[Diff], now: datetime) -> list[dict[str, Any]]:
    """Rows for pgcurator.schema_changes: who and the exact time are unknown to a fingerprint."""
    return [{"changed_at": now, "command_tag": d.command_tag, "object_type": d.kind,
             "schema_name": None, "object_identity": d.identity, "session_user_name": None} for d in diffs]


# --- waking the resources that manage what changed ---------------------------------------------


@dataclass
class Peer:
    resource: str  # Kind/namespace/name
    tables: set[str] = field(default_factory=set)  # identities as pg_identify_object writes them
    indexes: set[str] = field(default_factory=set)


def peer_names(bodies: list[dict[str, Any]], database: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]],
                                                                                     list[tuple[str, str]]]]:
    """(resource, tables, indexes) of the resources in the monitor's namespace that point at the same
    database (the same spec.database), as (schema, name) pairs to be turned into identities."""
    out = []
    for body in bodies:
        kind = body.get("kind")
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        if spec.get("database") != database or meta.get("deletionTimestamp"):
            continue
        resource = f"{kind}/{meta.get('namespace')}/{meta.get('name')}"
        try:
            if kind == "IndexPolicy":
                ip = IndexPolicySpec.model_validate(spec)
                t = ip.table
                out.append((resource, [(t.schema_, t.name)], [(t.schema_, i.name) for i in ip.indexes]))
            elif kind == "VectorIndex":
                vi = VectorIndexSpec.model_validate(spec)
                t = vi.table
                name = vi.index_name or default_index_name(t.name, vi.column, vi.method.value)
                out.append((resource, [(t.schema_, t.name)], [(t.schema_, name)]))
            elif kind == "PartitionPolicy":
                pp = PartitionPolicySpec.model_validate(spec)
                out.append((resource, [(pp.table.schema_, pp.table.name)], []))
        except pydantic.ValidationError:
            continue  # its own worker reports the invalid spec
    return out


def touched(change: dict[str, Any], defs: Definitions) -> set[str]:
    """The identities a change reaches: the object, its table, and a partition's ancestors."""
    ident = change.get("object_identity")
    if not ident:
        return set()
    parents: dict[str, str] = {}
    for key, (_, parent) in defs.items():
        if parent:
            parents[key.split("\t", 1)[1]] = parent
    out = {ident}
    if (change.get("object_type") or "").endswith("column"):
        out.add(_column_owner(ident))
    elif " on " in ident and ident not in parents:
        out.add(ident.rsplit(" on ", 1)[1])  # "constraint on schema.table", as the trigger writes it
    frontier = set(out)
    for _ in range(8):  # partition trees are shallow; bounded anyway
        frontier = {parents[i] for i in frontier if i in parents} - out
        if not frontier:
            break
        out |= frontier
    return out


def managers(reached: set[str], peers: list[Peer], owners: list[tuple[str, str]]) -> list[str]:
    found = {p.resource for p in peers if reached & p.tables or reached & p.indexes}
    found |= {resource for identity, resource in owners if identity in reached}
    return sorted(found)


def is_ours(change: dict[str, Any], role: str) -> bool:
    """The operator's own DDL (its role, its pinned application_name) is recorded but wakes nobody."""
    return change.get("session_user_name") == role and change.get("application_name") == "pgcurator"


# --- reporting -----------------------------------------------------------------------------------


def who(change: dict[str, Any]) -> str:
    if change.get("mechanism") == "fingerprint" or not change.get("session_user_name"):
        return UNKNOWN_WHO
    parts = [p for p in (change.get("application_name"), change.get("client_addr")) if p]
    return str(change["session_user_name"]) + (f" ({', '.join(parts)})" if parts else "")


def change_entry(change: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "id": change["id"], "at": k8s_time_or_none(change.get("changed_at")), "mechanism": change.get("mechanism"),
        "command": change.get("command_tag"), "objectType": change.get("object_type"),
        "object": change.get("object_identity"), "who": who(change),
        "confirmedByFingerprint": bool(change.get("confirmed")) and change.get("mechanism") == "event_trigger",
    }
    if change.get("statement"):
        entry["statement"] = (redact(change["statement"]) or "")[:STATUS_TEXT]
    if change.get("transaction_id") is not None:
        entry["transaction"] = int(change["transaction_id"])
    if change.get("schema_version"):
        entry["schemaVersion"] = change["schema_version"]
    if change.get("woke"):
        entry["woke"] = list(change["woke"])
    if change.get("repaired_by") is not None:
        entry["repairedBy"] = int(change["repaired_by"])
    return entry


def change_message(change: dict[str, Any], woke: list[str]) -> str:
    what = f"{change.get('command_tag')} {change.get('object_identity') or change.get('object_type') or ''}".strip()
    msg = f"{what} by {who(change)} at {k8s_time_or_none(change.get('changed_at'))}"
    if woke:
        msg += f"; woke {', '.join(woke)} to repair it"
    return msg


def change_events(messages: list[str], limit: int) -> list[tuple[str, str]]:
    """(reason, message): one per change up to `limit`, the rest summed up in one."""
    out = [("SchemaChanged", m) for m in messages[:limit]]
    rest = len(messages) - limit
    if rest > 0:
        out.append(("SchemaChanged", f"and {rest} more schema changes (see pgcurator.schema_changes)"))
    return out


def due(last: datetime | None, interval_seconds: float, now: datetime) -> bool:
    return last is None or (now - last).total_seconds() >= interval_seconds * 0.98  # timer jitter
