"""One schedule model and one way to turn it into seconds, for every kind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

from pgcurator.kinds import INDEX_POLICY, PARTITION_POLICY, VECTOR_INDEX
from pgcurator.models.common import Schedule, schedule_seconds
from pgcurator.runtime import KindHandler

BODIES: dict[str, dict[str, Any]] = {
    "PartitionPolicy": {
        "database": {"secretName": "db"},
        "table": {"name": "events"},
        "range": {"column": "ts", "interval": "1 month", "premake": 3},
    },
    "IndexPolicy": {
        "database": {"secretName": "db"},
        "table": {"name": "sessions"},
        "indexes": [{"name": "idx_a", "columns": [{"column": "status"}]}],
    },
    "VectorIndex": {
        "database": {"secretName": "db"},
        "table": {"name": "chunks"},
        "column": "embedding",
        "type": "vector",
        "dimensions": 3,
        "metric": "l2",
        # the recall interval also wakes a VectorIndex: keep it out of the way
        "recall": {"interval": "24h"},
    },
}
HANDLERS = [PARTITION_POLICY, INDEX_POLICY, VECTOR_INDEX]


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: h.kind)
def test_every_kind_follows_its_cron(handler: KindHandler[Any]) -> None:
    """IndexPolicy used to ignore schedule.cron and wait the 1h interval (issue 12 item 5)."""
    spec = handler.model.model_validate({**BODIES[handler.kind], "schedule": {"interval": "1h", "cron": "*/5 * * * *"}})
    # whatever the wall clock says, the next multiple of five minutes is at most 300 s away
    assert 1 <= handler.schedule_seconds(spec) <= 300


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: h.kind)
def test_every_kind_uses_its_interval_without_cron(handler: KindHandler[Any]) -> None:
    spec = handler.model.model_validate({**BODIES[handler.kind], "schedule": {"interval": "90s"}})
    assert handler.schedule_seconds(spec) == 90


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: h.kind)
def test_every_kind_shares_one_schedule_model(handler: KindHandler[Any]) -> None:
    spec = handler.model.model_validate(BODIES[handler.kind])
    assert type(spec.schedule) is Schedule


@pytest.mark.parametrize("handler", HANDLERS, ids=lambda h: h.kind)
@pytest.mark.parametrize("cron", ["0 3 * *", "61 * * * *", "every day"])
def test_every_kind_refuses_a_bad_cron(handler: KindHandler[Any], cron: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="cron"):
        handler.model.model_validate({**BODIES[handler.kind], "schedule": {"cron": cron}})


def test_cron_is_read_in_utc_at_the_given_time() -> None:
    sched = Schedule.model_validate({"cron": "0 3 * * *"})
    assert schedule_seconds(sched, datetime(2026, 11, 22, 2, 0, tzinfo=UTC)) == 3600
    assert schedule_seconds(sched, datetime(2026, 11, 22, 3, 0, tzinfo=UTC)) == 24 * 3600
