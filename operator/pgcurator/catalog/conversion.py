"""Read-only queries of a table's conversion: its record in pgcurator.conversions, the objects
the conversion creates (shadow table, change log, capture function and trigger) and their
names, and the facts about the plain table that decide whether it can be converted."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..models.partition import PartitionPolicySpec
from ..sql.quote import fit_identifier, ident, literal, qualified


@dataclass
class PlainTable:
    """What the conversion needs to know about the plain table, beyond TableObservation."""

    primary_key: list[str] = field(default_factory=list)
    unique_indexes: dict[str, list[str]] = field(default_factory=dict)  # name -> columns
    inbound_fks: list[str] = field(default_factory=list)  # "other_table.constraint"
    dependent_views: list[str] = field(default_factory=list)
    user_triggers: list[str] = field(default_factory=list)
    rls: bool = False
    inheritance: bool = False
    outbound_fks: list[tuple[str, str]] = field(default_factory=list)  # (name, definition)
    grants: list[tuple[str, str, bool]] = field(default_factory=list)  # (privilege, grantee or PUBLIC, grantable)
    min_key: object = None
    max_key: object = None
    unlisted_rows: int = 0  # rows whose list key is in no list partition


def shadow_name(table: str) -> str:
    return fit_identifier(table, "__pgcurator_new")


def original_name(table: str) -> str:
    return fit_identifier(table, "_unpartitioned")


def trigger_name(table: str) -> str:
    return fit_identifier("pgcurator_capture_" + table, "")


def log_table_name(oid: int) -> str:
    """The change log, named after the oid of the table being converted."""
    return f"conversion_log_{oid}"


def capture_function_name(oid: int) -> str:
    return f"capture_{oid}"


@dataclass
class ConversionRecord:
    """One row of pgcurator.conversions."""

    phase: str
    log_table: str
    last_key: list[Any] | None
    rows_copied: int
    rows_total: int
    batch_rows: int
    details: dict[str, Any]

    @property
    def oid(self) -> int | None:
        """The oid of the plain table being converted (the change log and function are named after it)."""
        value = self.details.get("oid")
        return int(value) if value is not None else None


@dataclass
class ConversionFacts:
    """Everything the conversion's state machine decides from, observed in one place."""

    table_oid: int | None = None
    table_relkind: str | None = None  # 'r' plain, 'p' partitioned, None absent, anything else: not a table
    record: ConversionRecord | None = None
    shadow_exists: bool = False
    original_exists: bool = False  # <table>_unpartitioned
    trigger_exists: bool = False  # the capture trigger on the table as it is now
    trigger_disabled: bool = False
    # Change logs and capture functions left in the pgcurator schema, by the oid they are named after.
    logs: list[int] = field(default_factory=list)
    functions: list[int] = field(default_factory=list)

    @property
    def scaffolding(self) -> bool:
        return self.shadow_exists or self.trigger_exists or bool(self.logs) or bool(self.functions)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def conversion_record(conn: Any, schema: str, table: str) -> ConversionRecord | None:
    # From the catalog, not to_regclass(): that raises on a schema the role may not use.
    if not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE n.nspname = 'pgcurator' AND c.relname = 'conversions')"):
        return None
    row = await conn.fetchrow(
        "SELECT phase, log_table, last_key, rows_copied, rows_total, batch_rows, details FROM pgcurator.conversions "
        "WHERE table_schema = $1 AND table_name = $2", schema, table)
    if row is None:
        return None
    return ConversionRecord(phase=row["phase"], log_table=row["log_table"], last_key=_json(row["last_key"]),
                            rows_copied=int(row["rows_copied"]), rows_total=int(row["rows_total"]),
                            batch_rows=int(row["batch_rows"]), details=_json(row["details"]) or {})


_RELATIONS = """
SELECT c.relname::text, c.oid::bigint, c.relkind::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
"""


async def observe_conversion(conn: Any, schema: str, table: str) -> ConversionFacts:
    facts = ConversionFacts(record=await conversion_record(conn, schema, table))
    shadow, original = shadow_name(table), original_name(table)
    rels = {r[0]: (int(r[1]), r[2]) for r in await conn.fetch(_RELATIONS, schema, [table, shadow, original])}
    if table in rels:
        facts.table_oid, facts.table_relkind = rels[table]
    facts.shadow_exists = shadow in rels
    if facts.record is None and facts.table_relkind != "r":
        return facts  # the common case, every run of a partitioned table: nothing else matters
    facts.original_exists = original in rels
    if facts.table_oid is not None:
        enabled = await conn.fetchval("SELECT tgenabled::text FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND "
                                      "tgname = $2", facts.table_oid, trigger_name(table))
        facts.trigger_exists = enabled is not None
        # 'O' (origin, what earlier versions created) or 'A' (always, also for replication
        # appliers); disabled or replica-only, writes go unlogged.
        facts.trigger_disabled = enabled is not None and enabled not in ("O", "A")
    oids = {o for o in (facts.table_oid, facts.record.oid if facts.record else None) if o is not None}
    for oid in sorted(oids):
        if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = 'pgcurator' AND c.relname = $1)", log_table_name(oid)):
            facts.logs.append(oid)
        if await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
                "ON n.oid = p.pronamespace WHERE n.nspname = 'pgcurator' AND p.proname = $1)",
                capture_function_name(oid)):
            facts.functions.append(oid)
    return facts


async def plain_facts(conn: Any, spec: PartitionPolicySpec, oid: int) -> PlainTable:
    """What decides whether the plain table can be converted, and what the shadow must carry over."""
    t = spec.table
    plain = PlainTable()
    pk = await conn.fetchval(
        "SELECT array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index x "
        "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
        "WHERE x.indrelid = $1 AND x.indisprimary", oid)
    plain.primary_key = list(pk or [])
    for name, cols in await conn.fetch(
            "SELECT c.relname::text, array_agg(a.attname::text ORDER BY k.ord) FROM pg_catalog.pg_index x "
            "JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid "
            "CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
            "WHERE x.indrelid = $1 AND x.indisunique AND NOT x.indisprimary GROUP BY c.relname", oid):
        plain.unique_indexes[name] = [c for c in cols if c]
    plain.inbound_fks = [f"{r[0]}.{r[1]}" for r in await conn.fetch(
        "SELECT conrelid::regclass::text, conname::text FROM pg_catalog.pg_constraint WHERE confrelid = $1 "
        "AND contype = 'f' AND conrelid <> $1", oid)]
    plain.dependent_views = [r[0] for r in await conn.fetch(
        "SELECT DISTINCT v.oid::regclass::text FROM pg_catalog.pg_depend d "
        "JOIN pg_catalog.pg_rewrite rw ON rw.oid = d.objid JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class "
        "WHERE d.refobjid = $1 AND d.classid = 'pg_catalog.pg_rewrite'::regclass AND v.oid <> $1", oid)]
    plain.user_triggers = [r[0] for r in await conn.fetch(
        "SELECT tgname::text FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgname <> $2",
        oid, trigger_name(t.name))]
    plain.rls = bool(await conn.fetchval("SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = $1", oid))
    plain.inheritance = bool(await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits WHERE inhrelid = $1 OR inhparent = $1)", oid))
    plain.outbound_fks = [(r[0], r[1]) for r in await conn.fetch(
        "SELECT conname::text, pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
        "WHERE conrelid = $1 AND contype = 'f'", oid)]
    plain.grants = [(r[1], r[0], bool(r[2])) for r in await conn.fetch(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END, "
        "a.privilege_type, a.is_grantable FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a "
        "WHERE c.oid = $1 AND a.grantee <> c.relowner", oid)]
    key = ident(spec.key_column)
    tq = qualified(t.schema_, t.name)
    plain.min_key, plain.max_key = await conn.fetchrow(f"SELECT min({key}), max({key}) FROM {tq}")
    if spec.list is not None and not spec.default_partition:
        values = ", ".join(literal(v) if isinstance(v, str) else str(v)
                           for p in spec.list.partitions for v in p.values)
        plain.unlisted_rows = int(await conn.fetchval(
            f"SELECT count(*) FROM {tq} WHERE {key} IS NULL OR {key} NOT IN ({values})"))
    return plain


async def row_width(conn: Any, oid: int) -> int:
    """Average bytes per row from the planner's statistics (at least 64)."""
    rel = await conn.fetchrow("SELECT greatest(reltuples, 0)::bigint AS n, pg_catalog.pg_relation_size(oid) AS b "
                              "FROM pg_catalog.pg_class WHERE oid = $1", oid)
    if rel is None:
        return 64
    return max(64, int(rel["b"] / max(rel["n"], 1)))


async def row_count(conn: Any, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def pending_changes(conn: Any, log: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {log}"))


def checksum_sql(table: str, where: str = "") -> str:
    """Row count and a checksum of whole rows (their text: same columns in the same order on the
    original and its copy), for a table aliased t."""
    return f"SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {table} t {where}"


async def checksum(conn: Any, table: str, where: str = "", *args: Any) -> tuple[int, str]:
    row = await conn.fetchrow(checksum_sql(table, where), *args)
    return int(row[0]), str(row[1])


async def serial_sequences(conn: Any, table: str) -> list[tuple[str, str, bool]]:
    """(column, sequence, is identity) for every column whose default or identity uses a sequence."""
    rows = await conn.fetch(
        "SELECT a.attname::text, pg_catalog.pg_get_serial_sequence($1, a.attname) AS seq, a.attidentity <> '' "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "AND pg_catalog.pg_get_serial_sequence($1, a.attname) IS NOT NULL", table)
    return [(r[0], r[1], bool(r[2])) for r in rows]


async def sequence_position(conn: Any, seq: str) -> tuple[int, bool]:
    row = await conn.fetchrow(f"SELECT last_value, is_called FROM {seq}")
    return int(row[0]), bool(row[1])


async def serial_sequence(conn: Any, table: str, column: str) -> str:
    return str(await conn.fetchval("SELECT pg_catalog.pg_get_serial_sequence($1, $2)", table, column))


async def relation_name(conn: Any, regclass: str) -> str:
    return str(await conn.fetchval("SELECT relname::text FROM pg_catalog.pg_class WHERE oid = $1::regclass",
                                   regclass))


async def index_shapes(conn: Any, schema: str, table: str) -> list[tuple[str, tuple[bool, str]]]:
    """(index name, (unique, definition after USING)) of a table's indexes: the same shape on two
    tables means the same index."""
    rows = await conn.fetch(
        "SELECT i.relname::text, x.indisunique, pg_catalog.pg_get_indexdef(x.indexrelid) FROM pg_catalog.pg_index x "
        "JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = $1::regclass ORDER BY i.relname",
        qualified(schema, table))
    return [(r[0], (bool(r[1]), r[2].split(" USING ", 1)[-1])) for r in rows]
