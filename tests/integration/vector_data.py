"""Clustered synthetic vectors (what embeddings look like, unlike uniform noise) for VectorIndex tests."""

from __future__ import annotations

import math
import random
from typing import Any

import asyncpg


def clustered(n: int, dims: int, clusters: int = 20, spread: float = 0.6, seed: int = 7,
              intrinsic: int = 4) -> list[list[float]]:
    """Clusters whose points vary mostly along a few directions (a low intrinsic dimension, as real
    embeddings do), so that nearest neighbours are well defined, plus a little isotropic noise."""
    rng = random.Random(seed)
    # centers close enough that the clusters touch: an HNSW graph over well-separated islands can
    # be disconnected for small m, which is a property of the data, not of the build
    centers = [[rng.gauss(0, 0.15) for _ in range(dims)] for _ in range(clusters)]
    axes = [[[rng.gauss(0, 1) / math.sqrt(dims) for _ in range(dims)] for _ in range(intrinsic)]
            for _ in range(clusters)]
    out = []
    for i in range(n):
        c, basis = centers[i % clusters], axes[i % clusters]
        coef = [rng.gauss(0, spread) for _ in range(intrinsic)]
        out.append([round(c[d] + sum(coef[j] * basis[j][d] for j in range(intrinsic)) + rng.gauss(0, 0.01), 5)
                    for d in range(dims)])
    return out


def text(v: list[float]) -> str:
    return "[" + ",".join(repr(x) for x in v) + "]"


async def make_table(conn: asyncpg.Connection, name: str, type_: str, dims: int, rows: int,
                     nulls: int = 0, seed: int = 7) -> list[list[float]]:
    """`name(id, category, embedding <type>(dims))` with `rows` clustered vectors and `nulls` NULLs."""
    vecs = clustered(rows, dims, seed=seed)
    await conn.execute(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY, category text NOT NULL, '
                       f'embedding {type_}({dims}))')
    records: list[tuple[Any, ...]] = [(i, "ab"[i % 2], text(v)) for i, v in enumerate(vecs)]
    records += [(rows + j, "a", None) for j in range(nulls)]
    await conn.executemany(f'INSERT INTO "{name}" VALUES ($1, $2, $3::text::{type_}({dims}))', records)
    await conn.execute(f'ANALYZE "{name}"')
    return vecs


def cosine_distance(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return 1 - dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def l2_distance(a: list[float], b: list[float]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))
