"""Alarm management (ISA-18.2 / EEMUA 191): suppression, shelving, chattering, floods, priorities.

Pure logic: the trackers and the series processor driven directly, no services.
"""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

from flows.alarm_flood import FloodTracker
from flows.alarm_lifecycle import AlarmLifecycle
from flows.alarms import AnomalyAlarmTracker, ThresholdAlarmTracker
from flows.config import PipelineConfig
from flows.kernels.series import DeviceContext, OutputChunks, SeriesState
from flows.series import series_processor
from schemas.config import AnomalyConfig, FloodConfig, ThresholdAlarmRule
from schemas.models import Alarm, AlarmAction, Reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def hot(**kw: Any) -> ThresholdAlarmRule:
    kw.setdefault("name", "hot")
    kw.setdefault("metric", "temp")
    kw.setdefault("levels", {"warning": 80.0})
    kw.setdefault("clear_at", 75.0)
    return ThresholdAlarmRule(**kw)


def feed(tracker: ThresholdAlarmTracker, values: list[tuple[float, float]]) -> list[Alarm]:
    out: list[Alarm] = []
    for second, value in values:
        out.extend(tracker.update(Reading(device="m-1", metric="temp", ts=at(second), value=value)))
    return out


def steps(alarms: list[Alarm]) -> list[tuple[str, str]]:
    return [(a.transition, a.state) for a in alarms]


# --- priorities ------------------------------------------------------------------


def test_every_record_carries_its_rule_priority() -> None:
    tracker = ThresholdAlarmTracker(hot(priority="high"), "default", "m-1", "temp")
    (raised,) = feed(tracker, [(0, 85)])
    assert raised.priority == "high"
    anomaly = AnomalyAlarmTracker(AnomalyConfig(), "default", "m-1", "temp")
    (record,) = anomaly.update(at(0), 9.0, 0.999)
    assert record.priority == "low"  # the anomaly default: a hint, not an emergency


# --- chattering -------------------------------------------------------------------


def test_a_chattering_alarm_is_one_alarm_until_the_condition_stays_clear() -> None:
    tracker = ThresholdAlarmTracker(
        hot(chatter={"raises": 3, "window": 60}), "default", "m-1", "temp"
    )
    # Two ordinary raise/clear cycles, then the third raise within 60 s: chattering.
    first = feed(tracker, [(0, 85), (5, 70), (10, 85), (15, 70)])
    assert steps(first) == [("raised", "raised"), ("cleared", "cleared")] * 2
    chatter = feed(tracker, [(20, 85), (25, 70), (30, 85), (35, 70), (40, 85), (45, 70)])
    assert steps(chatter) == [("raised", "raised")]  # the later cycles continue it
    assert chatter[0].chattering and chatter[0].message.startswith("chattering (3 raises")
    assert tracker.active
    # Clear for less than the window: still held; for the window: cleared once.
    assert feed(tracker, [(90, 70)]) == []
    (cleared,) = feed(tracker, [(106, 70)])
    assert (cleared.transition, cleared.id, cleared.chattering) == (
        "cleared",
        chatter[0].id,
        True,
    )
    assert not tracker.active


def test_without_chatter_handling_every_cycle_is_an_alarm() -> None:
    tracker = ThresholdAlarmTracker(hot(chatter=None), "default", "m-1", "temp")
    out = feed(tracker, [(s * 5, 85 if s % 2 == 0 else 70) for s in range(8)])
    assert [a.transition for a in out].count("raised") == 4


# --- shelving ---------------------------------------------------------------------


def action(record: Alarm, transition: str, **changes: Any) -> Alarm:
    """The record the API stores for an operator's action (seq + 1)."""
    return dataclasses.replace(
        record, transition=transition, seq=record.seq + 1, ts=record.ts, **changes
    )


def test_a_shelved_alarm_stays_quiet_and_comes_back_if_still_active() -> None:
    tracker = ThresholdAlarmTracker(hot(levels={"warning": 80, "critical": 95}), "default",
                                    "m-1", "temp")  # fmt: skip
    (raised,) = feed(tracker, [(0, 85)])
    shelve = action(raised, "shelved", state="shelved", shelved_until=at(600))
    assert tracker.follow(shelve) == []
    # Escalation while shelved: no record (the operator asked for quiet).
    assert feed(tracker, [(10, 97), (20, 86), (300, 90)]) == []
    # The shelve expires with the condition still there: it comes back.
    (back,) = feed(tracker, [(600, 88)])
    assert (back.transition, back.state, back.id, back.seq) == (
        "unshelved",
        "raised",
        raised.id,
        3,
    )
    (cleared,) = feed(tracker, [(610, 70)])
    assert cleared.transition == "cleared" and cleared.seq == 4


def test_a_point_shelved_keeps_new_raises_quiet_until_the_shelve_ends() -> None:
    tracker = ThresholdAlarmTracker(hot(chatter=None), "default", "m-1", "temp")
    (raised,) = feed(tracker, [(0, 85)])
    tracker.follow(action(raised, "shelved", state="shelved", shelved_until=at(300)))
    (cleared,) = feed(tracker, [(10, 70)])  # clears while shelved: recorded
    assert cleared.transition == "cleared"
    # A new raise while the point is shelved: kept silent; gone before the end: nothing.
    assert feed(tracker, [(20, 85), (30, 70)]) == []
    # Another, still active when the shelve ends: announced then, as a raise.
    assert feed(tracker, [(40, 85)]) == []
    (announced,) = feed(tracker, [(300, 86)])
    assert (announced.transition, announced.seq, announced.raised_at) == ("raised", 1, at(40))
    # After the shelve, raises are as usual.
    feed(tracker, [(310, 70)])
    assert steps(feed(tracker, [(320, 85)])) == [("raised", "raised")]


def test_unshelve_by_an_operator_ends_the_quiet_at_once() -> None:
    tracker = ThresholdAlarmTracker(hot(), "default", "m-1", "temp")
    (raised,) = feed(tracker, [(0, 85)])
    shelve = action(raised, "shelved", state="shelved", shelved_until=at(600))
    tracker.follow(shelve)
    tracker.follow(action(shelve, "unshelved", state="raised", shelved_until=None))
    (cleared,) = feed(tracker, [(10, 70)])
    assert (cleared.seq, cleared.state) == (4, "cleared")


def test_shelving_survives_a_snapshot() -> None:
    tracker = ThresholdAlarmTracker(hot(), "default", "m-1", "temp")
    (raised,) = feed(tracker, [(0, 85)])
    tracker.follow(action(raised, "shelved", state="shelved", shelved_until=at(600)))
    restored = pickle.loads(pickle.dumps(tracker))
    assert feed(restored, [(10, 90)]) == []
    assert steps(feed(restored, [(600, 90)])) == [("unshelved", "raised")]


def test_a_snapshot_of_the_previous_version_still_loads() -> None:
    """The lifecycle's pickle before alarm management: identity, last, followed (+ alarm)."""
    life = AlarmLifecycle("default", "m-1", "temp", "hot", "threshold")
    (raised,) = life.raise_(at(0), "warning", 85.0, 80.0, "hot")
    old_active = (*life.__getstate__()[:7], *life.__getstate__()[8:-1])
    restored = AlarmLifecycle.__new__(AlarmLifecycle)
    restored.__setstate__(old_active)
    assert (restored.id, restored.seq, restored.priority, restored.shelved_until) == (
        raised.id,
        1,
        "medium",
        None,
    )
    (cleared,) = restored.clear(at(5), 70.0, 75.0, "cleared")
    assert cleared.seq == 2
    old_idle = AlarmLifecycle("default", "m-1", "temp", "hot", "threshold").__getstate__()[:7]
    idle = AlarmLifecycle.__new__(AlarmLifecycle)
    idle.__setstate__(old_idle)
    assert not idle.active and idle.raise_times == []


# --- state-based suppression ------------------------------------------------------


def test_device_context_knows_stopped_and_starting() -> None:
    ctx = DeviceContext()
    rule = (True, 60.0, False)
    assert not ctx.suppressed(rule, 0.0)  # no run state yet: nothing to say
    ctx.run("running", 0.0)  # first seen running: no known start
    assert not ctx.suppressed(rule, 1.0)
    ctx.run(False, 10.0)
    assert ctx.suppressed(rule, 11.0)
    ctx.run(1, 20.0)
    assert ctx.suppressed(rule, 79.0) and not ctx.suppressed(rule, 80.0)
    ctx.active.add("other")
    assert ctx.suppressed((False, 0.0, True), 100.0)


def machine(config: PipelineConfig) -> Any:
    """A processor and the readings it made, driven one reading at a time."""
    processor = series_processor(config)
    series: dict[str, list[Any]] = {}
    devices: dict[str, DeviceContext] = {}

    def send(second: float, metric: str, value: Any) -> OutputChunks:
        out = OutputChunks()
        reading = Reading(device="m-1", metric=metric, ts=at(second), value=value)
        processor.process_batch([[reading]], series, {}, 0.0, out, devices)
        return out

    return send, series


def test_a_machine_start_raises_no_anomaly_alarm_and_teaches_nothing() -> None:
    config = PipelineConfig(alarms=[])  # the default anomaly suppression: stop, start, others
    send, series = machine(config)
    # Running for a while at ~50 kW, learning its normal.
    send(0, "state.running", True)
    for s in range(1, 400):
        send(s, "power", 50.0 + (s % 7) * 0.1)
    detector = series["default/m-1/power"][0].detector
    learned = pickle.dumps(detector)
    # It stops: power drops to 0; then starts: a transient to 80 kW, then ~50.
    send(400, "state.running", False)
    alarms = []
    for s in range(401, 460):
        out = send(s, "power", 0.0)
        alarms += out.alarm
        assert out.telemetry[0].score is not None  # still scored, for the charts
    assert pickle.dumps(detector) == learned  # ...but nothing learned from the stop
    send(460, "state.running", True)
    for s in range(461, 500):
        alarms += send(s, "power", 80.0 - (s - 461)).alarm
    assert alarms == []  # no anomaly alarm for a normal stop and start


def test_an_anomaly_alarm_is_not_raised_while_another_alarm_of_the_device_is_active() -> None:
    config = PipelineConfig(alarms=[hot()])
    send, _series = machine(config)
    for s in range(300):
        send(s, "vibration", 1.0 + (s % 5) * 0.01)
    (raised,) = send(300, "temp", 85.0).alarm
    assert raised.rule == "hot"
    assert send(301, "vibration", 50.0).alarm == []  # the device is already in alarm
    send(302, "temp", 70.0)  # the threshold alarm clears
    assert [a.rule for a in send(303, "vibration", 60.0).alarm] == ["anomaly"]


def test_a_threshold_rule_can_be_suppressed_while_the_device_is_stopped() -> None:
    rule = hot(suppression={"while_stopped": True, "after_start": "30s"})
    send, _series = machine(PipelineConfig(alarms=[rule]))
    send(0, "state.running", "off")
    assert send(1, "temp", 90.0).alarm == []  # stopped: cold start readings, no alarm
    send(2, "state.running", "on")
    assert send(10, "temp", 90.0).alarm == []  # starting
    assert [a.transition for a in send(40, "temp", 90.0).alarm] == ["raised"]


def test_operator_clear_leaves_the_device_context() -> None:
    send, series = machine(PipelineConfig(alarms=[hot(manual_clear=True)]))
    (raised,) = send(0, "temp", 85.0).alarm
    state: SeriesState = series["default/m-1/temp"][0]
    assert state.device is not None and state.device.active == {raised.id}
    processor = series_processor(PipelineConfig(alarms=[hot(manual_clear=True)]))
    clear = action(raised, "cleared", state="cleared")
    processor.process_batch([[AlarmAction(clear)]], series, {}, 0.0, OutputChunks(), {})
    assert state.device.active == set()


# --- floods -----------------------------------------------------------------------


def raises(n: int, priority: str = "low", start: float = 0.0) -> list[Alarm]:
    out = []
    for i in range(n):
        life = AlarmLifecycle("default", f"m-{i}", "temp", "hot", "threshold", priority)  # type: ignore[arg-type]
        out += life.raise_(at(start + i), "warning", 90.0, 80.0, "hot")
    return out


def test_a_flood_is_one_alarm_and_holds_lower_priorities_back() -> None:
    flood = FloodTracker("default", "plant", FloodConfig(raises=10, end_at=5, window=600))
    passed = flood.update(raises(10))
    assert len(passed) == 10 and not flood.flooding
    urgent = raises(1, "high", start=20)
    out = flood.update(raises(5, start=10) + urgent)
    assert [a.kind for a in out] == ["flood", "threshold"]  # the flood, then the high one
    assert out[0].message.startswith("alarm flood in plant: more than 10 alarms raised in the")
    assert out[0].raised_at == T0  # the start of its 10-minute bucket: the same id in any order
    assert out[1].priority == "high"
    assert len(flood.held) == 5


def test_a_flood_ends_with_a_summary_and_releases_what_is_still_active() -> None:
    flood = FloodTracker("default", "plant", FloodConfig(raises=3, end_at=1, window=60))
    flood.update(raises(3))
    held = raises(3, start=5)
    out = flood.update(held)
    assert [a.kind for a in out] == ["flood"]
    # One held alarm clears during the flood: passed on then, raise and clear together.
    life_clear = dataclasses.replace(held[0], transition="cleared", state="cleared", seq=2,
                                     ts=at(30))  # fmt: skip
    assert flood.update([life_clear]) == [held[0], life_clear]
    assert flood.tick(at(119).timestamp()) == []  # the next minute is not over
    end = flood.tick(at(200).timestamp())
    assert [(a.kind, a.transition) for a in end] == [
        ("threshold", "raised"),
        ("threshold", "raised"),
        ("flood", "cleared"),
    ]
    assert end[:2] == held[1:]
    assert end[-1].ts == at(120)  # the end of the first quiet minute
    assert "2 still active (released now), 1 came and went" in end[-1].message
    assert not flood.flooding and flood.held == {}


def test_a_flood_is_the_same_whatever_order_its_raises_arrive_in() -> None:
    config = FloodConfig(raises=3, end_at=1, window=60)
    alarms = raises(6)
    outs = []
    for order in (alarms, alarms[::-1], alarms[3:] + alarms[:3]):
        flood = FloodTracker("default", "plant", config)
        out = flood.update(order) + flood.tick(at(200).timestamp())
        outs.append(out)
    floods = [[a for a in out if a.kind == "flood"] for out in outs]
    assert floods[0] == floods[1] == floods[2] and len(floods[0]) == 2
    assert [sorted(a.id for a in out) for out in outs] == [sorted(a.id for a in outs[0])] * 3


def test_a_flood_tracker_pickles_mid_flood() -> None:
    flood = FloodTracker("default", "plant", FloodConfig(raises=3, end_at=1, window=60))
    flood.update(raises(5))
    restored = pickle.loads(pickle.dumps(flood))
    assert restored.flooding and len(restored.held) == 2  # the 4th and 5th raises
    assert [a.kind for a in restored.tick(at(120).timestamp())][-1] == "flood"


def test_a_stop_reported_after_the_values_of_its_instant_raises_nothing() -> None:
    send, _series = machine(PipelineConfig(alarms=[]))
    send(0, "state.running", True)
    for s in range(1, 400):
        send(s, "power", 50.0 + (s % 7) * 0.1)
    # The values of the stop's instant come first (as the simulator sends them).
    held = send(400, "power", 0.0).alarm
    assert held == []  # a raise, if any, waits for the series' next value
    send(400, "state.running", False)
    alarms = [a for s in range(401, 420) for a in send(s, "power", 0.0).alarm]
    assert alarms == []


def test_a_spike_on_a_running_machine_is_raised_one_value_late() -> None:
    send, _series = machine(PipelineConfig(alarms=[]))
    send(0, "state.running", True)
    for s in range(1, 400):
        send(s, "power", 50.0 + (s % 7) * 0.1)
    assert send(400, "power", 500.0).alarm == []
    (raised,) = send(401, "power", 50.2).alarm
    assert (raised.rule, raised.transition, raised.raised_at) == ("anomaly", "raised", at(400))


def test_alarm_transitions_are_counted_for_the_kpi_metrics() -> None:
    from flows.kernels.series import ALARM_TRANSITIONS, SeriesBucketLogic

    labels = {"kind": "threshold", "transition": "raised", "priority": "high"}
    before = ALARM_TRANSITIONS.value(**labels)
    logic = SeriesBucketLogic(series_processor(PipelineConfig(alarms=[hot(priority="high")])), None)
    logic.on_batch([[Reading(device="m-1", metric="temp", ts=at(0), value=85.0)]])
    assert ALARM_TRANSITIONS.value(**labels) - before == 1


# --- duplicates: an anomaly alarm for the excursion a threshold alarm annunciates --------


def steady(send: Any, until: int, base: float = 60.0) -> None:
    for s in range(until):
        send(s, "temp", base + (s % 5) * 0.1)


def test_an_anomaly_raise_followed_by_the_series_threshold_alarm_is_a_duplicate() -> None:
    from flows.kernels.series import ANOMALY_DUPLICATES

    before = ANOMALY_DUPLICATES.value()
    send, _series = machine(PipelineConfig(alarms=[hot()]))
    steady(send, 400)
    alarms = []
    for i, value in enumerate([66.0, 71.0, 76.0, 81.0, 84.0, 84.5, 84.2]):  # a ramp, then hot
        alarms += send(400 + i, "temp", value).alarm
    for s in range(407, 520):
        alarms += send(s, "temp", 84.0 + (s % 3) * 0.1).alarm
    assert [(a.rule, a.transition) for a in alarms] == [("hot", "raised")]
    assert ANOMALY_DUPLICATES.value() - before == 1


def test_an_anomaly_raise_shortly_after_the_series_threshold_alarm_cleared_is_a_duplicate() -> None:
    send, _series = machine(PipelineConfig(alarms=[hot()]))
    steady(send, 400)
    assert [a.rule for a in send(400, "temp", 85.0).alarm] == ["hot"]
    assert [a.transition for a in send(401, "temp", 74.0).alarm] == ["cleared"]
    alarms = [a for s in range(402, 520) for a in send(s, "temp", 40.0 + (s % 3) * 0.1).alarm]
    assert alarms == []  # the drop after the excursion: the same condition


def test_an_anomaly_no_threshold_alarm_comes_near_is_passed_on_after_the_window() -> None:
    send, _series = machine(PipelineConfig(alarms=[hot()], anomaly={"duplicate_window": "30s"}))
    steady(send, 400)
    assert send(400, "temp", 70.0).alarm == []  # a jump, well below the threshold: held
    held = [a for s in range(401, 430) for a in send(s, "temp", 60.0 + (s % 5) * 0.1).alarm]
    assert held == []
    alarms = send(430, "temp", 60.2).alarm
    assert [(a.rule, a.transition, a.raised_at) for a in alarms][:1] == [
        ("anomaly", "raised", at(400))
    ]
    assert [a.transition for a in alarms] == ["raised", "cleared"]  # it came and went


def test_series_without_threshold_rules_or_without_a_window_are_not_held() -> None:
    for config in (
        PipelineConfig(alarms=[]),
        PipelineConfig(alarms=[hot()], anomaly={"duplicate_window": 0}),
    ):
        send, _series = machine(config)
        steady(send, 400)
        assert [a.rule for a in send(400, "temp", 70.0).alarm] == ["anomaly"]
