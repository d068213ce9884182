"""The resource kinds this operator serves, wired to their models and reconcile functions."""

from __future__ import annotations

from typing import Any

from .engine import KindHandler
from .models.common import Schedule, schedule_seconds
from .models.index import IndexPolicySpec
from .models.monitor import DatabaseMonitorSpec
from .models.partition import PartitionPolicySpec
from .models.tls import DbTlsCertSpec
from .models.vector import VectorIndexSpec
from .reconcile.context import ReconcileContext
from .reconcile.index import cleanup_index_policy, reconcile_index_policy
from .reconcile.monitor import cleanup_database_monitor, reconcile_database_monitor
from .reconcile.outcome import Outcome
from .reconcile.partition import cleanup_partition_policy, reconcile_partition_policy
from .reconcile.tls import cleanup_db_tls_cert, reconcile_db_tls_cert
from .reconcile.vector import cleanup_vector_index, reconcile_vector_index


async def _reconcile_partition(ctx: ReconcileContext, spec: PartitionPolicySpec) -> Outcome:
    return await reconcile_partition_policy(ctx.conn, spec, resource=ctx.resource, now=ctx.now,
                                            on_event=ctx.event, progress=ctx.progress, alive=ctx.alive)


async def _cleanup_partition(ctx: ReconcileContext, spec: PartitionPolicySpec) -> None:
    await cleanup_partition_policy(ctx.conn, spec, ctx.resource, on_event=ctx.event)


PARTITION_POLICY: KindHandler[PartitionPolicySpec] = KindHandler(
    kind="PartitionPolicy",
    plural="partitionpolicies",
    model=PartitionPolicySpec,
    reconcile=_reconcile_partition,
    schedule_seconds=lambda spec: schedule_seconds(spec.schedule),
    table_of=lambda spec: spec.table.qualified,
    cleanup=_cleanup_partition,
)

INDEX_POLICY: KindHandler[IndexPolicySpec] = KindHandler(
    kind="IndexPolicy",
    plural="indexpolicies",
    model=IndexPolicySpec,
    reconcile=reconcile_index_policy,
    schedule_seconds=lambda spec: schedule_seconds(spec.schedule),
    table_of=lambda spec: spec.table.qualified,
    cleanup=cleanup_index_policy,
)

DB_TLS_CERT: KindHandler[DbTlsCertSpec] = KindHandler(
    kind="DbTlsCert",
    plural="dbtlscerts",
    model=DbTlsCertSpec,
    reconcile=reconcile_db_tls_cert,
    schedule_seconds=lambda spec: schedule_seconds(Schedule(interval=spec.check_interval)),
    # one TLS configuration per server: runs for the same server never overlap
    table_of=lambda spec: "server-tls",
    cleanup=cleanup_db_tls_cert,
    metadata_first=False,
)

VECTOR_INDEX: KindHandler[VectorIndexSpec] = KindHandler(
    kind="VectorIndex",
    plural="vectorindexes",
    model=VectorIndexSpec,
    reconcile=reconcile_vector_index,
    # woken for re-observation and for the next recall measurement, whichever comes first
    schedule_seconds=lambda spec: min(
        schedule_seconds(spec.schedule), schedule_seconds(Schedule(interval=spec.recall.interval))
    ),
    table_of=lambda spec: spec.table.qualified,
    cleanup=cleanup_vector_index,
)

DATABASE_MONITOR: KindHandler[DatabaseMonitorSpec] = KindHandler(
    kind="DatabaseMonitor",
    plural="databasemonitors",
    model=DatabaseMonitorSpec,
    reconcile=reconcile_database_monitor,
    schedule_seconds=lambda spec: spec.schedule_seconds(),
    # one monitor run per database at a time; it never takes a table's lock, so it never waits
    # behind (or delays) the resources it wakes
    table_of=lambda spec: "database-monitor",
    cleanup=cleanup_database_monitor,
)

ALL_KINDS: list[KindHandler[Any]] = [PARTITION_POLICY, INDEX_POLICY, DB_TLS_CERT, VECTOR_INDEX, DATABASE_MONITOR]
