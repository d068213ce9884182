"""What the suite deploys besides the chart, adapted from examples/kind/ to this cluster: no
PersistentVolumes (an emptyDir per PostgreSQL), no cluster DNS (Secrets carry the Service's
ClusterIP), images from the node's containerd (pullPolicy Never).

Two PostgreSQL StatefulSets from one image (hack/cluster/postgres.Containerfile): Debian's
postgresql-15 (OpenSSL: DbTlsCert serves TLS from it) and the embedded wheel's PostgreSQL 18 with
pgvector (VectorIndex; Debian bookworm has no pgvector package)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .kube import REPO

PG_IMAGE = "localhost/pgcurator-postgres:15"
APP_PASSWORD = "cluster-app-password"
TLS_PASSWORD = "cluster-tls-password"
SUPERUSER_PASSWORD = "cluster-superuser-password"

DEBIAN_INIT = f"""
CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}';
CREATE ROLE tls_admin LOGIN PASSWORD '{TLS_PASSWORD}';
CREATE DATABASE app OWNER app;
GRANT pg_read_server_files, pg_read_all_settings TO tls_admin;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO tls_admin;
GRANT ALTER SYSTEM ON PARAMETER ssl, ssl_cert_file, ssl_key_file, ssl_ca_file, ssl_min_protocol_version TO tls_admin;
GRANT EXECUTE ON FUNCTION pg_reload_conf() TO tls_admin;
GRANT CREATE ON DATABASE postgres TO tls_admin;
\\connect app
SET ROLE app;
CREATE TABLE event_logs (
    id bigint GENERATED ALWAYS AS IDENTITY, player_id bigint NOT NULL, event_type text NOT NULL,
    payload jsonb, server_timestamp timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, server_timestamp)
) PARTITION BY RANGE (server_timestamp);
CREATE TABLE articles (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, feed_id bigint NOT NULL, user_id bigint NOT NULL,
    is_read boolean NOT NULL DEFAULT false, published_at timestamptz NOT NULL DEFAULT now(), title text
);
INSERT INTO articles (feed_id, user_id, title) SELECT i % 7, i % 13, 'article ' || i FROM generate_series(1, 500) AS i;
"""

VECTOR_INIT = f"""
CREATE ROLE app LOGIN PASSWORD '{APP_PASSWORD}';
CREATE DATABASE app OWNER app;
\\connect app
CREATE EXTENSION vector;
SET ROLE app;
CREATE TABLE knowledge_chunks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, content text NOT NULL,
                               embedding vector(3));
INSERT INTO knowledge_chunks (content, embedding)
SELECT 'chunk ' || i, ARRAY[random(), random(), random()]::vector FROM generate_series(1, 2000) AS i;
"""


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


def service(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"name": "postgres", "port": 5432, "targetPort": 5432}]}}


def secret(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns}, "stringData": data}


def postgres(ns: str, name: str, flavor: str, init_sql: str, tls_secret: str | None) -> list[dict[str, Any]]:
    mounts = [{"name": "data", "mountPath": "/var/lib/postgresql/data"},
              {"name": "init", "mountPath": "/docker-entrypoint-initdb.d"}]
    volumes: list[dict[str, Any]] = [{"name": "data", "emptyDir": {}},
                                     {"name": "init", "configMap": {"name": f"{name}-init"}}]
    if tls_secret:  # filled by cert-manager for the DbTlsCert (mount mode), projected by the kubelet
        mounts.append({"name": "tls", "mountPath": "/etc/pgtls", "readOnly": True})
        volumes.append({"name": "tls", "secret": {"secretName": tls_secret, "optional": True, "defaultMode": 0o640}})
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-init", "namespace": ns},
         "data": {"10-init.sql": init_sql}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "namespace": ns},
         "spec": {
             "serviceName": name, "replicas": 1, "selector": {"matchLabels": {"app": name}},
             "template": {
                 "metadata": {"labels": {"app": name}},
                 "spec": {
                     # The image's postgres user; the mounted key is root:999 0640, as PostgreSQL accepts.
                     "securityContext": {"runAsUser": 999, "runAsGroup": 999, "fsGroup": 999, "runAsNonRoot": True,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "terminationGracePeriodSeconds": 5,
                     "containers": [{
                         "name": "postgres", "image": PG_IMAGE, "imagePullPolicy": "Never",
                         "env": [{"name": "FLAVOR", "value": flavor},
                                 {"name": "POSTGRES_PASSWORD", "value": SUPERUSER_PASSWORD}],
                         "ports": [{"containerPort": 5432, "name": "postgres"}],
                         "readinessProbe": {"tcpSocket": {"port": 5432}, "periodSeconds": 2},
                         "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                         "volumeMounts": mounts,
                     }],
                     "volumes": volumes,
                 },
             },
         }},
    ]


def example_resources(ns: str, secrets: dict[str, str]) -> list[dict[str, Any]]:
    """examples/kind/resources.yaml in namespace `ns`, each pointing at the Secret of `secrets`
    (kind -> Secret name)."""
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "kind" / "resources.yaml").read_text()) if d]
    for d in docs:
        d["metadata"]["namespace"] = ns
        d["spec"]["database"]["secretName"] = secrets[d["kind"]]
        if d["kind"] == "DbTlsCert":
            d["spec"]["dnsNames"] = [f"postgres.{ns}.svc", f"postgres.{ns}.svc.cluster.local"]
    return docs


def example_issuer(ns: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((REPO / "examples" / "kind" / "issuer.yaml").read_text()) if d]
    for d in docs:
        if d["kind"] != "ClusterIssuer":
            d["metadata"]["namespace"] = ns
    return docs


def chart_values(tag: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "image": {"repository": "localhost/pgcurator", "tag": tag, "pullPolicy": "Never"},
        "replicas": 2,
        # The liveness test stalls a pod's watches; the chart's default waits a minute (it must exceed the lease).
        "heartbeatStaleSeconds": 35,
    }
    values.update(extra or {})
    return values


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path
