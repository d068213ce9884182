"""Retention: which old range partitions go, and how (drop, detach, archive), crash-safely."""

from __future__ import annotations

from datetime import datetime

from ..catalog.partitions import PartitionInfo, TableObservation, retention_marker
from ..models.partition import RangeSpec, Retention, RetentionAction
from ..sql.quote import ident, literal, qualified
from ..sql.statements import Plan, Step
from .partition_ddl import Parent, grid_of
from .ranges import Bound, IntGrid


def retention_cutoff_for(r: RangeSpec, retention: Retention | None, now: datetime,
                         max_key: int | None) -> datetime | int | None:
    """Partitions whose whole range ends at or before this bound are removed."""
    if retention is None:
        return None
    if r.interval is not None:
        grid = grid_of(r)
        return grid.shift(grid.start_of(now), -retention.keep)
    assert r.width is not None
    if max_key is None:
        return None
    igrid = IntGrid(r.width)
    return igrid.shift(igrid.start_of(max_key), -retention.keep)


def finish_interrupted(parent: Parent, obs: TableObservation, retention: Retention | None, plan: Plan) -> None:
    for pending in obs.partitions:
        if pending.detach_pending:
            plan.steps.append(Step(
                kind="finalize_detach", target=pending.name,
                statements=(f"ALTER TABLE {qualified(parent.schema, parent.name)} DETACH PARTITION "
                            f"{qualified(pending.schema, pending.name)} FINALIZE",),
                transactional=False, description="finish an interrupted DETACH CONCURRENTLY", group=pending.name,
            ))
    # Marked ones include those whose detach is finalized just above (same group: not dropped or
    # archived while still attached, should the FINALIZE fail).
    for name in obs.pending_drops:
        plan.steps.append(Step(kind="drop_partition", target=name, group=name,
                               statements=(f"DROP TABLE IF EXISTS {qualified(parent.schema, name)}",),
                               description="finish a retention drop interrupted after its detach"))
    for name in obs.pending_archives:
        if retention is None or retention.archive is None:
            plan.notes.append(f"{name} was detached for archiving, but the policy no longer archives: left as is")
            continue
        plan.steps.extend(archive_steps(parent, name, retention))


def archive_steps(parent: Parent, name: str, retention: Retention) -> list[Step]:
    assert retention.archive is not None
    arch = retention.archive
    src = qualified(parent.schema, name)
    steps = []
    if arch.tablespace:
        steps.append(Step(kind="archive_tablespace", target=name, group=name,
                          statements=(f"ALTER TABLE {src} SET TABLESPACE {ident(arch.tablespace)}",),
                          description=f"move {name} to tablespace {arch.tablespace}"))
    steps.append(Step(kind="archive_move", target=name, group=name, statements=(
        f"CREATE SCHEMA IF NOT EXISTS {ident(arch.schema_)}",
        f"ALTER TABLE {src} SET SCHEMA {ident(arch.schema_)}",
        f"COMMENT ON TABLE {qualified(arch.schema_, name)} IS "
        f"{literal(f'pgcurator: archived from {parent.schema}.{parent.name}')}",
    ), description=f"move {name} to schema {arch.schema_}"))
    return steps


def retention_steps(retention: Retention | None, r: RangeSpec, parent: Parent, obs: TableObservation,
                    uppers: list[tuple[PartitionInfo, Bound]], now: datetime, planned: int = 0,
                    default_planned: bool = False) -> list[Step]:
    """Steps removing the partitions (given with their upper bounds, oldest first) whose whole
    range ends at or before the cutoff; never the last one, unless `planned` partitions are being
    created beside it (else the next run would remove it: a second run must plan nothing)."""
    cutoff = retention_cutoff_for(r, retention, now, obs.max_key)
    if cutoff is None or retention is None:
        return []
    old = [p for p, upper in uppers if upper is not None and upper <= cutoff  # type: ignore[operator]
           and not p.detach_pending]
    if old and len(uppers) == len(old) and not planned:
        old = old[:-1]  # never the last partition
    # Decided on the state the detach meets: PostgreSQL refuses DETACH CONCURRENTLY once a DEFAULT
    # partition exists, including one created earlier in this plan (`default_planned`).
    concurrently = obs.default_partition is None and not default_planned
    pq = qualified(parent.schema, parent.name)
    steps: list[Step] = []
    for p in old:
        child = qualified(p.schema, p.name)
        detach = f"ALTER TABLE {pq} DETACH PARTITION {child}" + (" CONCURRENTLY" if concurrently else "")
        g = p.name
        if retention.action is RetentionAction.detach:
            steps.append(Step(kind="detach_partition", target=g, statements=(detach,),
                              transactional=not concurrently, description=f"older than {cutoff}", group=g))
            continue
        marker = (f"COMMENT ON TABLE {child} IS "
                  f"{literal(retention_marker(parent.schema, parent.name, retention.action.value))}")
        if concurrently:
            steps.append(Step(kind="mark_for_" + retention.action.value, target=g, statements=(marker,), group=g))
            steps.append(Step(kind="detach_partition", target=g, statements=(detach,), transactional=False,
                              group=g))
        else:
            steps.append(Step(kind="detach_partition", target=g, statements=(marker, detach), group=g))
        if retention.action is RetentionAction.drop:
            steps.append(Step(kind="drop_partition", target=g, statements=(f"DROP TABLE IF EXISTS {child}",),
                              description=f"older than {cutoff}", group=g))
        else:
            steps.extend(archive_steps(parent, p.name, retention))
    return steps
