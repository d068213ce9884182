"""One manager per table: a PartitionPolicy claims (in `pgcurator.owners`) the table it declares,
before any conversion step or DDL. A second PartitionPolicy declaring the same table is refused
with `ConflictingManager` and touches nothing: two policies on one table would otherwise each
apply their own retention and grid (one dropping what the other keeps, overlapping partitions).

The claim is on the declared name, which the table keeps through a conversion (the swap renames
the original to `<name>_unpartitioned` and the partitioned copy to `<name>`), so it is never
renamed with it. A claim left by a deleted resource (deletionPolicy Retain) is taken over when
`alive` says the holder is gone."""

from __future__ import annotations

from ..db.ownership import Alive, ConflictingManager, claim, owner_of, release
from ..models.partition import PartitionPolicySpec
from .outcome import Outcome

TABLE = "table"


async def claim_table(conn: object, spec: PartitionPolicySpec, resource: str, alive: Alive | None, *,
                      write: bool) -> str | None:
    """The other live resource managing the table, or None when `resource` may manage it (then,
    with write, it is recorded as its manager). write=False (dryRun, suspend) only checks."""
    t = spec.table
    holder = await owner_of(conn, TABLE, t.schema_, t.name)
    if holder == resource:
        return None
    if not write:
        if holder is not None and (alive is None or await alive(holder)):
            return holder
        return None
    try:
        await claim(conn, TABLE, t.schema_, t.name, resource, alive)
    except ConflictingManager:
        return await owner_of(conn, TABLE, t.schema_, t.name) or "another resource"
    return None


def conflict_outcome(spec: PartitionPolicySpec, resource: str, holder: str) -> Outcome:
    """Nothing was run or recorded; `plan` is empty because nothing would run."""
    msg = (f"table {spec.table.qualified} is managed by {holder}; {resource} declares it too and changes nothing. "
           f"Delete one of the two PartitionPolicies or point it at another table (one manager per table); once "
           f"{holder} is deleted, this one takes the table over at once")
    return Outcome.degraded("ConflictingManager", msg, {"plan": []})


async def release_table(conn: object, spec: PartitionPolicySpec, resource: str) -> None:
    """Give up the claim when the policy is deleted: only its own, never another manager's."""
    await release(conn, TABLE, spec.table.schema_, spec.table.name, resource)
