"""VectorIndex: one pgvector index, built within a memory budget and checked by measured recall."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from .common import (
    AT_LEAST_1S,
    CommonSpec,
    Duration,
    Identifier,
    Predicate,
    Schedule,
    StrictModel,
    TableRef,
    cel_rule,
    check_identifier,
    parse_duration,
)
from .examples import Refusal, eg
from .hints import hint
from .vector_rules import spec_fix, spec_problems

QUANTITY_PATTERN = hint(
    r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$", "a memory quantity such as '512Mi' or '1Gi' (units Ki, Mi, Gi, Ti, k, M, G, T)"
)
_QUANTITY_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


MAX_BUDGET = 2**40


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity (`1Gi`, `512Mi`, `2G`, `1048576`) in bytes."""
    m = re.fullmatch(QUANTITY_PATTERN, text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a memory quantity such as 512Mi or 1Gi")
    digits = text.strip()[: len(text.strip()) - len(m.group(1) or "")]
    return int(digits) * _QUANTITY_UNITS[m.group(1) or ""]


class ElementType(StrEnum):
    vector = "vector"
    halfvec = "halfvec"
    bit = "bit"
    sparsevec = "sparsevec"


class Metric(StrEnum):
    cosine = "cosine"
    l2 = "l2"
    inner_product = "innerProduct"
    l1 = "l1"
    hamming = "hamming"
    jaccard = "jaccard"


class Method(StrEnum):
    hnsw = "hnsw"
    ivfflat = "ivfflat"


class HnswParams(StrictModel):
    m: int = Field(default=16, ge=2, le=100, description="Neighbours per node (pgvector: 2-100, default 16).")
    ef_construction: int = Field(
        default=64,
        alias="efConstruction",
        ge=4,
        le=1000,
        description="Candidate list size while building (pgvector: 4-1000, at least 2*m; default 64).",
    )

    @model_validator(mode="after")
    def _ef_vs_m(self) -> HnswParams:
        if self.ef_construction < 2 * self.m:
            raise Refusal(
                f"must be at least 2*m ({2 * self.m}), not {self.ef_construction}: pgvector refuses "
                "to build otherwise", eg("efConstruction", max(64, 2 * self.m)), at=("efConstruction",)
            )
        return self


ListsValue = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer", "minimum": 1, "maximum": 32768}, {"type": "string", "enum": ["auto"]}],
            "example": 100,
            "x-kubernetes-validations": [{
                "rule": "type(self) == int ? (self >= 1 && self <= 32768) : self == 'auto'",
                "message": "must be a number of lists from 1 to 32768, or 'auto', e.g. 100",
            }],
            "description": "Number of inverted lists (1-32768), or `auto`: rows/1000 up to 1M rows, sqrt(rows) "
            "above (pgvector's guidance), computed from the table when the index is built.",
        }
    ),
]


class IvfflatParams(StrictModel):
    lists: ListsValue = Field(default="auto", examples=[100])

    @field_validator("lists")
    @classmethod
    def _lists(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            if v != "auto":
                raise ValueError("lists must be an integer 1-32768 or 'auto'")
            return v
        if not 1 <= v <= 32768:
            raise ValueError(f"lists must be between 1 and 32768 (pgvector's limit), not {v}")
        return v


class BuildSettingsSpec(StrictModel):
    memory_budget: str = Field(
        default="1Gi",
        alias="memoryBudget",
        json_schema_extra=cel_rule(
            "quantity(self).compareTo(quantity('1Mi')) >= 0 && quantity(self).compareTo(quantity('1Ti')) <= 0",
            "must be between 1Mi and 1Ti",
        ),
        pattern=QUANTITY_PATTERN,
        description="Memory the build may use on the server (maintenance_work_mem plus parallel workers), as a "
        "Kubernetes quantity (e.g. 512Mi, 1Gi). The operator sizes maintenance_work_mem and the worker count "
        "for the build session from this and the estimated graph size; at least 1Mi.",
    )
    max_parallel_workers: int | None = Field(
        default=None,
        alias="maxParallelWorkers",
        ge=0,
        le=64,
        examples=[4],
        description="Upper bound on parallel maintenance workers for the build (default: the server's "
        "max_parallel_workers). The budget can lower it further.",
    )

    @field_validator("memory_budget")
    @classmethod
    def _min_budget(cls, v: str) -> str:
        if parse_quantity(v) < 2**20:
            raise ValueError("memoryBudget must be at least 1Mi (PostgreSQL's minimum maintenance_work_mem)")
        if parse_quantity(v) > MAX_BUDGET:
            # maintenance_work_mem itself stops at 2 TB; a budget past 1Ti is a typo, not a plan.
            raise ValueError("memoryBudget must be at most 1Ti")
        return v

    @property
    def budget_bytes(self) -> int:
        return parse_quantity(self.memory_budget)


class ApplySearchSetting(StrictModel):
    role: Identifier | None = Field(
        default=None,
        examples=["app_reader"],
        description="Run ALTER ROLE <role> IN DATABASE <db> SET hnsw.ef_search (or ivfflat.probes) to the "
        "recommended value. The operator's role needs the right to alter that role.",
    )
    database: bool = Field(
        default=False,
        description="Run ALTER DATABASE <db> SET hnsw.ef_search (or ivfflat.probes) to the recommended value "
        "(needs ownership of the database).",
    )

    @field_validator("role")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)


class RecallSpec(StrictModel):
    enabled: bool = Field(default=True, description="Measure recall after every build and on `interval`.")
    k: int = Field(default=10, ge=1, le=1000, description="Neighbours per query: recall@k.")
    queries: int = Field(
        default=50, ge=1, le=10000,
        description="Query vectors sampled from the table's own rows for each measurement.",
    )
    target_recall: float = Field(
        default=0.95, alias="targetRecall", gt=0, le=1,
        description="The recommended search setting is the smallest measured value reaching this recall.",
    )
    search_values: list[int] | None = Field(
        default=None,
        alias="searchValues",
        min_length=1,
        max_length=20,
        examples=[[20, 40, 80]],
        description="hnsw.ef_search (HNSW) or ivfflat.probes (IVFFlat) values to measure. Default: "
        "10,20,40,80,160,320 for HNSW; 1,2,4,... up to lists for IVFFlat.",
    )
    interval: Duration = Field(default="6h", description="How often recall is measured again without a rebuild.",
                               json_schema_extra=cel_rule(AT_LEAST_1S, "must be at least 1s"))
    sample_filter: Predicate | None = Field(
        default=None,
        alias="sampleFilter",
        max_length=4000,
        examples=["category = 'news'"],
        description="A SQL predicate (one plain expression, e.g. \"category = 'news'\"): filtered queries are "
        "measured too, with pgvector 0.8's iterative index scan off and relaxed_order.",
    )
    apply: ApplySearchSetting | None = Field(
        default=None,
        description="Where to apply the recommended value (otherwise it is only reported).",
    )

    @field_validator("search_values")
    @classmethod
    def _values(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(x < 1 or x > 32768 for x in v):
            raise ValueError("searchValues must be between 1 and 32768 (hnsw.ef_search allows at most 1000)")
        return sorted(set(v))

    @field_validator("interval")
    @classmethod
    def _min(cls, v: str) -> str:
        if parse_duration(v) < 1:
            raise ValueError("must be at least 1s")
        return v


class VectorIndexSpec(CommonSpec):
    table: TableRef = Field(description="The table holding the vectors.")
    column: Identifier = Field(examples=["embedding"], description="The vector column.")
    type: ElementType = Field(examples=["vector"], description="Column element type: vector, halfvec, bit or sparsevec.")
    dimensions: int = Field(
        ge=1, le=1_000_000_000, examples=[1536],
        description="The column's dimensions (checked against the column before any build). Indexable maxima: "
        "vector 2000, halfvec 4000, bit 64000; sparsevec up to 1000 non-zero elements.",
    )
    metric: Metric = Field(examples=["cosine"], description="Distance: cosine, l2, innerProduct, l1, hamming or jaccard.")
    method: Method = Field(default=Method.hnsw, description="hnsw or ivfflat.")
    hnsw: HnswParams | None = Field(default=None, description="HNSW parameters (method: hnsw).")
    ivfflat: IvfflatParams | None = Field(default=None, description="IVFFlat parameters (method: ivfflat).")
    where: Predicate | None = Field(
        default=None,
        max_length=4000,
        examples=["embedding IS NOT NULL"],
        description="Partial index predicate, one plain SQL expression (e.g. `embedding IS NOT NULL`).",
    )
    index_name: Identifier | None = Field(
        default=None,
        alias="indexName",
        examples=["docs_embedding_hnsw_idx"],
        description="Index name (default <table>_<column>_<method>_idx).",
    )
    build: BuildSettingsSpec = Field(default_factory=BuildSettingsSpec, description="Build resources.")
    recall: RecallSpec = Field(default_factory=RecallSpec, description="Quality measurement.")
    schedule: Schedule = Field(
        default_factory=Schedule,
        description="When the index is re-observed (an index dropped or left INVALID is rebuilt).",
    )

    @field_validator("column", "index_name")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        return None if v is None else check_identifier(v)

    @model_validator(mode="after")
    def _rules(self) -> VectorIndexSpec:
        # A bad spec is refused before anything is observed or built.
        problems = spec_problems(self)
        if problems:
            raise Refusal("; ".join(problems), spec_fix(self))
        return self

    @property
    def hnsw_params(self) -> HnswParams:
        return self.hnsw or HnswParams()

    @property
    def ivfflat_params(self) -> IvfflatParams:
        return self.ivfflat or IvfflatParams()


def default_index_name(table: str, column: str, method: str) -> str:
    from ..sql.quote import fit_identifier

    return fit_identifier(f"{table}_{column}", f"_{method}_idx")


def spec_summary(spec: VectorIndexSpec) -> dict[str, Any]:
    """The parameters that define the index, for the status."""
    out: dict[str, Any] = {"type": spec.type.value, "dimensions": spec.dimensions, "metric": spec.metric.value,
                           "method": spec.method.value}
    if spec.method is Method.hnsw:
        out.update(m=spec.hnsw_params.m, efConstruction=spec.hnsw_params.ef_construction)
    else:
        out["lists"] = spec.ivfflat_params.lists
    return out
