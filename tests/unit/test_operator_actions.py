"""Flows following operators' alarm actions (AlarmLifecycle.follow and the series step).

The API stores an acknowledgement or manual clear as the alarm's next
transition; these tests build that record the way the API does
(``api/routers/alarms.py``: the database row, seq + 1) and check the flow's
next transitions are numbered after it, keep its state, and that a race is
resolved by a restatement above both sequence numbers.
"""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.kafka.alarm_actions import parse_action
from connectors.runtime.outputs import flatten_outputs
from flows.alarms import AnomalyAlarmTracker, ThresholdAlarmTracker
from flows.config import PipelineConfig
from flows.kernels.series import SeriesBucketLogic
from flows.series import series_processor
from schemas.config import AnomalyConfig, ThresholdAlarmRule
from schemas.models import Alarm, AlarmAction, DeadLetter, RawMessage, Reading, to_json

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def reading(second: float, value: float) -> Reading:
    return Reading(device="press-1", metric="temperature", ts=at(second), value=value)


def tracker(manual_clear: bool = False) -> ThresholdAlarmTracker:
    rule = ThresholdAlarmRule(
        name="hot",
        metric="temperature",
        levels={"warning": 80.0, "critical": 95.0},
        manual_clear=manual_clear,
    )
    return ThresholdAlarmTracker(rule, "default", "press-1", "temperature")


def api_action(row: Alarm, action: str, by: str = "alice", second: float = 1000.0) -> Alarm:
    """What the API stores and publishes for an action on the alarm row ``row``."""
    now = at(second)
    if action == "acknowledge":
        return dataclasses.replace(
            row,
            state="acknowledged",
            transition="acknowledged",
            acknowledged_at=now,
            acknowledged_by=by,
            cleared_at=None,
            seq=row.seq + 1,
            ts=now,
        )
    return dataclasses.replace(
        row,
        state="cleared",
        transition="cleared",
        cleared_at=now,
        message=f"cleared manually by {by}",
        seq=row.seq + 1,
        ts=now,
    )


def summary(alarms: list[Alarm]) -> list[tuple[str, str, str, int]]:
    return [(a.transition, a.state, a.severity, a.seq) for a in alarms]


def test_acknowledgement_followed_then_flow_numbers_after_it() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 85.0))
    ack = api_action(raised, "acknowledge")
    assert t.follow(ack) == []  # nothing to emit: the API already stored it
    assert t.update(reading(2, 82.0)) == []  # still warning: no change
    (escalated,) = t.update(reading(3, 96.0))
    assert summary([escalated]) == [("escalated", "raised", "critical", 3)]
    assert escalated.acknowledged_by is None  # a worse condition needs a fresh acknowledgement


def test_deescalation_after_an_acknowledgement_stays_acknowledged() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 96.0))
    t.follow(api_action(raised, "acknowledge"))
    (down,) = t.update(reading(1, 85.0))
    assert summary([down]) == [("deescalated", "acknowledged", "warning", 3)]
    assert down.acknowledged_by == "alice"
    (cleared,) = t.update(reading(2, 70.0))
    assert summary([cleared]) == [("cleared", "cleared", "warning", 4)]


def test_manual_clear_followed_resets_the_tracker_and_latches() -> None:
    t = tracker(manual_clear=True)
    (raised,) = t.update(reading(0, 85.0))
    clear = api_action(raised, "clear")
    assert t.follow(clear) == []
    assert not t.active
    assert t.update(reading(1, 86.0)) == []  # same level: latched, not raised again
    (again,) = t.update(reading(2, 97.0))  # a higher level is a new alarm
    assert again.transition == "raised" and again.seq == 1 and again.id != raised.id


def test_collision_with_an_escalation_restates_the_escalation() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 85.0))
    ack = api_action(raised, "acknowledge")  # the API read seq 1 ...
    (escalated,) = t.update(reading(1, 96.0))  # ... while the flow escalated (seq 2 too)
    assert escalated.seq == ack.seq == 2
    (restated,) = t.follow(ack)
    # The acknowledgement was of a warning: the critical alarm stays unacknowledged.
    assert summary([restated]) == [("escalated", "raised", "critical", 3)]
    (cleared,) = t.update(reading(2, 70.0))
    assert cleared.seq == 4


def test_collision_with_a_deescalation_merges_the_acknowledgement() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 96.0))
    ack = api_action(raised, "acknowledge")
    (down,) = t.update(reading(1, 85.0))
    assert down.seq == ack.seq == 2
    (restated,) = t.follow(ack)
    assert summary([restated]) == [("acknowledged", "acknowledged", "warning", 3)]
    assert restated.acknowledged_by == "alice"


def test_collision_with_the_flows_clear_restates_the_clear() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 85.0))
    ack = api_action(raised, "acknowledge")
    (cleared,) = t.update(reading(1, 70.0))
    assert cleared.seq == ack.seq == 2
    (restated,) = t.follow(ack)
    assert summary([restated]) == [("cleared", "cleared", "warning", 3)]
    assert restated.id == raised.id
    assert t.follow(ack) == []  # the same action again (a replay) changes nothing more
    assert t.follow(restated) == []


def test_manual_clear_colliding_with_an_escalation_clears() -> None:
    t = tracker(manual_clear=True)
    (raised,) = t.update(reading(0, 85.0))
    clear = api_action(raised, "clear")
    t.update(reading(1, 96.0))  # escalated, seq 2 = the clear's seq
    (restated,) = t.follow(clear)
    assert summary([restated]) == [("cleared", "cleared", "critical", 3)]
    assert not t.active
    assert t.update(reading(2, 96.5)) == []  # latched at the level the operator cleared


def test_actions_for_other_alarms_and_duplicates_change_nothing() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 85.0))
    other = dataclasses.replace(api_action(raised, "acknowledge"), id="someone-else")
    assert t.follow(other) == []
    ack = api_action(raised, "acknowledge")
    assert t.follow(ack) == []
    assert t.follow(ack) == []  # delivered twice
    (cleared,) = t.update(reading(1, 70.0))
    assert cleared.seq == 3
    assert cleared.acknowledged_by == "alice"


def test_anomaly_alarm_follows_a_clear() -> None:
    t = AnomalyAlarmTracker(AnomalyConfig(hold=2), "default", "press-1", "temperature")
    t.update(at(0), 1.0, 0.95)
    (raised,) = t.update(at(1), 1.0, 0.95)
    assert t.follow(api_action(raised, "clear")) == []
    assert not t.active
    t.update(at(2), 1.0, 0.95)  # the hold count starts again after a clear
    (again,) = t.update(at(3), 1.0, 0.95)
    assert again.id != raised.id and again.seq == 1


def test_followed_state_survives_a_snapshot() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 96.0))
    t.follow(api_action(raised, "acknowledge"))
    resumed = pickle.loads(pickle.dumps(t))
    (down,) = resumed.update(reading(1, 85.0))
    assert summary([down]) == [("deescalated", "acknowledged", "warning", 3)]
    idle = pickle.loads(pickle.dumps(tracker()))
    assert idle.update(reading(0, 70.0)) == []


def test_series_step_routes_actions_to_the_alarms_tracker() -> None:
    config = PipelineConfig(
        alarms=[{"name": "hot", "metric": "temperature", "levels": {"warning": 80.0}}]
    )
    logic = SeriesBucketLogic(series_processor(config), None)
    out, _ = logic.on_batch([[reading(0, 85.0)]])
    (raised,) = [r for k, r in flatten_outputs(out) if k == "alarm"]
    ack = api_action(raised, "acknowledge")
    stray = dataclasses.replace(ack, device="unknown-device")
    logic.on_batch([[AlarmAction(ack), AlarmAction(stray)]])
    out, _ = logic.on_batch([[reading(1, 70.0)]])
    (cleared,) = [r for k, r in flatten_outputs(out) if k == "alarm"]
    assert (cleared.transition, cleared.seq, cleared.acknowledged_by) == ("cleared", 3, "alice")


def test_action_messages_parse_or_become_dead_letters() -> None:
    t = tracker()
    (raised,) = t.update(reading(0, 85.0))
    ack = api_action(raised, "acknowledge")

    def raw(payload: bytes) -> RawMessage:
        return RawMessage(payload, "kafka", at(5), "streamforge.alarm_actions/0/7")

    assert parse_action(raw(to_json(ack))) == AlarmAction(ack)
    bad: Any = parse_action(raw(b'{"id": 1}'))
    assert isinstance(bad, DeadLetter) and bad.step == "alarm_actions"
    assert bad.reason.startswith("not an alarm record")
    not_action: Any = parse_action(raw(to_json(raised)))
    assert isinstance(not_action, DeadLetter) and "not an operator action" in not_action.reason


def test_flows_follow_actions_when_they_write_to_kafka() -> None:
    assert not PipelineConfig().follows_operator_actions()  # stdout only
    assert PipelineConfig(sinks=[{"type": "kafka"}]).follows_operator_actions()
    off = PipelineConfig(sinks=[{"type": "kafka"}], operator_actions={"enabled": False})
    assert not off.follows_operator_actions()
    # A finite flow (a replay, a benchmark) must end: the actions topic never does.
    replay = [{"type": "kafka", "stop_at_end": True}]
    assert not PipelineConfig(sources=replay, sinks=[{"type": "kafka"}]).follows_operator_actions()
    with pytest.raises(ValidationError, match="runs continuously"):
        PipelineConfig(sources=replay, operator_actions={"enabled": True})
