"""Which resource manages which index, for IndexPolicy and VectorIndex alike.

A resource claims (in `pgcurator.owners`) every index name it declares, before it builds or
adopts it. Claims are by name: the temporary names of a replacement (`<name>_pgc_new`, and
`<name>_pgc_old` between a swap and the drop) belong to whoever manages `<name>`, so a swap
keeps its manager without touching the claim, and a crash between any two steps leaves nothing
unowned. An index managed by another resource is never dropped, replaced or attached by this one.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..db.ownership import Alive, ConflictingManager, claim, owner_of, owners_in, release
from ..planner.index import new_name, old_name
from .context import ReconcileContext

INDEX = "index"


def family(name: str) -> tuple[str, str, str]:
    """The names one managed index goes by: itself, its replacement, the replaced one (VectorIndex
    uses the same suffixes)."""
    return name, new_name(name), old_name(name)


def alive_check(ctx: ReconcileContext) -> Alive | None:
    """Whether a holder still exists (the runtime puts a Kubernetes-backed check on the context;
    without one every holder counts as alive, the safe answer)."""
    alive: Alive | None = ctx.alive
    return alive


async def managed_by_others(conn: object, schemas: Iterable[str], resource: str) -> dict[tuple[str, str], str]:
    """(schema, index name) -> the other resource managing it, temporary names included."""
    out: dict[tuple[str, str], str] = {}
    for schema in sorted(set(schemas)):
        for name, holder in (await owners_in(conn, INDEX, schema)).items():
            if holder != resource:
                for n in family(name):
                    out[(schema, n)] = holder
    return out


async def claim_indexes(ctx: ReconcileContext, schema: str, names: Iterable[str], *,
                        write: bool) -> dict[str, str]:
    """Claim each name for ctx.resource; returns name -> holder for those another live resource
    manages (left alone). With write=False (dryRun, suspend) nothing is recorded, only checked."""
    alive = alive_check(ctx)
    owners = await owners_in(ctx.conn, INDEX, schema)
    conflicts: dict[str, str] = {}
    for name in names:
        holder = owners.get(name)
        if holder == ctx.resource:
            continue
        if not write:
            if holder is not None and (alive is None or await alive(holder)):
                conflicts[name] = holder
            continue
        try:
            await claim(ctx.conn, INDEX, schema, name, ctx.resource, alive)
        except ConflictingManager as exc:
            conflicts[name] = await owner_of(ctx.conn, INDEX, schema, name) or exc.message
    return conflicts


async def release_undeclared(ctx: ReconcileContext, schema: str, declared: Iterable[str]) -> None:
    """Give up the claims on indexes this resource no longer declares (dropped by prune, or left
    for whoever declares them next)."""
    keep = set(declared)
    for name, holder in (await owners_in(ctx.conn, INDEX, schema)).items():
        if holder == ctx.resource and name not in keep:
            await release(ctx.conn, INDEX, schema, name, ctx.resource)


def conflict_message(resource: str, conflicts: dict[str, str]) -> str:
    parts = [f"index {name} is managed by {holder}" for name, holder in sorted(conflicts.items())]
    return (f"{'; '.join(parts)}; {resource} declares it too and leaves it alone. Remove it from one of the "
            "resources (one manager per index)")
