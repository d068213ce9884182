"""PartitionPolicy: how a table is partitioned, and how it is kept that way over time."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from .common import CommonSpec, Identifier, Schedule, StrictModel, TableRef, check_identifier

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
    range: RangeSpec | None = Field(default=None, description="For strategy range (premake applies per parent).")
    only: list[Identifier] | None = Field(
        default=None,
        description="Only these first-level partitions (list partition names) are sub-partitioned; default all.",
    )

    @model_validator(mode="after")
    def _settings(self) -> SubpartitionSpec:
        if self.strategy == "hash" and self.hash is None:
            raise ValueError("subpartition.strategy hash needs subpartition.hash")
        if self.strategy == "range" and self.range is None:
            raise ValueError("subpartition.strategy range needs subpartition.range")
        return self


STORAGE_PARAMETER_PATTERN = r"^(fillfactor|parallel_workers|toast_tuple_target|(toast\.)?autovacuum_[a-z_]+|" \
    r"(toast\.)?vacuum_truncate|(toast\.)?vacuum_index_cleanup|user_catalog_table)$"


class TemplateIndex(StrictModel):
    name: Identifier = Field(description="Index name suffix: the index is <partition>_<name>.")
    columns: list[Identifier] = Field(min_length=1, max_length=32, description="Indexed columns, in order.")
    unique: bool = Field(default=False, description="A unique index per partition (the parent cannot carry one "
                         "that does not include the partition key).")
    where: str | None = Field(default=None, max_length=2000, description="Partial index predicate (one plain "
                              "expression, validated).")

    @field_validator("where")
    @classmethod
    def _predicate(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from ..errors import SpecError
        from ..sql.expressions import validate_predicate

        try:
            return validate_predicate(v)
        except SpecError as exc:
            raise ValueError(exc.message) from None


class PartitionTemplate(StrictModel):
    """What every partition the operator creates gets; partitions it did not create are checked and any
    difference is reported as drift on the status."""

    storage_parameters: dict[str, str] = Field(
        default_factory=dict,
        alias="storageParameters",
        description="Table storage parameters, e.g. autovacuum_vacuum_scale_factor: '0.01'.",
    )
    tablespace: Identifier | None = Field(default=None, description="Tablespace for new partitions.")
    indexes: list[TemplateIndex] = Field(default_factory=list, description="Per-partition indexes.")

    @field_validator("storage_parameters")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(STORAGE_PARAMETER_PATTERN, key):
                raise ValueError(f"storage parameter {key!r} is not a table storage parameter pgcurator sets")
            if not re.fullmatch(r"^(-?[0-9]+(\.[0-9]+)?|true|false|on|off|auto)$", str(value)):
                raise ValueError(f"storage parameter {key}={value!r}: value must be a number or a boolean")
        return v


class ConvertSpec(StrictModel):
    """Turn an existing plain table into a partitioned table of the declared layout, online."""

    enabled: bool = Field(description="Explicit opt-in: the table is converted only when true.")
    batch_memory: str = Field(
        default="64Mi", alias="batchMemory", pattern=r"^[1-9][0-9]*(Ki|Mi|Gi)$",
        description="Memory budget for one copy batch; the batch row count is derived from the average row width.",
    )
    drop_original: bool = Field(
        default=False, alias="dropOriginal",
        description="Drop the original table (kept as <table>_unpartitioned after the swap) once the swap is done.",
    )


class DefaultRows(StrictModel):
    move: bool = Field(
        default=False,
        description="Move rows sitting in the DEFAULT partition into the partitions created for them, in bounded "
        "batches, each in its own short transaction.",
    )
    batch_rows: int = Field(default=10000, alias="batchRows", ge=1, le=1000000, description="Rows per batch.")


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
        if self.default_partition and self.strategy == "hash":
            raise ValueError("hash-partitioned tables cannot have a DEFAULT partition")
        if self.subpartition is not None and self.subpartition.only is not None and self.strategy != "list":
            raise ValueError("subpartition.only names list partitions; it needs strategy list")
        if self.subpartition is not None and self.subpartition.only is not None and self.list is not None:
            unknown = set(self.subpartition.only) - {p.name for p in self.list.partitions}
            if unknown:
                raise ValueError(f"subpartition.only names unknown list partitions: {sorted(unknown)}")
        return self

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
