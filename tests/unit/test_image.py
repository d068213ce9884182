"""The image, without a container engine: the Dockerfile is hadolint-clean and shaped as promised
(multi-stage, non-root, nothing but the virtualenv in the final stage), and its install step
(hack/image-install.sh) is run here into a fresh virtualenv from a copy of exactly the files the
Dockerfile copies, then the installed entrypoint is exercised."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..chart import REPO

DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[list[str]]:
    out: list[list[str]] = []
    lines = re.sub(r"\\\n", " ", DOCKERFILE.read_text()).splitlines()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(DOCKERFILE)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_non_root_slim_final_stage() -> None:
    build, final = stages()
    assert " AS build" in build[0]
    assert any(line.startswith("COPY --from=build /opt/pgcurator /opt/pgcurator") for line in final)
    assert [line for line in final if line.startswith("USER ")] == ["USER 10001:10001"]
    assert 'ENTRYPOINT ["pgcurator"]' in final
    text = " ".join(final)
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "COPY operator"):
        assert tool not in text, f"{tool!r} in the final stage"
    # The chart's pod securityContext runs as the same user.
    assert "runAsUser: 10001" in (REPO / "charts" / "pgcurator" / "values.yaml").read_text()


def test_image_install_step_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # The Docker build context: only what the Dockerfile copies (see .dockerignore).
    src = tmp_path / "src"
    (src / "hack").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copy(REPO / "hack" / "image-install.sh", src / "hack" / "image-install.sh")
    shutil.copytree(REPO / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    venv = tmp_path / "opt-pgcurator"
    env = {**os.environ, "IMAGE_INSTALL_PIP_CACHE": str(Path.home() / ".cache" / "pip")}
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(["sh", "hack/image-install.sh", str(venv), str(src)], cwd=src, env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # The installed entrypoint works from anywhere, without the source tree.
    out = subprocess.run([str(venv / "bin" / "pgcurator"), "crds", "-o", str(tmp_path / "crds")],
                         cwd=tmp_path, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "crds").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "crds").glob("*.yaml"))
    dev_only = subprocess.run([str(venv / "bin" / "python"), "-c", "import pytest"], capture_output=True, check=False)
    assert dev_only.returncode != 0, "dev dependencies leaked into the image's virtualenv"
