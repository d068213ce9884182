"""The documentation stays true to the code: every field of every CRD is documented on its kind's
page, the README stays short and keeps its two commands, and links and file references resolve."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250
TWO_COMMANDS = ("./hack/dev-up.sh", "./hack/test.sh")

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
# A repository file named in backticks (optionally with ::test_name), e.g. `tests/unit/test_x.py::test_y`.
REPO_FILE = re.compile(r"^((?:tests|hack|bench|examples|charts|operator|crds|docs)/[\w./-]*\.\w+)(?:::(\w+))?$")
# A module of the package (optionally with a name in it), e.g. `pgcurator.db.session` or
# `python -m pgcurator.x.y up`; `pgcurator.<table>` is the metadata schema's table, not a module.
MODULE = re.compile(r"^(?:python -m )?(pgcurator(?:\.\w+)+)(?: .*)?$")
PACKAGE_ROOT = ROOT / "operator"
METADATA_TABLES = set(re.findall(r"pgcurator\.(\w+)", (PACKAGE_ROOT / "pgcurator/db/metadata.py").read_text()))


def _crds() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]


def _fields(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of every property under `schema`, through arrays and schema combinators."""
    for name, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{name}"
        yield path
        yield from _nested(sub, path + ".")
    for key in ("anyOf", "oneOf", "allOf"):
        for alt in schema.get(key) or []:
            yield from _fields(alt, prefix)


def _nested(schema: dict[str, Any], prefix: str) -> Iterator[str]:
    yield from _fields(schema, prefix)
    if isinstance(schema.get("items"), dict):
        yield from _nested(schema["items"], prefix)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nested(schema["additionalProperties"], prefix)


def _spans(text: str) -> set[str]:
    """Inline code spans outside fenced blocks, with `[]` (list items) dropped: `a[].b` is `a.b`."""
    return {s.strip().replace("[]", "") for s in CODE_SPAN.findall(FENCE.sub("", text))}


def _documented(path: str, spans: set[str]) -> bool:
    leaf = path.rsplit(".", 1)[-1]
    return any(s in (leaf, path) or s.startswith(path + ".") or s.endswith("." + path) for s in spans)


def _kind_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for crd in _crds():
        kind = crd["spec"]["names"]["kind"]
        fields: list[str] = []
        for version in crd["spec"]["versions"]:
            spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
            fields += [f for f in _fields(spec) if f not in fields]
        cases.append((kind, fields))
    return cases


def test_every_crd_has_fields_to_check() -> None:
    # Guards the walk itself: a schema layout it does not understand must not pass as "no fields".
    cases = dict(_kind_cases())
    assert {"PartitionPolicy", "IndexPolicy", "VectorIndex", "DbTlsCert"} <= set(cases)
    assert "timeouts.lockTimeout" in cases["PartitionPolicy"]
    assert "indexes.columns.opclass" in cases["IndexPolicy"]  # through an array of an array
    assert all(len(fields) > 20 for fields in cases.values())


@pytest.mark.parametrize(("kind", "fields"), _kind_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_field_is_documented_on_its_kind_page(kind: str, fields: list[str]) -> None:
    page = DOCS / f"{kind.lower()}.md"
    assert page.is_file(), f"{kind} has no page {page.relative_to(ROOT)}"
    spans = _spans(page.read_text())
    missing = [f for f in fields if not _documented(f, spans)]
    assert not missing, f"{page.relative_to(ROOT)} does not document (in backticks): {missing}"


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; the reference belongs in docs/"
    for command in TWO_COMMANDS:
        assert command in text, f"README.md lost {command}"
        assert (ROOT / command).is_file(), command


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _slugs(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def _resolves(dotted: str) -> bool:
    """A module of the package, or a module and one name defined at its top level."""
    parts = dotted.split(".")
    for n in range(len(parts), 1, -1):
        base = PACKAGE_ROOT.joinpath(*parts[:n])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[n:]
            if not rest:
                return True
            pattern = rf"^(?:async\s+def|def|class)\s+{rest[0]}\b|^{rest[0]}\s*[:=]"
            return len(rest) == 1 and re.search(pattern, module.read_text(), re.M) is not None
    return False


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_files_and_tests_named_in_backticks_exist(page: Path) -> None:
    """`tests/…/test_x.py::test_y`, other repository files and the package's modules a page names:
    the guarantees page says which test proves what, so a renamed test or a moved module must not
    leave a page pointing at nothing."""
    missing = []
    for span in _spans(page.read_text()):
        m = REPO_FILE.match(span)
        if m is None:
            continue
        path = ROOT / m.group(1)
        if not path.is_file():
            missing.append(span)
        elif m.group(2) and not re.search(rf"^\s*(async\s+)?def {m.group(2)}\(", path.read_text(), re.M):
            missing.append(span)
    for span in _spans(page.read_text()):
        m = MODULE.match(span)
        if m is not None and m.group(1).split(".")[1] not in METADATA_TABLES and not _resolves(m.group(1)):
            missing.append(span)
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {missing}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_code_fences_are_closed(page: Path) -> None:
    # An unclosed fence turns the rest of the page into one code block (and hides it from the checks above).
    fences = re.findall(r"^(?:```|~~~)", page.read_text(), re.M)
    assert len(fences) % 2 == 0, f"{page.relative_to(ROOT)} has an unclosed code fence"


def test_every_setting_is_documented() -> None:
    """Each environment variable of the settings object is in the operations page's table."""
    settings = pytest.importorskip("pgcurator.settings")
    names = [f.metadata["env"] for f in dataclasses.fields(settings.Settings) if "env" in f.metadata]
    spans = _spans((DOCS / "operations.md").read_text())
    assert names, "no settings found: the walk over Settings is broken"
    missing = [n for n in names if n not in spans]
    assert not missing, f"docs/operations.md does not document: {missing}"
