"""What every partition a PartitionPolicy creates gets (template), and the policy's data-moving
options (DEFAULT-row moves, conversion of a plain table)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator

from .common import IDENTIFIER_PATTERN, Identifier, Predicate, StrictModel, check_identifier
from .hints import echo, hint
from .index import PREDICATE_EXAMPLE

# A name used as a suffix (<table>_<name>) must leave room for the hash that keeps shortened
# names apart (fit_identifier): 63 bytes minus "_", the 9-byte hash tag and one byte of the base.
MAX_SUFFIX_NAME_BYTES = 52


def check_suffix_name(v: str, field: str) -> str:
    if len(v.encode()) > MAX_SUFFIX_NAME_BYTES:
        raise ValueError(f"{field} {echo(v)} is {len(v.encode())} bytes; at most {MAX_SUFFIX_NAME_BYTES}, "
                         "as it becomes the end of a longer name")
    return v



BATCH_MEMORY_PATTERN = hint(r"^[1-9][0-9]*(Ki|Mi|Gi)$", "a memory quantity such as '64Mi' or '1Gi' (Ki, Mi or Gi)")
STORAGE_PARAMETER_PATTERN = r"^(fillfactor|parallel_workers|toast_tuple_target|(toast\.)?autovacuum_[a-z_]+|" \
    r"(toast\.)?vacuum_truncate|(toast\.)?vacuum_index_cleanup|user_catalog_table)$"


TABLE_PARAM_VALUE = hint(r"^(-?[0-9]+(\.[0-9]+)?|true|false|on|off|auto)$",
                         "a number or a boolean (true, false, on, off, auto)")
# The value's pattern is in the CRD; the names are checked by the model only (a CRD schema cannot
# constrain map keys, and a CEL rule over keys of unbounded length exceeds the cost budget).
TableParamValue = Annotated[str, Field(max_length=64, pattern=TABLE_PARAM_VALUE)]


class TemplateIndex(StrictModel):
    name: str = Field(min_length=1, max_length=MAX_SUFFIX_NAME_BYTES, pattern=IDENTIFIER_PATTERN, examples=["by_player"],
                      description="Index name suffix: the index is <partition>_<name> (at most 52 bytes).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_suffix_name(check_identifier(v), "template.indexes[].name")
    columns: list[Identifier] = Field(min_length=1, max_length=32, examples=[["player_id"]],
                                      description="Indexed columns, in order.")
    unique: bool = Field(default=False, description="A unique index per partition (the parent cannot carry one "
                         "that does not include the partition key).")
    where: Predicate | None = Field(default=None, max_length=2000, examples=[PREDICATE_EXAMPLE],
                              description="Partial index predicate (one plain expression, validated).")


class PartitionTemplate(StrictModel):
    """What every partition the operator creates gets; partitions it did not create are checked and any
    difference is reported as drift on the status."""

    storage_parameters: dict[str, TableParamValue] = Field(
        default_factory=dict,
        alias="storageParameters",
        max_length=64,
        examples=[{"autovacuum_vacuum_scale_factor": "0.01"}],
        description="Table storage parameters, e.g. autovacuum_vacuum_scale_factor: '0.01'.",
    )
    tablespace: Identifier | None = Field(default=None, examples=["fast_ssd"], description="Tablespace for new partitions.")
    indexes: list[TemplateIndex] = Field(default_factory=list, max_length=100,
                                         examples=[[{"name": "by_player", "columns": ["player_id"]}]],
                                         description="Per-partition indexes.")

    @field_validator("storage_parameters")
    @classmethod
    def _params(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not re.fullmatch(STORAGE_PARAMETER_PATTERN, key):
                raise ValueError(f"storage parameter {key!r} is not a table storage parameter pgcurator sets")
            if not re.fullmatch(TABLE_PARAM_VALUE, str(value)):
                raise ValueError(f"storage parameter {key}={value!r}: value must be a number or a boolean")
        return v


class ConvertSpec(StrictModel):
    """Turn an existing plain table into a partitioned table of the declared layout, online."""

    enabled: bool = Field(examples=[True], description="Explicit opt-in: the table is converted only when true.")
    batch_memory: str = Field(
        default="64Mi", alias="batchMemory", pattern=BATCH_MEMORY_PATTERN,
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
