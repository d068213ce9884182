"""One direction of imports in the package, and a read-only observation layer (issue 14).

cli → app → runtime/kinds → reconcile → planner → catalog/db → models → sql, with a few
base modules (errors, settings, metrics, …) importable from anywhere. Function-local imports
count too: hiding a cycle inside a function does not remove it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "pgcurator"

# Higher ranks may import lower ranks; a module never imports a higher rank, nor another package
# of the same rank (that is how cycles start). Modules not listed are rank 0 (base).
RANKS: dict[str, int] = {
    "sql": 1,
    "models": 2,
    "tls": 3, "kube": 3, "lease": 3,
    "db": 4, "catalog": 4,
    "planner": 5,
    "reconcile": 6,
    "engine": 7,
    "runtime": 8, "kinds": 8, "local": 8, "leader": 8, "health": 8, "crdcel": 8,
    "app": 9, "crdgen": 9, "suggest_cli": 9,
    "cli": 10,
}
BASE = {"errors", "settings", "metrics", "backoff", "limits", "timefmt", "__init__"}


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported unit) for every import of the package, module level or not."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(PACKAGE)
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("pgcurator."):
                    out.append((node.lineno, node.module.split(".")[1]))
                continue
            base = list(rel.parts[:-1])[: len(rel.parts) - node.level]
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                out.append((node.lineno, parts[0]))
            else:  # `from . import x` at the top level
                out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("pgcurator."))
    return out


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_go_one_way() -> None:
    bad = []
    for path in _modules():
        src = _unit(path)
        if src in BASE:
            rank = 0
        else:
            assert src in RANKS, f"{path.relative_to(PACKAGE)}: give {src!r} a rank in this test"
            rank = RANKS[src]
        for line, target in _imports(path):
            if target == src or target in BASE:
                continue  # within one package, or a base module
            trank = RANKS.get(target, 0)
            if trank >= rank:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} ({src}, rank {rank}) imports {target} (rank {trank})")
    assert not bad, "imports against the direction:\n" + "\n".join(bad)


def test_no_private_names_across_modules() -> None:
    bad = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("pgcurator")):
                bad += [f"{path.relative_to(PACKAGE)}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


# The one exception: IndexPolicy learns how PostgreSQL prints a declared index by creating it on a
# temporary copy of the table's shape in a transaction that is always rolled back (nothing persists).
READ_BY_EXPERIMENT = ("CREATE TEMP TABLE PGCURATOR_SHAPE",)
WRITES = ("INSERT ", "UPDATE ", "DELETE ", "CREATE ", "ALTER ", "DROP ", "TRUNCATE ", "COMMENT ON", "GRANT ")


@pytest.mark.parametrize("path", sorted((PACKAGE / "catalog").glob("*.py")), ids=lambda p: p.name)
def test_catalog_only_reads(path: Path) -> None:
    """The observation layer reads; planning decides and the executor writes."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.lstrip().upper()
            if text.startswith(WRITES) and not text.startswith(READ_BY_EXPERIMENT):
                bad.append(f"line {node.lineno}: {node.value.strip()[:60]!r}")
    assert not bad, f"{path.name} writes:\n" + "\n".join(bad)
