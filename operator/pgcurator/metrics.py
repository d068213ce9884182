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

# Per-resource gauges, keyed by (namespace, name) in their first two labels.
_PER_RESOURCE: tuple[Gauge, ...] = (PARTITIONS_AHEAD, BUILD_PROGRESS, CERT_EXPIRY)


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
