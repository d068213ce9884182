"""IndexPolicy: the indexes a table must have, and the report on the ones it has."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ..errors import SpecError
from ..sql.expressions import validate_expression, validate_predicate
from .common import (
    CommonSpec,
    Duration,
    Identifier,
    Schedule,
    StrictModel,
    TableRef,
    check_identifier,
    parse_duration,
)
from .hints import hint


class IndexMethod(StrEnum):
    btree = "btree"
    gin = "gin"
    gist = "gist"
    brin = "brin"
    hash = "hash"


class SortOrder(StrEnum):
    asc = "asc"
    desc = "desc"


class NullsOrder(StrEnum):
    first = "first"
    last = "last"


# Storage parameter names are plain lower-case words; values are numbers or words (on/off, true...).
STORAGE_PARAM_NAME = r"^[a-z][a-z0-9_]{0,62}$"
STORAGE_PARAM_VALUE = hint(r"^([0-9]+(\.[0-9]+)?|[A-Za-z][A-Za-z0-9_]{0,62})$",
                           "a number or a plain word, e.g. '90' or 'off'")
# Values are checked by the CRD too; names by the model only (a CRD cannot constrain map keys).
IndexParamValue = Annotated[str, Field(max_length=64, pattern=STORAGE_PARAM_VALUE)]


class IndexColumn(StrictModel):
    """One key of the index: a column, or an expression."""

    column: Identifier | None = Field(default=None, description="Column name (exactly one of column/expression).")
    expression: str | None = Field(
        default=None,
        max_length=4000,
        description="An expression such as `lower(email)` or `(payload->>'kind')`: one plain SQL expression, "
        "parsed and refused unless it uses only columns, constants, built-in operators and allow-listed "
        "immutable functions.",
    )
    opclass: Identifier | None = Field(default=None, description="Operator class, e.g. text_pattern_ops, jsonb_path_ops.")
    order: SortOrder | None = Field(default=None, description="asc (default) or desc (btree only).")
    nulls: NullsOrder | None = Field(default=None, description="first or last (btree only).")

    @field_validator("column", "opclass")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("expression")
    @classmethod
    def _expr(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return validate_expression(v, what="index expression")
        except SpecError as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _one(self) -> IndexColumn:
        if (self.column is None) == (self.expression is None):
            raise ValueError("set exactly one of column or expression")
        return self


class IndexDecl(StrictModel):
    name: Identifier = Field(description="Index name (in the table's schema).")
    columns: list[IndexColumn] = Field(min_length=1, max_length=32, description="Key columns or expressions, in order.")
    method: IndexMethod = Field(default=IndexMethod.btree, description="Access method.")
    unique: bool = Field(default=False, description="A UNIQUE index.")
    include: list[Identifier] = Field(
        default_factory=list, max_length=32, description="Non-key columns stored in the index (INCLUDE)."
    )
    where: str | None = Field(
        default=None,
        max_length=4000,
        description="Partial index predicate, e.g. `status = 'active'`: one plain SQL expression (no "
        "sub-queries, no statements, only allow-listed immutable functions).",
    )
    storage_parameters: dict[str, IndexParamValue] = Field(
        default_factory=dict,
        alias="storageParameters",
        max_length=64,
        description="WITH (...) storage parameters, e.g. {fillfactor: \"90\"} or {fastupdate: \"off\"}.",
    )
    tablespace: Identifier | None = Field(default=None, description="Tablespace for the index.")

    @field_validator("name", "tablespace")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("include")
    @classmethod
    def _idents(cls, v: list[str]) -> list[str]:
        return [check_identifier(x) for x in v]

    @field_validator("where")
    @classmethod
    def _pred(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return validate_predicate(v)
        except SpecError as exc:
            raise ValueError(exc.message) from None

    @field_validator("storage_parameters")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(STORAGE_PARAM_NAME, key):
                raise ValueError(f"storage parameter name {key!r} is not a plain lower-case word")
            if not re.fullmatch(STORAGE_PARAM_VALUE, str(value)):
                raise ValueError(f"storage parameter {key}={value!r}: use a number or a plain word")
        return v

    @model_validator(mode="after")
    def _shape(self) -> IndexDecl:
        if self.method is not IndexMethod.btree:
            if any(c.order or c.nulls for c in self.columns):
                raise ValueError(f"index {self.name}: order/nulls are only for btree indexes")
            if self.unique:
                raise ValueError(f"index {self.name}: unique is only for btree indexes")
        if self.method is IndexMethod.hash and len(self.columns) != 1:
            raise ValueError(f"index {self.name}: hash indexes have exactly one column")
        if self.include and self.method not in (IndexMethod.btree, IndexMethod.gist):
            raise ValueError(f"index {self.name}: include is only for btree and gist indexes")
        return self


class AnalysisSpec(StrictModel):
    enabled: bool = Field(default=True, description="Report size, scans, unused/duplicate/invalid indexes, bloat.")
    unused_after: Duration = Field(
        default="168h",
        alias="unusedAfter",
        description="An index with no scans for this long (across statistics resets, from the usage snapshots "
        "kept in the pgcurator schema) is reported as unused.",
    )

    @field_validator("unused_after")
    @classmethod
    def _pos(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("must be greater than zero")
        return v


class SuggestionSpec(StrictModel):
    enabled: bool = Field(
        default=False,
        description="Propose indexes from pg_stat_statements, each checked with the planner on a scratch copy. "
        "Suggestions are only reported, never built: declare the ones you want.",
    )
    min_calls: int = Field(default=10, alias="minCalls", ge=1, description="Ignore statements called fewer times.")
    max_suggestions: int = Field(default=5, alias="maxSuggestions", ge=1, le=50)


class IndexPolicySpec(CommonSpec):
    table: TableRef = Field(description="The table (plain or partitioned) whose indexes are managed.")
    indexes: list[IndexDecl] = Field(default_factory=list, max_length=100, description="Declared indexes.")
    parallelism: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Partitioned tables: how many partitions are indexed at once, each over its own connection "
        "(bounded by the operator's per-database pool).",
    )
    prune: bool = Field(
        default=False,
        description="Drop (concurrently) indexes on the table that are not declared. Never drops an index "
        "backing a primary key, unique or exclusion constraint. With dryRun, shows what would be dropped.",
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec, description="The index report on the status.")
    suggestions: SuggestionSpec = Field(default_factory=SuggestionSpec, description="Index suggestions.")
    schedule: Schedule = Field(default_factory=Schedule, description="When the table is re-observed.")

    @model_validator(mode="after")
    def _unique_names(self) -> IndexPolicySpec:
        names = [i.name for i in self.indexes]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"index names declared twice: {', '.join(sorted(dup))}")
        return self


INDEX_POLICY_CEL = [
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, i.columns.all(c, has(c.column) != has(c.expression)))",
        "message": "each index column sets exactly one of column or expression",
    },
    # IndexDecl._shape, and the unique-names rule, for the API server.
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method == 'btree' || "
        "!has(i.unique) || !i.unique)",
        "message": "unique is only for btree indexes, e.g. method: btree, unique: true",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method == 'btree' || "
        "i.columns.all(c, !has(c.order) && !has(c.nulls)))",
        "message": "order and nulls are only for btree indexes",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method != 'hash' || "
        "size(i.columns) == 1)",
        "message": "hash indexes have exactly one column",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.include) || size(i.include) == 0 || "
        "!has(i.method) || i.method in ['btree', 'gist'])",
        "message": "include is only for btree and gist indexes",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, self.indexes.exists_one(j, j.name == i.name))",
        "message": "each index name is declared once",
        "fieldPath": ".indexes",
    },
]
