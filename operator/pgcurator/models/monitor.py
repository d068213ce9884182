"""DatabaseMonitor: what to observe in one database (as a Prometheus ServiceMonitor declares what
to scrape). The status and the metrics show what it sees; snapshots live in the pgcurator schema."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .common import CommonSpec, Duration, Identifier, StrictModel, check_identifier, parse_duration
from .examples import Refusal, eg, field_example, render

# Schemas never observed: the system catalogs, and pgcurator's own metadata (its tables change
# with every migration and snapshot; observing them would report the operator to itself).
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", "pgcurator")


def _at_least(value: str, seconds: float, what: str) -> str:
    if parse_duration(value) < seconds:
        raise ValueError(f"{what} must be at least {seconds:g}s")
    return value


class SchemaSelection(StrictModel):
    include: list[Identifier] = Field(
        default_factory=list, max_length=200, examples=[["app"]],
        description="Schemas to observe; empty (default): every schema except the system ones and pgcurator.",
    )
    exclude: list[Identifier] = Field(default_factory=list, max_length=200, examples=[["audit"]],
                                      description="Schemas never observed.")

    @field_validator("include", "exclude")
    @classmethod
    def _idents(cls, v: list[str]) -> list[str]:
        return [check_identifier(x) for x in v]

    def observed(self, schema: str) -> bool:
        if schema in SYSTEM_SCHEMAS or schema.startswith(("pg_temp_", "pg_toast_temp_")):
            return False
        if schema in self.exclude:
            return False
        return not self.include or schema in self.include


class ChangeDetection(StrictModel):
    enabled: bool = Field(default=True, description="Record schema changes in pgcurator.schema_changes.")
    event_trigger: bool = Field(
        default=True, alias="eventTrigger",
        description="Capture DDL with who and when through an event trigger: installed by the operator when its "
        "role may (superuser), used when a superuser installed it (docs/databasemonitor.md), otherwise reported "
        "unavailable on the status (not an error).",
    )
    fingerprint_interval: Duration = Field(
        default="5m", alias="fingerprintInterval",
        description="How often the catalog fingerprint (a hash per object definition) is taken: it catches what "
        "event triggers cannot see (GRANT on databases, ALTER DATABASE/ROLE SET, restores, replicas, changes "
        "while the trigger was disabled).",
    )
    wake_managers: bool = Field(
        default=True, alias="wakeManagers",
        description="When a change touches an object another pgcurator resource manages (its table, indexes or "
        "partitions), run that resource now instead of at its next schedule, so the drift is repaired at once.",
    )
    status_changes: int = Field(
        default=10, alias="statusChanges", ge=0, le=50, description="How many of the last changes the status lists.",
    )
    events_per_run: int = Field(
        default=5, alias="eventsPerRun", ge=0, le=50,
        description="At most this many SchemaChanged Events per run; the rest are summed up in one Event.",
    )

    @field_validator("fingerprint_interval")
    @classmethod
    def _fp(cls, v: str) -> str:
        return _at_least(v, 5, "fingerprintInterval")


class ColumnStatistics(StrictModel):
    largest_tables: int = Field(
        default=10, alias="largestTables", ge=0, le=200,
        description="Null fraction and distinct values (pg_stats) are recorded for the columns of this many of the "
        "largest tables.",
    )
    interval: Duration = Field(
        default="6h", description="Column statistics are heavier: recorded at most this often.",
    )

    @field_validator("interval")
    @classmethod
    def _iv(cls, v: str) -> str:
        return _at_least(v, 60, "columnStatistics.interval")


class Statistics(StrictModel):
    enabled: bool = Field(default=True, description="Record table and database statistics snapshots.")
    interval: Duration = Field(default="15m", description="How often a statistics snapshot is taken.")
    tables: int = Field(
        default=500, ge=1, le=10000,
        description="Tables per snapshot, the largest first (a database with more keeps only the largest).",
    )
    status_tables: int = Field(
        default=10, alias="statusTables", ge=0, le=100, description="How many of the largest tables the status lists.",
    )
    columns: ColumnStatistics = Field(default_factory=ColumnStatistics, description="Per-column statistics.")

    @field_validator("interval")
    @classmethod
    def _iv(cls, v: str) -> str:
        return _at_least(v, 10, "statistics.interval")


class SlowStatements(StrictModel):
    enabled: bool = Field(
        default=True,
        description="Top statements by total and by mean time from pg_stat_statements, as deltas between "
        "snapshots (the operator's own statements excluded).",
    )
    top: int = Field(default=10, ge=1, le=100, description="How many statements each list keeps.")
    min_calls: int = Field(default=1, alias="minCalls", ge=1, description="Ignore statements called fewer times.")


class Retention(StrictModel):
    snapshots: Duration = Field(
        default="720h", description="Statistics and fingerprint snapshots older than this are deleted.",
    )
    changes: Duration = Field(default="2160h", description="Schema change records older than this are deleted.")

    @field_validator("snapshots", "changes")
    @classmethod
    def _min(cls, v: str) -> str:
        return _at_least(v, 3600, "retention")


class DatabaseMonitorSpec(CommonSpec):
    schemas: SchemaSelection = Field(default_factory=SchemaSelection, description="Which schemas are observed.")
    changes: ChangeDetection = Field(default_factory=ChangeDetection, description="Schema change detection.")
    statistics: Statistics = Field(default_factory=Statistics, description="Table, column and database statistics.")
    slow_statements: SlowStatements = Field(
        default_factory=SlowStatements, alias="slowStatements", description="Slow statements.",
    )
    retention: Retention = Field(default_factory=Retention, description="How long snapshots are kept.")

    @model_validator(mode="after")
    def _disjoint(self) -> DatabaseMonitorSpec:
        both = set(self.schemas.include) & set(self.schemas.exclude)
        if both:
            raise Refusal(f"schemas both included and excluded: {', '.join(sorted(both))}",
                          eg("exclude", [s for s in self.schemas.exclude if s not in both]), at=("schemas",))
        return self

    def schedule_seconds(self) -> float:
        """The worker wakes for whichever is due first (a NOTIFY from the trigger wakes it sooner)."""
        due = [parse_duration(self.changes.fingerprint_interval)] if self.changes.enabled else []
        if self.statistics.enabled or self.slow_statements.enabled:
            due.append(parse_duration(self.statistics.interval))
        return min(due) if due else 3600.0


DATABASE_MONITOR_CEL = [
    {
        "rule": "!has(self.schemas) || !has(self.schemas.include) || !has(self.schemas.exclude) || "
                "self.schemas.include.all(s, !(s in self.schemas.exclude))",
        "message": f"a schema cannot be both included and excluded, e.g. schemas: "
        f"{render({'include': field_example(SchemaSelection, 'include'), 'exclude': field_example(SchemaSelection, 'exclude')})}",
    },
]
