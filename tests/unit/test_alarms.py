"""The alarm lifecycle and its trackers (flows/alarms.py, flows/alarm_lifecycle.py)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.alarms import (
    AlarmCommandError,
    AnomalyAlarmTracker,
    DeviceAlarmTracker,
    ThresholdAlarmTracker,
    alarm_id,
    device_alarm_active,
    threshold_trackers,
)
from schemas.config import AnomalyConfig, ThresholdAlarmRule
from schemas.models import Alarm, Reading, adapter, to_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def reading(second: float, value: Any, **kw: Any) -> Reading:
    return Reading(device="press-1", metric="temperature", ts=at(second), value=value, **kw)


def rule(**kw: Any) -> ThresholdAlarmRule:
    kw.setdefault("name", "hot")
    kw.setdefault("metric", "temperature")
    kw.setdefault("levels", {"warning": 80.0, "critical": 95.0})
    return ThresholdAlarmRule(**kw)


def tracker(**kw: Any) -> ThresholdAlarmTracker:
    return ThresholdAlarmTracker(rule(**kw), "default", "press-1", "temperature")


def feed(t: ThresholdAlarmTracker, values: Sequence[tuple[float, Any]]) -> list[Alarm]:
    out: list[Alarm] = []
    for second, value in values:
        out.extend(t.update(reading(second, value)))
    return out


def summary(alarms: list[Alarm]) -> list[tuple[str, str, str, int]]:
    return [(a.transition, a.state, a.severity, a.seq) for a in alarms]


def valid(alarm: Alarm) -> Alarm:
    """The alarm after a round trip through its strict JSON schema (proves it is valid)."""
    result: Alarm = adapter(Alarm).validate_json(to_json(alarm))
    return result


# --- threshold alarms --------------------------------------------------------


def test_raise_at_threshold_not_below() -> None:
    t = tracker()
    assert feed(t, [(0, 79.9), (1, 60), (2, 79)]) == []
    (alarm,) = feed(t, [(3, 80)])
    assert summary([alarm]) == [("raised", "raised", "warning", 1)]
    assert valid(alarm) == alarm
    assert (alarm.kind, alarm.rule, alarm.value, alarm.threshold) == ("threshold", "hot", 80, 80.0)
    assert alarm.raised_at == alarm.ts == at(3)
    assert alarm.message == "temperature 80 >= 80.0 (warning)"
    assert alarm.id == alarm_id("default", "press-1", "temperature", "hot", at(3))
    assert t.active and t.alarm_id == alarm.id and t.severity == "warning"


def test_straight_to_critical() -> None:
    (alarm,) = feed(tracker(), [(0, 99)])
    assert (alarm.severity, alarm.threshold) == ("critical", 95.0)


def test_min_duration_brief_spike_does_not_raise() -> None:
    t = tracker(min_duration="3s")
    # Over the threshold for 2 s, then back: the timer resets.
    assert feed(t, [(0, 85), (1, 85), (2, 85), (2.5, 70), (3, 85), (5.9, 85)]) == []
    # Held from t=3 to t=6: 3 s, raised with the severity of the raising reading.
    (alarm,) = feed(t, [(6, 96)])
    assert (alarm.transition, alarm.severity, alarm.raised_at) == ("raised", "critical", at(6))


def test_min_duration_timer_survives_moves_between_levels() -> None:
    t = tracker(min_duration=2)
    assert feed(t, [(0, 96), (1, 81)]) == []
    assert summary(feed(t, [(2, 82)])) == [("raised", "raised", "warning", 1)]


def test_long_breach_raises_once() -> None:
    t = tracker()
    alarms = feed(t, [(s, 85 + (s % 3)) for s in range(200)])
    assert summary(alarms) == [("raised", "raised", "warning", 1)]


def test_hysteresis_no_clear_until_strictly_below_clear_at() -> None:
    t = tracker(clear_at=75)
    feed(t, [(0, 85)])
    assert feed(t, [(1, 79), (2, 76), (3, 75.0), (4, 80), (5, 75)]) == []
    assert t.active
    (cleared,) = feed(t, [(6, 74.9)])
    assert summary([cleared]) == [("cleared", "cleared", "warning", 2)]
    assert cleared.cleared_at == cleared.ts == at(6)
    assert (cleared.value, cleared.threshold) == (74.9, 75.0)
    assert cleared.message == "cleared: temperature 74.9 < 75.0 (warning)"
    assert cleared.raised_at == at(0)
    assert valid(cleared) == cleared
    assert not t.active and t.alarm_id is None


def test_default_clear_at_is_lowest_threshold() -> None:
    t = tracker()
    feed(t, [(0, 85)])
    assert feed(t, [(1, 80)]) == []
    assert summary(feed(t, [(2, 79.99)])) == [("cleared", "cleared", "warning", 2)]


def test_escalation_and_deescalation_keep_the_id() -> None:
    t = tracker(levels={"warning": 80, "major": 90, "critical": 95}, clear_at=70)
    alarms = feed(t, [(0, 82), (1, 91), (2, 99), (3, 97), (4, 92), (5, 85), (6, 75), (7, 69)])
    assert summary(alarms) == [
        ("raised", "raised", "warning", 1),
        ("escalated", "raised", "major", 2),
        ("escalated", "raised", "critical", 3),
        ("deescalated", "raised", "major", 4),
        ("deescalated", "raised", "warning", 5),
        ("cleared", "cleared", "warning", 6),
    ]
    assert len({a.id for a in alarms}) == 1
    assert [a.threshold for a in alarms] == [80.0, 90.0, 95.0, 90.0, 80.0, 70.0]
    assert alarms[2].message == "temperature 99 >= 95.0 (critical)"


def test_hysteresis_band_holds_the_lowest_severity() -> None:
    t = tracker(clear_at=70)
    alarms = feed(t, [(0, 99), (1, 75), (2, 72)])
    # Below 80 but not clear: held, and no longer claiming critical.
    assert summary(alarms) == [
        ("raised", "raised", "critical", 1),
        ("deescalated", "raised", "warning", 2),
    ]


def test_new_alarm_after_clear_has_new_id() -> None:
    t = tracker()
    first = feed(t, [(0, 85), (1, 70)])
    second = feed(t, [(2, 85)])
    assert summary(second) == [("raised", "raised", "warning", 1)]
    assert second[0].id != first[0].id


def test_direction_below_mirrors_everything() -> None:
    t = tracker(
        name="low_pressure",
        direction="below",
        levels={"warning": 10.0, "critical": 5.0},
        clear_at=12.0,
        message="{metric} {value} {op} {threshold} ({severity}) on {device}",
    )
    assert feed(t, [(0, 10.1), (1, 50)]) == []
    alarms = feed(t, [(2, 10), (3, 4), (4, 8), (5, 11), (6, 12), (7, 12.1)])
    assert summary(alarms) == [
        ("raised", "raised", "warning", 1),
        ("escalated", "raised", "critical", 2),
        ("deescalated", "raised", "warning", 3),
        ("cleared", "cleared", "warning", 4),
    ]
    assert alarms[0].message == "temperature 10 <= 10.0 (warning) on press-1"
    assert alarms[3].message == "cleared: temperature 12.1 > 12.0 (warning) on press-1"


def test_ignored_values() -> None:
    t = tracker()
    assert feed(t, [(0, True), (1, "hot"), (2, float("nan")), (3, float("inf"))]) == []
    assert t.update(reading(4, 120, quality="bad")) == []
    assert not t.active
    feed(t, [(5, 85)])
    # While active, none of these clear or change it.
    assert feed(t, [(6, float("nan")), (7, False), (8, float("-inf"))]) == []
    assert t.update(reading(9, 10, quality="bad")) == []
    assert t.active and t.severity == "warning"


def test_huge_integers_do_not_overflow() -> None:
    t = tracker(direction="below", levels={"warning": 0.0})
    assert feed(t, [(0, 10**400)]) == []
    assert summary(feed(t, [(1, -(10**400))])) == [("raised", "raised", "warning", 1)]


def test_broken_message_template_falls_back() -> None:
    (alarm,) = feed(tracker(message="{metric} is {nonsense:%Q}"), [(0, 85)])
    assert alarm.message == "temperature 85 >= 80.0 (warning)"


def test_acknowledge_then_clear() -> None:
    t = tracker()
    assert t.acknowledge("alice", ts=at(0)) is None  # nothing to acknowledge
    (raised,) = feed(t, [(0, 85)])
    acked = t.acknowledge("alice", "checking the pump", at(10))
    assert acked is not None
    assert summary([acked]) == [("acknowledged", "acknowledged", "warning", 2)]
    assert (acked.id, acked.acknowledged_by, acked.acknowledged_at) == (raised.id, "alice", at(10))
    assert (acked.comment, acked.value) == ("checking the pump", 85)
    assert t.acknowledge("bob", ts=at(11)) is None  # already acknowledged
    # Still breaching and de-escalating keeps the acknowledgement.
    assert feed(t, [(12, 86)]) == []
    (cleared,) = feed(t, [(20, 60)])
    assert summary([cleared]) == [("cleared", "cleared", "warning", 3)]
    assert (cleared.acknowledged_by, cleared.acknowledged_at) == ("alice", at(10))
    assert valid(cleared) == cleared


def test_escalation_of_acknowledged_alarm_needs_new_acknowledgement() -> None:
    t = tracker()
    feed(t, [(0, 85)])
    t.acknowledge("alice", ts=at(1))
    (escalated,) = feed(t, [(2, 99)])
    assert summary([escalated]) == [("escalated", "raised", "critical", 3)]
    assert escalated.acknowledged_by is None and escalated.acknowledged_at is None
    acked = t.acknowledge("bob", ts=at(3))
    assert acked is not None and acked.state == "acknowledged"
    (deescalated,) = feed(t, [(4, 85)])
    assert summary([deescalated]) == [("deescalated", "acknowledged", "warning", 5)]
    assert deescalated.acknowledged_by == "bob"


def test_manual_clear_forbidden() -> None:
    t = tracker()
    feed(t, [(0, 85)])
    with pytest.raises(AlarmCommandError, match="'hot' does not allow manual clear"):
        t.clear_manually("alice", at(1))
    assert t.active


def test_manual_clear_allowed_and_latched_until_safe() -> None:
    t = tracker(manual_clear=True, clear_at=75)
    assert t.clear_manually("alice", at(0)) is None  # nothing active
    (raised,) = feed(t, [(0, 85)])
    cleared = t.clear_manually("alice", at(1), comment="sensor being replaced")
    assert cleared is not None
    assert summary([cleared]) == [("cleared", "cleared", "warning", 2)]
    assert cleared.id == raised.id and cleared.cleared_at == at(1)
    assert cleared.comment == "cleared manually by alice: sensor being replaced"
    assert (cleared.value, cleared.threshold) == (85, 75.0)
    # Still at warning level: not raised again by the next reading ...
    assert feed(t, [(2, 86), (3, 76), (4, 88)]) == []
    # ... but a higher level is a new alarm,
    (critical,) = feed(t, [(5, 96)])
    assert (critical.transition, critical.severity) == ("raised", "critical")
    assert critical.id != raised.id
    # and once the value has been safe, warning raises again.
    t.clear_manually("alice", at(6))
    assert feed(t, [(7, 85), (8, 74), (9, 60)]) == []
    assert summary(feed(t, [(10, 81)])) == [("raised", "raised", "warning", 1)]


def test_ids_are_deterministic_across_replays() -> None:
    values = [(0, 85), (1, 99), (2, 70), (3, 90), (4, 10)]
    first, second = feed(tracker(), values), feed(tracker(), values)
    assert [(a.id, a.seq) for a in first] == [(a.id, a.seq) for a in second]
    assert len({a.id for a in first}) == 2


def test_threshold_trackers_only_for_matching_rules() -> None:
    rules = [
        rule(name="a"),
        rule(name="b", metric="pressure"),
        rule(name="c", metric="temp*", device="press-*"),
        rule(name="d", device="oven-*"),
    ]
    trackers = threshold_trackers(rules, "default", "press-1", "temperature")
    assert [t.update(reading(0, 99))[0].rule for t in trackers] == ["a", "c"]


# --- pickling: what Bytewax recovery relies on --------------------------------


def test_pickle_mid_alarm_continues_without_duplicate_raise() -> None:
    t = tracker(min_duration=1)
    raised = feed(t, [(0, 85), (1, 85)])
    assert summary(raised) == [("raised", "raised", "warning", 1)]
    blob = pickle.dumps(t)
    assert len(blob) < 1000
    restored = pickle.loads(blob)
    assert feed(restored, [(2, 86), (3, 87)]) == []  # no second raise
    rest = feed(restored, [(4, 97), (5, 60)])
    assert summary(rest) == [
        ("escalated", "raised", "critical", 2),
        ("cleared", "cleared", "critical", 3),
    ]
    assert {a.id for a in rest} == {raised[0].id}


def test_pickle_keeps_pending_timer_and_acknowledgement() -> None:
    t = tracker(min_duration=5)
    feed(t, [(0, 85), (3, 85)])
    restored = pickle.loads(pickle.dumps(t))
    assert summary(feed(restored, [(5, 85)])) == [("raised", "raised", "warning", 1)]
    restored.acknowledge("alice", ts=at(6))
    again = pickle.loads(pickle.dumps(restored))
    assert again.acknowledge("bob", ts=at(7)) is None
    (cleared,) = feed(again, [(8, 1)])
    assert cleared.acknowledged_by == "alice" and cleared.seq == 3


# --- property: the lifecycle is always well formed ---------------------------


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.floats(min_value=50, max_value=110), st.sampled_from([75, 80, 95])),
        max_size=60,
    ),
    min_duration=st.sampled_from([0, 1, 3]),
    pickle_at=st.integers(min_value=0, max_value=60),
)
def test_lifecycle_invariants(values: list[float], min_duration: int, pickle_at: int) -> None:
    # Without chatter handling: a chattering alarm holds its clear by design
    # (test_alarm_management.py covers it).
    t = tracker(
        levels={"warning": 80, "critical": 95}, clear_at=75, min_duration=min_duration, chatter=None
    )
    alarms: list[Alarm] = []
    for second, value in enumerate(values):
        if second == pickle_at:
            t = pickle.loads(pickle.dumps(t))
        alarms.extend(t.update(reading(second, value)))
    active: Alarm | None = None
    for alarm in alarms:
        if active is None:
            assert (alarm.transition, alarm.seq) == ("raised", 1)
        else:
            assert alarm.id == active.id and alarm.seq == active.seq + 1
            assert alarm.transition in ("escalated", "deescalated", "cleared")
        active = None if alarm.transition == "cleared" else alarm
    assert t.active == (active is not None)
    if active is not None and values:
        assert values[-1] >= 75  # an active alarm means the last value is not clear


# --- anomaly alarms ------------------------------------------------------------


def anomaly(**kw: Any) -> AnomalyAlarmTracker:
    return AnomalyAlarmTracker(AnomalyConfig(**kw), "default", "press-1", "temperature")


def scores(t: AnomalyAlarmTracker, values: list[float], start: int = 0) -> list[Alarm]:
    out: list[Alarm] = []
    for i, score in enumerate(values, start):
        out.extend(t.update(at(i), 50.0 + i, score))
    return out


def test_anomaly_alarm_hold_and_clear_hold() -> None:
    t = anomaly(threshold=0.9, clear_threshold=0.5, hold=2, clear_hold=3, severity="major")
    assert scores(t, [0.95, 0.3, 0.95, 0.6, 0.92]) == []  # runs broken
    (raised,) = scores(t, [0.93], start=5)
    assert (raised.kind, raised.rule, raised.severity, raised.state) == (
        "anomaly",
        "anomaly",
        "major",
        "raised",
    )
    assert (raised.ts, raised.value, raised.threshold) == (at(5), 55.0, 0.9)
    assert raised.message == "temperature anomaly score 0.930 >= 0.9 for 2 consecutive values"
    # 0.6 is below threshold but not below clear_threshold: it resets the clear run.
    assert scores(t, [0.4, 0.4, 0.6, 0.4, 0.4, float("nan")], start=6) == []
    (cleared,) = scores(t, [0.1], start=12)
    assert summary([cleared]) == [("cleared", "cleared", "major", 2)]
    assert cleared.id == raised.id and cleared.threshold == 0.5
    assert valid(cleared) == cleared


def test_anomaly_nan_scores_do_not_break_runs() -> None:
    t = anomaly(hold=2, clear_hold=2)
    assert summary(scores(t, [0.95, float("nan"), 0.95])) == [("raised", "raised", "warning", 1)]
    assert summary(scores(t, [0.1, float("nan"), 0.1], start=3)) == [
        ("cleared", "cleared", "warning", 2)
    ]


def test_anomaly_alarm_hold_one_and_pickle() -> None:
    t = anomaly(hold=1, clear_hold=2)
    (raised,) = scores(t, [0.99])
    t = pickle.loads(pickle.dumps(t))
    assert scores(t, [0.99, 0.2], start=1) == []
    t = pickle.loads(pickle.dumps(t))
    (cleared,) = scores(t, [0.2], start=3)
    assert cleared.id == raised.id and cleared.seq == 2


def test_anomaly_alarm_can_be_acknowledged() -> None:
    t = anomaly(hold=1)
    scores(t, [0.99])
    acked = t.acknowledge("alice", ts=at(1))
    assert acked is not None and acked.state == "acknowledged"


# --- device alarms -----------------------------------------------------------


def device_reading(second: float, value: Any, **attributes: str) -> Reading:
    return Reading(
        device="press-1",
        metric="alarm.overheat",
        ts=at(second),
        value=value,
        attributes=attributes or None,
    )


@pytest.mark.parametrize(
    ("value", "active"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        (0.0, False),
        (-2.5, True),
        ("ALARM", True),
        ("1", True),
        (" Off ", False),
        ("ok", False),
        ("CLEAR", False),
        ("0", False),
        ("false", False),
        ("", False),
        (float("nan"), None),
    ],
)
def test_device_alarm_truthiness(value: Any, active: bool | None) -> None:
    assert device_alarm_active(value) is active


def test_device_alarm_lifecycle() -> None:
    t = DeviceAlarmTracker("default", "press-1", "alarm.overheat")
    out: list[Alarm] = []
    for r in [
        device_reading(0, False),
        device_reading(1, True),
        device_reading(2, True),
        device_reading(3, "ON", severity="Critical", message="motor overheated"),
        device_reading(4, 1, severity="critical"),
        device_reading(5, 1, severity="bogus"),
        device_reading(6, float("nan")),
        device_reading(7, "off"),
        device_reading(8, "off"),
    ]:
        out.extend(t.update(r))
    assert summary(out) == [
        ("raised", "raised", "warning", 1),
        ("escalated", "raised", "critical", 2),
        ("deescalated", "raised", "warning", 3),
        ("cleared", "cleared", "warning", 4),
    ]
    assert {(a.kind, a.rule) for a in out} == {("device", "device")}
    assert len({a.id for a in out}) == 1
    assert out[0].message == "press-1 reports alarm.overheat = True"
    assert out[1].message == "motor overheated"
    assert out[3].cleared_at == at(7)
    assert all(valid(a) == a for a in out)


def test_device_alarm_pickle_mid_alarm() -> None:
    t = DeviceAlarmTracker("default", "press-1", "alarm.overheat")
    (raised,) = t.update(device_reading(0, True))
    t = pickle.loads(pickle.dumps(t))
    assert t.update(device_reading(1, True)) == []
    (cleared,) = t.update(device_reading(2, False))
    assert (cleared.id, cleared.seq, cleared.transition) == (raised.id, 2, "cleared")


def test_anomaly_alarm_single_spike_above_instant_threshold_raises_at_once() -> None:
    t = anomaly(threshold=0.9, hold=3, instant_threshold=0.99)
    assert scores(t, [0.95, 0.2]) == []  # one high score below instant: held back
    (raised,) = scores(t, [0.995], start=2)
    assert raised.message == "temperature anomaly score 0.995 >= 0.9 for 1 consecutive value"
    assert raised.ts == at(2)
