"""One typed settings object (issue 12 item 14): read once at start, validated once; a bad value
is one line naming the variable with an example, exit code 2, never a traceback."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pgcurator.settings import Settings, SettingsError, env_name

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "pgcurator"
NUMERIC = [f.name for f in dataclasses.fields(Settings) if f.type in ("float", "int")]


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PGCURATOR_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "pgcurator.cli", *args], env=full, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", [["run"], ["plan", "-f", "-", "--database-url", "postgresql://u@h/d"]])
def test_bad_retry_max_is_one_line_and_exit_2(command: list[str]) -> None:
    """Before: `PGCURATOR_RETRY_MAX=20s pgcurator run` died with a ValueError traceback at import."""
    out = cli(*command, PGCURATOR_RETRY_MAX="20s")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "PGCURATOR_RETRY_MAX" in lines[0] and "e.g. PGCURATOR_RETRY_MAX=20" in lines[0]


def test_inconsistent_lease_timings_are_one_line_too() -> None:
    out = cli("run", PGCURATOR_LEASE_DURATION="5")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "PGCURATOR_LEASE_DURATION" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_defaults_are_documented_and_valid() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert all(f.metadata.get("env") and f.metadata.get("doc") for f in dataclasses.fields(Settings))


def test_values_are_read_from_the_environment() -> None:
    s = Settings.from_env({"PGCURATOR_RETRY_MAX": "7.5", "PGCURATOR_POOL_SIZE": "3", "WATCH_NAMESPACES": "a, b,",
                           "KUBERNETES_SERVICE_HOST": "10.0.0.1", "POD_NAME": "op-0"})
    assert (s.retry_max, s.pool_size, s.watch_namespaces, s.in_cluster, s.operator_id) == (
        7.5, 3, ("a", "b"), True, "op-0")


@given(name=st.sampled_from(NUMERIC), raw=st.text(max_size=30))
def test_any_numeric_value_is_accepted_or_refused_with_the_variable_named(name: str, raw: str) -> None:
    var = env_name(name)
    try:
        Settings.from_env({var: raw})
    except SettingsError as exc:
        assert "\n" not in exc.message and (var in exc.message or "PGCURATOR_" in exc.message)


def test_only_settings_reads_the_environment() -> None:
    # The lead's modules switch to `settings.current()` when merging; until then they are listed here.
    pending = {"db/pools.py", "db/executor.py", "db/snapshots.py"}
    readers = {
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
        if re.search(r"os\.environ|os\.getenv", p.read_text()) and "devenv" not in p.parts
    }
    assert readers - pending == {"settings.py"}
