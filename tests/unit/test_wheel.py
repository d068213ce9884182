"""What `pip install pgcurator` and the image get: the operator, its CLI and nothing of the
development environment (issue 14). The wheel is built from a copy of the files the Dockerfile
copies, so the check is about what ships, not about this checkout's leftovers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "operator" / "pgcurator"


def test_the_wheel_holds_the_operator_only(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("pgcurator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n for n in names if not n.startswith("pgcurator-")}  # the dist-info aside
    assert shipped, names
    assert all(n.startswith("pgcurator/") for n in shipped), sorted(n for n in shipped if not n.startswith("pgcurator/"))
    dev_only = [n for n in shipped if any(w in n for w in ("devenv", "controlplane", "embedded", "tests/", "bench"))]
    assert not dev_only, dev_only
    # the same modules as the source tree, so nothing is left out either
    expected = {f"pgcurator/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*.py")}
    assert expected <= shipped, sorted(expected - shipped)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "pgcurator = pgcurator.cli:main" in entry_points


def test_no_module_of_the_package_is_over_400_lines() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 400}
    assert not big, big
