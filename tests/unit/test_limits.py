"""The named limits are the ones applied: a condition message is cut at CONDITION_MESSAGE, and no
message or status list is cut at a number that is not one of them."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from pgcurator.limits import CONDITION_MESSAGE, EVENT_MESSAGE, K8S_NAME
from pgcurator.reconcile.outcome import Condition
from pgcurator.runtime import merge_conditions

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "pgcurator"


def test_condition_message_is_cut_at_the_named_limit() -> None:
    [c] = merge_conditions([], [Condition("Ready", False, "Failed", "x" * (CONDITION_MESSAGE + 50))], 1)
    assert len(c["message"]) == CONDITION_MESSAGE


def test_kubernetes_limits_are_the_api_servers() -> None:
    assert EVENT_MESSAGE == 1024 and K8S_NAME == 63


def _bare_truncations() -> list[str]:
    """`x[:20]`-style cuts with a literal bound in the package: each should name its limit.

    Small literal bounds (at most 3: `[1:]`, `[:-1]`, a version's first parts) are structure,
    not truncation; hash digests are cut to a fixed identifier length on purpose."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "limits.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice)):
                continue
            if _is_digest(node.value):
                continue
            for bound in (node.slice.lower, node.slice.upper):
                value = _literal_int(bound)
                if value is not None and abs(value) > 3:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    return found


def _literal_int(node: ast.expr | None) -> int | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal_int(node.operand)
        return None if inner is None else -inner
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    return None


def _is_digest(node: ast.expr) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "hexdigest"
    return isinstance(node, ast.Attribute) and node.attr == "hex"  # uuid4().hex


def test_every_truncation_names_its_limit() -> None:
    assert _bare_truncations() == []


def test_the_truncation_check_finds_a_bare_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.py").write_text("def f(s: str) -> str:\n    return s[:20] + s[:SHOWN] + s[1:]\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert _bare_truncations() == ["m.py:2: s[:20]"]
