"""One source for validation (issue 13): the hostile-spec corpus goes through a real API server
(server-side dry run against the generated CRDs) and through the model. Whatever the model refuses,
the API server must refuse too, so `kubectl apply` (and Argo CD) fail at apply time instead of
the error appearing later in the status, unless the rule is one of MODEL_ONLY, with its reason."""

from __future__ import annotations

import json
import re
from typing import Any

import pydantic
import pytest

from pgcurator.engine import format_validation_error
from pgcurator.kinds import ALL_KINDS
from pgcurator.kube import GROUP, VERSION
from pgcurator_devenv.controlplane import ControlPlane

from ..figures import record
from ..reliability.hostile import corpus
from ..reliability.hostile_specs import BASE, EXTRA, merged

# Rules only the model checks, and why the CRD cannot (docs/operations.md lists them too).
# Each: (name, reason, predicate over (kind, patch, model message)).
SQL = "SQL fragments are parsed by PostgreSQL's own parser (libpg_query); CEL has no SQL parser"
MODEL_ONLY: dict[str, str] = {
    "sql-fragment": SQL,
    "time-zone": "IANA time zones come from the tz database the operator ships; CEL has no tz database, and "
    "an enum in the CRD would go stale with every tzdata release",
    "cron": "cron expressions are checked by croniter (ranges per field, names, steps); CEL has no cron parser",
    "storage-parameter-names": "a CRD schema cannot constrain map keys, and a CEL rule over keys of unbounded "
    "length exceeds the API server's cost budget; the values are in the CRD",
    "cross-field-limits": "limits computed across fields (premake x interval within 200 years, retention.keep x "
    "interval within 1000 years, tables per run) depend on calendar arithmetic CEL cannot do within its cost "
    "budget",
    "list-values": "list partition values must not repeat across partitions: a quadratic check over "
    "user-sized lists exceeds CEL's cost budget",
}


def model_only_rule(kind: str, patch: dict[str, Any], message: str) -> str | None:
    text = json.dumps(patch)
    if re.search(r'"(where|expression|sampleFilter)"', text) and re.search(
            r"where|expression|predicate|sampleFilter", message):
        return "sql-fragment"
    if "timeZone" in text:
        return "time-zone"
    if '"cron"' in text:
        return "cron"
    if "storageParameters" in text and "storage parameter" in message and "is not" in message:
        return "storage-parameter-names"
    if re.search(r"premake|retention", text) and re.search(r"at most|years|tables", message):
        return "cross-field-limits"
    if '"list"' in text and "is in both" in message:
        return "list-values"
    return None


def model_refusal(kind: str, spec: dict[str, Any]) -> str | None:
    model = {h.kind: h.model for h in ALL_KINDS}[kind]
    try:
        model.model_validate(spec)
    except pydantic.ValidationError as exc:
        return format_validation_error(exc)
    return None


def server_accepts(cluster: ControlPlane, ns: str, cases: list[tuple[str, str, dict[str, Any]]]) -> set[str]:
    """Names the API server accepted in one server-side dry run of every case."""
    docs = [{"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name, "namespace": ns},
             "spec": spec} for name, kind, spec in cases]
    out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=strictness", "-o", "name",
                          "-f", "-", input="\n".join(json.dumps(d) for d in docs), check=False)
    return {line.split("/", 1)[1] for line in out.stdout.split() if "/" in line}


def dns_name(case: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", case.lower()).strip("-")[:60]


@pytest.fixture(scope="module")
def ns(cluster: ControlPlane) -> str:
    cluster.kubectl("create", "namespace", "strictness")
    return "strictness"


def test_valid_bases_pass_both(cluster: ControlPlane, ns: str) -> None:
    """Without this the comparison could not fail: a base the server refuses would make every case 'refused'."""
    cases = [(f"base-{kind.lower()}", kind, merged(kind, {})) for kind in BASE]
    assert all(model_refusal(kind, spec) is None for _, kind, spec in cases)
    assert server_accepts(cluster, ns, cases) == {name for name, _, _ in cases}


def test_what_the_model_refuses_the_api_server_refuses(cluster: ControlPlane, ns: str) -> None:
    cases = [(dns_name(case), kind, patch) for case, kind, patch in [*corpus(), *EXTRA]]
    assert len({c[0] for c in cases}) == len(cases)
    refused = {name: (kind, patch, msg) for name, kind, patch in cases
               if (msg := model_refusal(kind, merged(kind, patch))) is not None}
    accepted = server_accepts(cluster, ns, [(n, k, merged(k, p)) for n, (k, p, _) in refused.items()])
    by_rule: dict[str, int] = {}
    gaps = []
    for name in sorted(accepted):
        kind, patch, msg = refused[name]
        rule = model_only_rule(kind, patch, msg)
        if rule is None:
            gaps.append(f"{name}: {json.dumps(patch)[:120]} -> model: {msg[:200]}")
        else:
            by_rule[rule] = by_rule.get(rule, 0) + 1
    record("crd: hostile specs the model refuses", len(refused))
    record("crd: of those, refused by the API server", len(refused) - len(accepted))
    for rule, count in sorted(by_rule.items()):
        record(f"crd: model-only ({rule})", f"{count} - {MODEL_ONLY[rule][:90]}")
    assert not gaps, "the API server accepted what the model refuses:\n" + "\n".join(gaps)


@pytest.mark.parametrize(("kind", "patch", "words"), [
    ("PartitionPolicy", {"range": {"column": "server_timestamp", "interval": "9999 years"}},
     "an interval such as '1 month'"),
    ("PartitionPolicy", {"table": {"name": "é" * 32}}, "at most 63 bytes"),
    ("DbTlsCert", {"dnsNames": ["Bad_Name"]}, "a DNS name"),
    ("DbTlsCert", {"ipAddresses": ["not-an-ip"]}, "must be an IP address such as 10.0.0.5"),
    ("VectorIndex", {"method": "ivfflat", "hnsw": None, "ivfflat": {"lists": "lots"}}, "or 'auto', e.g. 100"),
    ("VectorIndex", {"type": "halfvec", "dimensions": 4001}, "halfvec indexes hold at most 4000 dimensions"),
    ("VectorIndex", {"metric": "hamming"}, "vector supports cosine"),
])
def test_api_server_refusals_say_what_is_accepted(cluster: ControlPlane, ns: str, kind: str, patch: dict[str, Any],
                                                  words: str) -> None:
    """kubectl apply shows the field and plain words with an example, not only a regular expression."""
    doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": "words", "namespace": ns},
           "spec": merged(kind, patch)}
    out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc), check=False)
    assert out.returncode != 0
    assert words in out.stderr, out.stderr
