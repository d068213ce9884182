"""The Argo CD health check (charts/pgcurator/argocd/health.lua), run by a real Lua interpreter (lupa)
against objects captured from the e2e run (tests/fixtures/argocd/, written by
tests/e2e/test_shipping_e2e.py with PGCURATOR_CAPTURE_FIXTURES=1)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import lupa
import pytest
import yaml

from ..chart import CHART, REPO

LUA = CHART / "argocd" / "health.lua"
FIXTURES = REPO / "tests" / "fixtures" / "argocd"

EXPECTED = {
    "partitionpolicy-ready": "Healthy",
    "partitionpolicy-new-generation": "Progressing",  # Ready=True, but for the previous generation
    "partitionpolicy-dryrun": "Suspended",
    "partitionpolicy-secret-not-found": "Degraded",
    "partitionpolicy-table-not-found": "Degraded",
    "partitionpolicy-unreachable-transient": "Progressing",  # retried by the operator
    "databasemonitor-ready": "Healthy",
    "databasemonitor-trigger-unavailable": "Healthy",  # EventTrigger=False is reported, not an error
}


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run the script the way Argo CD does: `obj` is a global table, the chunk returns hs."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(v: Any) -> Any:
        if isinstance(v, dict):
            return lua.table_from({k: to_lua(x) for k, x in v.items()})
        if isinstance(v, list):
            return lua.table_from([to_lua(x) for x in v])
        return v

    lua.globals().obj = to_lua(obj)
    hs = lua.execute(LUA.read_text())
    return {"status": str(hs["status"]), "message": str(hs["message"] or "")}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / f"{name}.json").read_text()))


def test_every_fixture_is_covered() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
def test_health_of_real_statuses(name: str, expected: str) -> None:
    obj = load(name)
    hs = health(obj)
    assert hs["status"] == expected, hs
    if expected in ("Degraded", "Progressing") and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]:
        reason = next(c["reason"] for c in obj["status"]["conditions"] if c["type"] == "Degraded")
        assert reason in hs["message"]  # the person sees why


def test_no_status_yet_and_stale_condition() -> None:
    ready = load("partitionpolicy-ready")
    bare = {k: v for k, v in ready.items() if k != "status"}
    assert health(bare)["status"] == "Progressing"
    # observedGeneration caught up but the Ready condition is from an older generation: not Healthy.
    stale = copy.deepcopy(ready)
    stale["metadata"]["generation"] = stale["status"]["observedGeneration"] = 3
    assert health(stale)["status"] == "Progressing"
    # A transient failure is Progressing, the same failure with a terminal reason is Degraded.
    down = load("partitionpolicy-unreachable-transient")
    for c in down["status"]["conditions"]:
        c["reason"] = "AuthenticationFailed"
    assert health(down)["status"] == "Degraded"


def test_argocd_cm_carries_the_script_for_every_kind() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "hack" / "argocd-health.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    cm = yaml.safe_load((CHART / "argocd" / "argocd-cm.yaml").read_text())
    kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (REPO / "crds").glob("*.yaml")}
    assert set(cm["data"]) == {f"resource.customizations.health.pgcurator.io_{k}" for k in kinds}
    assert all(v == LUA.read_text() for v in cm["data"].values())

