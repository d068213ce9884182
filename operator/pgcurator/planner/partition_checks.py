"""Refusals: tables a PartitionPolicy cannot maintain, with the reason a person acts on."""

from __future__ import annotations

from ..catalog.partitions import TableObservation
from ..errors import PlanError
from ..models.partition import PartitionPolicySpec, RangeSpec
from .ranges import INT_TYPES, TIME_TYPES

STRATEGY_CODE = {"range": "r", "list": "l", "hash": "h"}

# Checks


def check_key(spec_column: str, obs_strategy: str | None, key_columns: list[str], strategy: str,
               where: str) -> None:
    if obs_strategy != STRATEGY_CODE[strategy] or len(key_columns) != 1:
        raise PlanError(
            f"{where} is not {strategy}-partitioned on a single column (found strategy "
            f"{ {'r': 'range', 'l': 'list', 'h': 'hash'}.get(obs_strategy or '', obs_strategy)!r}, key {key_columns})",
            reason="WrongPartitionKey",
        )
    if key_columns[0] != spec_column:
        raise PlanError(f"{where} is partitioned by {key_columns[0]!r}, not by {spec_column!r}",
                        reason="WrongPartitionKey")


def check_range_type(r: RangeSpec, column_type: str) -> None:
    if r.interval is not None:
        if column_type not in TIME_TYPES:
            raise PlanError(
                f"column {r.column!r} is {column_type or 'unknown'}; range.interval needs a timestamptz, "
                "timestamp or date column (use range.width for integer columns)",
                reason="WrongColumnType",
            )
        if column_type == "date" and r.parsed_interval[1].value == "hour":
            raise PlanError(f"column {r.column!r} is a date; hourly partitions need a timestamp column",
                            reason="WrongColumnType")
    elif column_type not in INT_TYPES:
        raise PlanError(
            f"column {r.column!r} is {column_type or 'unknown'}; range.width needs an integer column "
            "(use range.interval for time columns)",
            reason="WrongColumnType",
        )


def check_table(spec: PartitionPolicySpec, obs: TableObservation) -> str:
    """Refuse tables the policy cannot maintain; returns the first-level key column's type."""
    t = spec.table
    key = spec.key_column
    if not obs.exists:
        raise PlanError(
            f"table {t.qualified} does not exist; create it as a partitioned table "
            f"(PARTITION BY {spec.strategy.upper()} ({key}))",
            reason="TableNotFound",
        )
    if obs.relkind != "p":
        if spec.convert is not None and spec.convert.enabled:
            raise PlanError(f"table {t.qualified} is not partitioned yet: it is being converted",
                            reason="Converting")
        raise PlanError(
            f"table {t.qualified} is not partitioned; PartitionPolicy maintains tables declared with "
            f"PARTITION BY {spec.strategy.upper()} ({key}) (or set convert.enabled: true to convert it)",
            reason="TableNotPartitioned",
        )
    if obs.key_has_expressions:
        raise PlanError(f"table {t.qualified} is partitioned on an expression", reason="WrongPartitionKey")
    check_key(key, obs.strategy, obs.key_columns, spec.strategy, f"table {t.qualified}")
    column_type = obs.column_types.get(key, "")
    if spec.range is not None:
        check_range_type(spec.range, column_type)
    sub = spec.subpartition
    if sub is not None:
        sub_col = (sub.hash or sub.range).column  # type: ignore[union-attr]
        if sub_col not in obs.column_types:
            raise PlanError(f"subpartition column {sub_col!r} is not a column of {t.qualified}",
                            reason="WrongColumnType")
        if sub.range is not None:
            check_range_type(sub.range, obs.column_types[sub_col])
    for c in [*spec.template.indexes]:
        missing = [col for col in c.columns if col not in obs.column_types]
        if missing:
            raise PlanError(f"template index {c.name!r} names columns that do not exist: {missing}",
                            reason="WrongColumnType")
    ts = spec.template.tablespace
    if ts is not None and ts not in obs.tablespaces and ts not in ("pg_default",):
        raise PlanError(f"template tablespace {ts!r} does not exist", reason="TablespaceNotFound")
    ret = spec.retention
    if ret is not None and ret.archive is not None and ret.archive.tablespace is not None:
        if ret.archive.tablespace not in obs.tablespaces:
            raise PlanError(
                f"archive tablespace {ret.archive.tablespace!r} does not exist; create it (CREATE TABLESPACE) "
                "or remove retention.archive.tablespace",
                reason="TablespaceNotFound",
            )
    return column_type

