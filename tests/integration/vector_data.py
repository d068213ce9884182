"""Clustered synthetic vectors (what embeddings look like, unlike uniform noise) for VectorIndex tests."""

from __future__ import annotations

import math
import random
from typing import Any

import asyncpg


def clustered(n: int, dims: int, clusters: int = 20, spread: float = 0.15, seed: int = 7) -> list[list[float]]:
    rng = random.Random(seed)
    centers = [[rng.gauss(0, 1) for _ in range(dims)] for _ in range(clusters)]
    out = []
    for i in range(n):
        c = centers[i % clusters]
        out.append([round(x + rng.gauss(0, spread), 5) for x in c])
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
