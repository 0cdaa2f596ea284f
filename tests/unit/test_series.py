"""The keyed series step outside Bytewax: idle flush scheduling and resume."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime, timedelta

from flows.series import SeriesLogic, SeriesProcessor
from schemas.config import PipelineConfig
from schemas.models import Reading, Rollup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _readings(n: int, start: int = 0) -> list[Reading]:
    return [
        Reading("pump-1", "pressure", T0 + timedelta(seconds=i), 2.0 + i % 3)
        for i in range(start, start + n)
    ]


def test_idle_series_is_woken_after_idle_timeout_and_flushes_its_windows() -> None:
    config = PipelineConfig()
    config.rollups.idle_timeout = 40.0
    logic = SeriesLogic(SeriesProcessor(config), None)
    before = time.time()
    out, _ = logic.on_batch(_readings(30))
    assert not [r for _, r in out if isinstance(r, Rollup)]  # the minute is still open
    wake = logic.notify_at()
    assert wake is not None
    assert before + 30 <= wake.timestamp() <= time.time() + 40
    flushed, _ = logic.on_notify()
    rollups = [r for _, r in flushed if isinstance(r, Rollup)]
    assert {r.tier for r in rollups} == {"1m", "5m", "1h"}
    assert all(r.count == 30 for r in rollups)
    assert logic.notify_at() is None  # nothing open: no more wake-ups


def test_resumed_state_continues_and_still_flushes() -> None:
    processor = SeriesProcessor(PipelineConfig())
    logic = SeriesLogic(processor, None)
    logic.on_batch(_readings(20))
    snapshot = pickle.loads(pickle.dumps(logic.snapshot()))
    resumed = SeriesLogic(processor, snapshot)
    assert resumed.notify_at() is not None  # restored windows get flushed eventually
    resumed.on_batch(_readings(10, start=20))
    flushed, _ = resumed.on_notify()
    minute = next(r for _, r in flushed if isinstance(r, Rollup) and r.tier == "1m")
    assert minute.count == 30 and minute.first_ts == T0
