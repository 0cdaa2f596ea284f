"""The alarm lifecycle: raise, escalate, de-escalate, acknowledge and clear, once per alarm.

>>> from datetime import datetime, timedelta, timezone
>>> from schemas.config import ThresholdAlarmRule
>>> from schemas.models import Reading
>>> rule = ThresholdAlarmRule(name="hot", metric="temperature",
...                           levels={"warning": 80, "critical": 95}, clear_at=75)
>>> tracker = ThresholdAlarmTracker(rule, "default", "press-1", "temperature")
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> def feed(second, value):
...     reading = Reading(device="press-1", metric="temperature",
...                       ts=t0 + timedelta(seconds=second), value=value)
...     return [(a.transition, a.severity, a.seq) for a in tracker.update(reading)]
>>> feed(0, 70), feed(1, 82), feed(2, 85)
([], [('raised', 'warning', 1)], [])
>>> feed(3, 97), feed(4, 78), feed(5, 74)
([('escalated', 'critical', 2)], [('deescalated', 'warning', 3)], [('cleared', 'warning', 4)])

One tracker per (series, rule), kept in the series' keyed state: threshold
rules (:class:`ThresholdAlarmTracker`), anomaly scores
(:class:`AnomalyAlarmTracker`) and a device's own alarm signal
(:class:`DeviceAlarmTracker`). All share
:class:`flows.alarm_lifecycle.AlarmLifecycle` (re-exported here), which
holds the one active alarm of a tracker and emits its transitions as
:class:`schemas.models.Alarm` records: same ``id`` from raise to clear,
``seq`` 1 for ``raised`` and +1 per transition, so sinks upsert by ``id``.

Ids are deterministic (uuid5 of tenant, device, metric, rule and
``raised_at``): replaying the same readings yields the same ids, and a sink
that upserts by id stays correct after a recovery replay.

Trackers work in event time and in arrival order. They are slotted plain
objects; their pickle (what Bytewax snapshots) is a few hundred bytes, and
a tracker restored mid-alarm continues where it was: no second raise, and
the clear still comes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from flows.alarm_lifecycle import AlarmCommandError, AlarmLifecycle, AlarmTrackerBase, alarm_id
from schemas.config import AnomalyConfig, ChatterConfig, SuppressionConfig, ThresholdAlarmRule
from schemas.models import (
    SEVERITY_RANK,
    Alarm,
    Priority,
    Reading,
    Severity,
    Value,
)

__all__ = [
    "AlarmCommandError",
    "AlarmLifecycle",
    "AlarmTrackerBase",
    "AnomalyAlarmTracker",
    "DeviceAlarmTracker",
    "ThresholdAlarmTracker",
    "alarm_id",
    "device_alarm_active",
    "threshold_trackers",
]

_DEFAULT_TEMPLATE = "{metric} {value} {op} {threshold} ({severity})"


Suppress = tuple[bool, float, bool]
"""A rule's state-based suppression: (while stopped, seconds after a start, while another
alarm of the device is active); see :class:`schemas.config.SuppressionConfig`."""


def suppression_of(config: SuppressionConfig) -> Suppress | None:
    """The compact form a tracker keeps (None: never suppressed)."""
    if not config.any():
        return None
    return (config.while_stopped, config.after_start, config.while_other_alarm)


def _chatter(config: ChatterConfig | None) -> tuple[int, float] | None:
    return None if config is None else (config.raises, config.window)


def _format(template: str, **fields: object) -> str:
    """The alarm message; a template with unknown placeholders falls back to the default."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError):
        return _DEFAULT_TEMPLATE.format(**fields)


class ThresholdAlarmTracker(AlarmTrackerBase):
    """Raises and clears the alarm of one :class:`ThresholdAlarmRule` on one series.

    Semantics, for ``direction: above`` (``below`` mirrors every comparison):

    * A value is *at* a level when ``value >= threshold``; the value's level is
      the highest it is at. Below the lowest threshold it is at no level.
    * Raising: the value must stay at some level for ``min_duration`` seconds
      of event time, measured from the first reading at a level to a later
      reading still at a level. Any reading at no level resets that timer.
      With ``min_duration`` 0 the first reading at a level raises. The alarm
      is raised with the severity of the reading that raises it.
    * While active, the severity follows the value's level at once
      (``escalated`` / ``deescalated`` on the same alarm id, no delay and
      no hysteresis between levels: a value hovering at a higher threshold
      flips between two severities). Between ``clear_at`` and the lowest
      threshold (the hysteresis band) the alarm stays active at the lowest
      severity: the value is below the higher thresholds, and it is not yet
      clear.
    * Clearing: the value must go strictly past ``clear_at`` to the safe side
      (``value < clear_at``; ``clear_at`` defaults to the lowest threshold).
      A value equal to ``clear_at`` keeps the alarm.
    * At most one active alarm: a long breach raises once.
    * Only int and float values count; bools, strings, NaN and infinities
      are ignored, and so are readings of quality ``bad`` (a bad value says
      nothing about the process).
    * Manual clear (only with ``manual_clear: true``): the alarm is cleared
      at once, and the tracker does not raise again for the same or a lower
      level until the value has gone past ``clear_at`` to the safe side (else
      the next reading would re-raise what the operator just cleared); a
      higher level raises a new alarm.

    Messages come from ``rule.message`` with ``{metric} {device} {tenant}
    {rule} {value} {op} {threshold} {severity}``; ``op`` is ``>=``/``<=``
    (and ``<``/``>`` with ``threshold`` = ``clear_at`` in the ``cleared``
    message, which is prefixed ``cleared: ``). An alarm's ``threshold`` is
    the threshold of its current level, ``clear_at`` once cleared.

    Snapshot: the rule's thresholds (not the rule object), the lifecycle,
    the pending timer and the level; ~340 bytes pickled, ~530 with an
    active alarm.
    """

    __slots__ = (
        "_above",
        "_clear",
        "_clear_at",
        "_latched",
        "_level",
        "_levels",
        "_lowest",
        "_manual_clear",
        "_min_duration",
        "_pending_since",
        "_template",
        "suppress",
    )
    _FIELDS = ("_life", *__slots__)

    def __init__(self, rule: ThresholdAlarmRule, tenant: str, device: str, metric: str) -> None:
        self._life = AlarmLifecycle(
            tenant, device, metric, rule.name, "threshold", rule.priority, _chatter(rule.chatter)
        )
        self.suppress = suppression_of(rule.suppression)
        above = rule.direction == "above"
        self._above = above
        ordered = sorted(rule.levels.items(), key=lambda kv: SEVERITY_RANK[kv[0]])
        # (severity, threshold as compared, threshold as configured), lowest level first;
        # "below" rules compare negated values so one code path serves both.
        self._levels: tuple[tuple[Severity, float, float], ...] = tuple(
            (severity, t if above else -t, t) for severity, t in ordered
        )
        self._lowest = self._levels[0][1]
        self._clear_at = rule.clear_at if rule.clear_at is not None else ordered[0][1]
        self._clear = self._clear_at if above else -self._clear_at
        self._min_duration = rule.min_duration
        self._manual_clear = rule.manual_clear
        self._template = rule.message
        self._pending_since: float | None = None
        self._level = -1
        self._latched = -1

    def update(self, reading: Reading) -> list[Alarm]:
        """The alarm transitions this reading causes (usually none)."""
        value = reading.value
        if type(value) is not float and type(value) is not int:
            return []
        v = value if self._above else -value
        life = self._life
        if (
            v < self._lowest
            and life.id is None
            and self._pending_since is None
            and self._latched < 0
        ):
            return []  # the common case: nothing active, pending or latched, value safe
        if v - v != 0 or reading.quality == "bad":  # NaN or infinite
            return []
        if life.shelved_until is not None and life.id is not None:
            return life.tick(reading.ts) + self._update(reading, value, v)
        return self._update(reading, value, v)

    def _defaults(self) -> None:
        self.suppress = None

    def _update(self, reading: Reading, value: float, v: float) -> list[Alarm]:
        life = self._life
        # The value's level: thresholds ascend (as compared), so count those reached.
        level = -1
        levels = self._levels
        for _severity, threshold, _configured in levels:
            if v < threshold:
                break
            level += 1
        if life.id is None:
            return self._maybe_raise(reading, value, v, level)
        if v < self._clear:
            self._level = -1
            message = "cleared: " + self._message(
                value, life.severity, self._clear_at, "<" if self._above else ">"
            )
            return life.clear(reading.ts, value, self._clear_at, message)
        if level < 0:
            level = 0  # in the hysteresis band: held at the lowest level
        if level == self._level:
            life.value = value
            return []
        self._level = level
        severity, _, threshold = levels[level]
        message = self._message(value, severity, threshold, self._op)
        return life.change(reading.ts, severity, value, threshold, message)

    def _maybe_raise(self, reading: Reading, value: float, v: float, level: int) -> list[Alarm]:
        if v < self._clear:
            self._latched = -1
        if level < 0 or level <= self._latched:
            self._pending_since = None
            return []
        if self._min_duration > 0:
            now = reading.ts.timestamp()
            if self._pending_since is None:
                self._pending_since = now
            if now - self._pending_since < self._min_duration:
                return []
        self._pending_since = None
        self._latched = -1
        self._level = level
        severity, _, threshold = self._levels[level]
        message = self._message(value, severity, threshold, self._op)
        return self._life.raise_(reading.ts, severity, value, threshold, message)

    @property
    def _op(self) -> str:
        return ">=" if self._above else "<="

    def _message(self, value: Value, severity: str, threshold: float, op: str) -> str:
        life = self._life
        return _format(
            self._template,
            metric=life.metric,
            device=life.device,
            tenant=life.tenant,
            rule=life.rule,
            value=value,
            op=op,
            threshold=threshold,
            severity=severity,
        )

    def _cleared_by_operator(self) -> None:
        # Latch the level the operator cleared: the next reading at the same or
        # a lower level must not re-raise it at once (see the class docstring).
        self._latched, self._level, self._pending_since = self._level, -1, None

    _SETTINGS = ("_above", "_clear", "_clear_at", "_levels", "_lowest", "_manual_clear",
                 "_min_duration", "_template", "suppress")  # fmt: skip

    def reconfigure(self, rule: ThresholdAlarmRule, last: Reading | None) -> list[Alarm]:
        """Take a changed rule (a flow resumed with a new config), keeping the alarm.

        Nothing happens when the rule is the same. Otherwise the new levels,
        hysteresis, duration, message, priority, suppression and chatter
        replace the old, and the series' last reading is judged again: an
        active alarm clears, escalates or de-escalates through its lifecycle,
        and a value now past a threshold raises.
        """
        life = self._life
        fresh = ThresholdAlarmTracker(rule, life.tenant, life.device, life.metric)
        same = all(getattr(fresh, n) == getattr(self, n) for n in self._SETTINGS)
        if same and (fresh._life.priority, fresh._life.chatter) == (life.priority, life.chatter):
            return []
        for name in self._SETTINGS:
            setattr(self, name, getattr(fresh, name))
        life.priority, life.chatter = fresh._life.priority, fresh._life.chatter
        self._level, self._latched = -2, -1  # unknown under the new levels
        return self.update(last) if last is not None else []

    def clear_manually(
        self, by: str, ts: datetime | None = None, comment: str | None = None
    ) -> Alarm | None:
        """Clear the active alarm on an operator's command (``ts`` defaults to now).

        Raises :class:`AlarmCommandError` when the rule does not have
        ``manual_clear: true``; returns None when no alarm is active.
        """
        life = self._life
        if not self._manual_clear:
            raise AlarmCommandError(f"alarm rule {life.rule!r} does not allow manual clear")
        if life.id is None:
            return None
        self._cleared_by_operator()
        note = f"cleared manually by {by}" + (f": {comment}" if comment else "")
        records = life.clear(
            ts or datetime.now(UTC), life.value, self._clear_at, note, note, hold=False
        )
        return records[0] if records else None


def threshold_trackers(
    rules: Iterable[ThresholdAlarmRule], tenant: str, device: str, metric: str
) -> list[ThresholdAlarmTracker]:
    """A tracker for each rule that watches this series (usually zero or one)."""
    return [
        ThresholdAlarmTracker(rule, tenant, device, metric)
        for rule in rules
        if rule.matches(device, metric)
    ]


class AnomalyAlarmTracker(AlarmTrackerBase):
    """Raises an anomaly alarm (kind and rule ``anomaly``) from a series' anomaly scores.

    Raised when ``hold`` consecutive scores are ``>= threshold`` or one score
    is ``>= instant_threshold`` (spikes last one value); cleared when
    ``clear_hold`` consecutive scores are ``< clear_threshold``. A score that
    breaks a run resets its count (a score between the two thresholds resets
    both). NaN scores are ignored. The alarm's ``value`` is the reading's
    value and ``threshold`` the score threshold (``clear_threshold`` once
    cleared); its severity is ``config.severity``.
    """

    __slots__ = (
        "_clear_hold",
        "_clear_threshold",
        "_count",
        "_hold",
        "_instant",
        "_severity",
        "_threshold",
        "suppress",
    )
    _FIELDS = ("_life", *__slots__)

    def __init__(self, config: AnomalyConfig, tenant: str, device: str, metric: str) -> None:
        self._life = AlarmLifecycle(
            tenant, device, metric, "anomaly", "anomaly", config.priority, _chatter(config.chatter)
        )
        self.suppress = suppression_of(config.suppression)
        self._threshold = config.threshold
        self._clear_threshold = config.clear_threshold
        self._hold = config.hold
        self._instant = config.instant_threshold
        self._clear_hold = config.clear_hold
        self._severity: Severity = config.severity
        self._count = 0

    def update(self, ts: datetime, value: float, score: float) -> list[Alarm]:
        """The alarm transitions this score causes (usually none)."""
        if score != score:  # NaN: no information, runs continue
            return []
        life = self._life
        if life.shelved_until is not None and life.id is not None:
            return life.tick(ts) + self._update(ts, value, score)
        return self._update(ts, value, score)

    def _defaults(self) -> None:
        self.suppress = None

    def _update(self, ts: datetime, value: float, score: float) -> list[Alarm]:
        life = self._life
        if life.id is None:
            if score >= self._threshold:
                self._count += 1
                if self._count >= self._hold or score >= self._instant:
                    held = self._count
                    self._count = 0
                    message = (
                        f"{life.metric} anomaly score {score:.3f} >= {self._threshold:g}"
                        f" for {held} consecutive value{'s' if held > 1 else ''}"
                    )
                    return life.raise_(ts, self._severity, value, self._threshold, message)
            else:
                self._count = 0
            return []
        if score < self._clear_threshold:
            self._count += 1
            if self._count >= self._clear_hold:
                self._count = 0
                message = (
                    f"cleared: {life.metric} anomaly score < {self._clear_threshold:g}"
                    f" for {self._clear_hold} consecutive values"
                )
                return life.clear(ts, value, self._clear_threshold, message)
        else:
            self._count = 0
            if score >= self._threshold:
                life.held_clear = None  # anomalous again: a held (chattering) clear is off
        life.value = value
        return []

    def _cleared_by_operator(self) -> None:
        self._count = 0

    def reconfigure(self, config: AnomalyConfig) -> None:
        """Take a changed anomaly config (a resumed flow), keeping the alarm and its counts."""
        fresh = AnomalyAlarmTracker(config, self._life.tenant, self._life.device, self._life.metric)
        for name in ("_clear_hold", "_clear_threshold", "_hold", "_instant", "_severity",
                     "_threshold", "suppress"):  # fmt: skip
            setattr(self, name, getattr(fresh, name))
        self._life.priority, self._life.chatter = fresh._life.priority, fresh._life.chatter

    def retract(self) -> None:
        """Take back the raise just made, before anyone saw it (see ``SeriesProcessor``)."""
        self._life.retract()
        self._count = 0

    def withdraw(self, alarm_id: str) -> None:
        """Take back a held raise and what followed it, passed on to no one (``SeriesProcessor``).

        The alarm is forgotten if it is still this tracker's (it may have
        cleared meanwhile: then there is nothing left to forget).
        """
        life = self._life
        if life.id == alarm_id:
            if life.raise_times:
                life.raise_times.pop()
            life._reset()
        self._count = 0


_FALSY = frozenset(("", "0", "false", "off", "ok", "clear", "cleared", "no", "normal", "none"))
_SEVERITIES: dict[str, Severity] = {
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "major": "major",
    "critical": "critical",
}


def device_alarm_active(value: Value) -> bool | None:
    """Whether a device's alarm signal says "alarm"; None for NaN (no information).

    Alarm: True, a non-zero number, or a string other than ``0 false off ok
    clear cleared no normal none`` (case-insensitive, blanks stripped).
    """
    if type(value) is bool:
        return value
    if isinstance(value, str):
        return value.strip().lower() not in _FALSY
    if value != value:
        return None
    return value != 0


class DeviceAlarmTracker(AlarmTrackerBase):
    """Mirrors a device's own alarm signal (readings classified ``alarm``) as an alarm.

    A truthy value (:func:`device_alarm_active`) raises an alarm of kind
    ``device`` and rule ``device``, with severity from
    ``attributes["severity"]`` (``info``, ``warning`` or ``warn``, ``major``,
    ``critical``; absent or unknown names count as ``warning``) and message
    from ``attributes["message"]`` if present. A later truthy value with
    another severity escalates or de-escalates it; a falsy value clears it.
    Repeats change nothing.
    """

    __slots__ = ()

    def __init__(
        self, tenant: str, device: str, metric: str, priority: Priority = "medium"
    ) -> None:
        self._life = AlarmLifecycle(tenant, device, metric, "device", "device", priority)

    def update(self, reading: Reading) -> list[Alarm]:
        """The alarm transitions this reading causes (usually none)."""
        state = device_alarm_active(reading.value)
        life = self._life
        if state is None or (not state and life.id is None):
            return []
        ticked = life.tick(reading.ts) if life.shelved_until is not None else []
        attributes = reading.attributes or {}
        if not state:
            message = f"cleared: {life.device} reports {life.metric} = {reading.value}"
            return ticked + life.clear(reading.ts, reading.value, None, message)
        severity = _SEVERITIES.get(attributes.get("severity", "").strip().lower(), "warning")
        if life.id is not None and severity == life.severity:
            life.held_clear = None  # still (or again) in alarm
            return ticked
        message = (
            attributes.get("message") or f"{life.device} reports {life.metric} = {reading.value}"
        )
        if life.id is None:
            return ticked + life.raise_(reading.ts, severity, reading.value, None, message)
        return ticked + life.change(reading.ts, severity, reading.value, None, message)
