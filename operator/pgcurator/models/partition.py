"""PartitionPolicy: how a table is partitioned, and how it is kept that way over time."""

from __future__ import annotations

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
from .examples import Refusal, eg, suggest
from .intervals import INTERVAL_PATTERN, IntervalUnit, interval_days, leaves_per_parent, parse_interval
from .partition_template import (
    ConvertSpec,
    DefaultRows,
    PartitionTemplate,
    check_suffix_name,
)

# The newest premade partition ends at most this far ahead, and retention reaches at most this far
# back: every bound then stays within the years a date can hold (1 .. 9999) for any current time
# between 1900 and 2200 (tested over that range).
MAX_PREMAKE_DAYS = 200 * 365
MAX_KEEP_DAYS = 1000 * 365
# Tables one run may create (each a catalog entry, a lock and a file): far beyond any layout in use,
# well below what makes planning or the catalog struggle.
MAX_TABLES_PER_RUN = 20_000


# Whole sections, for a refusal that names a missing one (tested to be accepted).
RANGE_EXAMPLE = {"column": "created_at", "interval": "1 month"}
LIST_EXAMPLE = {"column": "region", "partitions": [{"name": "eu", "values": ["de", "fr"]}]}
HASH_EXAMPLE = {"column": "player_id", "modulus": 8}


class RangeSpec(StrictModel):
    column: Identifier = Field(examples=["created_at"], description="Partition key column: timestamptz, timestamp, date, or an integer type.")
    interval: str | None = Field(
        default=None,
        max_length=32,
        pattern=INTERVAL_PATTERN,
        examples=["1 month"],
        description="Width of each partition for a time column: '<n> hour|day|week|month|year' (e.g. '1 month'), "
        "at most about ten years; premake partitions of it reach at most 200 years ahead, retention.keep at most "
        "1000 years back.",
    )
    width: int | None = Field(
        default=None, ge=1, examples=[1000000], description="Width of each partition for an integer column."
    )
    time_zone: str = Field(
        default="UTC",
        alias="timeZone",
        max_length=64,
        examples=["Europe/Berlin"],
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
            raise ValueError(f"unknown time zone {v!r}: use an IANA time zone name") from exc
        return v

    @model_validator(mode="after")
    def _one_of(self) -> RangeSpec:
        if (self.interval is None) == (self.width is None):
            raise Refusal("set exactly one of range.interval (time column) or range.width (integer column)",
                          suggest(RangeSpec, "interval") if self.width is None else eg("width", None))
        if self.interval is not None and (self.premake + 1) * interval_days(self.interval) > MAX_PREMAKE_DAYS:
            fits = min(4, int(MAX_PREMAKE_DAYS // interval_days(self.interval)) - 1)
            raise Refusal(
                f"{self.premake} partitions of {self.interval} beyond the current one reach more than "
                f"{MAX_PREMAKE_DAYS // 365} years ahead; lower premake or interval", eg("premake", fits), at=("premake",))
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

    schema_: Identifier = Field(alias="schema", examples=["archive"], description="Schema receiving archived partitions (created if missing).")
    tablespace: Identifier | None = Field(
        default=None, examples=["cold_hdd"], description="Tablespace to move archived partitions to (must exist; the table is rewritten)."
    )

    @field_validator("schema_", "tablespace")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)


class Retention(StrictModel):
    keep: int = Field(
        ge=1,
        le=100000,
        examples=[12],
        description="Partitions to keep behind the current one: a partition is removed only when its whole range "
        "ends at or before the start of the current interval minus `keep` intervals.",
    )
    action: RetentionAction = Field(
        examples=["detach"],  # the example that never removes data
        description="drop: detach (concurrently where allowed) and drop the table. detach: detach and keep the "
        "table as a plain table. archive: detach and move it to archive.schema (and archive.tablespace). There "
        "is no default: removing data must be said explicitly."
    )
    archive: Archive | None = Field(default=None, examples=[{"schema": "archive"}],
                                    description="Required for action: archive.")

    @model_validator(mode="after")
    def _archive(self) -> Retention:
        if self.action is RetentionAction.archive and self.archive is None:
            raise Refusal("retention.action archive needs retention.archive.schema", suggest(Retention, "archive"))
        return self


ListValue = Annotated[str, Field(max_length=1000)] | int


class ListPartition(StrictModel):
    name: Identifier = Field(examples=["eu"], description="Partition name suffix: the table is <table>_<name>.")
    values: list[ListValue] = Field(min_length=1, max_length=1000, examples=[["de", "fr"]],
                                    description="Values this partition holds.")

    @field_validator("name")
    @classmethod
    def _ident(cls, v: str) -> str:
        return check_identifier(v)


class ListSpec(StrictModel):
    column: Identifier = Field(examples=["region"], description="Partition key column.")
    partitions: list[ListPartition] = Field(min_length=1, max_length=1000, examples=[LIST_EXAMPLE["partitions"]],
                                            description="Named value sets.")

    @model_validator(mode="after")
    def _no_overlap(self) -> ListSpec:
        seen: dict[str, str] = {}
        names: set[str] = set()
        for j, p in enumerate(self.partitions):
            if p.name in names:
                free = next(n for k in range(2, 2000) if (n := f"{p.name}_{k}") not in names)
                raise Refusal(f"list partition name {p.name!r} is used twice", eg("name", free),
                              at=("partitions", j, "name"))
            names.add(p.name)
            for k, v in enumerate(p.values):
                key = repr(v)
                if key in seen:
                    where = f"twice in {p.name!r}" if seen[key] == p.name else f"in both {seen[key]!r} and {p.name!r}"
                    raise Refusal(f"list value {v!r} is {where}; list it once", eg(None, _unused(v, seen)),
                                  at=("partitions", j, "values", k))
                seen[key] = p.name
        return self


def _unused(v: str | int, seen: dict[str, str]) -> str | int:
    """A value no list partition holds yet (never built from the user's text): what a repeated one
    could be replaced with."""
    candidates = (f"other_{n}" if isinstance(v, str) else v + n for n in range(1, 10**6))
    return next(c for c in candidates if repr(c) not in seen)


class HashSpec(StrictModel):
    column: Identifier = Field(examples=["player_id"], description="Partition key column.")
    modulus: int = Field(ge=1, le=1024, examples=[8], description="Number of hash partitions (<table>_0 ... <table>_<modulus-1>).")


class SubpartitionSpec(StrictModel):
    """A second level below every (or the named) first-level partitions."""

    strategy: Literal["hash", "range"] = Field(examples=["hash"], description="Strategy of the second level.")
    hash: HashSpec | None = Field(default=None, examples=[HASH_EXAMPLE], description="For strategy hash.")
    range: RangeSpec | None = Field(default=None, examples=[RANGE_EXAMPLE], description=(
        "For strategy range (premake applies per parent; on the first level's own column every parent is "
        "split whole and premake is not used)."))
    only: list[Identifier] | None = Field(
        default=None,
        max_length=1000,  # at most as many as list partitions; bounded so the CRD can check each name
        examples=[["eu"]],
        description="Only these first-level partitions (list partition names) are sub-partitioned; default all.",
    )

    @model_validator(mode="after")
    def _settings(self) -> SubpartitionSpec:
        if self.strategy == "hash" and self.hash is None:
            raise Refusal("subpartition.strategy hash needs subpartition.hash", suggest(SubpartitionSpec, "hash"))
        if self.strategy == "range" and self.range is None:
            raise Refusal("subpartition.strategy range needs subpartition.range", suggest(SubpartitionSpec, "range"))
        return self


class PartitionPolicySpec(CommonSpec):
    table: TableRef = Field(description="The partitioned table to maintain.")
    strategy: Literal["range", "list", "hash"] = Field(default="range", description="First-level strategy.")
    range: RangeSpec | None = Field(default=None, examples=[RANGE_EXAMPLE],
                                    description="Range partitioning settings (strategy range).")
    list: ListSpec | None = Field(default=None, examples=[LIST_EXAMPLE],
                                  description="List partitioning settings (strategy list).")
    hash: HashSpec | None = Field(default=None, examples=[HASH_EXAMPLE],
                                  description="Hash partitioning settings (strategy hash).")
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
            raise Refusal(f"strategy {self.strategy} needs the {self.strategy} section",
                          suggest(PartitionPolicySpec, self.strategy))
        extra = [k for k, v in wanted.items() if v is not None and k != self.strategy]
        if extra:
            raise Refusal(f"strategy {self.strategy} does not use the {', '.join(extra)} section; remove it",
                          eg(extra[0], None))
        if self.retention is not None and self.strategy != "range":
            raise Refusal("retention applies to range partitions only; remove it", eg("retention", None))
        self._check_table_count()
        if self.default_partition and self.strategy == "hash":
            raise Refusal("hash-partitioned tables cannot have a DEFAULT partition", eg("defaultPartition", False))
        if self.subpartition is not None and self.subpartition.only is not None and self.strategy != "list":
            raise Refusal("subpartition.only names list partitions; it needs strategy list", eg("only", None),
                          at=("subpartition",))
        if self.list is not None:
            for j, p in enumerate(self.list.partitions):
                # <table>_<name> either fits as is or is shortened, which needs room for the hash.
                if len(f"{self.table.name}_{p.name}".encode()) > MAX_IDENTIFIER_BYTES:
                    try:
                        check_suffix_name(p.name, "list.partitions[].name")
                    except ValueError as exc:
                        raise Refusal(str(exc), suggest(ListPartition, "name"),
                                      at=("list", "partitions", j, "name")) from None
        if self.retention is not None and self.range is not None and self.range.interval is not None:
            if self.retention.keep * interval_days(self.range.interval) > MAX_KEEP_DAYS:
                fits = min(12, int(MAX_KEEP_DAYS // interval_days(self.range.interval)))
                raise Refusal(
                    f"{self.retention.keep} partitions of {self.range.interval} reach more than "
                    f"{MAX_KEEP_DAYS // 365} years back; lower retention.keep", eg("keep", fits), at=("retention", "keep"))
        if self.subpartition is not None and self.subpartition.only is not None and self.list is not None:
            known = [p.name for p in self.list.partitions]
            unknown = set(self.subpartition.only) - set(known)
            if unknown:
                raise Refusal(f"subpartition.only names unknown list partitions: {sorted(unknown)}",
                              eg("only", known[:1]), at=("subpartition", "only"))
        return self

    def _check_table_count(self) -> None:
        """One run creates at most MAX_TABLES_PER_RUN tables (first level x second level)."""
        first = (self.range.premake + 1 if self.range else len(self.list.partitions) if self.list
                 else self.hash.modulus if self.hash else 1)
        sub = self.subpartition
        second = 1 if sub is None else sub.hash.modulus if sub.hash else sub.range.premake + 1 if sub.range else 1
        same_column = (sub is not None and sub.range is not None and self.range is not None
                       and sub.range.column == self.range.column)
        if same_column:
            assert sub is not None and sub.range is not None and self.range is not None
            second = leaves_per_parent(self.range, sub.range)
        if first * second > MAX_TABLES_PER_RUN:
            # A second level that fits below the first (the first alone stays far below the limit).
            fits = MAX_TABLES_PER_RUN // first
            at: tuple[str, ...] = ()
            example = eg("subpartition", None)
            if sub is not None and sub.hash is not None and fits >= 1:
                at, example = ("subpartition", "hash"), eg("modulus", min(8, fits))
            elif sub is not None and sub.range is not None and fits >= 2 and not same_column:
                at, example = ("subpartition", "range"), eg("premake", min(4, fits - 1))
            raise Refusal(
                f"{first} first-level partitions with {second} below each are {first * second} tables, "
                f"more than the {MAX_TABLES_PER_RUN} one run creates; lower the premake, modulus or number of lists",
                example, at=at)

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
        "message": f"strategy range needs the range section, {suggest(PartitionPolicySpec, 'range')}",
    },
    {
        "rule": "self.strategy != 'list' || has(self.list)",
        "message": f"strategy list needs the list section, {suggest(PartitionPolicySpec, 'list')}",
    },
    {
        "rule": "self.strategy != 'hash' || has(self.hash)",
        "message": f"strategy hash needs the hash section, {suggest(PartitionPolicySpec, 'hash')}",
    },
    {
        "rule": "!has(self.range) || (has(self.range.interval) != has(self.range.width))",
        "message": "set exactly one of range.interval (time column) or range.width (integer column), "
        f"{suggest(RangeSpec, 'interval')}",
    },
    {
        "rule": "!has(self.retention) || self.retention.action != 'archive' || has(self.retention.archive)",
        "message": f"retention.action archive needs retention.archive.schema, {suggest(Retention, 'archive')}",
    },
]
