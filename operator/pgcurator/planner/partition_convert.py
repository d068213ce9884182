"""Pure parts of converting a plain table into a partitioned one: what is refused, the names of
the objects a conversion creates, and the text of every statement it runs (the shadow table with
its children already named as they will be after the swap, the change capture, the batches, the
swap and the clean-up)."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

# The names live with the catalog queries that look for them; re-exported for the planner's callers.
from ..catalog.conversion import PlainTable as PlainTable
from ..catalog.conversion import capture_function_name as capture_function_name
from ..catalog.conversion import log_table_name as log_table_name
from ..catalog.conversion import original_name as original_name
from ..catalog.conversion import shadow_name as shadow_name
from ..catalog.conversion import trigger_name as trigger_name
from ..catalog.partitions import TableObservation
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec, SubpartitionSpec
from ..sql.quote import fit_identifier, ident, literal, qualified
from .partition import (
    LIKE_OPTIONS,
    Parent,
    child_statements,
    default_partition_name,
    desired_range_periods,
    hash_bound,
    list_bound,
    range_name,
)
from .partition_ddl import WALL_CLOCK
from .ranges import IntGrid, Period, TimeGrid, render_bound

MAX_PARTITIONS = 5000


def _sub_of(spec: PartitionPolicySpec, list_name: str) -> SubpartitionSpec | None:
    """The second level of one list partition (subpartition.only may leave it out)."""
    sub = spec.subpartition
    return None if sub is None or (sub.only is not None and list_name not in sub.only) else sub


def layout_fingerprint(spec: PartitionPolicySpec) -> str:
    """What the shadow table's shape depends on: a change of it during the copy means the shadow
    no longer matches the spec (premake, retention, template and schedule do not count)."""
    shape = spec.model_dump(by_alias=True, include={"strategy", "range", "list", "hash", "subpartition",
                                                    "default_partition"})
    for section in (shape.get("range"), (shape.get("subpartition") or {}).get("range")):
        if section:
            section.pop("premake", None)
    return json.dumps(shape, sort_keys=True, default=str)


def batch_rows(batch_memory: str, width: int) -> int:
    """Rows per copy batch: the memory budget over (4 x the average row width), 1,000..200,000."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    budget = int(batch_memory[:-2]) * units[batch_memory[-2:]]
    return max(1000, min(200_000, budget // (max(width, 1) * 4)))


def capture_statements(schema: str, table: str, oid: int, keys: list[str], types: dict[str, str]) -> list[str]:
    """The change log, and the trigger that records the key of every row written to the table."""
    lq = qualified("pgcurator", log_table_name(oid))
    fn = qualified("pgcurator", capture_function_name(oid))
    kl = ", ".join(ident(k) for k in keys)
    new_keys = ", ".join(f"NEW.{ident(k)}" for k in keys)
    old_keys = ", ".join(f"OLD.{ident(k)}" for k in keys)
    return [
        f"CREATE TABLE {lq} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        + ", ".join(f"{ident(k)} {types[k]}" for k in keys) + ")",
        f"""CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $pgc$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN INSERT INTO {lq} ({kl}) VALUES ({old_keys}); END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN INSERT INTO {lq} ({kl}) VALUES ({new_keys}); END IF;
  RETURN NULL;
END $pgc$""",
        f"CREATE TRIGGER {ident(trigger_name(table))} AFTER INSERT OR UPDATE OR DELETE ON "
        f"{qualified(schema, table)} FOR EACH ROW EXECUTE FUNCTION {fn}()",
        # Also for writes with session_replication_role = replica (logical replication appliers,
        # restores): an unlogged write would be missing from the partitioned table.
        f"ALTER TABLE {qualified(schema, table)} ENABLE ALWAYS TRIGGER {ident(trigger_name(table))}",
    ]


def scaffolding_drops(schema: str, table: str, oids: list[int], *, shadow: bool) -> list[str]:
    """Remove what a conversion built, whatever of it is left: the function's CASCADE takes the
    capture trigger with it, wherever the table it is on went. The shadow only when asked."""
    stmts = []
    for oid in sorted(set(oids)):
        stmts.append(f"DROP FUNCTION IF EXISTS {qualified('pgcurator', capture_function_name(oid))}() CASCADE")
        stmts.append(f"DROP TABLE IF EXISTS {qualified('pgcurator', log_table_name(oid))}")
    if shadow:
        stmts.append(f"DROP TABLE IF EXISTS {qualified(schema, shadow_name(table))}")
    return stmts


def drop_original(schema: str, table: str) -> str:
    return f"DROP TABLE IF EXISTS {qualified(schema, original_name(table))}"


def copy_batch_sql(src: str, dst: str, keys: list[str], types: list[str], col_list: str, batch: int,
                   after_last: bool) -> str:
    """One keyset batch: the next `batch` rows after the last key copied (parameters: the last key
    as text), ON CONFLICT DO NOTHING so a batch redone after a crash inserts nothing twice. Returns
    the batch's row count and its last key as text."""
    kl = ", ".join(ident(k) for k in keys)
    params = ", ".join(f"${i + 1}::text::{types[i]}" for i in range(len(keys)))
    # Qualified with the alias: an unqualified ORDER BY name would bind to the text output column.
    order_desc = ", ".join(f"b.{ident(x)} DESC" for x in keys)
    last_cols = ", ".join(f"(SELECT b.{ident(k)}::text FROM batch b ORDER BY {order_desc} LIMIT 1)" for k in keys)
    where = f"WHERE ({kl}) > ({params})" if after_last else ""
    return (f"WITH batch AS (SELECT * FROM {src} {where} ORDER BY {kl} LIMIT {batch}), "
            f"ins AS (INSERT INTO {dst} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM batch "
            f"ON CONFLICT DO NOTHING) SELECT (SELECT count(*) FROM batch), {last_cols}")


def key_arrays(types: list[str]) -> str:
    """unnest() arguments for a set of keys passed as one text array per key column."""
    return ", ".join(f"${i + 1}::text[]::{types[i]}[]" for i in range(len(types)))


def drain_log_sql(log: str, keys: list[str], limit: int | None) -> str:
    lim = f"ORDER BY seq LIMIT {limit}" if limit else ""
    return (f"DELETE FROM {log} WHERE seq IN (SELECT seq FROM {log} {lim}) "
            f"RETURNING {', '.join(ident(k) + '::text' for k in keys)}")


def resync_sql(src: str, dst: str, keys: list[str], types: list[str], col_list: str) -> list[str]:
    """Replace the shadow's rows of the given keys by the original's current ones."""
    kl = ", ".join(ident(k) for k in keys)
    arrays = key_arrays(types)
    return [f"DELETE FROM {dst} WHERE ({kl}) IN (SELECT * FROM unnest({arrays}))",
            f"INSERT INTO {dst} ({col_list}) OVERRIDING SYSTEM VALUE SELECT {col_list} FROM {src} "
            f"WHERE ({kl}) IN (SELECT * FROM unnest({arrays}))"]


def not_logged(log: str, keys: list[str]) -> str:
    """WHERE clause for a table aliased t: rows whose key is not waiting in the change log."""
    cond = " AND ".join(f"l.{ident(k)} = t.{ident(k)}" for k in keys)
    return f"WHERE NOT EXISTS (SELECT 1 FROM {log} l WHERE {cond})"


def only_keys(keys: list[str], types: list[str]) -> str:
    """WHERE clause for a table aliased t: rows whose key is in the given arrays."""
    return f"WHERE ({', '.join('t.' + ident(k) for k in keys)}) IN (SELECT * FROM unnest({key_arrays(types)}))"


def swap_renames(schema: str, table: str) -> list[str]:
    src, dst = qualified(schema, table), qualified(schema, shadow_name(table))
    return [f"DROP TRIGGER {ident(trigger_name(table))} ON {src}",
            f"ALTER TABLE {src} RENAME TO {ident(original_name(table))}",
            f"ALTER TABLE {dst} RENAME TO {ident(table)}"]


def lock_writers(table: str) -> str:
    """Writers wait (readers do not) while the swap re-syncs the last keys and renames."""
    return f"LOCK TABLE {table} IN EXCLUSIVE MODE"


def carry_identity(seq: str, new_seq: str, seq_name: str, last: int, called: bool) -> list[str]:
    """The copy's identity sequence was named after the shadow table: it continues where the
    original's stopped and takes its name; the original's moves aside."""
    return [f"SELECT pg_catalog.setval({literal(new_seq)}::regclass, {last}, {'true' if called else 'false'})",
            f"ALTER SEQUENCE {seq} RENAME TO {ident(fit_identifier(seq_name, '_unpartitioned'))}",
            f"ALTER SEQUENCE {new_seq} RENAME TO {ident(seq_name)}"]


def carry_serial(seq: str, table: str, column: str) -> str:
    """A serial's sequence is owned by the old column: hand it over, or dropping the old table
    later would drop the sequence the new table's default uses."""
    return f"ALTER SEQUENCE {seq} OWNED BY {table}.{ident(column)}"


def rename_statement(kind: str, schema: str, name: str, new: str) -> str:
    return f"ALTER {kind} {qualified(schema, name)} RENAME TO {ident(new)}"


def partition_keys(spec: PartitionPolicySpec) -> list[str]:
    keys = [spec.key_column]
    sub = spec.subpartition
    if sub is not None:
        keys.append((sub.hash or sub.range).column)  # type: ignore[union-attr]
    return keys


def refusals(spec: PartitionPolicySpec, obs: TableObservation, plain: PlainTable) -> list[str]:
    """Everything that makes an online conversion unsafe, each saying what to change."""
    t = spec.table.qualified
    out = []
    keys = partition_keys(spec)
    missing_cols = [k for k in keys if k not in obs.column_types]
    if missing_cols:
        return [f"partition key column(s) {missing_cols} do not exist in {t}"]
    if not plain.primary_key:
        out.append(f"{t} has no primary key: batches are copied and verified by key; add a primary key that "
                   f"includes {', '.join(keys)}")
    elif not set(keys) <= set(plain.primary_key):
        out.append(f"the primary key of {t} ({', '.join(plain.primary_key)}) does not include the partition key "
                   f"({', '.join(keys)}); PostgreSQL requires it on a partitioned table: extend the primary key")
    for name, cols in plain.unique_indexes.items():
        if not set(keys) <= set(cols):
            out.append(f"unique index {name} ({', '.join(cols)}) does not include the partition key; "
                       "extend it or replace it")
    if plain.inbound_fks:
        out.append(f"foreign keys point at {t} ({', '.join(plain.inbound_fks)}): they would keep pointing at the "
                   "old table after the swap; drop them for the conversion and recreate them afterwards")
    if plain.dependent_views:
        out.append(f"views depend on {t} ({', '.join(plain.dependent_views)}): they would keep reading the old "
                   "table; drop and recreate them around the conversion")
    if plain.user_triggers:
        out.append(f"{t} has triggers ({', '.join(plain.user_triggers)}) that the partitioned table would not "
                   "have; drop them for the conversion and recreate them afterwards")
    if plain.rls:
        out.append(f"{t} uses row-level security; its policies are not carried over: disable it for the conversion")
    if plain.inheritance:
        out.append(f"{t} takes part in table inheritance; it cannot be converted")
    if plain.unlisted_rows:
        out.append(f"{plain.unlisted_rows} rows have {spec.key_column} values in no list partition: add them to "
                   "list.partitions or set defaultPartition: true")
    return out


def _range_periods(spec: PartitionPolicySpec, plain: PlainTable, now: datetime, ctype: str) -> list[Period]:
    """Every period from the oldest row to now (or the highest key) plus premake: no row is left out."""
    r = spec.rng
    ahead = desired_range_periods(r, now, plain.max_key if isinstance(plain.max_key, int) else None, ctype)
    if plain.min_key is None:
        return ahead
    periods: list[Period] = []
    if r.interval is not None:
        n, unit = r.parsed_interval
        grid = TimeGrid(n, unit, ZoneInfo(r.time_zone))
        lo = plain.min_key
        if not isinstance(lo, datetime):
            lo = datetime(lo.year, lo.month, lo.day, tzinfo=ZoneInfo(r.time_zone))  # type: ignore[attr-defined]
        elif lo.tzinfo is None:
            lo = lo.replace(tzinfo=ZoneInfo(r.time_zone))
        start = grid.start_of(lo)
        last = ahead[-1].lower
        assert isinstance(last, datetime)
        hi = plain.max_key
        if isinstance(hi, date) and not isinstance(hi, datetime):  # a date column's highest key, as lo above
            hi = datetime(hi.year, hi.month, hi.day, tzinfo=ZoneInfo(r.time_zone))
        if isinstance(hi, datetime):
            hi_start = grid.start_of(hi if hi.tzinfo else hi.replace(tzinfo=ZoneInfo(r.time_zone)))
            last = max(last, hi_start)
        while start <= last:
            periods.append(grid.period(start))
            start = grid.shift(start, 1)
            if len(periods) > MAX_PARTITIONS:
                break
    else:
        assert r.width is not None and isinstance(plain.min_key, int)
        g = IntGrid(r.width)
        start_i = g.start_of(plain.min_key)
        last_i = ahead[-1].lower
        assert isinstance(last_i, int)
        while start_i <= last_i:
            periods.append(g.period(start_i))
            start_i = g.shift(start_i, 1)
            if len(periods) > MAX_PARTITIONS:
                break
    if len(periods) > MAX_PARTITIONS:
        raise PlanError(f"converting would create more than {MAX_PARTITIONS} partitions (from {plain.min_key}); "
                        "use a wider interval", reason="ConversionRefused")
    return periods


def shadow_statements(spec: PartitionPolicySpec, obs: TableObservation, plain: PlainTable,
                      now: datetime) -> list[str]:
    """One transaction that creates the complete partitioned shadow, empty, with the table's
    columns, defaults, constraints, indexes, outbound foreign keys and grants."""
    t = spec.table
    shadow = shadow_name(t.name)
    sq = qualified(t.schema_, shadow)
    by = {"range": "RANGE", "list": "LIST", "hash": "HASH"}[spec.strategy]
    stmts = [f"CREATE TABLE {sq} (LIKE {qualified(t.schema_, t.name)} INCLUDING ALL) "
             f"PARTITION BY {by} ({ident(spec.key_column)})"]
    parent = Parent(t.schema_, shadow, shadow, base=t.name)
    if spec.range is not None:
        tz = ZoneInfo(spec.range.time_zone)
        ctype = obs.column_types[spec.key_column]
        for p in _range_periods(spec, plain, now, ctype):
            if ctype == WALL_CLOCK and render_bound(p.lower, ctype, tz) == render_bound(p.upper, ctype, tz):
                continue  # the hour repeated when clocks go back: empty in wall-clock terms
            name = range_name(t.name, spec.range, p.lower)
            bound = (f"FOR VALUES FROM ({render_bound(p.lower, ctype, tz)}) TO ({render_bound(p.upper, ctype, tz)})")
            stmts += child_statements(parent, name, bound, spec, spec.subpartition, obs.column_types, now,
                                      inside=(p.lower, p.upper))
    elif spec.list is not None:
        for lp in spec.list.partitions:
            name = fit_identifier(t.name, "_" + lp.name)
            stmts += child_statements(parent, name, list_bound(lp), spec, _sub_of(spec, lp.name), obs.column_types,
                                      now)
    elif spec.hash is not None:
        for rem in range(spec.hash.modulus):
            name = fit_identifier(t.name, f"_{rem}")
            stmts += child_statements(parent, name, hash_bound(spec.hash.modulus, rem), spec, spec.subpartition,
                                      obs.column_types, now)
    if spec.default_partition:
        dname = default_partition_name(t.name)
        stmts += [f"CREATE TABLE {qualified(t.schema_, dname)} (LIKE {sq} {LIKE_OPTIONS})",
                  f"ALTER TABLE {sq} ATTACH PARTITION {qualified(t.schema_, dname)} DEFAULT"]
    for name, definition in plain.outbound_fks:
        # Added while the shadow is empty: no validation scan; copied rows are checked as they arrive.
        stmts.append(f"ALTER TABLE {sq} ADD CONSTRAINT {ident(name)} {definition}")
    for privilege, grantee, grantable in plain.grants:
        who = grantee if grantee == "PUBLIC" else ident(grantee)
        stmts.append(f"GRANT {privilege} ON {sq} TO {who}" + (" WITH GRANT OPTION" if grantable else ""))
    return stmts
