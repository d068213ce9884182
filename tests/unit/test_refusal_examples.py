"""Every refusal says what to write instead: each error of a refused spec ends with an example of what
that field accepts (`e.g. where: "deleted_at IS NULL"`), and the example is itself accepted — written
where the refused value was, the spec validates. An example that is refused is a defect."""

from __future__ import annotations

import copy
import re
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pgcurator.crdgen import render_all
from pgcurator.engine import describe_error, format_validation_error
from pgcurator.kinds import ALL_KINDS
from pgcurator.local import NEEDS_CLUSTER, BadInput, Resource, resource_of
from pgcurator.models.common import CommonSpec
from pgcurator.models.examples import Refusal, error_loc, example_at, model_at

from ..reliability.hostile import BAD_IDENTIFIERS, BAD_PREDICATES, corpus
from ..reliability.hostile_specs import EXTRA, merged
from .test_refusal_messages import parse_example

MODELS: dict[str, type[BaseModel]] = {h.kind: h.model for h in ALL_KINDS}
# Valid specs using every field of every kind (checked by test_the_bases_cover_every_field), so that
# every field's example is tried in place.
BASES: list[tuple[str, dict[str, Any]]] = [
    ("PartitionPolicy", {
        "database": {"secretName": "app-db", "host": "pg-rw", "port": 5432, "dbname": "app", "sslMode": "require",
                     "caSecret": {"name": "pg-ca", "key": "ca.crt"}},
        "table": {"schema": "public", "name": "event_logs"}, "suspend": False, "dryRun": False,
        "deletionPolicy": "Retain", "timeouts": {"lockTimeout": "5s", "statementTimeout": "30m", "lockRetries": 5},
        "range": {"column": "server_timestamp", "interval": "1 month", "timeZone": "UTC", "premake": 2},
        "defaultPartition": True, "defaultRows": {"move": True, "batchRows": 500},
        "retention": {"keep": 6, "action": "archive", "archive": {"schema": "old", "tablespace": "slow"}},
        "template": {"storageParameters": {"fillfactor": "90"}, "tablespace": "fast",
                     "indexes": [{"name": "by_player", "columns": ["player_id"], "unique": False,
                                  "where": "player_id > 0"}]},
        "convert": {"enabled": True, "batchMemory": "64Mi", "dropOriginal": False},
        "schedule": {"interval": "1h", "cron": "0 4 * * *"},
    }),
    ("PartitionPolicy", {
        "database": {"secretName": "app-db"}, "table": {"name": "event_logs"}, "strategy": "list",
        "list": {"column": "event_type", "partitions": [{"name": "a", "values": ["x", 3]}, {"name": "b", "values": ["y"]}]},
        "subpartition": {"strategy": "hash", "hash": {"column": "player_id", "modulus": 4}, "only": ["a"]},
    }),
    ("PartitionPolicy", {
        "database": {"secretName": "app-db"}, "table": {"name": "event_logs"},
        "range": {"column": "id", "width": 1000},
        "subpartition": {"strategy": "range", "range": {"column": "server_timestamp", "interval": "7 days"}},
    }),
    ("PartitionPolicy", {"database": {"secretName": "app-db"}, "table": {"name": "event_logs"}, "strategy": "hash",
                        "hash": {"column": "player_id", "modulus": 16}}),
    ("IndexPolicy", {
        "database": {"secretName": "app-db"}, "table": {"name": "event_logs"}, "parallelism": 3, "prune": True,
        "indexes": [{"name": "ix_a", "method": "btree", "unique": True, "include": ["b"], "where": "b IS NOT NULL",
                     "storageParameters": {"fillfactor": "80"}, "tablespace": "fast",
                     "columns": [{"column": "a", "opclass": "text_pattern_ops", "order": "desc", "nulls": "first"},
                                 {"expression": "lower(b)"}]}],
        "analysis": {"enabled": True, "unusedAfter": "24h"},
        "suggestions": {"enabled": True, "minCalls": 5, "maxSuggestions": 3},
        "schedule": {"interval": "30m"},
    }),
    ("VectorIndex", {
        "database": {"secretName": "app-db"}, "table": {"name": "docs"}, "column": "embedding", "type": "vector",
        "dimensions": 3, "metric": "cosine", "method": "hnsw", "hnsw": {"m": 16, "efConstruction": 64},
        "where": "embedding IS NOT NULL", "indexName": "docs_idx",
        "build": {"memoryBudget": "512Mi", "maxParallelWorkers": 2},
        "recall": {"enabled": True, "k": 10, "queries": 20, "targetRecall": 0.9, "searchValues": [10, 40],
                   "interval": "6h", "sampleFilter": "body <> ''", "apply": {"role": "app", "database": False}},
    }),
    ("VectorIndex", {
        "database": {"secretName": "app-db"}, "table": {"name": "docs"}, "column": "embedding", "type": "vector",
        "dimensions": 3, "metric": "l2", "method": "ivfflat", "ivfflat": {"lists": 10}, "schedule": {"cron": "0 1 * * 0"},
    }),
    ("DbTlsCert", {
        "database": {"secretName": "app-db"}, "secretName": "pg-tls", "dnsNames": ["pg.example.com"],
        "ipAddresses": ["10.0.0.1"], "delivery": {"mode": "sql", "sql": {"directory": "tls"}, "timeout": "5m"},
        "minProtocolVersion": "TLSv1.3", "expiryWarning": "100h", "checkInterval": "2m",
        "verify": {"host": "pg", "port": 5432},
    }),
    ("DbTlsCert", {
        "database": {"secretName": "app-db"}, "dnsNames": ["pg.example.com"],
        "certificate": {"name": "pg", "secretName": "pg-tls", "issuerRef": {"name": "ca", "kind": "Issuer",
                                                                            "group": "cert-manager.io"},
                        "commonName": "pg", "duration": "2160h", "renewBefore": "720h",
                        "privateKey": {"algorithm": "RSA", "size": 2048, "rotationPolicy": "Always",
                                       "encoding": "PKCS8"}},
        "delivery": {"mode": "mount", "mount": {"certFile": "/tls/tls.crt", "keyFile": "/tls/tls.key",
                                                "caFile": "/tls/ca.crt"}},
    }),
    ("DatabaseMonitor", {
        "database": {"secretName": "app-db"}, "schemas": {"include": ["app"], "exclude": ["audit"]},
        "changes": {"enabled": True, "eventTrigger": True, "fingerprintInterval": "10m", "wakeManagers": True,
                    "statusChanges": 5, "eventsPerRun": 3},
        "statistics": {"enabled": True, "interval": "15m", "tables": 100, "statusTables": 5,
                       "columns": {"largestTables": 5, "interval": "6h"}},
        "slowStatements": {"enabled": True, "top": 5, "minCalls": 2},
        "retention": {"snapshots": "720h", "changes": "2160h"},
    }),
]


def put(spec: Any, path: tuple[Any, ...], value: Any) -> None:
    """Write `value` at `path` (null: leave the field out, as YAML's null does), creating maps on the way."""
    for i, part in enumerate(path[:-1]):
        want = list if isinstance(path[i + 1], int) else dict
        if isinstance(spec, list):
            spec.extend({} for _ in range(part + 1 - len(spec)))
            if not isinstance(spec[part], want):
                spec[part] = want()
        elif not isinstance(spec.get(part), want):
            spec[part] = want()
        spec = spec[part]
    if isinstance(spec, list):
        spec.extend(None for _ in range(path[-1] + 1 - len(spec)))
        spec[path[-1]] = value
    elif value is None:
        spec.pop(path[-1], None)
    else:
        spec[path[-1]] = value


def errors_of(kind: str, spec: dict[str, Any]) -> list[Any]:
    try:
        MODELS[kind].model_validate(spec)
    except pydantic.ValidationError as exc:
        return list(exc.errors())
    return []


def converges(kind: str, spec: dict[str, Any], rounds: int = 8) -> list[str]:
    """What is still refused after following the refusals' examples `rounds` times (a value valid on
    its own can be refused next to others; the refusal then says what to change, and so on)."""
    for _ in range(rounds):
        if not errors_of(kind, spec):
            return []
        spec = follow_examples(kind, spec)
    return [describe_error(e, MODELS[kind]) for e in errors_of(kind, spec)]


def follow_examples(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec after doing what every refusal's example says: each example written where it points."""
    fixed = copy.deepcopy(spec)
    for err in errors_of(kind, spec):
        loc, message = error_loc(err, MODELS[kind]), describe_error(err, MODELS[kind])
        pairs = parse_example(message)
        if err["type"] == "extra_forbidden":
            holder = model_at(MODELS[kind], loc)
            assert holder is not None and pairs[0][1] in {f.alias or n for n, f in holder.model_fields.items()}
            put(fixed, loc, None)  # the example names a field that exists; the unknown one goes
            continue
        for key, value in pairs:
            put(fixed, loc if key is None or (loc and str(loc[-1]) == key) else (*loc, key), value)
    return fixed


REFUSED = [(case, kind, merged(kind, patch)) for case, kind, patch in [*corpus(), *EXTRA]
           if errors_of(kind, merged(kind, patch))]


def test_the_corpus_is_refused_as_before() -> None:
    # 386 refusals when this test was written; fewer means the corpus lost its teeth.
    assert len(REFUSED) >= 380


@pytest.mark.parametrize(("case", "kind", "spec"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_writing_the_example_where_it_points_is_accepted(case: str, kind: str, spec: dict[str, Any]) -> None:
    fixed = follow_examples(kind, spec)
    assert errors_of(kind, fixed) == [], [describe_error(e, MODELS[kind]) for e in errors_of(kind, fixed)]


def test_the_operator_and_the_cli_show_the_examples() -> None:
    """runtime and local pass their kind's model; a caller that does not still gets them (by the title)."""
    spec = merged("IndexPolicy", {"indexes": [{"name": "i", "columns": [{"column": "a"}], "where": "random() > 0"}]})
    with pytest.raises(pydantic.ValidationError) as info:
        MODELS["IndexPolicy"].model_validate(spec)
    message = format_validation_error(info.value)
    assert message == format_validation_error(info.value, MODELS["IndexPolicy"])
    assert message.endswith(', e.g. where: "deleted_at IS NULL"'), message


def leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in leaves(v, (*path, k))]
    if isinstance(node, list):
        return [path] + [p for i, v in enumerate(node) for p in leaves(v, (*path, i))]
    return [path]


LEAVES = [(kind, base, path) for kind, base in BASES for path in leaves(base)]


@pytest.mark.parametrize(("kind", "base"), BASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BASES)])
def test_the_bases_are_valid(kind: str, base: dict[str, Any]) -> None:
    assert errors_of(kind, base) == []


@pytest.mark.parametrize(("kind", "base", "path"), LEAVES, ids=[f"{k}:{'.'.join(map(str, p))}" for k, _, p in LEAVES])
def test_every_fields_example_is_accepted_in_place(kind: str, base: dict[str, Any], path: tuple[Any, ...]) -> None:
    example = example_at(MODELS[kind], path)
    assert example is not None, f"{kind} spec.{'.'.join(map(str, path))} has no example"
    spec = copy.deepcopy(base)
    for key, value in example.pairs:
        put(spec, path if key is None or str(path[-1]) == key else (*path, key), value)
    # The field's own checks accept its example; a rule over several fields may still object (privateKey.size
    # 256 next to algorithm RSA), and then its refusal leads to a valid spec.
    own = [e for e in errors_of(kind, spec) if error_loc(e, MODELS[kind]) == path and not isinstance(
        (e.get("ctx") or {}).get("error"), Refusal)]
    assert own == [], (str(example), [describe_error(e, MODELS[kind]) for e in own])
    assert converges(kind, spec) == [], str(example)


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[tuple[type[BaseModel], str]]:
    from pgcurator.models.examples import _strip

    out: list[tuple[type[BaseModel], str]] = []
    if model in seen:
        return out
    seen.add(model)
    for name, info in model.model_fields.items():
        out.append((model, info.alias or name))
        todo = [info.annotation]
        while todo:
            tp, _ = _strip(todo.pop())
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                out += _fields(tp, seen)
            else:
                todo += [a for a in getattr(tp, "__args__", ()) if a is not type(None)]
    return out


def common(model: type[BaseModel], alias: str) -> tuple[type[BaseModel], str]:
    """A field every kind inherits counts once."""
    inherited = issubclass(model, CommonSpec) and alias in {f.alias or n for n, f in CommonSpec.model_fields.items()}
    return (CommonSpec, alias) if inherited else (model, alias)


def test_the_bases_cover_every_field() -> None:
    """So that the test above tries every field's example (a field added later joins a base)."""
    used = set()
    for kind, base in BASES:
        for path in leaves(base):
            for i in range(1, len(path) + 1):
                holder = model_at(MODELS[kind], path[:i])
                if holder is not None and isinstance(path[i - 1], str):
                    used.add(common(holder, path[i - 1]))
    wanted = {common(*f) for h in ALL_KINDS for f in _fields(h.model, set())}
    missing = sorted(f"{m.__name__}.{a}" for m, a in wanted - used)
    assert not missing, missing


HOSTILE = st.one_of(
    st.sampled_from([*BAD_IDENTIFIERS, *BAD_PREDICATES, "0s", "-1", "1 fortnight", "0 0 0 0 0", "Mars/Olympus"]),
    st.text(max_size=40), st.integers(-10**7, 10**7), st.booleans(), st.floats(allow_nan=False),
    st.lists(st.text(max_size=5), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@given(leaf=st.sampled_from(LEAVES), value=HOSTILE)
@settings(max_examples=600, deadline=None)
def test_any_refused_value_of_any_field_gets_an_example_that_is_accepted(
        leaf: tuple[str, dict[str, Any], tuple[Any, ...]], value: Any) -> None:
    kind, base, path = leaf
    spec = copy.deepcopy(base)
    put(spec, path, value)
    assert converges(kind, spec) == []


def cel_messages(node: Any) -> list[str]:
    if isinstance(node, list):
        return [m for n in node for m in cel_messages(n)]
    if not isinstance(node, dict):
        return []
    own = [r["message"] for r in node.get("x-kubernetes-validations", []) if isinstance(r, dict)]
    return own + [m for v in node.values() for m in cel_messages(v)]


def test_every_cel_message_of_the_crds_ends_with_an_example() -> None:
    """The API server's refusals (kubectl apply, Argo CD) give the same kind of example as the model's."""
    messages = [m for text in render_all().values() for m in cel_messages(yaml.safe_load(text))]
    assert len(messages) > 100
    for message in messages:
        parse_example(message)


def test_the_crds_carry_the_examples_the_refusals_show() -> None:
    schema = yaml.safe_load(render_all()["pgcurator.io_indexpolicies.yaml"])
    spec = schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    where = spec["indexes"]["items"]["properties"]["where"]
    assert where["example"] == example_at(MODELS["IndexPolicy"], ("indexes", 0, "where")).pairs[0][1]
    assert "examples" not in yaml.safe_dump(schema)  # OpenAPI v3 (Kubernetes) knows `example` only


def test_the_cli_refuses_the_corpus_with_the_same_examples() -> None:
    """`pgcurator plan/apply -f` loads a spec as the operator does (DbTlsCert needs a cluster: refused before)."""
    handlers = list(ALL_KINDS)
    refused = 0
    for case, kind, spec in REFUSED:
        if kind in NEEDS_CLUSTER:
            continue
        with pytest.raises(BadInput) as info:
            resource_of({"kind": kind, "metadata": {"name": "r"}, "spec": spec}, handlers)
        refused += 1
        message = str(info.value)
        assert message.startswith(f"{kind}/r: invalid: spec") and "\n" not in message, (case, message)
        for part in re.split(r"; (?=spec[.:])", message):
            parse_example(part)
    assert refused > 300


@pytest.mark.parametrize("doc", [{"kind": "Pod", "metadata": {"name": "r"}}, {"kind": "IndexPolicy", "spec": {}}])
def test_the_cli_says_what_to_write_for_a_resources_kind_and_name_too(doc: dict[str, Any]) -> None:
    with pytest.raises(BadInput) as info:
        resource_of(doc, list(ALL_KINDS))
    key, value = parse_example(str(info.value))[0]
    fixed = {**doc, key: value}
    spec = next(base for kind, base in BASES if kind == fixed["kind"])
    assert isinstance(resource_of({**fixed, "spec": spec}, list(ALL_KINDS)), Resource)


def test_every_predicate_field_follows_the_one_predicate_rule() -> None:
    """Issue 14: the predicate validator was copied per kind. Every field holding a SQL predicate
    refuses the same hostile text with the same message (one rule, `models.common.Predicate`)."""
    predicate_leaves = [(kind, base, path) for kind, base, path in LEAVES
                        if path[-1] in ("where", "sampleFilter")]
    assert {(kind, path[-1]) for kind, _, path in predicate_leaves} >= {
        ("IndexPolicy", "where"), ("VectorIndex", "where"), ("VectorIndex", "sampleFilter"),
        ("PartitionPolicy", "where")}
    messages = set()
    for kind, base, path in predicate_leaves:
        spec = copy.deepcopy(base)
        put(spec, path, "1 = 1; DROP TABLE users")
        errors = errors_of(kind, spec)
        assert len(errors) == 1, (kind, path, errors)
        messages.add(errors[0]["msg"])
    assert len(messages) == 1, messages
