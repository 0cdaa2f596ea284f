"""Series state with a lifetime: a series silent for series_ttl (event time) expires."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.config import PipelineConfig
from flows.kernels.series import EXPIRED, SeriesBucketLogic
from flows.series import series_processor
from schemas.models import Reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOT = {"name": "hot", "metric": "temp", "levels": {"warning": 80}}


def reading(device: str, second: float, value: float) -> Reading:
    return Reading(device=device, metric="temp", ts=T0 + timedelta(seconds=second), value=value)


def kinds(result: tuple[list[tuple[str, list[object]]], bool]) -> dict[str, list[Any]]:
    """``on_batch``'s outputs by kind."""
    return dict(result[0])


def test_a_silent_series_expires_with_its_windows_emitted_and_alarms_cleared() -> None:
    config = PipelineConfig(alarms=[HOT], series_ttl=3600, anomaly={"enabled": False})
    logic = SeriesBucketLogic(series_processor(config), None)
    logic.on_batch([[reading("old-1", 0, 85.0), reading("new-1", 0, 20.0)]])  # old-1 raises
    assert set(logic.series) == {"default/old-1/temp", "default/new-1/temp"}
    before = EXPIRED.value()
    logic._expire_at = 0.0  # look now
    outputs = kinds(logic.on_batch([[reading("new-1", 3000, 21.0)]]))
    assert set(logic.series) == {"default/old-1/temp", "default/new-1/temp"}  # not yet
    logic._expire_at = 0.0
    outputs = kinds(logic.on_batch([[reading("new-1", 3601, 22.0)]]))
    assert set(logic.series) == {"default/new-1/temp"}
    assert set(logic.devices) == {"default/new-1"}
    assert EXPIRED.value() - before == 1
    (cleared,) = outputs["alarm"]
    assert (cleared.device, cleared.transition, cleared.ts) == ("old-1", "cleared", T0)
    assert "the series' state expired" in cleared.message
    assert any(r.device == "old-1" for r in outputs["rollup"])  # its open window, emitted
    assert "old-1" not in str(pickle.loads(pickle.dumps(logic.snapshot())))
    # It speaks again: a fresh state.
    logic.on_batch([[reading("old-1", 3700, 20.0)]])
    assert "default/old-1/temp" in logic.series


def test_a_ttl_of_zero_keeps_everything() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig(series_ttl=0)), None)
    logic.on_batch([[reading("old-1", 0, 1.0)]])
    logic._expire_at = 0.0
    logic.on_batch([[reading("new-1", 10 * 86400, 1.0)]])
    assert "default/old-1/temp" in logic.series
