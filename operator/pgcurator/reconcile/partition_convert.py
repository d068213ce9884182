"""Online conversion of a plain table into a partitioned one, resumable at any point.

Phases, each recorded in pgcurator.conversions in the same transaction as the work it
describes, so a crash anywhere resumes where it stopped:

  prepare  - refuse what cannot be converted safely; build the empty partitioned shadow table
             and a trigger on the original that logs the key of every row written meanwhile
  copy     - keyset batches in primary-key order (ON CONFLICT DO NOTHING: a batch redone after a
             crash inserts nothing twice), each with its progress in one transaction
  catchup  - re-sync the logged keys from the original into the shadow, batch by batch
  swap     - one short transaction under lock_timeout: block writers, drain the log, prove that
             count and key checksum match, rename both tables, carry sequences over
  swapped  - the original is kept as <table>_unpartitioned until convert.dropOriginal
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..catalog.partitions import observe_table
from ..db.executor import TableLock, apply_session_limits, record_history
from ..db.metadata import ensure_metadata_schema
from ..errors import CuratorError, PlanError
from ..models.partition import PartitionPolicySpec
from ..planner.partition_convert import (
    PlainTable,
    original_name,
    refusals,
    shadow_name,
    shadow_statements,
)
from ..sql.quote import fit_identifier, ident, literal, qualified
from .outcome import Event, Outcome

SLICE_SECONDS = 20.0
CATCHUP_BATCH = 5000
SWAP_WHEN_LOG_BELOW = 2000

STATE_SQL = """
CREATE TABLE IF NOT EXISTS pgcurator.conversions (
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    phase        text NOT NULL,
    log_table    text NOT NULL,
    last_key     jsonb,
    rows_copied  bigint NOT NULL DEFAULT 0,
    rows_total   bigint NOT NULL DEFAULT 0,
    batch_rows   integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    swapped_at   timestamptz,
    details      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (table_schema, table_name)
)
"""

Emit = Callable[[Event], Awaitable[None]] | None
Progress = Callable[[dict[str, Any]], Awaitable[None]] | None


def _bytes(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(text[:-2]) * units[text[-2:]]


async def _plain_facts(conn: Any, spec: PartitionPolicySpec, oid: int) -> PlainTable:
    t = spec.table
    plain = PlainTable()
    pk = await conn.fetchval(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_index x "
        "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
        "WHERE x.indrelid = $1 AND x.indisprimary", oid)
    plain.primary_key = list(pk or [])
    for name, cols in await conn.fetch(
            "SELECT c.relname::text, array_agg(a.attname::text ORDER BY k.ord) FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid "
            "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
            "WHERE x.indrelid = $1 AND x.indisunique AND NOT x.indisprimary GROUP BY c.relname", oid):
        plain.unique_indexes[name] = [c for c in cols if c]
    plain.inbound_fks = [f"{r[0]}.{r[1]}" for r in await conn.fetch(
        "SELECT conrelid::regclass::text, conname::text FROM pg_constraint WHERE confrelid = $1 AND contype = 'f' "
        "AND conrelid <> $1", oid)]
    plain.dependent_views = [r[0] for r in await conn.fetch(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid "
        "JOIN pg_class v ON v.oid = rw.ev_class WHERE d.refobjid = $1 AND d.classid = 'pg_rewrite'::regclass "
        "AND v.oid <> $1", oid)]
    plain.user_triggers = [r[0] for r in await conn.fetch(
        "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgname <> $2",
        oid, _trigger_name(t.name))]
    plain.rls = bool(await conn.fetchval("SELECT relrowsecurity FROM pg_class WHERE oid = $1", oid))
    plain.inheritance = bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = $1 OR inhparent = $1)", oid))
    plain.outbound_fks = [(r[0], r[1]) for r in await conn.fetch(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1 AND contype = 'f'",
        oid)]
    for grantee, privilege, grantable in await conn.fetch(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type, "
            "a.is_grantable FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = $1 AND a.grantee <> c.relowner",
            oid):
        who = grantee if grantee == "PUBLIC" else ident(grantee.strip('"'))
        plain.grants.append(f"GRANT {privilege} ON {{table}} TO {who}" + (" WITH GRANT OPTION" if grantable else ""))
    key = ident(spec.key_column)
    tq = qualified(t.schema_, t.name)
    plain.min_key, plain.max_key = await conn.fetchrow(f"SELECT min({key}), max({key}) FROM {tq}")
    if spec.list is not None and not spec.default_partition:
        values = ", ".join(literal(v) if isinstance(v, str) else str(v)
                           for p in spec.list.partitions for v in p.values)
        plain.unlisted_rows = int(await conn.fetchval(
            f"SELECT count(*) FROM {tq} WHERE {key} IS NULL OR {key} NOT IN ({values})"))
    return plain


def _trigger_name(table: str) -> str:
    return fit_identifier("pgcurator_capture_" + table, "")


def _log_table(oid: int) -> str:
    return f"conversion_log_{oid}"


async def _state(conn: Any, spec: PartitionPolicySpec) -> asyncpg.Record | None:
    if await conn.fetchval("SELECT to_regclass('pgcurator.conversions') IS NULL"):
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM pgcurator.conversions WHERE table_schema = $1 AND table_name = $2",
        spec.table.schema_, spec.table.name)
    return row


async def convert_if_needed(
    conn: Any, spec: PartitionPolicySpec, *, resource: str, on_event: Emit = None, progress: Progress = None,
) -> Outcome | None:
    """None when the table needs no conversion work (the normal maintenance path follows);
    otherwise what this slice of conversion did."""
    assert spec.convert is not None
    t = spec.table
    state = await _state(conn, spec)
    row = await conn.fetchrow(
        "SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2", t.schema_, t.name)
    if row is None:
        return None  # the maintenance path reports TableNotFound
    if state is not None and state["phase"] in ("swapped", "done"):  # done: terminal, the original is dropped
        await _finish(conn, spec, state, resource)
        return None
    if row["relkind"] == "p" and state is None:
        return None
    async with TableLock(conn, t.schema_, t.name):
        await ensure_metadata_schema(conn)
        await apply_session_limits(conn, spec.timeouts)
        await conn.execute(STATE_SQL)
        state = await _state(conn, spec)
        if state is None:
            return await _prepare(conn, spec, row["oid"], resource, on_event)
        return await _advance(conn, spec, state, resource, on_event, progress)


async def _prepare(conn: Any, spec: PartitionPolicySpec, oid: int, resource: str, emit: Emit) -> Outcome:
    t = spec.table
    obs = await observe_table(conn, t.schema_, t.name, spec.key_column)
    plain = await _plain_facts(conn, spec, oid)
    problems = refusals(spec, obs, plain)
    for name in (shadow_name(t.name), original_name(t.name)):
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified(t.schema_, name)):
            problems.append(f"a table named {name} already exists; rename or drop it")
    if problems:
        raise PlanError("cannot convert: " + "; ".join(problems), reason="ConversionRefused")
    stmts = shadow_statements(spec, obs, plain, datetime.now(UTC))
    if spec.dry_run:
        return Outcome.progressing("DryRun", f"dryRun: conversion would start with {len(stmts)} statements "
                                             "(see status.plan)", {"plan": stmts})
    keys = plain.primary_key
    types = {c.name: c.type for c in obs.columns}
    log = _log_table(oid)
    lq = qualified("pgcurator", log)
    cols_def = ", ".join(f"{ident(k)} {types[k]}" for k in keys)
    fn = qualified("pgcurator", f"capture_{oid}")
    new_keys = ", ".join(f"NEW.{ident(k)}" for k in keys)
    old_keys = ", ".join(f"OLD.{ident(k)}" for k in keys)
    kl = ", ".join(ident(k) for k in keys)
    setup = [
        f"CREATE TABLE {lq} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, {cols_def})",
        f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $pgc$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN INSERT INTO {lq} ({kl}) VALUES ({old_keys}); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN INSERT INTO {lq} ({kl}) VALUES ({new_keys}); END IF;
  RETURN NULL;
END $pgc$""",
        f"CREATE TRIGGER {ident(_trigger_name(t.name))} AFTER INSERT OR UPDATE OR DELETE ON "
        f"{qualified(t.schema_, t.name)} FOR EACH ROW EXECUTE FUNCTION {fn}()",
    ]
    rel = await conn.fetchrow("SELECT greatest(reltuples, 0)::bigint AS n, pg_relation_size(oid) AS b "
                              "FROM pg_class WHERE oid = $1", oid)
    width = max(64, int(rel["b"] / max(rel["n"], 1)))
    assert spec.convert is not None
    batch = max(1000, min(200_000, _bytes(spec.convert.batch_memory) // (width * 4)))
    total = int(await conn.fetchval(f"SELECT count(*) FROM {qualified(t.schema_, t.name)}"))
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    async with conn.transaction():
        # The trigger goes in with the shadow, before the first batch: every write from here on is logged.
        for s in [*stmts, *setup]:
            await conn.execute(s)
        await conn.execute(
            "INSERT INTO pgcurator.conversions (table_schema, table_name, phase, log_table, batch_rows, rows_total, "
            "details) VALUES ($1, $2, 'copy', $3, $4, $5, $6)", t.schema_, t.name, log, batch, total,
            json.dumps({"keys": keys, "types": [types[k] for k in keys], "oid": oid}))
        await record_history(conn, resource, "convert_prepare", t.name, f"{len(stmts) + len(setup)} statements: "
                             + "; ".join(stmts[:3]) + " ...", started, (time.perf_counter() - t0) * 1000)
    if emit:
        await emit(Event("Normal", "ConversionStarted", f"converting {t.qualified}: {total} rows, batches of "
                                                        f"{batch}; shadow {shadow_name(t.name)} built"))
    return Outcome.progressing("Converting", f"conversion prepared: {total} rows to copy in batches of {batch}",
                               {"conversion": {"phase": "copy", "rowsCopied": 0, "rowsTotal": total}},
                               requeue_after=0)


def _status(state: Any, rate: float | None = None) -> dict[str, Any]:
    copied, total = int(state["rows_copied"]), int(state["rows_total"])
    out: dict[str, Any] = {"phase": state["phase"], "rowsCopied": copied, "rowsTotal": total,
                           "percent": round(100 * copied / total, 1) if total else 100.0}
    if rate:
        out["rowsPerSecond"] = round(rate)
        out["etaSeconds"] = round(max(0, total - copied) / rate)
    return out


async def _advance(conn: Any, spec: PartitionPolicySpec, state: Any, resource: str, emit: Emit,
                   progress: Progress) -> Outcome:
    t = spec.table
    details = json.loads(state["details"]) if isinstance(state["details"], str) else state["details"]
    keys: list[str] = details["keys"]
    types: list[str] = details["types"]
    cols = [c for c in (await observe_table(conn, t.schema_, t.name)).columns if not c.generated]
    col_list = ", ".join(ident(c.name) for c in cols)
    src = qualified(t.schema_, t.name)
    dst = qualified(t.schema_, shadow_name(t.name))
    kl = ", ".join(ident(k) for k in keys)
    deadline = time.monotonic() + SLICE_SECONDS
    phase = state["phase"]
    if phase == "copy":
        copied = int(state["rows_copied"])
        last = json.loads(state["last_key"]) if isinstance(state["last_key"], str) else state["last_key"]
        batch = int(state["batch_rows"])
        params = ", ".join(f"${i + 1}::text::{types[i]}" for i in range(len(keys)))
        # Qualified with the alias: an unqualified ORDER BY name would bind to the text output column.
        order_desc = ", ".join(f"b.{ident(x)} DESC" for x in keys)
        last_cols = ", ".join(f"(SELECT b.{ident(k)}::text FROM batch b ORDER BY {order_desc} LIMIT 1)" for k in keys)
        t0, start_copied = time.perf_counter(), copied
        started = datetime.now(UTC)
        while time.monotonic() < deadline:
            where = f"WHERE ({kl}) > ({params})" if last else ""
            sql = (f"WITH batch AS (SELECT * FROM {src} {where} ORDER BY {kl} LIMIT {batch}), "
                   f"ins AS (INSERT INTO {dst} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM batch "
                   f"ON CONFLICT DO NOTHING) SELECT (SELECT count(*) FROM batch), {last_cols}")
            async with conn.transaction():
                res = await conn.fetchrow(sql, *(last or []))
                n = int(res[0])
                if n:
                    last = [res[i + 1] for i in range(len(keys))]
                    copied += n
                await conn.execute(
                    "UPDATE pgcurator.conversions SET last_key = $3, rows_copied = $4, updated_at = now(), "
                    "phase = $5 WHERE table_schema = $1 AND table_name = $2", t.schema_, t.name,
                    json.dumps(last), copied, "copy" if n else "catchup")
            rate = (copied - start_copied) / max(time.perf_counter() - t0, 1e-6)
            st = {"phase": "copy" if n else "catchup", "rows_copied": copied, "rows_total": state["rows_total"]}
            if progress:
                await progress({"conversion": _status(st, rate)})
            if not n:
                phase = "catchup"
                break
        await record_history(conn, resource, "convert_copy", t.name,
                             f"copied rows {start_copied}..{copied} in batches of {batch}", started,
                             (time.perf_counter() - t0) * 1000)
        if phase == "copy":
            rate = (copied - start_copied) / max(time.perf_counter() - t0, 1e-6)
            st = {"phase": "copy", "rows_copied": copied, "rows_total": state["rows_total"]}
            status = {"conversion": _status(st, rate)}
            if emit:
                await emit(Event("Normal", "ConversionProgress",
                                 f"copied {copied} of {state['rows_total']} rows ({status['conversion']['percent']}%), "
                                 f"{round(rate)} rows/s"))
            return Outcome.progressing("Converting", f"copying: {status['conversion']['percent']}% "
                                       f"({copied}/{state['rows_total']} rows)", status, requeue_after=0)
    log = qualified("pgcurator", state["log_table"])
    # Catch up with what was written meanwhile, then swap when little is left.
    while time.monotonic() < deadline:
        pending = int(await conn.fetchval(f"SELECT count(*) FROM {log}"))
        if pending < SWAP_WHEN_LOG_BELOW:
            break
        await _apply_log(conn, log, src, dst, keys, types, col_list, CATCHUP_BATCH)
    else:
        return Outcome.progressing("Converting", "catching up with rows written during the copy",
                                   {"conversion": {"phase": "catchup"}}, requeue_after=0)
    return await _swap(conn, spec, state, resource, emit, keys, types, col_list, log, src, dst)


async def _apply_log(conn: Any, log: str, src: str, dst: str, keys: list[str], types: list[str], col_list: str,
                     limit: int | None, drained: set[tuple[str, ...]] | None = None) -> int:
    """Re-sync the logged keys: delete them from the shadow and copy their current rows from the original."""
    kl = ", ".join(ident(k) for k in keys)
    lim = f"ORDER BY seq LIMIT {limit}" if limit else ""
    arrays = ", ".join(f"${i + 1}::text[]::{types[i]}[]" for i in range(len(keys)))
    async with conn.transaction():
        rows = await conn.fetch(f"DELETE FROM {log} WHERE seq IN (SELECT seq FROM {log} {lim}) "
                                f"RETURNING {', '.join(ident(k) + '::text' for k in keys)}")
        if not rows:
            return 0
        unique = sorted({tuple(r) for r in rows})
        if drained is not None:
            drained.update(unique)
        cols = [[u[i] for u in unique] for i in range(len(keys))]
        await conn.execute(f"DELETE FROM {dst} WHERE ({kl}) IN (SELECT * FROM unnest({arrays}))", *cols)
        await conn.execute(f"INSERT INTO {dst} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM {src} "
                           f"WHERE ({kl}) IN (SELECT * FROM unnest({arrays}))", *cols)
    return len(rows)


def _checksum_sql(table: str, keys: list[str], where: str = "") -> str:
    text = " || '|' || ".join(f"t.{ident(k)}::text" for k in keys)
    return f"SELECT count(*), coalesce(sum(hashtextextended({text}, 0)::numeric), 0) FROM {table} t {where}"


async def _preverify(conn: Any, log: str, src: str, dst: str, keys: list[str]) -> tuple[int, str]:
    """Compare the two tables without blocking anyone: in one snapshot, every row whose key is not
    waiting in the change log must be identical on both sides (count and key checksum). The keys
    in the log are re-synced and checked under the swap's lock; no catch-up runs in between, so
    those two sets together cover the whole table."""
    unlogged = "WHERE NOT EXISTS (SELECT 1 FROM {log} l WHERE {cond})".format(
        log=log, cond=" AND ".join(f"l.{ident(k)} = t.{ident(k)}" for k in keys))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        a = await conn.fetchrow(_checksum_sql(src, keys, unlogged))
        b = await conn.fetchrow(_checksum_sql(dst, keys, unlogged))
    if tuple(a) != tuple(b):
        raise CuratorError(
            f"verification failed before the swap: original has {a[0]} rows (key checksum {a[1]}), the "
            f"partitioned copy {b[0]} (checksum {b[1]}); nothing was swapped", reason="VerificationFailed")
    return int(a[0]), str(a[1])


async def _swap(conn: Any, spec: PartitionPolicySpec, state: Any, resource: str, emit: Emit, keys: list[str],
                types: list[str], col_list: str, log: str, src: str, dst: str) -> Outcome:
    t = spec.table
    old = original_name(t.name)
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    seqs = await conn.fetch(
        "SELECT a.attname::text, pg_get_serial_sequence($1, a.attname) AS seq, a.attidentity <> '' AS ident "
        "FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "AND pg_get_serial_sequence($1, a.attname) IS NOT NULL", src)
    base_rows, base_sum = await _preverify(conn, log, src, dst, keys)
    t0 = time.perf_counter()
    try:
        async with conn.transaction():
            # Writers wait here (readers do not); lock_timeout bounds how long we may make them wait.
            await conn.execute(f"LOCK TABLE {src} IN EXCLUSIVE MODE")
            drained: set[tuple[str, ...]] = set()
            while await _apply_log(conn, log, src, dst, keys, types, col_list, None, drained):
                pass
            drained_rows = 0
            if drained:
                cols = [[d[i] for d in sorted(drained)] for i in range(len(keys))]
                arrays = ", ".join(f"${i + 1}::text[]::{types[i]}[]" for i in range(len(keys)))
                only = f"WHERE ({', '.join('t.' + ident(k) for k in keys)}) IN (SELECT * FROM unnest({arrays}))"
                ra = await conn.fetchrow(_checksum_sql(src, keys, only), *cols)
                rb = await conn.fetchrow(_checksum_sql(dst, keys, only), *cols)
                if tuple(ra) != tuple(rb):
                    raise CuratorError(
                        f"verification failed at the swap: the {len(drained)} rows written last differ (original "
                        f"{ra[0]} rows, copy {rb[0]}); nothing was swapped", reason="VerificationFailed")
                drained_rows = int(ra[0])
            total_rows = base_rows + drained_rows
            await conn.execute(f"DROP TRIGGER {ident(_trigger_name(t.name))} ON {src}")
            await conn.execute(f"ALTER TABLE {src} RENAME TO {ident(old)}")
            await conn.execute(f"ALTER TABLE {dst} RENAME TO {ident(t.name)}")
            await _carry_index_names(conn, t.schema_, old, t.name)
            for col, seq, is_identity in seqs:
                if is_identity:
                    last, called = await conn.fetchrow(f"SELECT last_value, is_called FROM {seq}")
                    new_seq = await conn.fetchval("SELECT pg_get_serial_sequence($1, $2)",
                                                  qualified(t.schema_, t.name), col)
                    await conn.execute("SELECT setval($1::regclass, $2, $3)", new_seq, last, called)
                    # The copy's identity sequence was named after the shadow table: it takes the
                    # original's name, and the original's moves aside.
                    seq_name = await conn.fetchval("SELECT relname::text FROM pg_class WHERE oid = $1::regclass",
                                                   seq)
                    await conn.execute(f"ALTER SEQUENCE {seq} RENAME TO "
                                       f"{ident(fit_identifier(seq_name, '_unpartitioned'))}")
                    await conn.execute(f"ALTER SEQUENCE {new_seq} RENAME TO {ident(seq_name)}")

                else:
                    # A serial's sequence is owned by the old column: hand it over, or dropping the old
                    # table later would drop the sequence the new table's default uses.
                    await conn.execute(f"ALTER SEQUENCE {seq} OWNED BY {qualified(t.schema_, t.name)}.{ident(col)}")
            lock_ms = (time.perf_counter() - t0) * 1000
            await conn.execute(
                "UPDATE pgcurator.conversions SET phase = 'swapped', swapped_at = now(), updated_at = now(), "
                "details = details || $3 WHERE table_schema = $1 AND table_name = $2", t.schema_, t.name,
                json.dumps({"rows": total_rows, "checksum": base_sum, "swapMs": round(lock_ms, 1)}))
            # in the swap's own transaction: a crash right after the commit still leaves the record
            await record_history(conn, resource, "convert_swap", t.name,
                                 f"verified {total_rows} rows (count and key checksum); renamed {t.name} -> {old}, "
                                 f"{shadow_name(t.name)} -> {t.name}", started, lock_ms)
    except asyncpg.LockNotAvailableError:
        return Outcome.progressing("WaitingForLock", f"the swap could not lock {t.qualified} within lockTimeout; "
                                   "retrying", {"conversion": {"phase": "swap"}}, requeue_after=5)
    if emit:
        await emit(Event("Normal", "ConversionSwapped", f"{t.qualified} is now partitioned: {total_rows} rows verified "
                                                        f"by count and key checksum; writers waited {lock_ms:.0f} ms; "
                                                        f"original kept as {old}"))
    state = await _state(conn, spec)
    await _finish(conn, spec, state, resource)
    return Outcome.progressing("Converted", f"converted: {total_rows} rows verified; original kept as {old}",
                               {"conversion": {"phase": "swapped", "rowsVerified": total_rows,
                                               "swapMilliseconds": round(lock_ms, 1)}}, requeue_after=0)


async def _index_defs(conn: Any, schema: str, table: str) -> list[tuple[str, tuple[bool, str]]]:
    rows = await conn.fetch(
        "SELECT i.relname::text, x.indisunique, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = $1::regclass ORDER BY i.relname",
        qualified(schema, table))
    return [(r[0], (bool(r[1]), r[2].split(" USING ", 1)[-1])) for r in rows]


async def _carry_index_names(conn: Any, schema: str, original: str, table: str) -> None:
    """LIKE ... INCLUDING INDEXES names the copy's indexes after the shadow table; give each the
    name of the original's index with the same definition (the original's move aside first)."""
    old = await _index_defs(conn, schema, original)
    for name, _ in old:
        await conn.execute(f"ALTER INDEX {qualified(schema, name)} RENAME TO "
                           f"{ident(fit_identifier(name, '_unpartitioned'))}")
    wanted = {shape: name for name, shape in old}
    for name, shape in await _index_defs(conn, schema, table):
        target = wanted.pop(shape, None)
        if target is not None and target != name:
            await conn.execute(f"ALTER INDEX {qualified(schema, name)} RENAME TO {ident(target)}")


async def _finish(conn: Any, spec: PartitionPolicySpec, state: Any, resource: str) -> None:
    """After the swap: drop the change log and its function; drop the original when asked."""
    t = spec.table
    details = json.loads(state["details"]) if isinstance(state["details"], str) else state["details"]
    await conn.execute(f"DROP TABLE IF EXISTS {qualified('pgcurator', state['log_table'])}")
    await conn.execute(f"DROP FUNCTION IF EXISTS {qualified('pgcurator', 'capture_' + str(details['oid']))}()")
    assert spec.convert is not None
    if spec.convert.drop_original and state["phase"] == "swapped":
        old = qualified(t.schema_, original_name(t.name))
        started = datetime.now(UTC)
        async with conn.transaction():  # the drop, the state and its record: all or nothing
            await conn.execute(f"DROP TABLE IF EXISTS {old}")
            await conn.execute("UPDATE pgcurator.conversions SET phase = 'done', updated_at = now() "
                               "WHERE table_schema = $1 AND table_name = $2", t.schema_, t.name)
            await record_history(conn, resource, "convert_drop_original", original_name(t.name),
                                 f"DROP TABLE IF EXISTS {old}", started, 0.0)
