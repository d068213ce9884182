"""A hand-written corpus of hostile input: identifiers, SQL fragments, absurd numbers, broken
Secrets. Each entry is (case id, resource kind, spec patch); the corpus is combined with a
valid base spec per kind."""

from __future__ import annotations

import base64
from typing import Any

BAD_IDENTIFIERS = [
    'x"; DROP TABLE t; --', "a'b", "semi;colon", "nul\x00byte", "x" * 64, "é" * 32, "", "tab\tname",
    "new\nline", "😀" * 16, 'Robert"); DROP TABLE students;--', "$$", "/*comment*/", "--", "back\\slash",
    "pg_catalog.pg_class", "a" * 200, "\u202eevil", "x\"y\"z", "DROP TABLE event_logs;",
]

BAD_PREDICATES = [
    "1=1; DROP TABLE x", "true) OR (1=1", "id IN (SELECT id FROM other)", "pg_sleep(10) IS NULL",
    "random() > 0.5", "now() > '2020-01-01'", "$$x$$ = 'x'", "a = 1 -- comment", "a = 1 /* c */ OR true",
    "nextval('s') > 0", "(SELECT 1) = 1", "EXISTS (SELECT 1)", "set_config('a', 'b', false) = 'b'",
    "lo_export(1, '/tmp/x') = 1", "pg_read_file('/etc/passwd') <> ''", "dblink('x', 'y') IS NULL",
    "current_user = 'postgres'", "a = ANY(ARRAY(SELECT 1))", "1 = 1 UNION SELECT 1",
    "a = 1) WITH (fillfactor = 1", "\x00", "'unterminated", "a = $1", "COPY x TO '/tmp/x'",
    "DO $$ BEGIN END $$", "a = 1; COMMIT; DROP TABLE x", "pg_terminate_backend(1)", "txid_current() > 0",
    "clock_timestamp() > now()", "(a = 1) IS TRUE; SELECT 1", "a = 'x'::regclass::text", "query_to_xml('x', true, true, '') IS NULL",
    "a = (WITH x AS (SELECT 1) SELECT * FROM x)", "x.* IS NULL", "a = 1 $tag$ x $tag$", "", "   ",
    "CASE WHEN (SELECT true) THEN true END", "pg_advisory_lock(1) IS NULL", "a = current_setting('x')",
]

BAD_NUMBERS_PARTITION: list[dict[str, Any]] = [
    {"range": {"column": "server_timestamp", "interval": i}} for i in
    ["13 fortnights", "0 days", "-1 month", "1e9 days", "1 month; DROP TABLE x", "99999 years", "month",
     "1 decade", "1.5 months", "one month", "", "1 mon", "P1M", "1 month 2 days"]
] + [
    {"range": {"column": "server_timestamp", "interval": "1 month", "premake": p}} for p in [-1, 100000, 1.5]
] + [
    {"range": {"column": "server_timestamp", "interval": "1 month", "timeZone": tz}} for tz in
    ["Mars/Olympus", "UTC; DROP", "../../etc/passwd", "+25:00"]
] + [
    {"retention": {"keep": k, "action": "drop"}} for k in [0, -5, 10**9]
] + [
    {"retention": {"keep": 3, "action": a}} for a in ["shred", "DROP", "", None]
] + [
    {"timeouts": {"lockTimeout": v}} for v in ["0s", "forever", "1d", "-5s", "5 s", "5s; DROP"]
] + [
    {"schedule": {"interval": v}} for v in ["0s", "never", "1y"]
] + [
    {"schedule": {"cron": v}} for v in ["every day", "* * *", "99 99 99 99 99"]
] + [
    {"strategy": "hash", "range": None, "hash": {"column": "player_id", "modulus": m}} for m in [0, -1, 100000]
] + [
    {"strategy": "list", "range": None, "list": {"column": "event_type", "partitions": [
        {"name": "a", "values": ["x"]}, {"name": "b", "values": ["x"]}]}},
    {"strategy": "list", "range": None, "list": {"column": "event_type", "partitions": []}},
    {"template": {"storageParameters": {"oids": "true"}}},
    {"template": {"storageParameters": {"fillfactor": "90) WITH (x"}}},
    {"convert": {"enabled": True, "batchMemory": "-1Gi"}},
    {"convert": {"enabled": True, "batchMemory": "lots"}},
    {"defaultRows": {"move": True, "batchRows": 0}},
    {"database": {"secretName": "Bad_Name"}},
    {"database": {"secretName": "x" * 300}},
    {"database": {"secretName": "app-db", "sslMode": "sometimes"}},
    {"deletionPolicy": "Shred"},
    {"unknownField": True},
]

BAD_NUMBERS_VECTOR: list[dict[str, Any]] = [
    {"dimensions": d} for d in [0, -5, 100000, 2001]
] + [
    {"hnsw": {"m": m, "efConstruction": 64}} for m in [1, 0, 101, 1000]
] + [
    {"hnsw": {"m": 16, "efConstruction": e}} for e in [1, 31, 1001]
] + [
    {"metric": "jaccard"}, {"metric": "hamming"}, {"metric": "manhattan"},
    {"method": "ivfflat", "hnsw": None, "ivfflat": {"lists": 0}},
    {"method": "ivfflat", "hnsw": None, "metric": "l1", "ivfflat": {"lists": 10}},
    {"type": "sparsevec", "method": "ivfflat", "hnsw": None, "ivfflat": {"lists": 10}},
] + [
    {"build": {"memoryBudget": b}} for b in ["1Pi", "99999999Gi", "-1Gi", "lots", "0", "1Gi; DROP"]
]

BAD_NUMBERS_INDEX: list[dict[str, Any]] = [
    {"parallelism": p} for p in [0, -1, 1000]
] + [
    {"indexes": [{"name": "i", "columns": [{"column": "a"}], "method": m}]} for m in ["btree; DROP", "bloom", ""]
] + [
    {"indexes": [{"name": "i", "columns": []}]},
    {"indexes": [{"name": "i", "columns": [{"column": "a"}], "storageParameters": {"fillfactor": "1; DROP"}}]},
    {"indexes": [{"name": "i", "columns": [{"column": "a"}], "method": "hash", "unique": True}]},
]


def b64(**kv: str) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in kv.items()}


BAD_SECRETS: list[tuple[str, dict[str, str] | None]] = [
    ("missing", None),
    ("empty", {}),
    ("uri-not-base64", {"uri": "%%%"}),
    ("uri-garbage", b64(uri="not a uri at all")),
    ("uri-mysql", b64(uri="mysql://u:p@h/db")),
    ("uri-no-host", b64(uri="postgresql:///db")),
    ("uri-bad-port", b64(uri="postgresql://u:p@h:99999/db")),
    ("uri-port-text", b64(uri="postgresql://u:p@h:abc/db")),
    ("host-only", b64(host="h")),
    ("no-password", b64(host="h", user="u")),
    ("no-user", b64(host="h", password="p")),
    ("port-text", b64(host="h", user="u", password="p", port="five")),
    ("port-negative", b64(host="h", user="u", password="p", port="-1")),
    ("non-utf8", {"uri": base64.b64encode(b"\xff\xfe\xfd").decode()}),
    ("empty-user", b64(host="h", user="", password="p")),
]


def corpus() -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i, ident in enumerate(BAD_IDENTIFIERS):
        out.append((f"pp-table-{i}", "PartitionPolicy", {"table": {"name": ident}}))
        out.append((f"pp-schema-{i}", "PartitionPolicy", {"table": {"schema": ident, "name": "event_logs"}}))
        out.append((f"pp-column-{i}", "PartitionPolicy", {"range": {"column": ident, "interval": "1 month"}}))
        out.append((f"ix-name-{i}", "IndexPolicy", {"indexes": [{"name": ident, "columns": [{"column": "player_id"}]}]}))
        out.append((f"vec-column-{i}", "VectorIndex", {"column": ident}))
    for i, pred in enumerate(BAD_PREDICATES):
        out.append((f"ix-where-{i}", "IndexPolicy", {"indexes": [
            {"name": "ix_hostile", "columns": [{"column": "player_id"}], "where": pred}]}))
        out.append((f"ix-expr-{i}", "IndexPolicy", {"indexes": [
            {"name": "ix_hostile", "columns": [{"expression": pred}]}]}))
        out.append((f"vec-where-{i}", "VectorIndex", {"where": pred}))
        out.append((f"pp-template-where-{i}", "PartitionPolicy", {"template": {"indexes": [
            {"name": "t", "columns": ["player_id"], "where": pred}]}}))
    out += [(f"pp-number-{i}", "PartitionPolicy", p) for i, p in enumerate(BAD_NUMBERS_PARTITION)]
    out += [(f"vec-number-{i}", "VectorIndex", p) for i, p in enumerate(BAD_NUMBERS_VECTOR)]
    out += [(f"ix-number-{i}", "IndexPolicy", p) for i, p in enumerate(BAD_NUMBERS_INDEX)]
    return out
