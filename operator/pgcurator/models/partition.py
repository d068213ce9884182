"""PartitionPolicy: how a table is partitioned, and how it is kept that way over time."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from .common import CommonSpec, Duration, Identifier, StrictModel, TableRef, check_identifier, parse_duration

INTERVAL_PATTERN = r"^([1-9][0-9]{0,3}) (hour|day|week|month|year)s?$"


class IntervalUnit(StrEnum):
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"
    year = "year"


def parse_interval(text: str) -> tuple[int, IntervalUnit]:
    """`1 month` -> (1, month). Anything else, e.g. `13 fortnights`, is refused."""
    m = re.fullmatch(INTERVAL_PATTERN, text.strip())
    if not m:
        raise ValueError(
            f"interval {text!r} is not understood: use '<n> hour|day|week|month|year', e.g. '1 month' or '7 days'"
        )
    return int(m.group(1)), IntervalUnit(m.group(2))


class RangeSpec(StrictModel):
    column: Identifier = Field(description="Partition key column: timestamptz, timestamp, date, or an integer type.")
    interval: str | None = Field(
        default=None,
        pattern=INTERVAL_PATTERN,
        description="Width of each partition for a time column: '<n> hour|day|week|month|year' (e.g. '1 month').",
    )
    width: int | None = Field(
        default=None, ge=1, description="Width of each partition for an integer column."
    )
    time_zone: str = Field(
        default="UTC",
        alias="timeZone",
        max_length=64,
        description="IANA time zone in which time bounds fall on midnight / the first of the month. The server's "
        "TimeZone setting never shifts bounds.",
    )
    premake: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="Partitions to keep ready beyond the one holding the current time (or, for integer keys, "
        "the highest existing value), counted from now, not from the newest row.",
    )

    @field_validator("column")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("time_zone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as UTC or Asia/Tokyo") from exc
        return v

    @model_validator(mode="after")
    def _one_of(self) -> RangeSpec:
        if (self.interval is None) == (self.width is None):
            raise ValueError("set exactly one of range.interval (time column) or range.width (integer column)")
        return self

    @property
    def parsed_interval(self) -> tuple[int, IntervalUnit]:
        assert self.interval is not None
        return parse_interval(self.interval)


class RetentionAction(StrEnum):
    drop = "drop"
    detach = "detach"


class Retention(StrictModel):
    keep: int = Field(
        ge=1,
        le=100000,
        description="Partitions to keep behind the current one: a partition is removed only when its whole range "
        "ends at or before the start of the current interval minus `keep` intervals.",
    )
    action: RetentionAction = Field(
        description="drop: detach (concurrently where allowed) and drop the table. detach: detach and keep the "
        "table as a plain table. There is no default: removing data must be said explicitly."
    )


class Schedule(StrictModel):
    interval: Duration = Field(
        default="1h",
        description="How often the table is re-observed and maintained, even when the spec has not changed "
        "(drift such as a partition dropped by hand is repaired).",
    )

    @field_validator("interval")
    @classmethod
    def _min(cls, v: str) -> str:
        if parse_duration(v) < 1:
            raise ValueError("schedule.interval must be at least 1s")
        return v


class PartitionPolicySpec(CommonSpec):
    table: TableRef = Field(description="The partitioned table to maintain.")
    strategy: Literal["range"] = Field(default="range", description="Partitioning strategy.")
    range: RangeSpec = Field(description="Range partitioning settings.")
    default_partition: bool = Field(
        default=False,
        alias="defaultPartition",
        description="Create and keep a DEFAULT partition (named <table>_default) that catches rows outside every "
        "range; the rows in it are counted on the status.",
    )
    retention: Retention | None = Field(
        default=None,
        description="Remove old partitions. Absent: nothing is ever removed.",
    )
    schedule: Schedule = Field(default_factory=Schedule, description="When maintenance runs.")


PARTITION_POLICY_CEL = [
    {
        "rule": "has(self.range.interval) != has(self.range.width)",
        "message": "set exactly one of range.interval (time column) or range.width (integer column)",
    },
]
