"""Prometheus metrics. The metric objects are module-level so any kind can set its own:

    from pgcurator import metrics
    metrics.BUILD_PROGRESS.labels(namespace, name, index).set(0.42)
    metrics.CERT_EXPIRY.labels(namespace, name).set(seconds_left)

Per-resource series are removed when the resource goes (`forget_resource`), so deleted
resources do not linger on dashboards. Served at /metrics by health.py, from REGISTRY (a
registry of our own, so importing this module twice in tests never collides).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

RECONCILES = Counter(
    "pgcurator_reconciles", "Reconcile runs by resource kind and outcome (ready, progressing, degraded).",
    ["kind", "outcome"], registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "pgcurator_reconcile_duration_seconds", "Wall time of one reconcile run by resource kind.",
    ["kind"], registry=REGISTRY, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
DDL_STATEMENTS = Counter(
    "pgcurator_ddl_statements", "DDL statements run, by step kind (e.g. attach_partition) and outcome "
    "(ok, error, lock_timeout, skipped).",
    ["kind", "outcome"], registry=REGISTRY,
)
DDL_DURATION = Histogram(
    "pgcurator_ddl_duration_seconds", "Duration of one DDL statement, by step kind and outcome.",
    ["kind", "outcome"], registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 7200),
)
PARTITIONS_AHEAD = Gauge(
    "pgcurator_partitions_ahead", "Partitions that exist beyond the current interval, per PartitionPolicy.",
    ["namespace", "name"], registry=REGISTRY,
)
BUILD_PROGRESS = Gauge(
    "pgcurator_build_progress_ratio", "Progress of an index build from pg_stat_progress_create_index (0..1).",
    ["namespace", "name", "index"], registry=REGISTRY,
)
CERT_EXPIRY = Gauge(
    "pgcurator_certificate_expiry_seconds", "Seconds until the certificate the server presents expires.",
    ["namespace", "name"], registry=REGISTRY,
)
RESOURCES = Gauge(
    "pgcurator_resources", "Resources this operator knows about, by kind.", ["kind"], registry=REGISTRY,
)
WATCH_EVENTS = Counter(
    "pgcurator_watch_events", "Watch events received for the custom resources, by kind.",
    ["kind"], registry=REGISTRY,
)
LEADER = Gauge(
    "pgcurator_leader", "1 while this replica holds the leader Lease and runs reconciles.", registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "pgcurator_heartbeat_age_seconds", "Seconds since the last event from the leader-Lease watch.",
    registry=REGISTRY,
)

# DatabaseMonitor: what it sees, per monitor. Table series only for the largest tables, so a
# database with thousands of tables does not flood Prometheus.
MONITOR_TABLE_SERIES = 50
SCHEMA_CHANGES = Gauge(
    "pgcurator_schema_changes", "Schema changes recorded (within retention), by mechanism (event_trigger, "
    "fingerprint, both).", ["namespace", "name", "mechanism"], registry=REGISTRY,
)
SCHEMA_VERSION = Gauge(
    "pgcurator_schema_version_info", "1 for the current schema version (catalog fingerprint hash).",
    ["namespace", "name", "version"], registry=REGISTRY,
)
MONITOR_MECHANISM = Gauge(
    "pgcurator_monitor_mechanism_available", "1 when a DatabaseMonitor mechanism works (event_trigger, "
    "fingerprint, listen, slow_statements).", ["namespace", "name", "mechanism"], registry=REGISTRY,
)
TABLE_BYTES = Gauge(
    "pgcurator_table_bytes", "Bytes of a table by part (table, index, toast), largest tables.",
    ["namespace", "name", "table", "part"], registry=REGISTRY,
)
TABLE_ROWS = Gauge("pgcurator_table_rows", "Live rows of a table.", ["namespace", "name", "table"], registry=REGISTRY)
TABLE_DEAD_ROWS = Gauge("pgcurator_table_dead_rows", "Dead rows of a table.", ["namespace", "name", "table"],
                        registry=REGISTRY)
TABLE_GROWTH = Gauge(
    "pgcurator_table_growth_bytes_per_day", "Growth of a table (all parts) per day, from the monitor's snapshots.",
    ["namespace", "name", "table"], registry=REGISTRY,
)
TABLE_CACHE_HIT = Gauge(
    "pgcurator_table_cache_hit_ratio", "Buffer cache hit ratio of a table's heap or indexes.",
    ["namespace", "name", "table", "part"], registry=REGISTRY,
)
DATABASE_CACHE_HIT = Gauge("pgcurator_database_cache_hit_ratio", "Buffer cache hit ratio of the database.",
                           ["namespace", "name"], registry=REGISTRY)
DATABASE_XID_AGE = Gauge("pgcurator_database_xid_age", "Age of the database's datfrozenxid (wraparound distance).",
                         ["namespace", "name"], registry=REGISTRY)
DATABASE_BYTES = Gauge("pgcurator_database_bytes", "Size of the database.", ["namespace", "name"], registry=REGISTRY)
_MONITOR_TABLE_GAUGES = (TABLE_BYTES, TABLE_ROWS, TABLE_DEAD_ROWS, TABLE_GROWTH, TABLE_CACHE_HIT)

# Per-resource gauges, keyed by (namespace, name) in their first two labels.
_PER_RESOURCE: tuple[Gauge, ...] = (PARTITIONS_AHEAD, BUILD_PROGRESS, CERT_EXPIRY, SCHEMA_CHANGES, SCHEMA_VERSION,
                                    MONITOR_MECHANISM, DATABASE_CACHE_HIT, DATABASE_XID_AGE, DATABASE_BYTES,
                                    *_MONITOR_TABLE_GAUGES)


class _PoolCollector(Collector):
    """Connections checked out of each database's pool, read when scraped."""

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pgcurator_pool_connections_in_use", "Pooled connections in use per target database (host:port/db).",
            labels=["database"],
        )
        if self.source is not None:
            for database, n in sorted(self.source().items()):
                family.add_metric([database], n)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def watch_pools(source: Callable[[], dict[str, int]]) -> None:
    _POOLS.source = source


def observe_reconcile(kind: str, outcome: str, seconds: float) -> None:
    RECONCILES.labels(kind, outcome).inc()
    RECONCILE_DURATION.labels(kind).observe(seconds)


def observe_statements(step_kind: str, results: Sequence[Any]) -> None:
    """One sample per statement (objects with .outcome and .duration_ms: executor.StatementResult)."""
    for r in results:
        DDL_STATEMENTS.labels(step_kind, r.outcome).inc()
        DDL_DURATION.labels(step_kind, r.outcome).observe(max(0.0, float(r.duration_ms)) / 1000)


def observe_status(kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Gauges that follow a published status."""
    if kind == "PartitionPolicy" and isinstance(status.get("partitionsAhead"), int):
        PARTITIONS_AHEAD.labels(namespace, name).set(status["partitionsAhead"])


def observe_monitor_changes(namespace: str, name: str, version: str | None, counts: dict[str, int],
                            mechanisms: dict[str, bool]) -> None:
    for mechanism in ("event_trigger", "fingerprint", "both"):
        SCHEMA_CHANGES.labels(namespace, name, mechanism).set(counts.get(mechanism, 0))
    if version:
        _forget(SCHEMA_VERSION, namespace, name)
        SCHEMA_VERSION.labels(namespace, name, version).set(1)
    for mechanism, up in mechanisms.items():
        MONITOR_MECHANISM.labels(namespace, name, mechanism).set(1 if up else 0)


def observe_monitor_statistics(namespace: str, name: str, tables: list[dict[str, Any]],
                               database: dict[str, Any]) -> None:
    """Replaces the monitor's table series: a table gone from the largest ones leaves no stale series."""
    for gauge in _MONITOR_TABLE_GAUGES:
        _forget(gauge, namespace, name)
    for t in tables:
        table = t["table"]
        for part, key in (("table", "tableBytes"), ("index", "indexBytes"), ("toast", "toastBytes")):
            TABLE_BYTES.labels(namespace, name, table, part).set(t[key])
        TABLE_ROWS.labels(namespace, name, table).set(t["rows"])
        if t.get("deadRows") is not None:
            TABLE_DEAD_ROWS.labels(namespace, name, table).set(t["deadRows"])
        if t.get("growthBytesPerDay") is not None:
            TABLE_GROWTH.labels(namespace, name, table).set(t["growthBytesPerDay"])
        for part, key in (("heap", "heapHitRatio"), ("index", "indexHitRatio")):
            if t.get(key) is not None:
                TABLE_CACHE_HIT.labels(namespace, name, table, part).set(t[key])
    if database.get("cacheHitRatio") is not None:
        DATABASE_CACHE_HIT.labels(namespace, name).set(database["cacheHitRatio"])
    if database.get("xidAge") is not None:
        DATABASE_XID_AGE.labels(namespace, name).set(database["xidAge"])
    DATABASE_BYTES.labels(namespace, name).set(database["sizeBytes"])


def _forget(gauge: Gauge, namespace: str, name: str) -> None:
    for labels in _label_sets(gauge):
        if labels[:2] == (namespace, name):
            gauge.remove(*labels)


def forget_resource(namespace: str, name: str) -> None:
    for gauge in _PER_RESOURCE:
        for labels in _label_sets(gauge):
            if labels[:2] == (namespace, name):
                gauge.remove(*labels)


def _label_sets(gauge: Gauge) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for family in gauge.collect():
        for sample in family.samples:
            out.append(tuple(sample.labels[n] for n in gauge._labelnames))
    return out


_SCRAPE_HOOKS: list[Callable[[], None]] = []


def on_scrape(hook: Callable[[], None]) -> None:
    """Run `hook` before each scrape (for gauges cheaper to compute on demand)."""
    _SCRAPE_HOOKS.append(hook)


def exposition() -> bytes:
    for hook in _SCRAPE_HOOKS:
        hook()
    return generate_latest(REGISTRY)
