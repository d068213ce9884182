"""IndexPolicy: the indexes a table must have, and the report on the ones it has."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from ..errors import SpecError
from ..sql.expressions import validate_expression
from ..sql.quote import fit_identifier
from .common import (
    CommonSpec,
    Duration,
    Identifier,
    Predicate,
    Schedule,
    StrictModel,
    TableRef,
    check_identifier,
    parse_duration,
)
from .examples import Refusal, eg, suggest
from .hints import hint

# What the refusals and the reference show for a SQL fragment (tested to be accepted).
EXPRESSION_EXAMPLE = "lower(email)"
PREDICATE_EXAMPLE = "deleted_at IS NULL"


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
                           "a number or a plain word")
# Values are checked by the CRD too; names by the model only (a CRD cannot constrain map keys).
IndexParamValue = Annotated[str, Field(max_length=64, pattern=STORAGE_PARAM_VALUE)]


class IndexColumn(StrictModel):
    """One key of the index: a column, or an expression."""

    column: Identifier | None = Field(default=None, examples=["player_id"],
                                      description="Column name (exactly one of column/expression).")
    expression: str | None = Field(
        default=None,
        max_length=4000,
        examples=[EXPRESSION_EXAMPLE],
        description=f"An expression such as `{EXPRESSION_EXAMPLE}` or `(payload->>'kind')`: one plain SQL expression, "
        "parsed and refused unless it uses only columns, constants, built-in operators and allow-listed "
        "immutable functions.",
    )
    opclass: Identifier | None = Field(default=None, examples=["text_pattern_ops"],
                                       description="Operator class, e.g. text_pattern_ops, jsonb_path_ops.")
    order: SortOrder | None = Field(default=None, examples=["desc"], description="asc (default) or desc (btree only).")
    nulls: NullsOrder | None = Field(default=None, examples=["last"], description="first or last (btree only).")

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
            raise Refusal("set exactly one of column or expression",
                          suggest(IndexColumn, "column") if self.column is None else eg("expression", None))
        return self


class IndexDecl(StrictModel):
    name: Identifier = Field(examples=["ix_events_player"], description="Index name (in the table's schema).")
    columns: list[IndexColumn] = Field(min_length=1, max_length=32, examples=[[{"column": "player_id"}]],
                                       description="Key columns or expressions, in order.")
    method: IndexMethod = Field(default=IndexMethod.btree, description="Access method.")
    unique: bool = Field(default=False, description="A UNIQUE index.")
    include: list[Identifier] = Field(
        default_factory=list, max_length=32, examples=[["created_at"]], description="Non-key columns stored in the index (INCLUDE)."
    )
    where: Predicate | None = Field(
        default=None,
        max_length=4000,
        examples=[PREDICATE_EXAMPLE],
        description=f"Partial index predicate, e.g. `{PREDICATE_EXAMPLE}`: one plain SQL expression (no "
        "sub-queries, no statements, only allow-listed immutable functions).",
    )
    storage_parameters: dict[str, IndexParamValue] = Field(
        default_factory=dict,
        alias="storageParameters",
        max_length=64,
        examples=[{"fillfactor": "90"}],
        description="WITH (...) storage parameters, e.g. {fillfactor: \"90\"} or {fastupdate: \"off\"}.",
    )
    tablespace: Identifier | None = Field(default=None, examples=["fast_ssd"], description="Tablespace for the index.")

    @field_validator("name", "tablespace")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @field_validator("include")
    @classmethod
    def _idents(cls, v: list[str]) -> list[str]:
        return [check_identifier(x) for x in v]

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
        btree = suggest(IndexDecl, "method")
        if self.method is not IndexMethod.btree:
            if any(c.order or c.nulls for c in self.columns):
                raise Refusal(f"index {self.name}: order/nulls are only for btree indexes", btree)
            if self.unique:
                raise Refusal(f"index {self.name}: unique is only for btree indexes", btree)
        if self.method is IndexMethod.hash and len(self.columns) != 1:
            raise Refusal(f"index {self.name}: hash indexes have exactly one column", btree)
        if self.include and self.method not in (IndexMethod.btree, IndexMethod.gist):
            raise Refusal(f"index {self.name}: include is only for btree and gist indexes", btree)
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
    indexes: list[IndexDecl] = Field(default_factory=list, max_length=100, description="Declared indexes.",
                                     examples=[[{"name": "ix_events_player", "columns": [{"column": "player_id"}]}]])
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
        for j, name in enumerate(names):
            if name in names[:j]:
                free = next(n for k in range(2, 1000) if (n := fit_identifier(name, f"_{k}")) not in names)
                raise Refusal(f"index name {name!r} is declared twice (indexes.{names.index(name)} has it too)",
                              eg("name", free), at=("indexes", j, "name"))
        return self


INDEX_POLICY_CEL = [
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, i.columns.all(c, has(c.column) != has(c.expression)))",
        "message": f"each index column sets exactly one of column or expression, {suggest(IndexColumn, 'column')}",
    },
    # IndexDecl._shape, and the unique-names rule, for the API server.
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method == 'btree' || "
        "!has(i.unique) || !i.unique)",
        "message": f"unique is only for btree indexes, {suggest(IndexDecl, 'method')}",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method == 'btree' || "
        "i.columns.all(c, !has(c.order) && !has(c.nulls)))",
        "message": f"order and nulls are only for btree indexes, {suggest(IndexDecl, 'method')}",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.method) || i.method != 'hash' || "
        "size(i.columns) == 1)",
        "message": f"hash indexes have exactly one column, {suggest(IndexDecl, 'method')}",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, !has(i.include) || size(i.include) == 0 || "
        "!has(i.method) || i.method in ['btree', 'gist'])",
        "message": f"include is only for btree and gist indexes, {suggest(IndexDecl, 'method')}",
        "fieldPath": ".indexes",
    },
    {
        "rule": "!has(self.indexes) || self.indexes.all(i, self.indexes.exists_one(j, j.name == i.name))",
        "message": f"each index name is declared once, {suggest(IndexDecl, 'name')}",
        "fieldPath": ".indexes",
    },
]
