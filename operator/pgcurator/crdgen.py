"""Render the CustomResourceDefinitions in crds/ from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: no $ref, no anyOf-with-null for optional
fields, every node typed. This turns pydantic's JSON schema into that."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .crdcel import add_rules
from .kube import GROUP, VERSION
from .models.index import INDEX_POLICY_CEL, IndexPolicySpec
from .models.monitor import DATABASE_MONITOR_CEL, DatabaseMonitorSpec
from .models.partition import PARTITION_POLICY_CEL, PartitionPolicySpec
from .models.tls import DB_TLS_CERT_CEL, DbTlsCertSpec
from .models.vector import VectorIndexSpec
from .models.vector_rules import VECTOR_INDEX_CEL

_DROP_KEYS = {"title", "discriminator"}


@dataclass(frozen=True)
class CrdInfo:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec_model: type[BaseModel]
    description: str
    printer_columns: list[dict[str, Any]]
    cel: list[dict[str, str]] = field(default_factory=list)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)  # a description on the field wins over the class docstring
        return _resolve(target, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if sorted(o.get("type", "") for o in options) == ["integer", "string"]:
            # A union of a number and a string is Kubernetes' int-or-string.
            rest = {k: v for k, v in node.items() if k in ("description", "default", "x-kubernetes-validations")}
            if node.get("examples"):
                rest["example"] = node["examples"][0]
            return {"x-kubernetes-int-or-string": True, **rest}
        if len(options) == 1:
            merged = {k: v for k, v in node.items() if k != "anyOf"}
            inner = _resolve(options[0], defs)
            inner.update({k: v for k, v in merged.items() if k in ("description", "examples")})
            if merged.get("default") is not None:
                inner["default"] = merged["default"]
            return _resolve(inner, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS or key == "$defs":
            continue
        if key == "default" and value is None:
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "examples":
            # OpenAPI v3 (Kubernetes) has one `example`; the first is the one refusals show.
            out["example"] = value[0]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            # JSON Schema 2020 (pydantic) says exclusiveMinimum: 0; OpenAPI v3 (Kubernetes) says
            # minimum: 0 with exclusiveMinimum: true.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields; pydantic still forbids them
        out[key] = _resolve(value, defs)
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


PRINTER_COMMON_TAIL = [
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

CRDS: list[CrdInfo] = [
    CrdInfo(
        kind="PartitionPolicy",
        plural="partitionpolicies",
        singular="partitionpolicy",
        short_names=["ppol"],
        spec_model=PartitionPolicySpec,
        description="Declares how a PostgreSQL table is partitioned and keeps it that way over time: premade "
        "future partitions, an optional DEFAULT partition, and retention of old partitions.",
        printer_columns=[
            {"name": "Table", "type": "string", "jsonPath": ".spec.table.name"},
            {"name": "Partitions", "type": "integer", "jsonPath": ".status.partitionCount"},
            {"name": "Covered-Until", "type": "string", "jsonPath": ".status.coveredUntil"},
            {"name": "Default-Rows", "type": "integer", "jsonPath": ".status.defaultRows", "priority": 1},
            *PRINTER_COMMON_TAIL,
        ],
        cel=PARTITION_POLICY_CEL,
    ),
    CrdInfo(
        kind="IndexPolicy",
        plural="indexpolicies",
        singular="indexpolicy",
        short_names=["ipol"],
        spec_model=IndexPolicySpec,
        description="Declares the indexes a PostgreSQL table must have: built with CREATE INDEX CONCURRENTLY "
        "(per partition, in parallel, for partitioned tables), INVALID ones rebuilt, drift swapped in without a "
        "window with no index; reports sizes, scans, unused, duplicate and invalid indexes.",
        printer_columns=[
            {"name": "Table", "type": "string", "jsonPath": ".spec.table.name"},
            {"name": "Declared", "type": "integer", "jsonPath": ".status.declared"},
            {"name": "Valid", "type": "integer", "jsonPath": ".status.validIndexes"},
            {"name": "Partitions", "type": "integer", "jsonPath": ".status.partitionCount", "priority": 1},
            *PRINTER_COMMON_TAIL,
        ],
        cel=INDEX_POLICY_CEL,
    ),
    CrdInfo(
        kind="DbTlsCert",
        plural="dbtlscerts",
        singular="dbtlscert",
        short_names=["dbtls"],
        spec_model=DbTlsCertSpec,
        description="Makes a PostgreSQL server serve the current certificate of a cert-manager Secret (an owned "
        "Certificate or a followed Secret): validated before delivery, delivered by a mounted Secret or through "
        "SQL, applied with pg_reload_conf() (never a restart), and verified over the wire.",
        printer_columns=[
            {"name": "Secret", "type": "string", "jsonPath": ".status.secretName"},
            {"name": "Mode", "type": "string", "jsonPath": ".status.deliveryMode"},
            {"name": "Serial", "type": "string", "jsonPath": ".status.servedSerial"},
            {"name": "Not-After", "type": "string", "jsonPath": ".status.notAfter"},
            {"name": "Serving", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Serving')].status"},
            *PRINTER_COMMON_TAIL,
        ],
        cel=DB_TLS_CERT_CEL,
    ),
    CrdInfo(
        kind="VectorIndex",
        plural="vectorindexes",
        singular="vectorindex",
        short_names=["vidx"],
        spec_model=VectorIndexSpec,
        description="Manages one pgvector index (HNSW or IVFFlat): built concurrently within a memory budget with "
        "progress on the status, rebuilt and swapped in when its parameters change, and checked by measured "
        "recall@k against exact search, with a recommended ef_search / probes.",
        printer_columns=[
            {"name": "Table", "type": "string", "jsonPath": ".spec.table.name"},
            {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
            {"name": "Size", "type": "string", "jsonPath": ".status.index.size"},
            {"name": "Search", "type": "string", "jsonPath": ".status.recommendedSearch"},
            {"name": "Recall", "type": "string", "jsonPath": ".status.recall.summary", "priority": 1},
            {"name": "Progress", "type": "string", "jsonPath": ".status.build.phase", "priority": 1},
            *PRINTER_COMMON_TAIL,
        ],
        cel=VECTOR_INDEX_CEL,
    ),
    CrdInfo(
        kind="DatabaseMonitor",
        plural="databasemonitors",
        singular="databasemonitor",
        short_names=["dbmon"],
        spec_model=DatabaseMonitorSpec,
        description="Declares what to observe in one database, as a Prometheus ServiceMonitor declares what to "
        "scrape: schema changes with who and when (an event trigger where the role may, plus a periodic catalog "
        "fingerprint), drift handed at once to the resource that manages the object, table, column and database "
        "statistics with growth, and slow statements from pg_stat_statements. One per database.",
        printer_columns=[
            {"name": "Schema-Version", "type": "string", "jsonPath": ".status.schemaVersion"},
            {"name": "Changes", "type": "integer", "jsonPath": ".status.changes.total"},
            {"name": "Last-Change", "type": "string", "jsonPath": ".status.changes.lastAt", "priority": 1},
            {"name": "Trigger", "type": "string", "jsonPath": ".status.changeDetection.eventTrigger.state"},
            *PRINTER_COMMON_TAIL,
        ],
        cel=DATABASE_MONITOR_CEL,
    ),
]


def render_crd(info: CrdInfo) -> dict[str, Any]:
    spec_schema = structural_schema(info.spec_model)
    add_rules(spec_schema)
    spec_schema["description"] = "Desired state. " + spec_schema.get("description", "")
    if info.cel:
        spec_schema["x-kubernetes-validations"] = info.cel
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{info.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": ["pgcurator"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": info.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": {
                                    "type": "object",
                                    "description": "Observed state, written by the operator only.",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


HEADER = "# Generated by `pgcurator crds` from the pydantic models. Do not edit by hand.\n"


def render_all() -> dict[str, str]:
    """File name -> YAML text."""
    return {
        f"{GROUP}_{info.plural}.yaml": HEADER + yaml.safe_dump(render_crd(info), sort_keys=False, width=120)
        for info in CRDS
    }


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
