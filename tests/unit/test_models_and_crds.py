"""Spec validation and the CRDs generated from the same models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from pgcurator.crdgen import render_all
from pgcurator.runtime import format_validation_error

from .factories import spec

REPO = Path(__file__).resolve().parents[2]


def test_crds_on_disk_match_the_models() -> None:
    rendered = render_all()
    for name, text in rendered.items():
        path = REPO / "crds" / name
        assert path.exists(), f"{path} missing: run `pgcurator crds`"
        assert path.read_text() == text, f"{path} is out of date: run `pgcurator crds`"
    assert sorted(p.name for p in (REPO / "crds").glob("*.yaml")) == sorted(rendered)


def test_crd_schema_is_structural() -> None:
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for bad in ("$ref", "anyOf", "oneOf", "allOf", "const", "title"):
                assert bad not in node, f"{bad} at {path}"
            if "properties" in node:
                assert node.get("type") == "object", path
            for k in ("exclusiveMinimum", "exclusiveMaximum"):
                assert isinstance(node.get(k, True), bool), f"{k} must be a boolean in OpenAPI v3 at {path}"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    for text in render_all().values():
        crd = yaml.safe_load(text)
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(schema["properties"]["spec"], "spec")
        assert schema["properties"]["spec"]["properties"]["database"]["description"]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"range": {"interval": "13 fortnights"}}, "range.interval"),
        ({"range": {"premake": -1}}, "range.premake"),
        ({"range": {"width": 10}}, "exactly one of"),
        ({"range": {"interval": None}}, "exactly one of"),
        ({"range": {"timeZone": "Mars/Olympus"}}, "unknown time zone"),
        ({"table": {"name": "x" * 64}}, "table.name"),
        ({"table": {"name": "é" * 32}}, "bytes"),
        ({"table": {"name": "bad\x00name"}}, "table.name"),
        ({"table": {"name": 'ev"ents'}}, "table.name"),
        ({"table": {"name": "x; DROP TABLE y"}}, "table.name"),
        ({"table": {"name": "\u202eevil"}}, "refuses"),
        ({"range": {"column": "a--b", "interval": "1 month"}}, "comment"),
        ({"retention": {"keep": 0, "action": "drop"}}, "retention.keep"),
        ({"retention": {"keep": 3}}, "retention.action"),
        ({"database": {"secretName": "Not_A_Name"}}, "database.secretName"),
        ({"timeouts": {"lockTimeout": "0s"}}, "greater than zero"),
        ({"timeouts": {"lockTimeout": "five seconds"}}, "timeouts.lockTimeout"),
        ({"schedule": {"interval": "forever"}}, "schedule.interval"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_bad_specs_refused_with_a_readable_message(override: dict[str, Any], needle: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        spec(**override)
    assert needle in format_validation_error(err.value)


def test_defaults_are_safe() -> None:
    s = spec()
    assert s.deletion_policy.value == "Retain"
    assert s.retention is None and not s.dry_run and not s.suspend
    assert s.timeouts.lock_timeout == "5s"
