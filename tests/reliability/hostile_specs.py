"""Valid base specs per kind for the hostile-input corpus, and the cases issue 13 names beyond it
(what the CRD let through although the model refused it)."""

from __future__ import annotations

from typing import Any

BASE: dict[str, dict[str, Any]] = {
    "PartitionPolicy": {"database": {"secretName": "app-db"}, "table": {"name": "event_logs"},
                        "range": {"column": "server_timestamp", "interval": "1 month", "premake": 1}},
    "IndexPolicy": {"database": {"secretName": "app-db"}, "table": {"name": "event_logs"},
                    "indexes": [{"name": "ix_ok", "columns": [{"column": "player_id"}]}]},
    "VectorIndex": {"database": {"secretName": "app-db"}, "table": {"name": "docs"}, "column": "embedding",
                    "type": "vector", "dimensions": 3, "metric": "cosine", "method": "hnsw",
                    "hnsw": {"m": 16, "efConstruction": 64}},
    "DbTlsCert": {"database": {"secretName": "app-db"}, "secretName": "pg-tls", "dnsNames": ["pg.example.com"],
                  "delivery": {"mode": "sql"}},
}

# The gaps issue 13 names, beyond the shared corpus.
EXTRA: list[tuple[str, str, dict[str, Any]]] = [
    *[(f"vec-lists-{i}", "VectorIndex", {"method": "ivfflat", "hnsw": None, "ivfflat": {"lists": v}})
      for i, v in enumerate(["lots", 0, 99999, "Auto", -1])],
    ("vec-halfvec-4001", "VectorIndex", {"type": "halfvec", "dimensions": 4001}),
    ("vec-vector-2001", "VectorIndex", {"dimensions": 2001}),
    ("vec-bit-64001", "VectorIndex", {"type": "bit", "metric": "hamming", "dimensions": 64001}),
    ("vec-metric-hamming-vector", "VectorIndex", {"metric": "hamming"}),
    ("vec-metric-cosine-bit", "VectorIndex", {"type": "bit", "metric": "cosine"}),
    ("vec-ivfflat-l1", "VectorIndex", {"method": "ivfflat", "hnsw": None, "metric": "l1"}),
    ("vec-ivfflat-jaccard", "VectorIndex", {"method": "ivfflat", "hnsw": None, "type": "bit",
                                             "metric": "jaccard"}),
    ("vec-budget-0", "VectorIndex", {"build": {"memoryBudget": "0"}}),
    ("vec-recall-interval-0", "VectorIndex", {"recall": {"interval": "0s"}}),
    ("vec-role-bytes", "VectorIndex", {"recall": {"apply": {"role": "é" * 32}}}),
    ("pp-tz-mars", "PartitionPolicy", {"range": {"column": "server_timestamp", "interval": "1 month",
                                                 "timeZone": "Mars/Olympus"}}),
    ("pp-schedule-500ms", "PartitionPolicy", {"schedule": {"interval": "500ms"}}),
    ("pp-statement-timeout-0", "PartitionPolicy", {"timeouts": {"statementTimeout": "0m"}}),
    *[(f"tls-ip-{i}", "DbTlsCert", {"ipAddresses": [v]}) for i, v in
      enumerate(["not-an-ip", "10.0.0.256", "10.0.0.1/24", "", "::g"])],
    *[(f"tls-dns-{i}", "DbTlsCert", {"dnsNames": [v]}) for i, v in enumerate(["Bad_Name", "-x.com", "a..b"])],
    ("tls-bidi-ident", "PartitionPolicy", {"table": {"name": "\u202eevil"}}),
    ("ix-hash-two-columns", "IndexPolicy", {"indexes": [{"name": "i", "method": "hash",
                                                         "columns": [{"column": "a"}, {"column": "b"}]}]}),
    ("ix-gin-order", "IndexPolicy", {"indexes": [{"name": "i", "method": "gin",
                                                   "columns": [{"column": "a", "order": "desc"}]}]}),
    ("ix-brin-include", "IndexPolicy", {"indexes": [{"name": "i", "method": "brin", "include": ["b"],
                                                      "columns": [{"column": "a"}]}]}),
    ("ix-name-twice", "IndexPolicy", {"indexes": [{"name": "i", "columns": [{"column": "a"}]},
                                                  {"name": "i", "columns": [{"column": "b"}]}]}),
    *[(f"tls-cert-{i}", "DbTlsCert", {"secretName": None, "certificate": {
        "secretName": "x", "issuerRef": {"name": "ca"}, **c}}) for i, c in enumerate([
            {"duration": "24h", "renewBefore": "48h"}, {"duration": "30m"}, {"renewBefore": "1m"},
            {"duration": "720h"}])],
    ("tls-cert-no-names", "DbTlsCert", {"secretName": None, "dnsNames": [], "certificate": {
        "secretName": "x", "issuerRef": {"name": "ca"}}}),
    ("pp-template-column-bytes", "PartitionPolicy", {"template": {"indexes": [{"name": "t", "columns": ["é" * 32]}]}}),
    ("pp-template-name-bytes", "PartitionPolicy", {"template": {"indexes": [{"name": "ü" * 27,
                                                                              "columns": ["player_id"]}]}}),
    ("pp-ident-spaces", "PartitionPolicy", {"table": {"name": " padded "}}),
]


def merged(kind: str, patch: dict[str, Any]) -> dict[str, Any]:
    body = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE[kind].items()}
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return {k: v for k, v in body.items() if v is not None}
