"""Secrets stay secret (issue 8.6). Runs last in the end-to-end session (file order), after every
other e2e test has driven the shared operator: every log line, Event, resource status and metric
is collected and searched for passwords, DSNs with a password, and private key material."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from pgcurator_devenv.controlplane import ControlPlane

from ..figures import record

pytestmark = pytest.mark.e2e

KINDS = ["partitionpolicies", "indexpolicies", "vectorindexes", "dbtlscerts"]
DSN_WITH_PASSWORD = re.compile(r"postgres(?:ql)?://[^:/@\s]+:[^@\s]+@")
KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|PRIVATE KEY")


def test_no_secret_in_logs_events_status_or_metrics(
    cluster: ControlPlane, operator_process: subprocess.Popen[bytes], operator_log: Path, operator_http: str,
    app_password: str,
) -> None:
    sources: dict[str, str] = {"operator log": operator_log.read_text(errors="replace")}
    sources["events"] = cluster.kubectl("get", "events", "-A", "-o", "json").stdout
    statuses = []
    for kind in KINDS:
        out = cluster.kubectl("get", kind, "-A", "-o", "json", check=False)
        if out.returncode == 0:
            statuses += [item.get("status") or {} for item in json.loads(out.stdout)["items"]]
    sources["statuses"] = json.dumps(statuses)
    with urllib.request.urlopen(f"http://{operator_http}/metrics", timeout=10) as resp:
        sources["metrics"] = resp.read().decode()
    # The passwords the e2e tests used: the app role's, and every password found in a Secret of ours.
    passwords = {app_password}
    secrets_json = json.loads(cluster.kubectl("get", "secrets", "-A", "-o", "json").stdout)["items"]
    import base64

    for sec in secrets_json:
        for key, value in (sec.get("data") or {}).items():
            text = base64.b64decode(value).decode(errors="replace")
            if key == "password":
                passwords.add(text)
            for m in re.finditer(r"postgres(?:ql)?://[^:/@\s]+:([^@\s]+)@", text):
                passwords.add(m.group(1))
    passwords = {p for p in passwords if len(p) >= 6}
    findings = []
    for name, text in sources.items():
        for p in passwords:
            if p in text:
                findings.append(f"{name}: contains a password")
        if DSN_WITH_PASSWORD.search(text):
            findings.append(f"{name}: contains a DSN with a password: {DSN_WITH_PASSWORD.search(text)}")
        if KEY_MATERIAL.search(text):
            findings.append(f"{name}: contains private key material")
    lines = sum(t.count("\n") + 1 for t in sources.values())
    record("secret scan (log lines, events, statuses, metrics)",
           f"{'clean' if not findings else 'FOUND'}: {lines} lines scanned for {len(passwords)} passwords, DSNs, keys")
    assert not findings, findings
    assert operator_process.poll() is None
