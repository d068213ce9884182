"""One manager per object: `pgcurator.owners` records which resource manages which object.

A resource claims what it creates or adopts. A claim held by another resource that still exists
wins: the later claimant is refused with `ConflictingManager`, naming the holder. A claim of a
resource that no longer exists (deleted with deletionPolicy Retain, so nothing released it) is
taken over — `alive` tells which, from the Kubernetes API; without it, every holder counts as
alive (the safe answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import CuratorError

Alive = Callable[[str], Awaitable[bool]]


class ConflictingManager(CuratorError):
    reason = "ConflictingManager"


_CLAIM_SQL = """
INSERT INTO pgcurator.owners AS o (object_kind, schema_name, object_name, resource)
VALUES ($1, $2, $3, $4)
ON CONFLICT (object_kind, schema_name, object_name) DO UPDATE SET claimed_at = now()
 WHERE o.resource = EXCLUDED.resource
RETURNING resource
"""

_OWNER_SQL = """
SELECT resource FROM pgcurator.owners WHERE object_kind = $1 AND schema_name = $2 AND object_name = $3
"""

_TAKE_OVER_SQL = """
UPDATE pgcurator.owners SET resource = $5, claimed_at = now()
 WHERE object_kind = $1 AND schema_name = $2 AND object_name = $3 AND resource = $4
"""


async def owner_of(conn: Any, kind: str, schema: str, name: str) -> str | None:
    owner: str | None = await conn.fetchval(_OWNER_SQL, kind, schema, name)
    return owner


async def claim(conn: Any, kind: str, schema: str, name: str, resource: str, alive: Alive | None = None) -> None:
    """Record `resource` as the manager of the object, or raise ConflictingManager."""
    for _ in range(3):  # the holder may change between our read and our write
        got = await conn.fetchval(_CLAIM_SQL, kind, schema, name, resource)
        if got == resource:
            return
        holder = await owner_of(conn, kind, schema, name)
        if holder is None:
            continue  # released meanwhile: claim again
        if holder == resource:
            return
        if alive is not None and not await alive(holder):
            await conn.execute(_TAKE_OVER_SQL, kind, schema, name, holder, resource)
            continue
        raise ConflictingManager(
            f"{kind} {schema}.{name} is managed by {holder}; {resource} declares it too. Remove it from one of "
            f"the two resources (one manager per object)"
        )
    raise ConflictingManager(f"{kind} {schema}.{name}: its manager kept changing while {resource} claimed it")


async def owners_in(conn: Any, kind: str, schema: str) -> dict[str, str]:
    """Object name -> managing resource, for one kind of object in one schema."""
    rows = await conn.fetch(
        "SELECT object_name, resource FROM pgcurator.owners WHERE object_kind = $1 AND schema_name = $2",
        kind, schema)
    return {r["object_name"]: r["resource"] for r in rows}


async def release(conn: Any, kind: str, schema: str, name: str, resource: str) -> None:
    await conn.execute(
        "DELETE FROM pgcurator.owners WHERE object_kind = $1 AND schema_name = $2 AND object_name = $3 "
        "AND resource = $4", kind, schema, name, resource)


async def release_all(conn: Any, resource: str) -> None:
    """Everything a resource held, e.g. when it is deleted."""
    await conn.execute("DELETE FROM pgcurator.owners WHERE resource = $1", resource)


async def rename(conn: Any, kind: str, schema: str, old: str, new: str) -> None:
    """An object renamed in a swap keeps its manager (run in the swap's transaction)."""
    await conn.execute(
        "UPDATE pgcurator.owners SET object_name = $4 WHERE object_kind = $1 AND schema_name = $2 "
        "AND object_name = $3", kind, schema, old, new)
