"""Generated states and specs for VectorIndex, and one explored step."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from . import invariants as inv
from .harness import Harness, Result, create_metadata, resource_name
from .index_states import index_defs
from .partition_states import DB_SETTINGS, q
from .tally import bump, distinct

KIND = "VectorIndex"
DIMS = 3


@dataclass
class VectorCase:
    table_state: str  # absent | present | wrong_dims | no_extension
    column_type: str = "vector"
    rows: int = 50
    nulls: int = 0
    existing: str = "none"  # none | same_name_other_params | invalid | other_method_same_name | leftover_temp
    spec: dict[str, Any] = field(default_factory=dict)
    metadata: str = "absent"
    settings: dict[str, str] = field(default_factory=dict)


@st.composite
def vector_cases(draw: st.DrawFn) -> VectorCase:
    case = VectorCase(draw(st.sampled_from(["absent", "present", "present", "present", "wrong_dims"])))
    case.column_type = draw(st.sampled_from(["vector", "halfvec"]))
    case.rows = draw(st.sampled_from([0, 5, 60]))
    case.nulls = draw(st.integers(0, 3))
    case.existing = draw(st.sampled_from(["none", "same_name_other_params", "invalid", "other_method_same_name",
                                          "leftover_temp"]))
    method = draw(st.sampled_from(["hnsw", "ivfflat"]))
    spec: dict[str, Any] = {"table": {"schema": "st", "name": "items"}, "column": "embedding",
                            "type": case.column_type, "dimensions": DIMS,
                            "metric": draw(st.sampled_from(["l2", "cosine", "innerProduct"])), "method": method,
                            "indexName": "items_embedding_idx", "timeouts": {"lockTimeout": "2s", "lockRetries": 1}}
    if method == "hnsw":
        spec["hnsw"] = {"m": draw(st.sampled_from([4, 8, 16])), "efConstruction": draw(st.sampled_from([16, 32]))}
    else:
        spec["ivfflat"] = {"lists": draw(st.sampled_from(["auto", 1, 4]))}
    if draw(st.booleans()):
        spec["recall"] = {"enabled": False}
    else:
        spec["recall"] = {"queries": 10, "searchValues": [10, 40]}
    if draw(st.integers(0, 3)) == 0:
        spec["where"] = "embedding IS NOT NULL"
    case.spec = spec
    case.metadata = draw(st.sampled_from(["absent", "current"]))
    keys = draw(st.lists(st.sampled_from(sorted(DB_SETTINGS)), max_size=2, unique=True))
    case.settings = {k: draw(st.sampled_from(DB_SETTINGS[k])) for k in keys}
    return case


async def build_vector_case(h: Harness, case: VectorCase) -> None:
    await h.reset()
    admin = await h.admin()
    app = await h.app()
    await admin.execute("CREATE EXTENSION IF NOT EXISTS vector")
    if case.metadata == "current":
        await create_metadata(app)
    if case.table_state != "absent":
        dims = DIMS + 1 if case.table_state == "wrong_dims" else DIMS
        t = case.column_type
        await app.execute(f"CREATE TABLE st.items (id bigint PRIMARY KEY, embedding {t}({dims}))")
        rng = random.Random(case.rows * 31 + case.nulls)
        rows = [(i, "[" + ",".join(f"{rng.uniform(-1, 1):.4f}" for _ in range(dims)) + "]")
                for i in range(case.rows)]
        await app.executemany(f"INSERT INTO st.items VALUES ($1, $2::text::{t}({dims}))", rows)
        for j in range(case.nulls):
            await app.execute("INSERT INTO st.items VALUES ($1, NULL)", 10_000 + j)
        ops = {"vector": "vector", "halfvec": "halfvec"}[t]
        if case.table_state == "present" and case.rows:
            name = "items_embedding_idx"
            if case.existing == "same_name_other_params":
                await app.execute(f"CREATE INDEX {name} ON st.items USING hnsw (embedding {ops}_l2_ops) WITH (m = 2)")
            elif case.existing == "other_method_same_name":
                await app.execute(f"CREATE INDEX {name} ON st.items USING ivfflat (embedding {ops}_l2_ops) "
                                  "WITH (lists = 2)")
            elif case.existing == "invalid":
                await app.execute(f"CREATE INDEX {name} ON st.items USING hnsw (embedding {ops}_l2_ops)")
                await admin.execute("UPDATE pg_catalog.pg_index SET indisvalid = false "
                                    "WHERE indexrelid = 'st.items_embedding_idx'::regclass")
            elif case.existing == "leftover_temp":
                await app.execute(f"CREATE INDEX items_embedding_idx_pgc_new ON st.items USING hnsw "
                                  f"(embedding {ops}_l2_ops)")
    if case.settings:
        await admin.execute("; ".join(f"ALTER DATABASE {q(h.dbname)} SET {k} = '{v}'"
                                      for k, v in case.settings.items()))
    await h.fresh_pools()


async def step_vector(h: Harness, case: VectorCase) -> tuple[Result, Result]:
    admin = await h.admin()
    spec = case.spec
    distinct(KIND, "specs tried", spec)
    bump(KIND, "reconciles", 3)
    exists = case.table_state != "absent"
    digest = await admin.fetchrow("SELECT count(*), coalesce(sum(hashtextextended(id::text || '|' || "
                                  "coalesce(embedding::text, ''), 0)), 0) FROM st.items") if exists else None
    before = await index_defs(admin, "st")
    dry = await h.apply(KIND, {**spec, "dryRun": True})
    inv.no_internal_error(KIND, dry)
    inv.counted(KIND)
    if await index_defs(admin, "st") != before:
        raise inv.Broken("a dry run changes nothing", "indexes changed during a dry run", dry)
    mark = await inv.history_mark(admin)
    real = await h.apply(KIND, spec, status=dry.status)
    inv.no_internal_error(KIND, real)
    ran = await inv.history_since(admin, resource_name(KIND), mark)
    inv.statements_within_lock_timeout(KIND, ran, 2.0)
    if exists:
        inv.counted(KIND)
        after = await admin.fetchrow("SELECT count(*), coalesce(sum(hashtextextended(id::text || '|' || "
                                     "coalesce(embedding::text, ''), 0)), 0) FROM st.items")
        if tuple(after) != tuple(digest or ()):
            raise inv.Broken("rows conserved", f"{tuple(digest or ())} -> {tuple(after)}", real)
    again = real
    if real.ready:
        again = await h.apply(KIND, {**spec, "dryRun": True}, status=real.status)
        inv.no_internal_error(KIND, again)
        inv.plans_nothing(KIND, again)
        inv.counted(KIND)
        defs = await index_defs(admin, "st")
        if "items_embedding_idx" not in defs or not defs["items_embedding_idx"][1]:
            raise inv.Broken("Ready means the index exists and is valid", f"indexes: {defs}", real)
        leftovers = [n for n in defs if n.endswith(("_pgc_new", "_pgc_old"))]
        if leftovers:
            raise inv.Broken("no build leftovers while Ready", f"{leftovers}", real)
    return real, again
