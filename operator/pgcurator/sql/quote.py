"""Quoting. Every identifier the operator writes into SQL goes through `ident`."""

from __future__ import annotations

import hashlib

# PostgreSQL's NAMEDATALEN - 1: longer names are silently truncated by the server.
MAX_IDENTIFIER_BYTES = 63


def ident(name: str) -> str:
    """Quote an identifier, whatever it contains (NUL is refused earlier, by the models)."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL byte")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def literal(value: str) -> str:
    """A string literal (standard_conforming_strings is on in every supported server)."""
    if "\x00" in value:
        raise ValueError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"


def fit_identifier(base: str, suffix: str) -> str:
    """`base + suffix`, shortened to PostgreSQL's 63-byte limit without ever colliding.

    When too long, `base` is cut (on a character boundary) and a short hash of the full
    base is inserted, so two long table names never map to the same partition name.
    """
    name = base + suffix
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    tag = "_" + hashlib.sha256(base.encode()).hexdigest()[:8]
    room = MAX_IDENTIFIER_BYTES - len((tag + suffix).encode())
    if room < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name within {MAX_IDENTIFIER_BYTES} bytes")
    cut = base.encode()[:room].decode(errors="ignore")
    return cut + tag + suffix
