"""A flow resumed with a changed config: every series' state brought in line (pure logic)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.config import PipelineConfig
from flows.kernels.series import OutputChunks, SeriesBucketLogic
from flows.series import SeriesStart, series_processor
from schemas.models import Alarm, Reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOT = {"name": "hot", "metric": "temp", "levels": {"warning": 80, "critical": 95}, "clear_at": 75}


def reading(second: float, value: float, metric: str = "temp") -> Reading:
    return Reading(device="press-1", metric=metric, ts=T0 + timedelta(seconds=second), value=value)


def raised_state(config: PipelineConfig, value: float = 85.0) -> tuple[Any, Reading]:
    start = SeriesStart(config)
    last = reading(0, value)
    state = start(last)
    alarms = [a for t in state.threshold_alarms for a in t.update(last)]
    assert [a.transition for a in alarms] == ["raised"]
    return state, last


def reconcile(config: PipelineConfig, state: Any, last: Reading) -> list[Alarm]:
    """The alarm transitions of reconciling ``state`` in place (it keeps its identity)."""
    out = OutputChunks()
    assert SeriesStart(config).reconcile(state, last, out) is state
    return out.alarm


def steps(alarms: list[Alarm]) -> list[tuple[str, str, str]]:
    return [(a.rule, a.transition, a.severity) for a in alarms]


def test_the_same_config_changes_nothing() -> None:
    config = PipelineConfig(alarms=[HOT])
    state, last = raised_state(config)
    before = pickle.dumps(state)
    assert reconcile(config, state, last) == []
    assert pickle.dumps(state) == before


def test_raised_thresholds_clear_an_active_alarm() -> None:
    state, last = raised_state(PipelineConfig(alarms=[HOT]))
    looser = {**HOT, "levels": {"warning": 90, "critical": 99}, "clear_at": 88}
    assert steps(reconcile(PipelineConfig(alarms=[looser]), state, last)) == [
        ("hot", "cleared", "warning")
    ]
    assert not state.threshold_alarms[0].active


def test_lowered_thresholds_escalate_an_active_alarm() -> None:
    state, last = raised_state(PipelineConfig(alarms=[HOT]))
    stricter = {**HOT, "levels": {"warning": 60, "critical": 84}, "clear_at": 55}
    (escalated,) = reconcile(PipelineConfig(alarms=[stricter]), state, last)
    assert (escalated.transition, escalated.severity, escalated.seq) == ("escalated", "critical", 2)
    # and the new hysteresis holds afterwards: 70 is above the new clear_at (55)
    assert state.threshold_alarms[0].update(reading(1, 70.0)) != []  # de-escalated, not cleared
    assert state.threshold_alarms[0].active


def test_a_removed_rule_clears_its_alarm_with_the_reason_and_a_new_rule_starts() -> None:
    state, last = raised_state(PipelineConfig(alarms=[HOT]))
    other = {"name": "very_hot", "metric": "temp", "levels": {"major": 84}}
    out = reconcile(PipelineConfig(alarms=[other]), state, last)
    assert steps(out) == [("hot", "cleared", "warning"), ("very_hot", "raised", "major")]
    assert out[0].message == "cleared: rule 'hot' is no longer configured"
    assert [t.rule for t in state.threshold_alarms] == ["very_hot"]


def test_a_changed_detector_starts_fresh_and_anomaly_off_clears_its_alarm() -> None:
    config = PipelineConfig(alarms=[])
    start = SeriesStart(config)
    state = start(reading(0, 1.0))
    assert state.detector.name == "default"
    zscore = PipelineConfig(alarms=[], anomaly={"detector": {"type": "zscore"}})
    assert reconcile(zscore, state, reading(0, 1.0)) == []
    assert state.detector.name == "zscore"
    (raised,) = state.anomaly_alarm.update(T0, 9.0, 0.999)
    off = PipelineConfig(alarms=[], anomaly={"enabled": False})
    (cleared,) = reconcile(off, state, reading(1, 1.0))
    assert (cleared.id, cleared.transition) == (raised.id, "cleared")
    assert cleared.message == "cleared: anomaly detection is turned off"
    assert state.detector is None and state.anomaly_alarm is None


def test_a_bucket_resumed_under_a_new_config_hands_its_transitions_over_first() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig(alarms=[HOT])), None)
    outputs, _ = logic.on_batch([[reading(0, 85.0)]])
    assert [r.transition for kind, rs in outputs if kind == "alarm" for r in rs] == ["raised"]
    snapshot = pickle.dumps(logic.snapshot())
    looser = {**HOT, "levels": {"warning": 90}, "clear_at": 88}
    resumed = SeriesBucketLogic(
        series_processor(PipelineConfig(alarms=[looser])), pickle.loads(snapshot)
    )
    assert resumed.notify_at() is not None  # wake at once to hand them over
    outputs, _ = resumed.on_notify()
    assert [r.transition for kind, rs in outputs if kind == "alarm" for r in rs] == ["cleared"]
    # The same config: nothing.
    again = SeriesBucketLogic(
        series_processor(PipelineConfig(alarms=[HOT])), pickle.loads(snapshot)
    )
    assert again._resumed is None  # nothing to hand over
    outputs, _ = again.on_batch([[reading(1, 86.0)]])
    assert [r for kind, rs in outputs if kind == "alarm" for r in rs] == []


def test_a_series_classified_otherwise_ends_and_starts_afresh_as_the_new_kind() -> None:
    state, last = raised_state(PipelineConfig(alarms=[HOT]))
    as_event = PipelineConfig(alarms=[HOT], classification=[{"metric": "temp", "kind": "event"}])
    out = OutputChunks()
    fresh = SeriesStart(as_event).reconcile(state, last, out)
    assert fresh is not state and fresh.kind == "event" and fresh.events is not None
    assert fresh.device is state.device  # the device's shared context stays
    assert steps(out.alarm) == [("hot", "cleared", "warning")]
    assert (
        out.alarm[0].message
        == "cleared: the series is now classified as event, no longer telemetry"
    )
    # Back without the rule: numbers are telemetry again, by the value's type.
    again = SeriesStart(PipelineConfig(alarms=[HOT])).reconcile(fresh, last, OutputChunks())
    assert again.kind == "telemetry"
    # An inferred kind stays inferred: the same config changes nothing.
    assert SeriesStart(PipelineConfig(alarms=[HOT])).reconcile(again, last, OutputChunks()) is again


def test_a_changed_tier_set_keeps_the_tiers_that_remain_and_rollups_off_emits_open_windows() -> (
    None
):
    config = PipelineConfig(alarms=[], rollups={"windows": ["1m", "5m", "1h"]})
    start = SeriesStart(config)
    state = start(reading(0, 1.0))
    processor = series_processor(config)
    out = OutputChunks()
    for second in range(0, 200, 10):
        processor.process(state, reading(second, float(second)), out)
    emitted_1m = [r for r in out.rollup if r.tier == "1m"]
    assert len(emitted_1m) == 3  # [0, 60), [60, 120), [120, 180) so far
    fewer = PipelineConfig(alarms=[], rollups={"windows": ["1m", "5m"]})
    kept = SeriesStart(fewer).reconcile(state, reading(190, 190.0), OutputChunks())
    assert kept.rollups.spec.names == ("1m", "5m")
    produced: list[Any] = []
    kept.rollups.flush(produced, reading(190, 190.0))
    five = [r for r in produced if r.tier == "5m"]
    assert [(r.count, r.min, r.max) for r in five] == [(20, 0.0, 190.0)]  # every value kept
    off = PipelineConfig(alarms=[], rollups={"enabled": False})
    out = OutputChunks()
    assert SeriesStart(off).reconcile(kept, reading(190, 190.0), out).rollups is None
    assert out.rollup == []  # flushed just above: nothing open
