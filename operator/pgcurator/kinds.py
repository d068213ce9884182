"""The resource kinds this operator serves, wired to their models and reconcile functions."""

from __future__ import annotations

from typing import Any

from .models.common import parse_duration
from .models.partition import PartitionPolicySpec
from .reconcile.context import ReconcileContext
from .reconcile.outcome import Outcome
from .reconcile.partition import cleanup_partition_policy, reconcile_partition_policy
from .runtime import KindHandler


async def _reconcile_partition(ctx: ReconcileContext, spec: PartitionPolicySpec) -> Outcome:
    return await reconcile_partition_policy(ctx.conn, spec, resource=ctx.resource, on_event=ctx.event)


async def _cleanup_partition(ctx: ReconcileContext, spec: PartitionPolicySpec) -> None:
    await cleanup_partition_policy(ctx.conn, spec, ctx.resource)


PARTITION_POLICY: KindHandler[PartitionPolicySpec] = KindHandler(
    kind="PartitionPolicy",
    plural="partitionpolicies",
    model=PartitionPolicySpec,
    reconcile=_reconcile_partition,
    schedule_seconds=lambda spec: parse_duration(spec.schedule.interval),
    table_of=lambda spec: spec.table.qualified,
    cleanup=_cleanup_partition,
)

ALL_KINDS: list[KindHandler[Any]] = [PARTITION_POLICY]
