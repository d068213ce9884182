"""The seed schemas, data and workload for the index-advice benchmark (bench/index_advice.py).

Schemas: seed 002 (sessions, knowledge_sources, knowledge_chunks; its DDL guide) and seed 003
(articles). Data: skewed, generated deterministically inside the server (setseed). Workload: one
statement per usage example the seeds give next to their indexes, as the application sends it
(literals it writes in the SQL text stay literals; values it binds are `$n`). The expert set is
the indexes the seeds' authors chose for those examples, less the two HNSW indexes (vector
search is VectorIndex's job, and its workload is measured by bench/vector_build.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_key    text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    channel_id     bigint,
    messages       jsonb NOT NULL DEFAULT '[]',
    last_active_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE knowledge_sources (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL,
    status     text NOT NULL DEFAULT 'pending',
    title      text NOT NULL,
    metadata   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE knowledge_chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   bigint NOT NULL REFERENCES knowledge_sources (id) ON DELETE CASCADE,
    chunk_index int NOT NULL,
    content     text NOT NULL,
    embedding   VECTOR_TYPE,
    location    jsonb NOT NULL DEFAULT '{}',
    token_count int NOT NULL DEFAULT 0,
    retry_count int NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE articles (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      int NOT NULL,
    feed_id      int NOT NULL,
    title        text NOT NULL,
    content      text NOT NULL,
    is_read      boolean NOT NULL DEFAULT false,
    published_at timestamp NOT NULL,
    tags         text[] NOT NULL DEFAULT '{}'
);
"""

# Rows per table at scale 1.0 (the 200k-1M of the issue). Skew: power-law ids, rare statuses.
ROWS = {"sessions": 1_000_000, "knowledge_sources": 200_000, "knowledge_chunks": 300_000, "articles": 600_000}


def data_sql(scale: float, vector: str) -> list[str]:
    n = {t: max(1000, int(r * scale)) for t, r in ROWS.items()}
    src = n["knowledge_sources"]
    # The embedding is a constant vector per row (it compresses): the advice never reads it, and
    # a realistic one would only make the data slower to generate.
    emb = ("array_fill((floor(random() * 100) / 100)::real, ARRAY[1536])::halfvec(1536)" if vector == "halfvec"
           else "array_fill((floor(random() * 100) / 100)::real, ARRAY[16])")
    return [
        "SELECT setseed(0.15)",
        f"""INSERT INTO sessions (session_key, status, channel_id, messages, last_active_at)
            SELECT 'k' || g, CASE WHEN random() < 0.05 THEN 'active' ELSE 'archived' END,
                   floor(3000 * power(random(), 3))::bigint, '[]',
                   now() - power(random(), 4) * interval '365 days'
              FROM generate_series(1, {n['sessions']}) g""",
        f"""INSERT INTO knowledge_sources (type, status, title, metadata, created_at)
            SELECT (ARRAY['document','document','document','web','web','discord'])[1 + floor(random() * 6)::int]
                     || CASE WHEN random() < 0.01 THEN '_pdf' ELSE '' END,
                   CASE WHEN r < 0.97 THEN 'completed' WHEN r < 0.985 THEN 'failed'
                        WHEN r < 0.995 THEN 'pending' ELSE 'processing' END,
                   'source ' || g,
                   jsonb_build_object('channel_name', 'ch' || floor(500 * power(random(), 2))::int,
                                      'author', 'u' || floor(random() * 1000)::int),
                   now() - random() * interval '365 days'
              FROM (SELECT g, random() AS r FROM generate_series(1, {src}) g) s""",
        f"""INSERT INTO knowledge_chunks (source_id, chunk_index, content, embedding, token_count, retry_count,
                                          created_at)
            SELECT 1 + floor({src} * power(random(), 2))::bigint, g % 50, 'chunk text ' || g,
                   CASE WHEN random() < 0.01 THEN NULL ELSE {emb} END,
                   CASE WHEN random() < 0.05 THEN 0 ELSE 50 + floor(random() * 450)::int END,
                   CASE WHEN random() < 0.98 THEN 0 ELSE 1 + floor(random() * 5)::int END,
                   now() - random() * interval '365 days'
              FROM generate_series(1, {n['knowledge_chunks']}) g""",
        f"""INSERT INTO articles (user_id, feed_id, title, content, is_read, published_at, tags)
            SELECT floor(20000 * power(random(), 2))::int, floor(5000 * power(random(), 2))::int,
                   'title ' || g, 'content of article ' || g, random() < 0.7,
                   timestamp '2026-01-01' - random() * interval '365 days',
                   ARRAY['t' || floor(random() * 50)::int, 't' || floor(random() * 50)::int]
              FROM generate_series(1, {n['articles']}) g""",
        "ANALYZE",
    ]


@dataclass(frozen=True)
class Query:
    sql: str
    params: Callable[[random.Random, float], tuple[Any, ...]]
    calls: int = 20


def _zipf(rng: random.Random, n: int, power: float) -> int:
    return int(n * rng.random() ** power)


WORKLOAD = [
    # seed 002, sessions: "look up by session_key", "status", "timeout", "a channel's sessions", "archive"
    Query("SELECT id, status, channel_id FROM sessions WHERE session_key = $1",
          lambda r, s: ("k" + str(1 + r.randrange(int(ROWS["sessions"] * s))),)),
    Query("SELECT count(*) FROM sessions WHERE status = 'active'", lambda r, s: ()),
    Query("SELECT id, session_key FROM sessions WHERE last_active_at < now() - interval '300 days'",
          lambda r, s: ()),
    Query("SELECT id, session_key, last_active_at FROM sessions WHERE channel_id = $1 "
          "ORDER BY last_active_at DESC LIMIT 50", lambda r, s: (_zipf(r, 3000, 3),)),
    Query("SELECT id FROM sessions WHERE status = 'active' AND last_active_at < now() - interval '1 hour'",
          lambda r, s: ()),
    # seed 002, knowledge_sources: "status='pending'", "by type", "metadata->>'channel_name' = 'dev-talk'"
    Query("SELECT id, type, title FROM knowledge_sources WHERE status = 'pending'", lambda r, s: ()),
    Query("SELECT count(*) FROM knowledge_sources WHERE type = $1",
          lambda r, s: (r.choice(["document_pdf", "web_pdf", "discord_pdf"]),)),
    Query("SELECT id, title FROM knowledge_sources WHERE metadata->>'channel_name' = $1",
          lambda r, s: ("ch" + str(_zipf(r, 500, 2)),)),
    Query("SELECT id, title FROM knowledge_sources WHERE metadata @> $1::jsonb",
          lambda r, s: (f'{{"author": "u{r.randrange(1000)}"}}',)),
    # seed 002, knowledge_chunks: "a source's chunks", "searchable chunks only", the embedding queue
    Query("SELECT id, chunk_index FROM knowledge_chunks WHERE source_id = $1",
          lambda r, s: (1 + _zipf(r, int(ROWS["knowledge_sources"] * s), 2),)),
    Query("SELECT id, content FROM knowledge_chunks WHERE source_id = $1 AND embedding IS NOT NULL "
          "AND token_count > 0 ORDER BY created_at", lambda r, s: (1 + _zipf(r, int(ROWS["knowledge_sources"] * s), 2),)),
    Query("SELECT id FROM knowledge_chunks WHERE embedding IS NULL AND retry_count < 3 ORDER BY id LIMIT 10 "
          "FOR UPDATE SKIP LOCKED", lambda r, s: ()),
    # seed 003, articles: "unread of a user by date", "a feed's articles and tags"
    Query("SELECT id, title, published_at FROM articles WHERE user_id = $1 AND is_read = false "
          "ORDER BY published_at DESC LIMIT 20", lambda r, s: (_zipf(r, 20000, 2),)),
    Query("SELECT id, tags FROM articles WHERE feed_id = $1", lambda r, s: (_zipf(r, 5000, 2),)),
]

EXPERT = [  # seed 002 section 5, seed 003 "複合インデックス" (HNSW left out, see above)
    "CREATE INDEX idx_sessions_session_key ON sessions (session_key)",
    "CREATE INDEX idx_sessions_status ON sessions (status)",
    "CREATE INDEX idx_sessions_last_active_at ON sessions (last_active_at)",
    "CREATE INDEX idx_sessions_channel_id ON sessions (channel_id)",
    "CREATE INDEX idx_sessions_archive_candidates ON sessions (status, last_active_at) WHERE status = 'active'",
    "CREATE INDEX idx_sources_metadata ON knowledge_sources USING gin (metadata)",
    "CREATE INDEX idx_sources_status ON knowledge_sources (status)",
    "CREATE INDEX idx_sources_type ON knowledge_sources (type)",
    "CREATE INDEX idx_chunks_source_id ON knowledge_chunks (source_id)",
    "CREATE INDEX idx_chunks_searchable ON knowledge_chunks (source_id, created_at) "
    "WHERE embedding IS NOT NULL AND token_count > 0",
    "CREATE INDEX idx_chunks_queue ON knowledge_chunks (id) WHERE embedding IS NULL AND retry_count < 3",
    "CREATE INDEX idx_articles_user_read_date ON articles (user_id, is_read, published_at DESC)",
    "CREATE INDEX idx_articles_feed_tags ON articles (feed_id) INCLUDE (tags)",
]
