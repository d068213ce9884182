"""The Helm chart: lint, render, schema rejections, CRDs identical to crds/, RBAC that follows the
CRDs, pod security. (Server-side acceptance and the RBAC run are in tests/e2e/test_shipping_e2e.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ..chart import CHART, REPO, find, helm, render, values_args


def test_chart_crds_are_exactly_crds_dir() -> None:
    ours = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert ours, "crds/ is empty"
    assert sorted(chart) == sorted(ours), "run `pgcurator crds` (it writes crds/ and the chart's crds/)"
    for name, data in ours.items():
        assert chart[name] == data, f"charts/pgcurator/crds/{name} differs from crds/{name}: run `pgcurator crds`"


def test_lint_strict_passes() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout
    out = helm("lint", "--strict", str(CHART), "--set", "watchNamespaces[0]=team-a,replicas=1")
    assert "0 chart(s) failed" in out.stdout


def test_default_render(tmp_path: Path) -> None:
    objs = render(tmp=tmp_path)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                            "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service",
                            "PodDisruptionBudget"])
    dep = find(objs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    # Pod security: non-root, read-only root, no escalation, no capabilities, RuntimeDefault seccomp.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "pgcurator/pgcurator:0.1.0"
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert env["WATCH_NAMESPACES"] == ""
    assert env["PGCURATOR_LEADER_ELECTION_NAME"] == "pgc-pgcurator-leader"
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert dep["spec"]["replicas"] == 2
    svc = find(objs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 8080
    assert all(o["metadata"].get("namespace") in (None, "pgcurator-system") for o in objs)


def _rules(objs: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return list(find(objs, kind, name)["rules"])


def test_rbac_follows_the_crds_and_grants_nothing_broad(tmp_path: Path) -> None:
    objs = render(tmp=tmp_path)
    plurals = sorted(yaml.safe_load(p.read_text())["spec"]["names"]["plural"] for p in (REPO / "crds").glob("*.yaml"))
    rules = _rules(objs, "ClusterRole", "pgc-pgcurator")
    ours = [r for r in rules if r["apiGroups"] == ["pgcurator.io"]]
    assert sorted(ours[0]["resources"]) == plurals and ours[0]["verbs"] == ["list", "watch", "patch"]
    assert sorted(ours[1]["resources"]) == [f"{p}/status" for p in plurals] and ours[1]["verbs"] == ["patch"]
    assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in rules
    assert {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]} in rules
    for o in objs:
        for r in o.get("rules", []):
            assert "*" not in r["verbs"] and "*" not in r["resources"], r
            assert not ({"list", "watch"} & set(r["verbs"]) and "secrets" in r["resources"]), "never list Secrets"
    lease_rules = _rules(objs, "Role", "pgc-pgcurator-leader-election")
    named = [r for r in lease_rules if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": ["pgc-pgcurator-leader"], "verbs": ["get", "update", "watch"]}]


def test_watch_namespaces_bind_per_namespace_only(tmp_path: Path) -> None:
    objs = render({"watchNamespaces": ["team-a", "team-b"]}, tmp=tmp_path)
    bindings = [o for o in objs if o["kind"] == "RoleBinding" and o["roleRef"]["kind"] == "ClusterRole"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # Only the cert-manager ClusterIssuer reader stays cluster-wide.
    crbs = [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    assert [b["roleRef"]["name"] for b in crbs] == ["pgc-pgcurator-clusterissuers"]
    env = {e["name"]: e.get("value") for e in find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WATCH_NAMESPACES"] == "team-a,team-b"
    objs = render({"watchNamespaces": ["team-a"], "rbac": {"certManager": False}}, tmp=tmp_path)
    assert not [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    assert not any("cert-manager.io" in r["apiGroups"] for o in objs for r in o.get("rules", []))


def test_service_monitor_and_single_replica(tmp_path: Path) -> None:
    objs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
                   "replicas": 1, "logLevel": "debug", "image": {"repository": "r/p", "tag": "dev"}}, tmp=tmp_path)
    sm = find(objs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    assert sm["spec"]["endpoints"][0]["port"] == find(objs, "Service")["spec"]["ports"][0]["name"]
    assert not [o for o in objs if o["kind"] == "PodDisruptionBudget"]  # would block every drain with 1 replica
    c = find(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert c["args"] == ["run", "--verbose"] and c["image"] == "r/p:dev"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"replicas": "two"}, "/replicas"),
        ({"replicas": -1}, "/replicas"),
        ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"logFormat": "xml"}, "/logFormat"),
        ({"logLevel": "trace"}, "/logLevel"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"resources": {"limits": {"memory": "lots"}}}, "/resources/limits/memory"),
        ({"securityContext": {"readOnlyRootFilesystem": False}}, "/securityContext/readOnlyRootFilesystem"),
        ({"securityContext": {"allowPrivilegeEscalation": True}}, "/securityContext/allowPrivilegeEscalation"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"replica": 2}, "replica"),  # a typo is refused, not ignored
        ({"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 20}},
         "renewIntervalSeconds (10) < renewDeadlineSeconds (20) < leaseDurationSeconds (10)"),
        ({"heartbeatStaleSeconds": 20}, "heartbeatStaleSeconds (20) must exceed"),
    ],
)
def test_bad_values_are_refused_with_a_clear_message(values: dict[str, Any], needle: str, tmp_path: Path) -> None:
    out = helm("template", "x", str(CHART), *values_args(values, tmp_path), check=False)
    assert out.returncode != 0, f"accepted {values}"
    assert needle in out.stderr, out.stderr
