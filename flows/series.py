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
from typing import Any, cast

from connectors.runtime.metrics import counter
from flows.alarms import AnomalyAlarmTracker, DeviceAlarmTracker, ThresholdAlarmTracker
from flows.anomaly import build_detector
from flows.classify import Classifier, to_log_record
from flows.config import PipelineConfig
from flows.events import EventDetector
from flows.kernels.rollups import RollupState
from flows.kernels.series import (
    OutputChunks,
    SeriesBucketLogic,
    SeriesProcessor,
    SeriesState,
    end_series,
    flush_rollups,
    not_admitted,
)
from schemas.devices import DeviceInfo, DeviceRegistry
from schemas.models import DeadLetter, Reading, RecordKind, is_number

RECONCILED = counter(
    "streamforge_series_reconciled_total",
    "Changes made to existing series' state to follow a changed config or registry entry, by "
    "change (kind, rule_added, rule_removed, detector, anomaly_off, rollup_tiers, rollups_on, "
    "rollups_off)",
)


class SeriesStart:
    """Builds the state of a series from the first reading it sends.

    With a device registry (:class:`schemas.devices.DeviceRegistry`), a
    reading of a device it does not admit gets a dead letter instead of a
    state, and rules select devices by their registry entry too.
    """

    def __init__(self, config: PipelineConfig, registry: DeviceRegistry | None = None) -> None:
        self.config = config
        self.registry = registry
        self.classifier = Classifier(config.classification)
        self.tiers = config.rollups.window_seconds()
        self.rule_order = {rule.name: i for i, rule in enumerate(config.alarms)}

    def _info(self, tenant: str, device: str) -> DeviceInfo | None:
        registry = self.registry
        return None if registry is None else registry.lookup(tenant, device)

    def _kind(self, reading: Reading, info: DeviceInfo | None) -> tuple[RecordKind, bool]:
        """The kind of the series (and whether it was inferred from the value)."""
        kind = self.classifier.resolve(reading.device, reading.metric, info)
        if kind is None:
            return ("telemetry" if is_number(reading.value) else "event"), True
        return kind, False

    def _rollups(self) -> RollupState:
        rc = self.config.rollups
        return RollupState(self.tiers, rc.watermark_delay, rc.allowed_lateness)

    def __call__(self, first: Reading) -> SeriesState | DeadLetter:
        """The state of the series ``first`` belongs to, as the config says."""
        t, d, m = first.tenant, first.device, first.metric
        info = None
        registry = self.registry
        if registry is not None:
            why = registry.admits(t, d)
            if why is not None:
                return not_admitted(first, why)
            info = registry.lookup(t, d)
        kind, inferred = self._kind(first, info)
        state = SeriesState(kind)
        state.text = inferred and kind == "event"
        config = self.config
        state.run_signal = m == config.alarm_management.running_metric
        if kind == "telemetry":
            state.threshold_alarms = [
                ThresholdAlarmTracker(rule, t, d, m)
                for rule in config.alarms
                if rule.matches(d, m, info)
            ]
            if config.rollups.enabled:
                state.rollups = self._rollups()
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

    def reconcile(self, state: SeriesState, last: Reading, out: OutputChunks) -> SeriesState:
        """Bring the state of a series in line with this config and the device registry.

        Called for every series of a flow resumed from a snapshot (perhaps
        under a changed config), and for the series of a device whose
        registry entry changed. The series keeps its state (its alarms,
        windows, detector); what the config says of it is applied here, its
        transitions added to ``out``:

        - Kind: a series the classification now gives another kind ends
          (windows emitted, alarms cleared with the reason) and starts afresh
          as that kind, from its last reading.
        - Threshold rules: a changed rule takes effect on the existing tracker
          and the series' last reading is judged again (an active alarm
          clears, escalates or de-escalates through its lifecycle); a removed
          rule's alarm clears with the reason; a new rule starts (and may
          raise on the last reading).
        - Anomaly detection: a changed detector type starts a fresh detector
          for the series; the alarm settings change in place; turned off, its
          alarm clears.
        - Rollups: a changed set of tiers keeps the windows of the tiers that
          remain (:meth:`flows.kernels.rollups.RollupState.retier`); turned
          on, windows start; turned off, open windows are emitted and dropped.

        With the same config nothing changes and nothing is emitted, so a
        restart after a crash replays exactly.

        >>> from datetime import UTC, datetime
        >>> from flows.kernels.series import OutputChunks
        >>> at = datetime(2026, 1, 1, tzinfo=UTC)
        >>> hot = {"name": "hot", "metric": "temp", "levels": {"major": 90}}
        >>> old = SeriesStart(PipelineConfig(alarms=[hot]))
        >>> reading = Reading(device="press-1", metric="temp", ts=at, value=95.0)
        >>> state = old(reading)
        >>> [a.transition for a in state.threshold_alarms[0].update(reading)]
        ['raised']
        >>> hotter = {**hot, "levels": {"major": 99}}
        >>> out = OutputChunks()
        >>> state = SeriesStart(PipelineConfig(alarms=[hotter])).reconcile(state, reading, out)
        >>> [(a.transition, a.message) for a in out.alarm]
        [('cleared', 'cleared: temp 95.0 < 99.0 (major)')]
        """
        t, d, m = last.tenant, last.device, last.metric
        info = self._info(t, d)
        config = self.config
        kind, inferred = self._kind(last, info)
        if inferred and (state.kind == "telemetry" or state.text):
            # No rule decides and none did: the kind the first value's type gave stays.
            kind = cast(RecordKind, state.kind)
        if kind != state.kind:
            fresh = self(last)
            if type(fresh) is DeadLetter:  # not admitted: follow_registry drops it
                return state
            assert isinstance(fresh, SeriesState)
            reason = f"the series is now classified as {kind}, no longer {state.kind}"
            end_series(state, out, last, reason)
            fresh.device = state.device
            RECONCILED.inc(change="kind")
            return fresh
        if state.kind != "telemetry":
            return state
        rules = {rule.name: rule for rule in config.alarms if rule.matches(d, m, info)}
        kept: list[ThresholdAlarmTracker] = []
        for tracker in state.threshold_alarms:
            rule = rules.pop(tracker.rule, None)
            if rule is None:
                if tracker.rule in self.rule_order:  # configured, but not for this device now
                    why = f"rule {tracker.rule!r} no longer applies to device {d!r}"
                else:
                    why = f"rule {tracker.rule!r} is no longer configured"
                out.alarm += tracker.retire(last, why)
                RECONCILED.inc(change="rule_removed")
            else:
                out.alarm += tracker.reconfigure(rule, last)
                kept.append(tracker)
        for rule in rules.values():  # rules new to this series
            tracker = ThresholdAlarmTracker(rule, t, d, m)
            out.alarm += tracker.update(last)
            kept.append(tracker)
            RECONCILED.inc(change="rule_added")
        order = self.rule_order
        kept.sort(key=lambda tr: order[tr.rule])
        state.threshold_alarms = kept
        if config.anomaly.enabled:
            wanted = config.anomaly.detector.type
            if state.detector is None or getattr(state.detector, "name", None) != wanted:
                state.detector = build_detector(config.anomaly.detector)
                RECONCILED.inc(change="detector")
            if state.anomaly_alarm is None:
                state.anomaly_alarm = AnomalyAlarmTracker(config.anomaly, t, d, m)
            else:
                state.anomaly_alarm.reconfigure(config.anomaly)
        elif state.anomaly_alarm is not None:
            out.alarm += state.anomaly_alarm.retire(last, "anomaly detection is turned off")
            state.detector = state.anomaly_alarm = None
            RECONCILED.inc(change="anomaly_off")
        rc = config.rollups
        if rc.enabled and state.rollups is None:
            state.rollups = self._rollups()
            RECONCILED.inc(change="rollups_on")
        elif rc.enabled and state.rollups is not None:
            delay, lateness = rc.watermark_delay, rc.allowed_lateness
            retiered = state.rollups.retier(self.tiers, delay, lateness)
            if retiered is not state.rollups:
                state.rollups = retiered
                RECONCILED.inc(change="rollup_tiers")
        elif state.rollups is not None:  # turned off
            flush_rollups(state.rollups, out, last)
            state.rollups = None
            RECONCILED.inc(change="rollups_off")
        state.run_signal = m == config.alarm_management.running_metric
        return state


def series_processor(
    config: PipelineConfig, registry: DeviceRegistry | None = None
) -> SeriesProcessor:
    """The compiled series processor, with the series states this config asks for."""
    start = SeriesStart(config, registry)
    processor = SeriesProcessor(config, start, to_log_record)
    processor.reconcile = start.reconcile
    processor.registry = registry
    return processor


def series_logic_builder(
    config: PipelineConfig, registry: DeviceRegistry | None = None
) -> Callable[[Any | None], SeriesBucketLogic]:
    """The ``stateful_batch`` builder: one :class:`SeriesBucketLogic` per bucket key."""
    processor = series_processor(config, registry)

    def build(resume: Any | None) -> SeriesBucketLogic:
        return SeriesBucketLogic(processor, resume)

    return build
