"""The series step assembled: what each new series keeps, and the Bytewax step that runs it.

The loop over readings is the compiled kernel :mod:`flows.kernels.series`;
this module decides, from the pipeline config, what the state of a series
holds when it first speaks: its kind (classification rules, else numbers
are telemetry and the rest events), the threshold alarm trackers of the
rules that watch it, its rollup windows, its anomaly detector and alarm
tracker, an event detector, or a device alarm tracker.

>>> from datetime import UTC, datetime
>>> from flows.config import PipelineConfig
>>> from schemas.models import Reading
>>> hot = {"name": "hot", "metric": "temp", "levels": {"major": 90}}
>>> start = SeriesStart(PipelineConfig(alarms=[hot]))
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> state = start(Reading(device="press-1", metric="temp", ts=at, value=20.0))
>>> state.kind, [t.rule for t in state.threshold_alarms], state.rollups is not None
('telemetry', ['hot'], True)
>>> start(Reading(device="press-1", metric="door", ts=at, value="open")).kind
'event'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flows.alarms import AnomalyAlarmTracker, DeviceAlarmTracker, ThresholdAlarmTracker
from flows.anomaly import build_detector
from flows.classify import Classifier, to_log_record
from flows.config import PipelineConfig
from flows.events import EventDetector
from flows.kernels.rollups import RollupState
from flows.kernels.series import SeriesBucketLogic, SeriesProcessor, SeriesState
from schemas.models import Alarm, Reading, is_number


class SeriesStart:
    """Builds the state of a series from the first reading it sends."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.classifier = Classifier(config.classification)
        self.tiers = config.rollups.window_seconds()
        self.rule_order = {rule.name: i for i, rule in enumerate(config.alarms)}

    def __call__(self, first: Reading) -> SeriesState:
        """The state of the series ``first`` belongs to, as the config says."""
        kind = self.classifier.resolve(first.device, first.metric)
        inferred = kind is None
        if kind is None:
            kind = "telemetry" if is_number(first.value) else "event"
        state = SeriesState(kind)
        state.text = inferred and kind == "event"
        config = self.config
        state.run_signal = first.metric == config.alarm_management.running_metric
        t, d, m = first.tenant, first.device, first.metric
        if kind == "telemetry":
            state.threshold_alarms = [
                ThresholdAlarmTracker(rule, t, d, m) for rule in config.alarms if rule.matches(d, m)
            ]
            if config.rollups.enabled:
                rc = config.rollups
                state.rollups = RollupState(self.tiers, rc.watermark_delay, rc.allowed_lateness)
            if config.anomaly.enabled:
                state.detector = build_detector(config.anomaly.detector)
                state.anomaly_alarm = AnomalyAlarmTracker(config.anomaly, t, d, m)
        elif kind == "event":
            state.events = EventDetector()
        elif kind == "alarm":
            state.device_alarm = DeviceAlarmTracker(
                t, d, m, config.alarm_management.device_alarm_priority
            )
        return state

    def reconcile(self, state: SeriesState, last: Reading) -> list[Alarm]:
        """Bring the state of a series resumed from a snapshot in line with this config.

        A flow restarted with a changed config keeps every series' state (its
        alarms, windows, detector); what the config says of it is applied
        here, once, at resume. Threshold rules: a changed rule takes effect on
        the existing tracker and the series' last reading is judged again (an
        active alarm clears, escalates or de-escalates through its
        lifecycle); a removed rule's alarm clears with the reason; a new rule
        starts (and may raise on the last reading). Anomaly detection: a
        changed detector type starts a fresh detector for the series; the
        alarm settings change in place; turned off, its alarm clears. Rollups
        turned on start windows. With the same config nothing changes and
        nothing is emitted, so a restart after a crash replays exactly.

        >>> from datetime import UTC, datetime
        >>> at = datetime(2026, 1, 1, tzinfo=UTC)
        >>> hot = {"name": "hot", "metric": "temp", "levels": {"major": 90}}
        >>> old = SeriesStart(PipelineConfig(alarms=[hot]))
        >>> reading = Reading(device="press-1", metric="temp", ts=at, value=95.0)
        >>> state = old(reading)
        >>> [a.transition for a in state.threshold_alarms[0].update(reading)]
        ['raised']
        >>> hotter = {**hot, "levels": {"major": 99}}
        >>> [(a.transition, a.message) for a in SeriesStart(PipelineConfig(alarms=[hotter]))
        ...  .reconcile(state, reading)]
        [('cleared', 'cleared: temp 95.0 < 99.0 (major)')]
        """
        if state.kind != "telemetry":
            return []
        config = self.config
        t, d, m = last.tenant, last.device, last.metric
        out: list[Alarm] = []
        rules = {rule.name: rule for rule in config.alarms if rule.matches(d, m)}
        kept: list[ThresholdAlarmTracker] = []
        for tracker in state.threshold_alarms:
            rule = rules.pop(tracker.rule, None)
            if rule is None:
                out += tracker.retire(last, f"rule {tracker.rule!r} is no longer configured")
            else:
                out += tracker.reconfigure(rule, last)
                kept.append(tracker)
        for rule in rules.values():  # rules new to this series
            tracker = ThresholdAlarmTracker(rule, t, d, m)
            out += tracker.update(last)
            kept.append(tracker)
        order = self.rule_order
        kept.sort(key=lambda tr: order[tr.rule])
        state.threshold_alarms = kept
        if config.anomaly.enabled:
            wanted = config.anomaly.detector.type
            if state.detector is None or getattr(state.detector, "name", None) != wanted:
                state.detector = build_detector(config.anomaly.detector)
            if state.anomaly_alarm is None:
                state.anomaly_alarm = AnomalyAlarmTracker(config.anomaly, t, d, m)
            else:
                state.anomaly_alarm.reconfigure(config.anomaly)
        elif state.anomaly_alarm is not None:
            out += state.anomaly_alarm.retire(last, "anomaly detection is turned off")
            state.detector = state.anomaly_alarm = None
        if config.rollups.enabled and state.rollups is None:
            rc = config.rollups
            state.rollups = RollupState(self.tiers, rc.watermark_delay, rc.allowed_lateness)
        state.run_signal = m == config.alarm_management.running_metric
        return out


def series_processor(config: PipelineConfig) -> SeriesProcessor:
    """The compiled series processor, with the series states this config asks for."""
    start = SeriesStart(config)
    processor = SeriesProcessor(config, start, to_log_record)
    processor.reconcile = start.reconcile
    return processor


def series_logic_builder(config: PipelineConfig) -> Callable[[Any | None], SeriesBucketLogic]:
    """The ``stateful_batch`` builder: one :class:`SeriesBucketLogic` per bucket key."""
    processor = series_processor(config)

    def build(resume: Any | None) -> SeriesBucketLogic:
        return SeriesBucketLogic(processor, resume)

    return build
