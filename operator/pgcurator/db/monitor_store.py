"""DatabaseMonitor's rows in the metadata schema (the tables are db/metadata.py's migrations 6-7):
schema changes, fingerprint snapshots, statistics snapshots and how far each monitor got."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

# Columns the status and the Events show for a change.
CHANGE_COLUMNS = ("id, changed_at, detected_at, mechanism, command_tag, object_type, schema_name, object_identity, "
                  "statement, session_user_name, application_name, client_addr, transaction_id, confirmed, "
                  "schema_version, woke, repaired_by")


async def load_state(conn: Any, resource: str) -> dict[str, Any]:
    await conn.execute("INSERT INTO pgcurator.monitor_state (resource) VALUES ($1) ON CONFLICT DO NOTHING", resource)
    row = await conn.fetchrow("SELECT * FROM pgcurator.monitor_state WHERE resource = $1", resource)
    return dict(row)


async def save_state(conn: Any, resource: str, **fields: Any) -> None:
    names = sorted(fields)
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))  # names are ours, not input
    await conn.execute(f"UPDATE pgcurator.monitor_state SET {sets} WHERE resource = $1", resource,
                       *(fields[n] for n in names))


async def start_after_now(conn: Any) -> int:
    """A new monitor starts from the newest change: what happened before it is history, not news."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM pgcurator.schema_changes"))


# The monitor's schema selection ($never, $only) applies to what the trigger recorded too; rows
# without a schema (schemas themselves, GRANTs, database-level changes) always count.
_OBSERVED = ("(schema_name IS NULL OR (schema_name <> ALL({never}::text[]) "
             "AND (cardinality({only}::text[]) = 0 OR schema_name = ANY({only}::text[]))))")


def _observed(never: int, only: int) -> str:
    return _OBSERVED.format(never=f"${never}", only=f"${only}")


async def changes_after(conn: Any, after_id: int, never: list[str], only: list[str],
                        limit: int = 2000) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {CHANGE_COLUMNS} FROM pgcurator.schema_changes WHERE id > $1 "
                            f"AND mechanism = 'event_trigger' AND {_observed(3, 4)} ORDER BY id LIMIT $2",
                            after_id, limit, never, only)
    return [dict(r) for r in rows]


async def trigger_changes_since(conn: Any, since: datetime | None) -> list[dict[str, Any]]:
    """What the trigger recorded since the last fingerprint: it explains the fingerprint's diff."""
    rows = await conn.fetch(f"SELECT {CHANGE_COLUMNS} FROM pgcurator.schema_changes WHERE mechanism = 'event_trigger' "
                            "AND ($1::timestamptz IS NULL OR detected_at >= $1) ORDER BY id", since)
    return [dict(r) for r in rows]


async def last_snapshot(conn: Any, resource: str) -> tuple[str, dict[str, list[Any]]] | None:
    row = await conn.fetchrow("SELECT version, definitions FROM pgcurator.schema_snapshots WHERE resource = $1 "
                              "ORDER BY id DESC LIMIT 1", resource)
    if row is None:
        return None
    return row["version"], json.loads(row["definitions"])


async def insert_snapshot(conn: Any, resource: str, version: str, definitions: dict[str, list[Any]]) -> None:
    await conn.execute("INSERT INTO pgcurator.schema_snapshots (resource, version, objects, definitions) "
                       "VALUES ($1, $2, $3, $4::jsonb)", resource, version, len(definitions), json.dumps(definitions))


async def insert_fingerprint_changes(conn: Any, rows: list[dict[str, Any]], version: str) -> list[int]:
    ids = []
    for r in rows:
        ids.append(await conn.fetchval(
            "INSERT INTO pgcurator.schema_changes (changed_at, mechanism, command_tag, object_type, schema_name, "
            "object_identity, session_user_name, confirmed, schema_version) "
            "VALUES ($1, 'fingerprint', $2, $3, $4, $5, $6, true, $7) RETURNING id",
            r["changed_at"], r["command_tag"], r["object_type"], r.get("schema_name"), r["object_identity"],
            r.get("session_user_name"), version))
    return ids


async def confirm(conn: Any, ids: list[int], version: str, up_to_id: int) -> None:
    """Trigger rows the fingerprint also saw are confirmed; every row up to now gets the version."""
    if ids:
        await conn.execute("UPDATE pgcurator.schema_changes SET confirmed = true WHERE id = ANY($1::bigint[])", ids)
    await conn.execute("UPDATE pgcurator.schema_changes SET schema_version = $1 WHERE schema_version IS NULL "
                       "AND id <= $2", version, up_to_id)


async def history_mark(conn: Any) -> int:
    """The newest history id: a woken resource's repair is the first row after it (read before
    waking, so a fast repair cannot come first)."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM pgcurator.history"))


async def record_wake(conn: Any, change_id: int, resources: list[str], mark: int) -> None:
    await conn.execute("UPDATE pgcurator.schema_changes SET woke = $2, woke_after_history_id = $3 WHERE id = $1",
                       change_id, resources, mark)


async def link_repairs(conn: Any) -> int:
    """A woken resource's first statement after the wake is the repair the change links to."""
    status: str = await conn.execute("""
        UPDATE pgcurator.schema_changes c SET repaired_by = r.hid
          FROM (SELECT c2.id, (SELECT min(h.id) FROM pgcurator.history h
                                WHERE h.id > c2.woke_after_history_id AND h.resource = ANY(c2.woke)) AS hid
                  FROM pgcurator.schema_changes c2
                 WHERE c2.woke IS NOT NULL AND c2.repaired_by IS NULL
                   AND c2.detected_at > now() - interval '1 day') r
         WHERE c.id = r.id AND r.hid IS NOT NULL""")
    return int(status.rsplit(" ", 1)[-1])


async def recent_changes(conn: Any, limit: int, never: list[str], only: list[str]) -> list[dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {CHANGE_COLUMNS} FROM pgcurator.schema_changes WHERE {_observed(2, 3)} "
                            "ORDER BY id DESC LIMIT $1", limit, never, only)
    return [dict(r) for r in rows]


async def change_counts(conn: Any, never: list[str], only: list[str]) -> dict[str, int]:
    rows = await conn.fetch("SELECT CASE WHEN mechanism = 'event_trigger' AND confirmed THEN 'both' ELSE mechanism END "
                            f"AS m, count(*) AS n FROM pgcurator.schema_changes WHERE {_observed(1, 2)} GROUP BY 1",
                            never, only)
    return {r["m"]: int(r["n"]) for r in rows}


async def owner_identities(conn: Any) -> list[tuple[str, str]]:
    """(schema.name as pg_identify_object writes it, managing resource) from pgcurator.owners."""
    rows = await conn.fetch("SELECT pg_catalog.quote_ident(schema_name) || '.' || pg_catalog.quote_ident(object_name) "
                            "AS identity, resource FROM pgcurator.owners")
    return [(r["identity"], r["resource"]) for r in rows]


# --- statistics ----------------------------------------------------------------------------------

_TABLE_COLUMNS = ("schema_name", "table_name", "est_rows", "live_rows", "dead_rows", "table_bytes", "index_bytes",
                  "toast_bytes", "seq_scan", "idx_scan", "heap_hit", "heap_read", "idx_hit", "idx_read",
                  "last_vacuum", "last_analyze")


async def insert_table_stats(conn: Any, resource: str, rows: list[dict[str, Any]]) -> None:
    cols = ", ".join(_TABLE_COLUMNS)
    marks = ", ".join(f"${i}" for i in range(2, len(_TABLE_COLUMNS) + 2))
    await conn.executemany(f"INSERT INTO pgcurator.table_stats (resource, {cols}) VALUES ($1, {marks})",
                           [(resource, *(r[c] for c in _TABLE_COLUMNS)) for r in rows])


async def growth_baseline(conn: Any, resource: str) -> dict[tuple[str, str], tuple[datetime, int]]:
    """Per table, the oldest snapshot of the last 7 days: (taken_at, total bytes)."""
    rows = await conn.fetch("""
        SELECT DISTINCT ON (schema_name, table_name) schema_name, table_name, taken_at,
               table_bytes + index_bytes + toast_bytes AS total
          FROM pgcurator.table_stats WHERE resource = $1 AND taken_at > now() - interval '7 days'
         ORDER BY schema_name, table_name, taken_at""", resource)
    return {(r["schema_name"], r["table_name"]): (r["taken_at"], int(r["total"])) for r in rows}


async def insert_column_stats(conn: Any, resource: str, rows: list[dict[str, Any]]) -> None:
    await conn.executemany(
        "INSERT INTO pgcurator.column_stats (resource, schema_name, table_name, column_name, null_frac, n_distinct, "
        "avg_width) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(resource, r["schema_name"], r["table_name"], r["column_name"], r["null_frac"], r["n_distinct"],
          r["avg_width"]) for r in rows])


async def insert_database_stats(conn: Any, resource: str, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO pgcurator.database_stats (resource, size_bytes, blks_hit, blks_read, xact_commit, xact_rollback, "
        "xid_age) VALUES ($1, $2, $3, $4, $5, $6, $7)", resource, row["size_bytes"], row["blks_hit"],
        row["blks_read"], row["xact_commit"], row["xact_rollback"], row["xid_age"])


async def previous_statements(conn: Any, resource: str) -> dict[tuple[int, int], dict[str, Any]]:
    rows = await conn.fetch("""
        SELECT queryid, userid, calls, total_ms, rows FROM pgcurator.statement_stats
         WHERE resource = $1 AND taken_at = (SELECT max(taken_at) FROM pgcurator.statement_stats WHERE resource = $1)
        """, resource)
    return {(int(r["queryid"]), int(r["userid"])): dict(r) for r in rows}


async def insert_statements(conn: Any, resource: str, rows: list[dict[str, Any]]) -> None:
    await conn.executemany(
        "INSERT INTO pgcurator.statement_stats (resource, queryid, userid, calls, total_ms, rows, query) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(resource, r["queryid"], r["userid"], r["calls"], r["total_ms"], r["rows"], r["query"]) for r in rows])


async def prune(conn: Any, resource: str, snapshots_seconds: float, changes_seconds: float) -> None:
    for table in ("table_stats", "column_stats", "database_stats", "statement_stats"):
        await conn.execute(f"DELETE FROM pgcurator.{table} WHERE resource = $1 "  # table names are ours
                           "AND taken_at < now() - make_interval(secs => $2)", resource, snapshots_seconds)
    # The newest fingerprint snapshot stays whatever its age: it is the baseline of the next diff.
    await conn.execute("DELETE FROM pgcurator.schema_snapshots WHERE resource = $1 AND taken_at < now() - "
                       "make_interval(secs => $2) AND id < (SELECT max(id) FROM pgcurator.schema_snapshots "
                       "WHERE resource = $1)", resource, snapshots_seconds)
    await conn.execute("DELETE FROM pgcurator.schema_changes WHERE detected_at < now() - make_interval(secs => $1)",
                       changes_seconds)


async def forget(conn: Any, resource: str) -> None:
    """deletionPolicy: Delete: the monitor's own snapshots and state (schema_changes stay: they are
    the database's history, not the monitor's)."""
    for table in ("table_stats", "column_stats", "database_stats", "statement_stats", "schema_snapshots",
                  "monitor_state"):
        await conn.execute(f"DELETE FROM pgcurator.{table} WHERE resource = $1", resource)
