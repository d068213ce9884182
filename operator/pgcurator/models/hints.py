"""Plain-words descriptions of the patterns the models use, so no refusal shows a raw regular
expression: the model's messages (engine.format_validation_error) and the CRD's (crdgen adds a CEL
rule with this message next to the pattern) both come from here."""

from __future__ import annotations

from ..limits import INPUT_ECHO

# pattern -> "what it must be, e.g. an example"; filled by the modules that define the patterns.
PATTERN_HINTS: dict[str, str] = {}


def hint(pattern: str, text: str) -> str:
    """Register the description of `pattern` and return the pattern (for use inline in Field)."""
    PATTERN_HINTS[pattern] = text
    return pattern


def describe_mismatch(pattern: str | None, value: object) -> str | None:
    """`'9999 years' is not an interval such as ...`, or None for a pattern nobody described."""
    text = PATTERN_HINTS.get(pattern or "")
    if text is None:
        return None
    return f"{echo(value)} is not {text}"


def echo(value: object) -> str:
    """A refused value quoted back: enough to recognise it, never a whole pasted secret or file."""
    if isinstance(value, str) and len(value) > INPUT_ECHO:
        return repr(value[:INPUT_ECHO] + "...")
    return repr(value)
