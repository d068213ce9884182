"""Builders for specs and observations used by planner tests."""

from __future__ import annotations

from typing import Any

from pgcurator.catalog.partitions import PartitionInfo, TableObservation
from pgcurator.models.partition import PartitionPolicySpec


def spec(**overrides: Any) -> PartitionPolicySpec:
    body: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "event_logs"},
        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 3},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return PartitionPolicySpec.model_validate(body)


def table(
    partitions: list[tuple[str, str]] | None = None,
    column_type: str = "timestamp with time zone",
    default: bool = False,
    default_rows: int | None = None,
    **kw: Any,
) -> TableObservation:
    parts = [PartitionInfo("public", name, bound) for name, bound in (partitions or [])]
    if default:
        parts.append(PartitionInfo("public", "event_logs_default", "DEFAULT", is_default=True))
    return TableObservation(
        schema="public",
        name="event_logs",
        exists=True,
        relkind="p",
        strategy="r",
        key_columns=[kw.pop("key", "server_timestamp")],
        column_types={"server_timestamp": column_type, "id": "bigint", "player_id": "bigint"},
        partitions=parts,
        default_rows=default_rows if default else None,
        **kw,
    )


def month(y: int, m: int) -> tuple[str, str]:
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return (
        f"event_logs_p{y}_{m:02d}",
        f"FOR VALUES FROM ('{y}-{m:02d}-01 00:00:00+00') TO ('{ny}-{nm:02d}-01 00:00:00+00')",
    )
