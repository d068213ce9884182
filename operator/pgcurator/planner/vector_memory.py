"""The memory a pgvector index build needs, and the session settings that keep it within the
resource's budget. Pure."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..sql.quote import literal

MiB = 1024 * 1024
# HNSW indexes sparsevec values with at most this many non-zero elements.
SPARSEVEC_MAX_NONZERO = 1000

# ----------------------------------------------------------------------------- memory estimate

def value_bytes(type_: str, dimensions: int, avg_nonzero: float | None = None) -> int:
    """In-memory size of one value (varlena header included)."""
    if type_ == "vector":
        return 8 + 4 * dimensions
    if type_ == "halfvec":
        return 8 + 2 * dimensions
    if type_ == "bit":
        return 8 + (dimensions + 7) // 8
    nnz = avg_nonzero if avg_nonzero is not None else min(dimensions, SPARSEVEC_MAX_NONZERO)
    return 16 + math.ceil(8 * nnz)


def _align8(n: int) -> int:
    return (n + 7) & ~7


# Fitted to pgvector 0.8.6 builds (tests/unit/test_vector_planner.py holds the measurements):
# per element, a fixed ~192 bytes (element, neighbour-array headers, heap TID, allocator
# overhead), the value, and 2*m neighbour candidates of 16 bytes on layer 0 (upper layers add
# m/(m-1) per element on average, inside the fitted constant).
HNSW_ELEMENT_OVERHEAD = 192
HNSW_CANDIDATE_BYTES = 16


def hnsw_element_bytes(type_: str, dimensions: int, m: int, avg_nonzero: float | None = None) -> int:
    return HNSW_ELEMENT_OVERHEAD + _align8(value_bytes(type_, dimensions, avg_nonzero)) + 2 * m * HNSW_CANDIDATE_BYTES


def hnsw_graph_bytes(rows: int, type_: str, dimensions: int, m: int, avg_nonzero: float | None = None) -> int:
    """Memory an HNSW build needs to keep the whole graph in maintenance_work_mem."""
    return max(rows, 0) * hnsw_element_bytes(type_, dimensions, m, avg_nonzero)


# IVFFlat's k-means runs on a sample of max(10000, 50*lists) rows held in memory (pgvector refuses
# to build when maintenance_work_mem is smaller: "memory required is N MB").
IVFFLAT_MIN_SAMPLES = 10000
IVFFLAT_SAMPLES_PER_LIST = 50


def ivfflat_build_bytes(rows: int, type_: str, dimensions: int, lists: int) -> int:
    size = _align8(value_bytes(type_, dimensions))
    samples = min(max(rows, 1), max(IVFFLAT_MIN_SAMPLES, IVFFLAT_SAMPLES_PER_LIST * lists))
    return samples * size + 2 * lists * size + MiB


def auto_lists(rows: int) -> int:
    """pgvector's guidance: rows/1000 up to 1M rows, sqrt(rows) above; within 1..32768."""
    n = rows // 1000 if rows <= 1_000_000 else int(math.sqrt(rows))
    return max(1, min(32768, n))


# ----------------------------------------------------------------------------- build session settings

# Headroom on the estimate (allocator slack, the fit's spread).
ESTIMATE_HEADROOM = 1.10
# pgvector subtracts 3 MB from maintenance_work_mem for other shared objects in parallel builds.
PARALLEL_SHARED_OVERHEAD = 3 * MiB
# What each parallel worker process may use besides the shared graph (scan buffers, per-insert
# contexts); conservative.
WORKER_RESERVE = 16 * MiB
# Never go below PostgreSQL's default unless the budget is smaller: a tiny maintenance_work_mem
# only slows the sort/validation phases of CREATE INDEX CONCURRENTLY.
FLOOR = 64 * MiB
MIN_MWM = MiB
# Parallel builds only pay off on tables of some size (PostgreSQL also checks table size).
PARALLEL_MIN_ROWS = 10_000


@dataclass(frozen=True)
class BuildSettings:
    maintenance_work_mem: int  # bytes, a multiple of 1 MiB
    workers: int
    estimate: int  # bytes the build needs in memory
    budget: int
    fits: bool  # the estimate fits in maintenance_work_mem: the graph stays in memory
    reason: str

    @property
    def total(self) -> int:
        return self.maintenance_work_mem + self.workers * WORKER_RESERVE

    def statements(self) -> tuple[str, str]:
        kb = self.maintenance_work_mem // 1024
        return (
            f"SET maintenance_work_mem = {literal(f'{kb}kB')}",
            f"SET max_parallel_maintenance_workers = {int(self.workers)}",
        )


def _round_up_mib(n: int) -> int:
    return -(-n // MiB) * MiB


def build_settings(estimate: int, budget: int, rows: int, max_workers: int) -> BuildSettings:
    """maintenance_work_mem and parallel workers for one build: the estimate (with headroom) in
    memory if the budget allows, with as many workers as the rest of the budget pays for.

    Budget accounting: maintenance_work_mem (private memory, or the shared graph area of a
    parallel build, which pgvector allocates up front at that size) + WORKER_RESERVE per worker.
    """
    budget = max(budget, MIN_MWM)
    max_workers = max(0, max_workers) if rows >= PARALLEL_MIN_ROWS else 0
    need = _round_up_mib(int(estimate * ESTIMATE_HEADROOM))
    budget_floor = budget // MiB * MiB
    for workers in range(max_workers, -1, -1):
        room = (budget - workers * WORKER_RESERVE) // MiB * MiB
        need_w = need + (PARALLEL_SHARED_OVERHEAD if workers else 0)
        if room >= max(need_w, MIN_MWM):
            mwm = min(room, max(need_w, FLOOR))
            why = (f"estimate {fmt_bytes(estimate)} fits: maintenance_work_mem {fmt_bytes(mwm)}, "
                   f"{workers} parallel workers within the {fmt_bytes(budget)} budget")
            return BuildSettings(mwm, workers, estimate, budget, True, why)
    # The graph cannot fit: all the budget goes to maintenance_work_mem, serial; the build will
    # leave the fast path (the NOTICE is reported) but never exceeds the budget.
    mwm = max(MIN_MWM, budget_floor)
    why = (f"estimate {fmt_bytes(estimate)} exceeds the {fmt_bytes(budget)} budget: the build will spill "
           f"to disk (slower); raise build.memoryBudget to about {fmt_bytes(need)} to build in memory")
    return BuildSettings(mwm, 0, estimate, budget, False, why)


def fewer_workers(workers: int) -> int:
    """After a parallel build failed for lack of dynamic shared memory: half the workers, then none."""
    return workers // 2 if workers > 1 else 0


DSM_MESSAGE = re.compile(r"(could not (resize|allocate|create) shared memory segment|dynamic shared memory)", re.I)


def is_dsm_failure(sqlstate: str | None, message: str | None) -> bool:
    """A parallel build that could not get its shared memory segment (e.g. /dev/shm too small:
    SQLSTATE 53100 disk_full or 53200 out_of_memory from dsm_impl_posix)."""
    text = message or ""
    if not DSM_MESSAGE.search(text):
        return False
    return sqlstate in ("53100", "53200", "53000", None)


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"
