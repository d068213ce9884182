"""Seed schemas for IndexPolicy scenarios: seed 002 (sessions, knowledge_sources, knowledge_chunks)
and seed 003 (articles, range-partitioned by month)."""

from __future__ import annotations

from typing import Any

SEED_002 = """
CREATE TABLE sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_key    text NOT NULL,
    status         text NOT NULL DEFAULT 'active',
    channel_id     bigint,
    last_active_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE knowledge_sources (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type     text NOT NULL,
    status   text NOT NULL DEFAULT 'pending',
    metadata jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE knowledge_chunks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_id   bigint NOT NULL,
    content     text NOT NULL,
    embedding   real[],
    token_count int NOT NULL DEFAULT 0,
    retry_count int NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO sessions (session_key, status, channel_id, last_active_at)
SELECT 'k' || g, CASE WHEN g % 3 = 0 THEN 'archived' ELSE 'active' END, g % 50, now() - g * interval '1 minute'
  FROM generate_series(1, 3000) g;
INSERT INTO knowledge_sources (type, status, metadata)
SELECT 'doc', 'pending', jsonb_build_object('channel_name', 'ch' || (g % 7)) FROM generate_series(1, 500) g;
INSERT INTO knowledge_chunks (source_id, content, embedding, token_count, retry_count)
SELECT g % 500, 'chunk ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE ARRAY[1, 2]::real[] END, g % 9, g % 5
  FROM generate_series(1, 4000) g;
ANALYZE sessions, knowledge_sources, knowledge_chunks;
"""


def seed_002_policy(table: str) -> dict[str, Any]:
    indexes = {
        "sessions": [
            {"name": "idx_sessions_session_key", "columns": [{"column": "session_key"}]},
            {"name": "idx_sessions_archive_candidates",
             "columns": [{"column": "status"}, {"column": "last_active_at"}], "where": "status = 'active'"},
        ],
        "knowledge_sources": [
            {"name": "idx_sources_metadata", "method": "gin", "columns": [{"column": "metadata"}]},
            {"name": "idx_sources_channel", "columns": [{"expression": "metadata->>'channel_name'"}]},
        ],
        "knowledge_chunks": [
            {"name": "idx_chunks_searchable", "columns": [{"column": "source_id"}, {"column": "created_at"}],
             "where": "embedding IS NOT NULL AND token_count > 0"},
            {"name": "idx_chunks_queue", "columns": [{"column": "id"}],
             "where": "embedding IS NULL AND retry_count < 3"},
        ],
    }[table]
    return {"database": {"secretName": "app-db"}, "table": {"name": table}, "indexes": indexes,
            "timeouts": {"lockTimeout": "2s", "lockRetries": 3}}


SEED_003_MONTHS = ["2025_01", "2025_02", "2025_03", "2025_04"]

SEED_003 = """
CREATE TABLE articles (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    title        text,
    user_id      bigint NOT NULL,
    feed_id      bigint NOT NULL,
    is_read      boolean NOT NULL DEFAULT false,
    tags         text[],
    published_at timestamp NOT NULL
) PARTITION BY RANGE (published_at);
""" + "".join(
    f"CREATE TABLE articles_{m} PARTITION OF articles FOR VALUES FROM ('{m[:4]}-{m[5:]}-01') "
    f"TO ('{m[:4]}-{m[5:]}-01'::date + interval '1 month');\n"
    for m in SEED_003_MONTHS
) + """
INSERT INTO articles (title, user_id, feed_id, is_read, tags, published_at)
SELECT 't' || g, g % 200, g % 30, g % 2 = 0, ARRAY['a', 'b'], '2025-01-01'::timestamp + (g % 110) * interval '1 day'
  FROM generate_series(1, 8000) g;
ANALYZE articles;
"""


def seed_003_policy(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "database": {"secretName": "app-db"},
        "table": {"name": "articles"},
        "parallelism": 3,
        "indexes": [
            {"name": "idx_articles_user_read_date",
             "columns": [{"column": "user_id"}, {"column": "is_read"}, {"column": "published_at", "order": "desc"}]},
            {"name": "idx_articles_feed_tags", "columns": [{"column": "feed_id"}], "include": ["tags"]},
        ],
        "timeouts": {"lockTimeout": "2s", "lockRetries": 3},
    }
    spec.update(extra)
    return spec
