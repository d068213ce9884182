"""PartitionPolicy: how a table is partitioned, and how it is kept that way over time."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from ..sql.quote import MAX_IDENTIFIER_BYTES
from .common import (
    CommonSpec,
    Identifier,
    Schedule,
    StrictModel,
    TableRef,
    check_identifier,
)
from .hints import hint
from .partition_template import (
    ConvertSpec,
    DefaultRows,
    PartitionTemplate,
    check_suffix_name,
)

# One partition spans at most about ten years (hours: up to 9999). Written per unit so the CRD's
# pattern refuses the same values the model does.
_MAX_N = {
    "hour": r"[1-9][0-9]{0,3}",                                            # 1 .. 9999
    "day": r"[1-9][0-9]{0,2}|[1-2][0-9]{3}|3[0-5][0-9]{2}|36[0-5][0-9]|3660",  # 1 .. 3660
    "week": r"[1-9][0-9]?|[1-4][0-9]{2}|5[01][0-9]|52[0-2]",               # 1 .. 522
    "month": r"[1-9][0-9]?|1[01][0-9]|120",                                # 1 .. 120
    "year": r"[1-9]|10",                                                   # 1 .. 10
}
INTERVAL_PATTERN = hint(
    "^(" + "|".join(f"({n}) {u}s?" for u, n in _MAX_N.items()) + ")$",
    "an interval such as '1 month' or '7 days': '<n> hour|day|week|month|year', at most about ten years "
    "(9999 hours, 3660 days, 522 weeks, 120 months, 10 years)",
)
# Days one unit may span at most: bounds how far premake and retention reach.
_UNIT_DAYS = {"hour": 1 / 24, "day": 1, "week": 7, "month": 31, "year": 366}
# The newest premade partition ends at most this far ahead, and retention reaches at most this far
# back: every bound then stays within the years a date can hold (1 .. 9999) for any current time
# between 1900 and 2200 (tested over that range).
MAX_PREMAKE_DAYS = 200 * 365
MAX_KEEP_DAYS = 1000 * 365
# Tables one run may create (each a catalog entry, a lock and a file): far beyond any layout in use,
# well below what makes planning or the catalog struggle.
MAX_TABLES_PER_RUN = 20_000


class IntervalUnit(StrEnum):
    hour = "hour"
    day = "day"
    week = "week"
    month = "month"
    year = "year"


def parse_interval(text: str) -> tuple[int, IntervalUnit]:
    """`1 month` -> (1, month). Anything else, e.g. `13 fortnights` or `11 years`, is refused."""
    if not re.fullmatch(INTERVAL_PATTERN, text.strip()):
        raise ValueError(
            f"interval {text!r} is not understood: use '<n> hour|day|week|month|year' of at most about ten "
            "years (9999 hours, 3660 days, 522 weeks, 120 months, 10 years), e.g. '1 month' or '7 days'"
        )
    n, unit = text.split()
    return int(n), IntervalUnit(unit.removesuffix("s"))


# Shortest and longest length of each unit in hours (clock changes, month lengths, leap years).
_UNIT_HOURS = {IntervalUnit.hour: (1, 1), IntervalUnit.day: (23, 25), IntervalUnit.week: (167, 169),
               IntervalUnit.month: (672, 745), IntervalUnit.year: (8760, 8785)}


def _leaves_per_parent(first: RangeSpec, second: RangeSpec) -> int:
    """A range sub-level on the first level's own column splits each first-level partition into
    shorter periods (all of them: a row may land anywhere in its range); at most this many."""
    example = ("e.g. range.interval '1 year' with subpartition.range.interval '1 month', or range.width "
               "1000000 with subpartition.range.width 100000")
    if first.width is not None or second.width is not None:
        if first.width is None or second.width is None:
            raise ValueError("subpartition.range on the first level's column: give both levels an interval, or "
                             f"both a width; {example}")
        if second.width >= first.width:
            raise ValueError(f"subpartition.range.width {second.width} is not smaller than range.width "
                             f"{first.width}: on the same column each partition is split into narrower ones; {example}")
        return -(-first.width // second.width) + 1
    (n1, u1), (n2, u2) = first.parsed_interval, second.parsed_interval
    if n2 * _UNIT_HOURS[u2][1] >= n1 * _UNIT_HOURS[u1][0]:
        raise ValueError(f"subpartition.range.interval {second.interval!r} is not shorter than range.interval "
                         f"{first.interval!r}: on the same column each partition is split into shorter periods; "
                         f"{example}")
    return -(-(n1 * _UNIT_HOURS[u1][1]) // (n2 * _UNIT_HOURS[u2][0])) + 1


def interval_days(text: str) -> float:
    n, unit = parse_interval(text)
    return n * _UNIT_DAYS[unit.value]


class RangeSpec(StrictModel):
    column: Identifier = Field(description="Partition key column: timestamptz, timestamp, date, or an integer type.")
    interval: str | None = Field(
        default=None,
        max_length=32,
        pattern=INTERVAL_PATTERN,
        description="Width of each partition for a time column: '<n> hour|day|week|month|year' (e.g. '1 month'), "
        "at most about ten years; premake partitions of it reach at most 200 years ahead, retention.keep at most "
        "1000 years back.",
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
        if self.interval is not None and (self.premake + 1) * interval_days(self.interval) > MAX_PREMAKE_DAYS:
            raise ValueError(
                f"range.premake: {self.premake} partitions of {self.interval} beyond the current one reach more than "
                f"{MAX_PREMAKE_DAYS // 365} years ahead; lower range.premake or range.interval")
        return self

    @property
    def parsed_interval(self) -> tuple[int, IntervalUnit]:
        assert self.interval is not None
        return parse_interval(self.interval)


class RetentionAction(StrEnum):
    drop = "drop"
    detach = "detach"
    archive = "archive"


class Archive(StrictModel):
    """Where `archive` retention moves old partitions: detached, then kept as plain tables here."""

    schema_: Identifier = Field(alias="schema", description="Schema receiving archived partitions (created if missing).")
    tablespace: Identifier | None = Field(
        default=None, description="Tablespace to move archived partitions to (must exist; the table is rewritten)."
    )

    @field_validator("schema_", "tablespace")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)


class Retention(StrictModel):
    keep: int = Field(
        ge=1,
        le=100000,
        description="Partitions to keep behind the current one: a partition is removed only when its whole range "
        "ends at or before the start of the current interval minus `keep` intervals.",
    )
    action: RetentionAction = Field(
        description="drop: detach (concurrently where allowed) and drop the table. detach: detach and keep the "
        "table as a plain table. archive: detach and move it to archive.schema (and archive.tablespace). There "
        "is no default: removing data must be said explicitly."
    )
    archive: Archive | None = Field(default=None, description="Required for action: archive.")

    @model_validator(mode="after")
    def _archive(self) -> Retention:
        if self.action is RetentionAction.archive and self.archive is None:
            raise ValueError("retention.action archive needs retention.archive.schema")
        return self


ListValue = Annotated[str, Field(max_length=1000)] | int


class ListPartition(StrictModel):
    name: Identifier = Field(description="Partition name suffix: the table is <table>_<name>.")
    values: list[ListValue] = Field(min_length=1, max_length=1000, description="Values this partition holds.")

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v)


class ListSpec(StrictModel):
    column: Identifier = Field(description="Partition key column.")
    partitions: list[ListPartition] = Field(min_length=1, max_length=1000, description="Named value sets.")

    @model_validator(mode="after")
    def _no_overlap(self) -> ListSpec:
        seen: dict[str, str] = {}
        names: set[str] = set()
        for p in self.partitions:
            if p.name in names:
                raise ValueError(f"list partition name {p.name!r} is used twice")
            names.add(p.name)
            for v in p.values:
                key = repr(v)
                if key in seen:
                    raise ValueError(f"list value {v!r} is in both {seen[key]!r} and {p.name!r}")
                seen[key] = p.name
        return self


class HashSpec(StrictModel):
    column: Identifier = Field(description="Partition key column.")
    modulus: int = Field(ge=1, le=1024, description="Number of hash partitions (<table>_0 ... <table>_<modulus-1>).")


class SubpartitionSpec(StrictModel):
    """A second level below every (or the named) first-level partitions."""

    strategy: Literal["hash", "range"] = Field(description="Strategy of the second level.")
    hash: HashSpec | None = Field(default=None, description="For strategy hash.")
    range: RangeSpec | None = Field(default=None, description=(
        "For strategy range (premake applies per parent; on the first level's own column every parent is "
        "split whole and premake is not used)."))
    only: list[Identifier] | None = Field(
        default=None,
        max_length=1000,  # at most as many as list partitions; bounded so the CRD can check each name
        description="Only these first-level partitions (list partition names) are sub-partitioned; default all.",
    )

    @model_validator(mode="after")
    def _settings(self) -> SubpartitionSpec:
        if self.strategy == "hash" and self.hash is None:
            raise ValueError("subpartition.strategy hash needs subpartition.hash")
        if self.strategy == "range" and self.range is None:
            raise ValueError("subpartition.strategy range needs subpartition.range")
        return self


class PartitionPolicySpec(CommonSpec):
    table: TableRef = Field(description="The partitioned table to maintain.")
    strategy: Literal["range", "list", "hash"] = Field(default="range", description="First-level strategy.")
    range: RangeSpec | None = Field(default=None, description="Range partitioning settings (strategy range).")
    list: ListSpec | None = Field(default=None, description="List partitioning settings (strategy list).")
    hash: HashSpec | None = Field(default=None, description="Hash partitioning settings (strategy hash).")
    subpartition: SubpartitionSpec | None = Field(default=None, description="An optional second level.")
    default_partition: bool = Field(
        default=False,
        alias="defaultPartition",
        description="Create and keep a DEFAULT partition (named <table>_default) that catches rows outside every "
        "range or list; the rows in it are counted on the status.",
    )
    default_rows: DefaultRows = Field(default_factory=DefaultRows, alias="defaultRows",
                                      description="What to do with rows in the DEFAULT partition.")
    retention: Retention | None = Field(
        default=None,
        description="Remove old range partitions. Absent: nothing is ever removed.",
    )
    template: PartitionTemplate = Field(default_factory=PartitionTemplate,
                                        description="What every new partition gets.")
    convert: ConvertSpec | None = Field(default=None, description="Convert a plain table (explicit opt-in).")
    schedule: Schedule = Field(default_factory=Schedule, description="When maintenance runs.")

    @model_validator(mode="after")
    def _strategy_settings(self) -> PartitionPolicySpec:
        wanted = {"range": self.range, "list": self.list, "hash": self.hash}
        if wanted[self.strategy] is None:
            raise ValueError(f"strategy {self.strategy} needs the {self.strategy} section")
        extra = [k for k, v in wanted.items() if v is not None and k != self.strategy]
        if extra:
            raise ValueError(f"strategy {self.strategy} does not use the {', '.join(extra)} section")
        if self.retention is not None and self.strategy != "range":
            raise ValueError("retention applies to range partitions only")
        self._check_table_count()
        if self.default_partition and self.strategy == "hash":
            raise ValueError("hash-partitioned tables cannot have a DEFAULT partition")
        if self.subpartition is not None and self.subpartition.only is not None and self.strategy != "list":
            raise ValueError("subpartition.only names list partitions; it needs strategy list")
        if self.list is not None:
            for p in self.list.partitions:
                # <table>_<name> either fits as is or is shortened, which needs room for the hash.
                if len(f"{self.table.name}_{p.name}".encode()) > MAX_IDENTIFIER_BYTES:
                    check_suffix_name(p.name, "list.partitions[].name")
        if self.retention is not None and self.range is not None and self.range.interval is not None:
            if self.retention.keep * interval_days(self.range.interval) > MAX_KEEP_DAYS:
                raise ValueError(
                    f"retention.keep: {self.retention.keep} partitions of {self.range.interval} reach more than "
                    f"{MAX_KEEP_DAYS // 365} years back; lower retention.keep")
        if self.subpartition is not None and self.subpartition.only is not None and self.list is not None:
            unknown = set(self.subpartition.only) - {p.name for p in self.list.partitions}
            if unknown:
                raise ValueError(f"subpartition.only names unknown list partitions: {sorted(unknown)}")
        return self

    def _check_table_count(self) -> None:
        """One run creates at most MAX_TABLES_PER_RUN tables (first level x second level)."""
        first = (self.range.premake + 1 if self.range else len(self.list.partitions) if self.list
                 else self.hash.modulus if self.hash else 1)
        sub = self.subpartition
        second = 1 if sub is None else sub.hash.modulus if sub.hash else sub.range.premake + 1 if sub.range else 1
        if sub is not None and sub.range is not None and self.range is not None and \
                sub.range.column == self.range.column:
            second = _leaves_per_parent(self.range, sub.range)
        if first * second > MAX_TABLES_PER_RUN:
            raise ValueError(
                f"subpartition: {first} first-level partitions with {second} below each are {first * second} tables, "
                f"more than the {MAX_TABLES_PER_RUN} one run creates; lower the premake, modulus or number of lists")

    @property
    def key_column(self) -> str:
        section = self.range or self.list or self.hash
        assert section is not None
        return section.column

    @property
    def rng(self) -> RangeSpec:
        """The range section; only for strategy range (checked by the validator)."""
        assert self.range is not None
        return self.range


PARTITION_POLICY_CEL = [
    {
        "rule": "self.strategy != 'range' || has(self.range)",
        "message": "strategy range needs the range section",
    },
    {
        "rule": "self.strategy != 'list' || has(self.list)",
        "message": "strategy list needs the list section",
    },
    {
        "rule": "self.strategy != 'hash' || has(self.hash)",
        "message": "strategy hash needs the hash section",
    },
    {
        "rule": "!has(self.range) || (has(self.range.interval) != has(self.range.width))",
        "message": "set exactly one of range.interval (time column) or range.width (integer column)",
    },
    {
        "rule": "!has(self.retention) || self.retention.action != 'archive' || has(self.retention.archive)",
        "message": "retention.action archive needs retention.archive.schema",
    },
]
