"""The compiled loop of the series step: each reading through the state of its series.

Everything StreamForge computes per (tenant, device, metric) happens in a
single Bytewax ``stateful_batch`` step, so a reading is hashed, routed and
looked up once however many things are done with it. The step is keyed by a
bucket of series (:class:`SeriesBucketLogic`), each series keeping its own
state, a :class:`SeriesState`: its kind, and for telemetry its threshold
alarm trackers, rollup windows (:class:`flows.kernels.rollups.RollupState`),
anomaly detector and alarm tracker; for events the last state; for device
alarm bits a tracker. What a new series gets is decided above this module,
by :mod:`flows.series` (which builds the processor); this module runs it:

>>> from datetime import UTC, datetime
>>> from flows.config import PipelineConfig
>>> from flows.series import series_processor
>>> from schemas.models import Reading
>>> processor = series_processor(PipelineConfig(
...     alarms=[{"name": "hot", "metric": "temp", "levels": {"major": 90}}]))
>>> logic = SeriesBucketLogic(processor, None)
>>> at = datetime(2026, 1, 1, tzinfo=UTC)
>>> outputs, _done = logic.on_batch([[Reading(device="press-1", metric="temp", ts=at, value=95.0)]])
>>> [(kind, [getattr(r, "transition", r.value) for r in records]) for kind, records in outputs]
[('telemetry', [95.0]), ('alarm', ['raised'])]

The whole state pickles, so Bytewax recovery resumes alarms, open windows
and detectors exactly where a crashed run left them.

Input: chunks (lists) of readings of one bucket (the decode step groups a
batch by bucket), and operators' alarm actions
(:class:`schemas.models.AlarmAction`, from the API, applied to the alarm's
tracker: see :mod:`flows.alarm_lifecycle`). Output: ``(kind, records)``
chunks, one per kind per activation (see :mod:`connectors.runtime.outputs`).
"""

from __future__ import annotations

import time
import zlib
from array import array
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bytewax.operators import StatefulBatchLogic

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from connectors.runtime.outputs import Output
from flows.config import PipelineConfig
from flows.kernels.rollups import RollupState
from schemas.models import Alarm, AlarmAction, AnomalyScore, DeadLetter, Reading, Rollup, to_json

DUPLICATES = counter(
    "streamforge_duplicate_readings_total",
    "Telemetry readings repeating a timestamp their series had just had, by outcome "
    "(same: a redelivery, dropped; conflict: another value, a dead letter)",
)

# Timestamps (and values) each telemetry series remembers to recognise a
# redelivered reading: an MQTT broker resending unacknowledged messages
# after a reconnect, a client retrying a POST, a gateway resending. Without
# it the repeat would count twice in rollups and move the detector twice.
RECENT_READINGS = 32

ALARM_TRANSITIONS = counter(
    "streamforge_alarm_transitions_total",
    "Alarm transitions the series step made, by kind, transition and priority (alarm KPIs: "
    'rate(...{transition="raised"}[10m]) is the raises per 10 minutes)',
)


def count_alarms(alarms: list[Alarm]) -> None:
    """Count alarm transitions for the alarm KPI metrics (alarms are few: per record is fine)."""
    for alarm in alarms:
        ALARM_TRANSITIONS.inc(kind=alarm.kind, transition=alarm.transition, priority=alarm.priority)


EXPIRED = counter(
    "streamforge_series_expired_total",
    "Series whose state expired after series_ttl without a reading (event time)",
)

ANOMALY_DUPLICATES = counter(
    "streamforge_anomaly_duplicates_total",
    "Anomaly raises dropped as duplicates of a threshold alarm of the same series "
    "(anomaly.duplicate_window)",
)

RETIRED = counter(
    "streamforge_series_retired_total",
    "Series whose state ended because the device registry no longer admits their device, by "
    "reason (decommissioned, unregistered)",
)

_EXPIRY_CHECK_S = 60.0
"""Wall-clock seconds between two looks for series to expire in a bucket."""

log = get_logger("flows.kernels.series")

OPERATOR_ACTIONS = counter(
    "streamforge_operator_actions_total",
    "Operators' alarm actions the flow followed, restated after a collision, or did not know",
)


STOPPED, STARTING, OTHER_ALARM = 1, 2, 3
"""Why a rule is suppressed (DeviceContext.suppressed)."""

_STOPPED = frozenset(("", "0", "false", "off", "no", "stopped", "stop", "idle", "down"))


def is_running(value: Any) -> bool | None:
    """Whether a run-state value says "running"; None when it says nothing (NaN).

    >>> [is_running(v) for v in (True, 1, 0.0, "ON", "stopped", float("nan"))]
    [True, True, False, True, False, None]
    """
    if type(value) is bool:
        return value
    if type(value) is str:
        return value.strip().lower() not in _STOPPED
    if value != value:
        return None
    return bool(value)


class DeviceContext:
    """What the series of one device share, for state-based alarm suppression.

    Its run state (``running``: None until its run-state series spoke), the
    event time it last started (an observed off-to-on change; a device
    first seen running has no known start), and the ids of its active
    threshold and device alarms. Every series of a device is in the same
    bucket (the decode step buckets by device), so one object serves them
    all, and pickling the bucket keeps it shared.

    >>> ctx = DeviceContext()
    >>> ctx.run(0, 100.0); ctx.run(1, 160.0)
    >>> ctx.suppressed((True, 120.0, False), 200.0), ctx.suppressed((True, 120.0, False), 281.0)
    (2, 0)
    """

    __slots__ = ("active", "running", "started")

    def __init__(self) -> None:
        self.running: bool | None = None
        self.started = float("-inf")
        self.active: set[str] = set()

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.running, self.started, self.active)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.running, self.started, self.active = state

    def run(self, value: Any, epoch: float) -> None:
        """Take a reading of the device's run state."""
        running = is_running(value)
        if running is None:
            return
        if running and self.running is False:
            self.started = epoch
        self.running = running

    def note(self, alarms: list[Alarm]) -> None:
        """Keep the set of active alarms current with transitions of the device's alarms."""
        for alarm in alarms:
            if alarm.transition == "cleared":
                self.active.discard(alarm.id)
            elif alarm.transition in ("raised", "unshelved"):
                self.active.add(alarm.id)

    def suppressed(self, rule: tuple[bool, float, bool], epoch: float) -> int:
        """Why a rule with this suppression (``flows.alarms.Suppress``) holds off now.

        0: it does not; STOPPED, STARTING or OTHER_ALARM (true, as ints).
        """
        while_stopped, after_start, while_other_alarm = rule
        running = self.running
        if running is False and while_stopped:
            return STOPPED
        if running and epoch - self.started < after_start:
            return STARTING
        if while_other_alarm and self.active:
            return OTHER_ALARM
        return 0


class SeriesState:
    """Everything kept for one time series. Small, and picklable for recovery."""

    __slots__ = (
        "anomaly_alarm",
        "detector",
        "device",
        "device_alarm",
        "events",
        "kind",
        "last_epoch",
        "pending",
        "pending_from",
        "pending_until",
        "recent",
        "recent_pos",
        "rollups",
        "run_signal",
        "text",
        "threshold_alarms",
        "threshold_seen",
    )

    def __init__(self, kind: str) -> None:
        self.kind = kind
        # (the types of these live above the kernels: flows.events, flows.alarms,
        # flows.anomaly; flows.series builds them, this module only runs them)
        self.events: Any = None  # an EventDetector, for events
        self.threshold_alarms: list[Any] = []  # ThresholdAlarmTrackers, for telemetry
        self.rollups: RollupState | None = None
        self.detector: Any = None  # an anomaly detector (flows.anomaly), for telemetry
        self.anomaly_alarm: Any = None  # an AnomalyAlarmTracker, for telemetry
        self.device_alarm: Any = None  # a DeviceAlarmTracker, for device alarm bits
        # An event series because its first value was text or a bool (no rule
        # said so): a number on it later is a type conflict, as text is on a
        # numeric series. A rule's event series takes numbers (a mode code).
        self.text = False
        # Duplicates (telemetry): the latest timestamp (epoch seconds), and a
        # ring of the last RECENT_READINGS (epoch, value) pairs, interleaved.
        self.last_epoch = float("-inf")
        self.recent: array[float] | None = None
        self.recent_pos = 0
        # The device's shared context (set by the bucket), and whether this
        # series is the device's run state (AlarmManagementConfig.running_metric).
        self.device: DeviceContext | None = None
        self.run_signal = False
        # An anomaly raise held (with what followed it) from the event time
        # pending_from until a value at pending_until or later (see process()).
        self.pending: list[Alarm] | None = None
        self.pending_from = self.pending_until = float("-inf")
        # The latest event time a threshold alarm of the series was active.
        self.threshold_seen = float("-inf")

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A snapshot of an earlier version lacks the newer fields: defaults first.
        self.text, self.last_epoch, self.recent, self.recent_pos = False, float("-inf"), None, 0
        self.device, self.run_signal, self.pending = None, False, None
        self.pending_from = self.pending_until = self.threshold_seen = float("-inf")
        for name, value in state.items():
            setattr(self, name, value)

    def alarm_trackers(self) -> list[Any]:
        """Every alarm tracker of the series: its threshold rules', anomaly, device alarm."""
        trackers: list[Any] = list(self.threshold_alarms)
        trackers += [t for t in (self.anomaly_alarm, self.device_alarm) if t is not None]
        return trackers

    def repeats(self, epoch: float, value: float) -> int:
        """Remember a telemetry reading; 1 if it repeats a remembered one, -1 if it contradicts it.

        Readings of a series mostly come in time order, so the usual case is
        a new latest timestamp, which cannot repeat anything. One earlier than
        the latest is looked up among the remembered ones: the same timestamp
        with the same value is a repeat, with another value a contradiction
        (neither is remembered again). 0: a new reading, now remembered.
        """
        recent = self.recent
        if recent is None:
            recent = self.recent = array("d", [float("nan")] * (2 * RECENT_READINGS))
        if epoch > self.last_epoch:
            self.last_epoch = epoch
        else:
            for i in range(0, 2 * RECENT_READINGS, 2):
                if recent[i] == epoch:
                    return 1 if recent[i + 1] == value else -1
        pos = self.recent_pos
        recent[pos] = epoch
        recent[pos + 1] = value
        self.recent_pos = (pos + 2) % (2 * RECENT_READINGS)
        return 0


class SeriesProcessor:
    """Runs readings through the states of their series.

    Plain Python, usable without Bytewax (the unit tests drive it directly);
    :class:`SeriesBucketLogic` adapts it to Bytewax's ``stateful_batch``.
    ``new_state`` builds the state of a series from its first reading and
    ``to_log`` turns a reading of a log series into a log record: both come
    from :mod:`flows.series` (:func:`flows.series.series_processor`), which
    knows the classification rules, the alarm trackers and the detectors.
    """

    def __init__(
        self,
        config: PipelineConfig,
        new_state: Callable[[Reading], SeriesState | DeadLetter],
        to_log: Callable[[Reading], Any],
    ) -> None:
        self.config = config
        # The state of a new series, or the dead letter of a reading whose
        # device the registry does not admit.
        self.new_state = new_state
        self.to_log = to_log
        # (state, last reading, outputs) -> the series' state brought in line
        # with the config and the device registry (flows.series.SeriesStart.
        # reconcile), its transitions added to the outputs; None: nothing.
        self.reconcile: Callable[[SeriesState, Reading, OutputChunks], SeriesState] | None = None
        # The device registry (schemas.devices.DeviceRegistry), or None.
        self.registry: Any = None
        self.anomaly_on = config.anomaly.enabled
        self.emit_scores = config.anomaly.emit_scores
        self.detector_name = config.anomaly.detector.type
        self.threshold = config.anomaly.threshold
        self.duplicate_window = config.anomaly.duplicate_window
        # (datetime, its epoch seconds) of the last reading: readings of one
        # instant often share one datetime object (a simulator step, a
        # gateway's batch), and timestamp() is not free. One attribute, so
        # worker threads sharing this processor never see half an update.
        self._epoch: tuple[datetime | None, float] = (None, 0.0)

    def process(self, state: SeriesState, reading: Reading, out: OutputChunks) -> None:
        """Run one reading through its series' state, appending outputs to ``out``."""
        kind = state.kind
        ctx = state.device
        if state.run_signal and ctx is not None:
            ctx.run(reading.value, reading.ts.timestamp())
        if kind == "telemetry":
            value = reading.value
            # (is_number(), inlined: this runs for every reading)
            if type(value) is not float and type(value) is not int:
                out.dead_letter.append(type_conflict(reading, "numeric"))
                return
            value = float(value)
            reading_ts = reading.ts
            ts, epoch = self._epoch
            if ts is not reading_ts:
                epoch = reading_ts.timestamp()
                self._epoch = (reading_ts, epoch)
            repeat = state.repeats(epoch, value)
            if repeat:
                if repeat > 0:
                    DUPLICATES.inc(outcome="same")
                else:
                    DUPLICATES.inc(outcome="conflict")
                    out.dead_letter.append(second_value(reading))
                return
            out.telemetry.append(reading)
            if reading.quality == "bad":
                # Bad-quality values are stored, but they must not move
                # alarms, rollups or the detector's idea of normal.
                return
            # Device context matters only once the device has a run state or an
            # active alarm (see DeviceContext); checked here so most readings skip it.
            context = ctx is not None and (ctx.running is not None or bool(ctx.active))
            for tracker in state.threshold_alarms:
                if (
                    context
                    and tracker.suppress is not None
                    and not tracker.active
                    and ctx is not None
                    and ctx.suppressed(tracker.suppress, epoch)
                ):
                    continue  # held off: no raise now (see SuppressionConfig)
                alarms = tracker.update(reading)
                if alarms:
                    out.alarm.extend(alarms)
                    if ctx is not None:
                        ctx.note(alarms)
                if tracker.active:
                    state.threshold_seen = epoch
            if state.rollups is not None:
                produced: list[Any] = []
                state.rollups.add(epoch, value, produced, reading)
                for record in produced:
                    if type(record) is Rollup:
                        out.rollup.append(record)
                    else:  # a value later than the allowed lateness
                        out.dead_letter.append(record)
            if state.detector is not None:
                tracker = state.anomaly_alarm
                why = 0
                if context and tracker.suppress is not None and ctx is not None:
                    why = ctx.suppressed(tracker.suppress, epoch)
                if why:
                    # Suppressed: no alarm; one still active counts the value as
                    # normal, so it can clear, and a raise held from the previous
                    # value is taken back (it was the stop or start). A start-up
                    # is learned (a recurring start becomes normal); a stopped
                    # machine or a device in another alarm is only scored (river's
                    # score_one without learn_one): not the normal to learn.
                    if state.pending is not None:
                        tracker.withdraw(state.pending[0].id)
                        state.pending = None
                    if why == STARTING:
                        reading.score = state.detector.score_learn_one(reading_ts, value)
                    else:
                        try:
                            reading.score = state.detector.score_one({"value": value})
                        except TypeError:  # a RegimeDetector of an older snapshot
                            reading.score = None
                    if tracker.active:
                        alarms = tracker.update(reading_ts, value, 0.0)
                        if alarms:
                            out.alarm.extend(alarms)
                    return
                score = state.detector.score_learn_one(reading_ts, value)
                # The score travels on the reading itself: one telemetry record
                # and one row per value, not two (see AnomalyConfig.emit_scores).
                reading.score = score
                if self.emit_scores:
                    out.anomaly_score.append(
                        AnomalyScore(
                            reading.tenant,
                            reading.device,
                            reading.metric,
                            reading_ts,
                            value,
                            score,
                            self.detector_name,
                            score >= self.threshold,
                        )
                    )
                tracker = state.anomaly_alarm
                assert tracker is not None
                window = self.duplicate_window if state.threshold_alarms else 0.0
                if state.pending is not None:
                    if window > 0.0 and state.threshold_seen >= state.pending_from - window:
                        self.drop_duplicate(state, tracker)
                    elif epoch >= state.pending_until:
                        out.alarm.extend(state.pending)
                        state.pending = None
                alarms = tracker.update(reading_ts, value, score)
                if alarms:
                    if state.pending is not None:  # still held: what follows waits with it
                        state.pending.extend(alarms)
                    elif alarms[0].transition != "raised":
                        out.alarm.extend(alarms)
                    elif window > 0.0 and state.threshold_seen >= epoch - window:
                        state.pending = alarms
                        self.drop_duplicate(state, tracker)
                    elif window > 0.0 or (context and ctx is not None and ctx.running is not None):
                        # Held: on a series with threshold rules, for the window
                        # (a duplicate?); on a device with a run state, until the
                        # series' next value (its readings of one instant may come
                        # before the run state's: a stop, a start), judged then.
                        state.pending = alarms
                        state.pending_from = epoch
                        state.pending_until = epoch + window
                    else:
                        out.alarm.extend(alarms)
        elif kind == "event":
            assert state.events is not None
            if state.text:
                value = reading.value
                if type(value) is float or type(value) is int:
                    out.dead_letter.append(type_conflict(reading, "text"))
                    return
            event = state.events.update(reading)
            if event is not None:
                out.event.append(event)
        elif kind == "alarm":
            assert state.device_alarm is not None
            alarms = state.device_alarm.update(reading)
            if alarms:
                out.alarm.extend(alarms)
                if ctx is not None:
                    ctx.note(alarms)
        else:
            out.log.append(self.to_log(reading))

    def process_batch(
        self,
        chunks: list[list[Any]],
        series: dict[str, list[Any]],
        last_seen: dict[str, float],
        now: float,
        out: OutputChunks,
        devices: dict[str, DeviceContext] | None = None,
    ) -> bool:
        """Run chunks of readings (and operators' alarm actions) through their series.

        ``series`` maps each series key to ``[SeriesState, last reading]`` and
        gains an entry for every new series; ``last_seen`` gets ``now`` for
        every series that sent a reading; ``devices`` maps ``tenant/device``
        to the :class:`DeviceContext` its series share (a new series joins
        its device's). True if one of those has rollups.
        """
        if devices is None:
            devices = {}
        with_rollups = False
        for chunk in chunks:
            for reading in chunk:
                key = f"{reading.tenant}/{reading.device}/{reading.metric}"
                entry = series.get(key)
                if type(reading) is AlarmAction:  # an operator's (see flows.alarm_lifecycle)
                    if entry is None:
                        OPERATOR_ACTIONS.inc(outcome="unknown")
                    else:
                        self.follow(entry[0], reading.record, out)
                    continue
                if entry is None:
                    made = self.new_state(reading)
                    if type(made) is DeadLetter:  # a device the registry does not admit
                        out.dead_letter.append(made)
                        continue
                    entry = series[key] = [made, reading]
                    device_key = f"{reading.tenant}/{reading.device}"
                    context = devices.get(device_key)
                    if context is None:
                        context = devices[device_key] = DeviceContext()
                    entry[0].device = context
                state = entry[0]
                self.process(state, reading, out)
                entry[1] = reading
                last_seen[key] = now
                if state.rollups is not None:
                    with_rollups = True
        return with_rollups

    def drop_duplicate(self, state: SeriesState, tracker: Any) -> None:
        """Drop the held anomaly raise of a series as a duplicate of its threshold alarm."""
        assert state.pending is not None
        tracker.withdraw(state.pending[0].id)
        state.pending = None
        ANOMALY_DUPLICATES.inc()

    def follow(self, state: SeriesState, action: Alarm, out: OutputChunks) -> None:
        """Apply an operator's alarm action to the tracker of its rule, if this series has one."""
        trackers = state.alarm_trackers()
        if action.transition == "cleared" and state.device is not None:
            state.device.active.discard(action.id)
        for tracker in trackers:
            if tracker.rule == action.rule:
                restated = tracker.follow(action)
                out.alarm.extend(restated)
                OPERATOR_ACTIONS.inc(outcome="restated" if restated else "followed")
                return
        OPERATOR_ACTIONS.inc(outcome="unknown")

    def flush(self, state: SeriesState, out: OutputChunks, ident: Reading | None) -> None:
        """Emit the series' open rollup windows and a held raise (idle timeout or end of input)."""
        flush_series(state, out, ident)

    def expire(
        self, state: SeriesState, out: OutputChunks, ident: Reading, reason: str | None = None
    ) -> None:
        """The end of a series' state (:func:`end_series`); ``reason`` defaults to the TTL's."""
        if reason is None:
            days = self.config.series_ttl / 86400
            reason = f"no reading for {days:g} days: the series' state expired"
        end_series(state, out, ident, reason)


def flush_rollups(rollups: RollupState, out: OutputChunks, ident: Reading) -> None:
    """Emit a series' open rollup windows (late values among them as dead letters)."""
    produced: list[Any] = []
    rollups.flush(produced, ident)
    for record in produced:
        (out.rollup if type(record) is Rollup else out.dead_letter).append(record)


def flush_series(state: SeriesState, out: OutputChunks, ident: Reading | None) -> None:
    """Emit a series' held anomaly raise and its open rollup windows (``ident``: its name)."""
    if state.pending is not None:
        out.alarm.extend(state.pending)
        state.pending = None
    if state.rollups is not None and ident is not None:
        flush_rollups(state.rollups, out, ident)


def end_series(state: SeriesState, out: OutputChunks, ident: Reading, reason: str) -> None:
    """The end of a series' state: windows emitted, active alarms cleared with ``reason``."""
    flush_series(state, out, ident)
    for tracker in state.alarm_trackers():
        out.alarm.extend(tracker.retire(ident, reason))


class OutputChunks:
    """The outputs of one activation of the series step, one list per kind.

    :meth:`items` gives them as ``(kind, records)`` chunks (see
    :mod:`connectors.runtime.outputs`), in a fixed kind order; within a kind, records
    keep the order they were produced in, so a series' alarm transitions
    stay in sequence.
    """

    __slots__ = ("alarm", "anomaly_score", "dead_letter", "event", "log", "rollup", "telemetry")

    def __init__(self) -> None:
        self.telemetry: list[Reading] = []
        self.event: list[Any] = []
        self.alarm: list[Any] = []
        self.log: list[Any] = []
        self.rollup: list[Any] = []
        self.anomaly_score: list[Any] = []
        self.dead_letter: list[Any] = []

    def items(self) -> list[Output]:
        """The non-empty chunks as ``(kind, records)`` items."""
        return [(kind, getattr(self, kind)) for kind in _KIND_ORDER if getattr(self, kind)]


_KIND_ORDER = ("telemetry", "event", "alarm", "log", "rollup", "anomaly_score", "dead_letter")


def type_conflict(reading: Reading, series_type: str) -> DeadLetter:
    """The dead letter of a value whose type is not its series' (``numeric`` or ``text``).

    Text or a bool on a numeric (telemetry) series, stored as telemetry,
    would be a row with no number, skipped by rollups, alarms and the
    detector: a silent hole. A number on a series whose values were text
    (an event series no rule declared) is the same mistake the other way.
    ``received_at`` is the reading's time, so a replay after a crash makes
    the same dead letter (stored once).
    """
    if series_type == "numeric":
        allowed = (
            "numbers only, unless a classification rule makes the series an event or log series"
        )
    else:
        allowed = "text or booleans only, unless a classification rule makes it an event series"
    return DeadLetter(
        received_at=reading.ts,
        source=reading.source,
        reason=(
            f"value {reading.value!r} ({type(reading.value).__name__}) on {series_type} "
            f"series {reading.metric!r}: {allowed}"
        ),
        payload=to_json(reading).decode(),
        origin=f"{reading.tenant}/{reading.device}/{reading.metric}",
        step="series",
        tenant=reading.tenant,
    )


def second_value(reading: Reading) -> DeadLetter:
    """The dead letter of a value for an instant its series already has another value for.

    The database keeps one row per (tenant, device, metric, ts), and the
    flow counted the first value in its rollups and alarms: the second is
    refused whole rather than half applied.
    """
    return DeadLetter(
        received_at=reading.ts,
        source=reading.source,
        reason=(
            f"value {reading.value!r} for series {reading.metric!r} at {reading.ts.isoformat()}, "
            "which already has another value: one value per instant"
        ),
        payload=to_json(reading).decode(),
        origin=f"{reading.tenant}/{reading.device}/{reading.metric}",
        step="series",
        tenant=reading.tenant,
    )


def not_admitted(reading: Reading, reason: str) -> DeadLetter:
    """The dead letter of a reading of a device the registry does not admit (``reason`` says why).

    Decommissioned devices, and unregistered ones where the tenant's policy
    rejects them (:meth:`schemas.devices.DeviceRegistry.admits`).
    """
    return DeadLetter(
        received_at=reading.ts,
        source=reading.source,
        reason=reason,
        payload=to_json(reading).decode(),
        origin=f"{reading.tenant}/{reading.device}/{reading.metric}",
        step="registry",
        tenant=reading.tenant,
    )


def bucket_of(series: str, buckets: int) -> str:
    """The Bytewax key of the bucket of a device's series (``tenant/device``; stable)."""
    return str(zlib.crc32(series.encode()) % buckets)


class SeriesBucketLogic(StatefulBatchLogic[list[Reading | AlarmAction], Output, Any]):
    """Bytewax adapter of :class:`SeriesProcessor` for one *bucket* of series.

    The step is keyed by bucket (:func:`bucket_of`, ``series_buckets`` in the
    config), not by series: Bytewax's per-key activation costs ~9 us, which at
    10,000 series (one reading per series per batch) was a third of the
    per-reading budget. A bucket holds many series and receives many readings
    per activation; each series keeps its own :class:`SeriesState`.

    The snapshot is ``{series: (SeriesState, last reading)}``: the last
    reading names the series (tenant, device, metric, source) for records
    emitted by the idle flush, when no reading is at hand.

    Idle flush: a series with open rollup windows that received nothing for
    ``idle_timeout`` (wall clock) emits them. The bucket asks Bytewax to wake
    it at its earliest such deadline; a wake-up time is computed at most
    every quarter of ``idle_timeout``, so a flush comes between 0.75 and 1.25
    ``idle_timeout`` after a series' last reading.
    """

    __slots__ = (
        "_deadline",
        "_expire_at",
        "_refresh_at",
        "_registry_version",
        "_resumed",
        "devices",
        "idle_timeout",
        "last_seen",
        "processor",
        "revisions",
        "series",
        "ttl",
    )

    def __init__(self, processor: SeriesProcessor, resume: Any | None) -> None:
        self.processor = processor
        self.idle_timeout = processor.config.rollups.idle_timeout
        self.ttl = processor.config.series_ttl
        self._expire_at = time.time() + _EXPIRY_CHECK_S
        # series key -> [SeriesState, last reading]
        self.series: dict[str, list[Any]] = {}
        # series key -> wall-clock time of its last reading (not snapshotted:
        # after a resume every restored series counts as just seen).
        self.last_seen: dict[str, float] = {}
        self._deadline: datetime | None = None
        self._refresh_at = 0.0
        # tenant/device -> the DeviceContext its series share (not snapshotted
        # apart: each SeriesState refers to it, and one pickle keeps it shared).
        self.devices: dict[str, DeviceContext] = {}
        # What resuming under a changed config emitted, handed over first.
        self._resumed: OutputChunks | None = None
        # tenant/device -> the registry revision its series were last brought
        # in line with (not snapshotted: a resume reconciles every series).
        self.revisions: dict[str, int] = {}
        self._registry_version = -1
        if resume is not None:
            now = time.time()
            reconcile = processor.reconcile
            out = OutputChunks()
            for key, (state, ident) in resume.items():
                if reconcile is not None and ident is not None:
                    state = reconcile(state, ident, out)
                self.series[key] = [state, ident]
                self.last_seen[key] = now
                device_key = f"{ident.tenant}/{ident.device}"
                if state.device is None:  # a snapshot of an earlier version
                    state.device = self.devices.get(device_key) or DeviceContext()
                self.devices[device_key] = state.device
            registry = processor.registry
            if registry is not None:
                # Reconciled against the registry as it is now; devices it no
                # longer admits leave at once.
                self.follow_registry(out, reconciled=True)
            if out.items():
                self._resumed = out
            self._schedule(now)

    def _schedule(self, now: float) -> None:
        if any(
            s[0].rollups is not None and not s[0].rollups.is_empty() for s in self.series.values()
        ):
            self._deadline = datetime.fromtimestamp(now + self.idle_timeout, UTC)
        else:
            self._deadline = None
        self._refresh_at = now + self.idle_timeout / 4

    def on_batch(self, values: list[list[Reading | AlarmAction]]) -> tuple[list[Output], bool]:
        """Process chunks of readings of this bucket's series, in arrival order."""
        out = self._resumed or OutputChunks()
        self._resumed = None
        now = time.time()
        # No wake-up set (the bucket was quiet): one is needed if a series with
        # rollups spoke. Asked only then, so a bucket without rollups (events
        # only) is not rescanned on every batch.
        quiet = self._deadline is None
        woken = self.processor.process_batch(
            values, self.series, self.last_seen, now, out, self.devices
        )
        if (quiet and woken) or now >= self._refresh_at:
            self._schedule(now)
        if self.ttl and now >= self._expire_at:
            self.expire(now, out)
        registry = self.processor.registry
        if registry is not None and registry.version != self._registry_version:
            self.follow_registry(out)
        if out.alarm:
            count_alarms(out.alarm)
        return out.items(), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Output], bool]:
        """Emit the open rollup windows of this bucket's series that went quiet."""
        out = self._resumed or OutputChunks()
        self._resumed = None
        now = time.time()
        quiet_since = now - 0.75 * self.idle_timeout
        flush = self.processor.flush
        for key, (state, ident) in self.series.items():
            if self.last_seen.get(key, 0.0) <= quiet_since:
                flush(state, out, ident)
        if self.ttl and now >= self._expire_at:
            self.expire(now, out)
        registry = self.processor.registry
        if registry is not None and registry.version != self._registry_version:
            self.follow_registry(out)
        self._schedule(now)
        if out.alarm:
            count_alarms(out.alarm)
        return out.items(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[Output], bool]:
        """End of a finite input: emit every open window."""
        out = OutputChunks()
        for state, ident in self.series.values():
            self.processor.flush(state, out, ident)
        self._deadline = None
        if out.alarm:
            count_alarms(out.alarm)
        return out.items(), StatefulBatchLogic.RETAIN

    def expire(self, now: float, out: OutputChunks) -> None:
        """Drop the series of this bucket silent for ``series_ttl`` (event time).

        Silent: its last reading is older than the bucket's newest by more
        than the TTL (event time, so a replay of old data expires nothing it
        should not). Its windows are emitted and its alarms cleared
        (:meth:`SeriesProcessor.expire`), and it leaves the next snapshot. A
        later reading starts it afresh. Looked at every minute or so.
        """
        self._expire_at = now + _EXPIRY_CHECK_S
        series = self.series
        if not series:
            return
        epochs = {key: entry[1].ts.timestamp() for key, entry in series.items()}
        horizon = max(epochs.values()) - self.ttl
        gone = [key for key, epoch in epochs.items() if epoch < horizon]
        if not gone:
            return
        for key in gone:
            state, ident = series.pop(key)
            self.last_seen.pop(key, None)
            self.processor.expire(state, out, ident)
        live = {f"{entry[1].tenant}/{entry[1].device}" for entry in series.values()}
        for device in [d for d in self.devices if d not in live]:
            del self.devices[device]
        EXPIRED.inc(len(gone))
        log.info(
            "series state expired",
            extra={"step": "series", "expired": len(gone), "examples": gone[:5],
                   "ttl_s": self.ttl},
        )  # fmt: skip

    def follow_registry(self, out: OutputChunks, reconciled: bool = False) -> None:
        """Bring this bucket's devices in line with the device registry, after it changed.

        A device the registry no longer admits (decommissioned, or
        unregistered where its tenant rejects those) loses the state of all
        its series at once: windows emitted, alarms cleared with the reason,
        gone from the next snapshot (``streamforge_series_retired_total``).
        A device whose registry entry changed (type, area, tags) has its
        series reconciled, so rules selecting by them start or stop.
        ``reconciled``: every series was just reconciled (a resume).
        """
        registry = self.processor.registry
        self._registry_version = registry.version
        if not self.series:
            return
        by_device: dict[str, list[str]] = {}
        for key, entry in self.series.items():
            ident = entry[1]
            by_device.setdefault(f"{ident.tenant}/{ident.device}", []).append(key)
        reconcile = self.processor.reconcile
        retired: list[str] = []
        for device_key, keys in by_device.items():
            ident = self.series[keys[0]][1]
            why = registry.admits(ident.tenant, ident.device)
            if why is not None:
                for key in keys:
                    state, last = self.series.pop(key)
                    self.last_seen.pop(key, None)
                    self.processor.expire(state, out, last, f"{why}: the series' state ended")
                self.devices.pop(device_key, None)
                self.revisions.pop(device_key, None)
                retired.append(device_key)
                RETIRED.inc(len(keys), reason="decommissioned" if "decommissioned" in why
                            else "unregistered")  # fmt: skip
                continue
            info = registry.lookup(ident.tenant, ident.device)
            revision = 0 if info is None else info.revision
            if self.revisions.get(device_key) == revision:
                continue
            self.revisions[device_key] = revision
            if reconciled or reconcile is None:
                continue
            for key in keys:
                entry = self.series[key]
                entry[0] = reconcile(entry[0], entry[1], out)
        if retired:
            log.info(
                "device state ended by the registry",
                extra={"step": "series", "devices": len(retired), "examples": retired[:5]},
            )

    def notify_at(self) -> datetime | None:
        """When to run the idle flush (see the class docstring), or at once after a resume
        that has transitions to hand over; with a device registry, at least every
        ``registry.refresh`` seconds, to follow its changes in quiet buckets too."""
        if self._resumed is not None:
            return datetime.now(UTC)
        registry = self.processor.registry
        if registry is None:
            return self._deadline
        if registry.version != self._registry_version:
            return datetime.now(UTC)
        check = datetime.fromtimestamp(time.time() + self.processor.config.registry.refresh, UTC)
        return check if self._deadline is None or check < self._deadline else self._deadline

    def snapshot(self) -> Any:
        """Every series' state and last reading (see class docstring)."""
        return {key: (entry[0], entry[1]) for key, entry in self.series.items()}
