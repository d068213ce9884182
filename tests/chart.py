"""Rendering the Helm chart in tests: helm comes from hack/helm-binary.sh (built from its Go module
and cached, as hack/setup.sh does on a fresh machine)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "pgcurator"


@functools.cache
def helm_binary() -> str:
    proc = subprocess.run(["bash", str(REPO / "hack" / "helm-binary.sh")], capture_output=True, text=True,
                          check=False, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"hack/helm-binary.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([helm_binary(), *args], capture_output=True, text=True, check=False, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def values_args(values: dict[str, Any] | None, tmp: Path | None = None) -> list[str]:
    if not values:
        return []
    path = (tmp or Path("/tmp")) / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return ["-f", str(path)]


def render(values: dict[str, Any] | None = None, *, release: str = "pgc", namespace: str = "pgcurator-system",
           include_crds: bool = False, tmp: Path | None = None) -> list[dict[str, Any]]:
    args = ["template", release, str(CHART), "-n", namespace, *values_args(values, tmp)]
    if include_crds:
        args.append("--include-crds")
    out = helm(*args).stdout
    return [d for d in yaml.safe_load_all(out) if isinstance(d, dict)]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    for o in objs:
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name):
            return o
    raise AssertionError(f"no {kind} {name or ''} among {[(o['kind'], o['metadata']['name']) for o in objs]}")
