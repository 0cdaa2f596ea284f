"""The one keyed pass over each time series: classify, detect, alarm, roll up, score.

Everything StreamForge computes per (tenant, device, metric) happens in a
single Bytewax ``stateful_batch`` step keyed by :func:`schemas.models.series_key`,
so a reading is hashed, routed and looked up once however many things are
done with it. The step's state for one series is a :class:`SeriesState`:

- the series' kind (telemetry, event, alarm or log), resolved from the
  classification rules once, when the series first speaks;
- for events, the last state (:class:`flows.events.EventDetector`);
- for telemetry, the threshold alarm trackers of the rules that watch it,
  the rollup windows (:class:`flows.rollups.RollupState`), the anomaly
  detector and its alarm tracker;
- for device alarm bits, a :class:`flows.alarms.DeviceAlarmTracker`.

The whole state pickles, so Bytewax recovery resumes alarms, open windows
and detectors exactly where a crashed run left them.

Output: ``(kind, record)`` pairs (see :mod:`flows.outputs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bytewax.operators import StatefulBatchLogic

from flows.alarms import AnomalyAlarmTracker, DeviceAlarmTracker, ThresholdAlarmTracker
from flows.anomaly import build_detector
from flows.classify import Classifier, to_log_record
from flows.events import EventDetector
from flows.outputs import Output
from flows.rollups import RollupState
from schemas.config import PipelineConfig
from schemas.models import AnomalyScore, Reading, is_number


class SeriesState:
    """Everything kept for one time series. Small, and picklable for recovery."""

    __slots__ = (
        "anomaly_alarm",
        "detector",
        "device_alarm",
        "events",
        "kind",
        "rollups",
        "threshold_alarms",
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.events: EventDetector | None = None
        self.threshold_alarms: list[ThresholdAlarmTracker] = []
        self.rollups: RollupState | None = None
        self.detector: Any = None
        self.anomaly_alarm: AnomalyAlarmTracker | None = None
        self.device_alarm: DeviceAlarmTracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)


class SeriesProcessor:
    """Creates series states from the pipeline config and runs readings through them.

    Plain Python, usable without Bytewax (the unit tests drive it directly);
    :class:`SeriesLogic` adapts it to Bytewax's ``stateful_batch``.
    """

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.classifier = Classifier(config.classification)
        self.tiers = config.rollups.window_seconds()
        self.rollups_on = config.rollups.enabled
        self.anomaly_on = config.anomaly.enabled
        self.emit_scores = config.anomaly.emit_scores
        self.detector_name = config.anomaly.detector.type
        self.threshold = config.anomaly.threshold

    def new_state(self, first: Reading) -> SeriesState:
        """The state of a series, set up from the first reading it sends."""
        kind = self.classifier.resolve(first.device, first.metric)
        if kind is None:
            kind = "telemetry" if is_number(first.value) else "event"
        state = SeriesState(kind)
        t, d, m = first.tenant, first.device, first.metric
        if kind == "telemetry":
            state.threshold_alarms = [
                ThresholdAlarmTracker(rule, t, d, m)
                for rule in self.config.alarms
                if rule.matches(d, m)
            ]
            if self.rollups_on:
                rc = self.config.rollups
                state.rollups = RollupState(self.tiers, rc.watermark_delay, rc.allowed_lateness)
            if self.anomaly_on:
                state.detector = build_detector(self.config.anomaly.detector)
                state.anomaly_alarm = AnomalyAlarmTracker(self.config.anomaly, t, d, m)
        elif kind == "event":
            state.events = EventDetector()
        elif kind == "alarm":
            state.device_alarm = DeviceAlarmTracker(t, d, m)
        return state

    def process(self, state: SeriesState, reading: Reading, out: list[Output]) -> None:
        """Run one reading through its series' state, appending outputs to ``out``."""
        kind = state.kind
        if kind == "telemetry":
            out.append(("telemetry", reading))
            value = reading.value
            if not is_number(value) or reading.quality == "bad":
                # Bad-quality and non-numeric values are stored, but they must
                # not move alarms, rollups or the detector's idea of normal.
                return
            for tracker in state.threshold_alarms:
                alarms = tracker.update(reading)
                if alarms:
                    out.extend(("alarm", a) for a in alarms)
            if state.rollups is not None:
                produced: list[Any] = []
                state.rollups.add(reading.ts.timestamp(), float(value), produced, reading)
                for record in produced:
                    out.append((_kind_of(record), record))
            if state.detector is not None:
                score = state.detector.score_one(reading.ts, float(value))
                if self.emit_scores:
                    out.append(
                        (
                            "anomaly_score",
                            AnomalyScore(
                                reading.tenant,
                                reading.device,
                                reading.metric,
                                reading.ts,
                                float(value),
                                score,
                                self.detector_name,
                                score >= self.threshold,
                            ),
                        )
                    )
                assert state.anomaly_alarm is not None
                alarms = state.anomaly_alarm.update(reading.ts, float(value), score)
                if alarms:
                    out.extend(("alarm", a) for a in alarms)
        elif kind == "event":
            assert state.events is not None
            event = state.events.update(reading)
            if event is not None:
                out.append(("event", event))
        elif kind == "alarm":
            assert state.device_alarm is not None
            out.extend(("alarm", a) for a in state.device_alarm.update(reading))
        else:
            out.append(("log", to_log_record(reading)))

    def flush(self, state: SeriesState, out: list[Output], ident: Reading | None) -> None:
        """Emit the series' open rollup windows (idle timeout or end of input)."""
        if state.rollups is not None and ident is not None:
            produced: list[Any] = []
            state.rollups.flush(produced, ident)
            out.extend((_kind_of(r), r) for r in produced)


def _kind_of(record: Any) -> str:
    # Rollups emit Rollup records and late DeadLetters.
    return "rollup" if type(record).__name__ == "Rollup" else "dead_letter"


class SeriesLogic(StatefulBatchLogic[Reading, Output, Any]):
    """Bytewax adapter of :class:`SeriesProcessor` for one series key.

    The snapshot is ``(SeriesState, last reading)``: the last reading names
    the series (tenant, device, metric, source) for records emitted by the
    idle flush, when no reading is at hand.

    Idle flush: while a series has rollup windows, it asks Bytewax to wake it
    ``idle_timeout`` after its last reading (wall clock) and then emits its
    open windows. The wake-up time is recomputed at most every quarter of
    ``idle_timeout``, not per batch: building a datetime for every batch of
    every key cost more than the rollups themselves. So the flush comes
    between 0.75 and 1 ``idle_timeout`` after the last reading.
    """

    __slots__ = ("_deadline", "_refresh_at", "ident", "idle_timeout", "processor", "state")

    def __init__(self, processor: SeriesProcessor, resume: Any | None) -> None:
        self.processor = processor
        self.state: SeriesState | None = None
        self.ident: Reading | None = None
        self.idle_timeout = processor.config.rollups.idle_timeout
        self._deadline: datetime | None = None
        self._refresh_at = 0.0
        if resume is not None:
            self.state, self.ident = resume
            if self.state is not None and self.state.rollups is not None:
                # Windows restored from a snapshot get flushed even if the
                # series never speaks again.
                self._schedule(time.time())

    def _schedule(self, now: float) -> None:
        self._deadline = datetime.fromtimestamp(now + self.idle_timeout, UTC)
        self._refresh_at = now + self.idle_timeout / 4

    def on_batch(self, values: list[Reading]) -> tuple[list[Output], bool]:
        """Process a batch of one series' readings."""
        out: list[Output] = []
        process = self.processor.process
        state = self.state
        if state is None:
            state = self.state = self.processor.new_state(values[0])
        for reading in values:
            process(state, reading, out)
        self.ident = values[-1]
        if state.rollups is not None:
            now = time.time()
            if now >= self._refresh_at:
                self._schedule(now)
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Output], bool]:
        """Idle timeout: emit the open rollup windows of a series that went quiet."""
        out: list[Output] = []
        if self.state is not None:
            self.processor.flush(self.state, out, self.ident)
        # Nothing to wake up for until the series speaks again.
        self._deadline = None
        self._refresh_at = 0.0
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        """End of a finite input: emit every open window."""
        return self.on_notify()

    def notify_at(self) -> datetime | None:
        """When to run the idle flush (see the class docstring)."""
        return self._deadline

    def snapshot(self) -> Any:
        """The series state and the last reading (see class docstring)."""
        return (self.state, self.ident)


def series_logic_builder(config: PipelineConfig) -> Callable[[Any | None], SeriesLogic]:
    """The ``stateful_batch`` builder: one :class:`SeriesLogic` per key, resumed if possible."""
    processor = SeriesProcessor(config)

    def build(resume: Any | None) -> SeriesLogic:
        return SeriesLogic(processor, resume)

    return build
