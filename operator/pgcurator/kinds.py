"""The resource kinds this operator serves, wired to their models and reconcile functions."""

from __future__ import annotations

from typing import Any

from .models.common import parse_duration
from .models.partition import PartitionPolicySpec
from .reconcile.outcome import Outcome
from .reconcile.partition import cleanup_partition_policy, reconcile_partition_policy
from .runtime import KindHandler, OnEvent


async def _reconcile_partition(conn: Any, spec: PartitionPolicySpec, resource: str, on_event: OnEvent) -> Outcome:
    return await reconcile_partition_policy(conn, spec, resource=resource, on_event=on_event)


PARTITION_POLICY: KindHandler[PartitionPolicySpec] = KindHandler(
    kind="PartitionPolicy",
    plural="partitionpolicies",
    model=PartitionPolicySpec,
    reconcile=_reconcile_partition,
    schedule_seconds=lambda spec: parse_duration(spec.schedule.interval),
    table_of=lambda spec: spec.table.qualified,
    cleanup=cleanup_partition_policy,
)

ALL_KINDS: list[KindHandler[Any]] = [PARTITION_POLICY]
