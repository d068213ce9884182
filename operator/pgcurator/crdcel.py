"""CEL rules crdgen adds to the CRD so the API server refuses what the model refuses (issue 13):
a plain-words message for every described pattern, and the identifier checks a pattern cannot
express (bytes, not characters; format characters; comment and dollar-quote markers)."""

from __future__ import annotations

from typing import Any

from .models.common import IDENTIFIER_PATTERN, cel_string
from .models.examples import eg
from .models.hints import PATTERN_HINTS


def identifier_rule(max_bytes: int) -> dict[str, str]:
    # maxLength counts characters; PostgreSQL's limit is in bytes, and 32 'é' are 64 of them.
    # RE2's \p classes cover the control/format/separator characters check_identifier refuses.
    rule = (
        f"size(bytes(self)) <= {max_bytes} && self == self.trim() && "
        "!self.matches('[\\\\p{Cc}\\\\p{Cf}\\\\p{Zl}\\\\p{Zp}]') && "
        "!['--', '/*', '*/', '$$'].exists(s, self.contains(s))"
    )
    return {
        "rule": rule,
        "message": f"must be a PostgreSQL name of at most {max_bytes} bytes (UTF-8), without control or format "
        "characters, leading or trailing spaces, '--', '/*', '*/' or '$$'",
    }


def field_rules(node: dict[str, Any]) -> list[dict[str, str]]:
    """Rules for one string node of the schema, from its pattern."""
    rules: list[dict[str, str]] = []
    pattern = node.get("pattern")
    if pattern in PATTERN_HINTS:
        # The pattern stays (clients and kubectl explain read it); this gives its refusal words.
        rules.append({"rule": f"self.matches({cel_string(pattern)})", "message": f"must be {PATTERN_HINTS[pattern]}"})
    if pattern == IDENTIFIER_PATTERN and "maxLength" in node:
        rules.append(identifier_rule(int(node["maxLength"])))
    return rules


def add_rules(node: Any, bounded: bool = True, key: str | None = None, example: Any = None) -> None:
    """Add the field rules throughout a structural schema. Inside a list or map with no maxItems /
    maxProperties the API server's cost estimate for any rule is unbounded, so none is added there
    (the pattern and maxLength still apply; the model checks the rest). Every field rule's message
    ends with the field's example (`key`: the field's name; an item of a list has none), as the
    model's refusals do."""
    if not isinstance(node, dict):
        return
    example = node.get("example", node.get("default", example))
    # An unbounded string has an unbounded cost too.
    if node.get("type") == "string" and bounded and "maxLength" in node:
        have = node.get("x-kubernetes-validations", [])
        rules = [r for r in field_rules(node) if r not in have]
        if rules:
            node["x-kubernetes-validations"] = [*have, *rules]
    if example is not None:
        for rule in node.get("x-kubernetes-validations", []):
            if "e.g. " not in rule["message"]:
                rule["message"] += f", {eg(key, example)}"
    for name, child in (node.get("properties") or {}).items():
        add_rules(child, bounded, name)
    if isinstance(node.get("items"), dict):
        first = example[0] if isinstance(example, list) and example else None
        add_rules(node["items"], bounded and "maxItems" in node, None, first)
    if isinstance(node.get("additionalProperties"), dict):
        first = next(iter(example.values()), None) if isinstance(example, dict) else None
        add_rules(node["additionalProperties"], bounded and "maxProperties" in node, None, first)
