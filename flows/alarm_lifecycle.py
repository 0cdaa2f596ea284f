"""One alarm's life: raised, escalated or de-escalated, acknowledged, cleared.

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> life = AlarmLifecycle("default", "press-1", "temperature", "hot", "threshold")
>>> raised = life.raise_(t0, "warning", 82.0, 80.0, "temperature 82.0 >= 80.0 (warning)")
>>> acked = life.acknowledge("alice", "on it", t0 + timedelta(minutes=1))
>>> cleared = life.clear(t0 + timedelta(minutes=5), 74.0, 75.0, "cleared")
>>> [(a.transition, a.state, a.seq) for a in (raised, acked, cleared)]
[('raised', 'raised', 1), ('acknowledged', 'acknowledged', 2), ('cleared', 'cleared', 3)]
>>> raised.id == cleared.id == alarm_id("default", "press-1", "temperature", "hot", t0)
True

The trackers of :mod:`flows.alarms` decide *when*; this module keeps the
record straight: one ``id`` per alarm, ``seq`` 1 for ``raised`` and +1 per
transition, the full state on every :class:`schemas.models.Alarm` record.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from schemas.models import (
    SEVERITY_RANK,
    Alarm,
    AlarmKind,
    AlarmState,
    AlarmTransition,
    Severity,
    Value,
)

__all__ = ["AlarmCommandError", "AlarmLifecycle", "AlarmTrackerBase", "alarm_id"]

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://streamforge.dev/alarms")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class AlarmCommandError(ValueError):
    """An operator command an alarm does not allow (e.g. manual clear without ``manual_clear``)."""


def alarm_id(tenant: str, device: str, metric: str, rule: str, raised_at: datetime) -> str:
    """The deterministic id of an alarm: uuid5 over its series, rule and raise instant (µs)."""
    micros = (raised_at - _EPOCH) // _MICROSECOND
    return str(uuid.uuid5(_NAMESPACE, f"{tenant}\x1f{device}\x1f{metric}\x1f{rule}\x1f{micros}"))


class AlarmLifecycle:
    """The state of at most one active alarm and the records of its transitions.

    States: no alarm -> ``raised`` -> (``acknowledged``) -> ``cleared`` (and
    back to no alarm). Escalation of an acknowledged alarm puts it back to
    ``raised`` (a worse condition needs a fresh acknowledgement) and drops
    the acknowledgement; de-escalation keeps the state.
    """

    __slots__ = (
        "acknowledged_at",
        "acknowledged_by",
        "comment",
        "device",
        "id",
        "kind",
        "message",
        "metric",
        "raised_at",
        "rule",
        "seq",
        "severity",
        "state",
        "tenant",
        "threshold",
        "value",
    )

    def __init__(self, tenant: str, device: str, metric: str, rule: str, kind: AlarmKind) -> None:
        self.tenant = tenant
        self.device = device
        self.metric = metric
        self.rule = rule
        self.kind: AlarmKind = kind
        self._reset()

    _IDENTITY = ("tenant", "device", "metric", "rule", "kind")
    _ALARM = (
        "id",
        "severity",
        "state",
        "seq",
        "raised_at",
        "acknowledged_at",
        "acknowledged_by",
        "comment",
        "value",
        "threshold",
        "message",
    )

    def __getstate__(self) -> tuple[object, ...]:
        # A tuple without slot names, and only the identity when no alarm is
        # active: this is pickled once per series and rule in every snapshot.
        names = self._IDENTITY + self._ALARM if self.id is not None else self._IDENTITY
        return tuple(getattr(self, name) for name in names)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self._reset()
        for name, value in zip(self._IDENTITY + self._ALARM, state, strict=False):
            setattr(self, name, value)

    def _reset(self) -> None:
        self.id: str | None = None
        self.severity: Severity = "info"
        self.state: AlarmState = "cleared"
        self.seq = 0
        self.raised_at: datetime | None = None
        self.acknowledged_at: datetime | None = None
        self.acknowledged_by: str | None = None
        self.comment: str | None = None
        self.value: Value | None = None
        self.threshold: float | None = None
        self.message = ""

    @property
    def active(self) -> bool:
        """Whether an alarm is raised or acknowledged (not yet cleared)."""
        return self.id is not None

    def _record(self, transition: AlarmTransition, ts: datetime) -> Alarm:
        self.seq += 1
        assert self.id is not None and self.raised_at is not None
        return Alarm(
            id=self.id,
            tenant=self.tenant,
            device=self.device,
            metric=self.metric,
            rule=self.rule,
            kind=self.kind,
            severity=self.severity,
            state=self.state,
            transition=transition,
            seq=self.seq,
            ts=ts,
            raised_at=self.raised_at,
            value=self.value,
            threshold=self.threshold,
            message=self.message,
            acknowledged_at=self.acknowledged_at,
            acknowledged_by=self.acknowledged_by,
            cleared_at=ts if transition == "cleared" else None,
            comment=self.comment,
        )

    def raise_(
        self, ts: datetime, severity: Severity, value: Value, threshold: float | None, message: str
    ) -> Alarm:
        """Raise a new alarm (there must be none active)."""
        assert self.id is None, "an alarm is already active"
        self.id = alarm_id(self.tenant, self.device, self.metric, self.rule, ts)
        self.raised_at = ts
        self.state = "raised"
        self.severity = severity
        self.value, self.threshold, self.message = value, threshold, message
        return self._record("raised", ts)

    def change(
        self, ts: datetime, severity: Severity, value: Value, threshold: float | None, message: str
    ) -> Alarm:
        """Escalate or de-escalate the active alarm to ``severity``."""
        escalated = SEVERITY_RANK[severity] > SEVERITY_RANK[self.severity]
        if escalated and self.state == "acknowledged":
            self.state = "raised"
            self.acknowledged_at = self.acknowledged_by = None
        self.severity = severity
        self.value, self.threshold, self.message = value, threshold, message
        return self._record("escalated" if escalated else "deescalated", ts)

    def acknowledge(self, by: str, comment: str | None, ts: datetime) -> Alarm | None:
        """Acknowledge a raised alarm; None when there is none or it is already acknowledged."""
        if self.id is None or self.state != "raised":
            return None
        self.state = "acknowledged"
        self.acknowledged_at, self.acknowledged_by = ts, by
        if comment is not None:
            self.comment = comment
        return self._record("acknowledged", ts)

    def clear(
        self,
        ts: datetime,
        value: Value | None,
        threshold: float | None,
        message: str,
        comment: str | None = None,
    ) -> Alarm:
        """Clear the active alarm; the tracker is then free to raise a new one."""
        assert self.id is not None, "no active alarm"
        self.state = "cleared"
        self.value, self.threshold, self.message = value, threshold, message
        if comment is not None:
            self.comment = comment
        record = self._record("cleared", ts)
        self._reset()
        return record


class AlarmTrackerBase:
    """What every tracker offers operators: acknowledge, and a look at its state."""

    __slots__ = ("_life",)

    _life: AlarmLifecycle
    _FIELDS: tuple[str, ...] = ("_life",)
    """Every slot, in order: subclasses list theirs so the pickle is a plain tuple."""

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(self._FIELDS, state, strict=True):
            setattr(self, name, value)

    @property
    def active(self) -> bool:
        """Whether this tracker has an active (raised or acknowledged) alarm."""
        return self._life.active

    @property
    def alarm_id(self) -> str | None:
        """The id of the active alarm, if any."""
        return self._life.id

    @property
    def severity(self) -> Severity | None:
        """The severity of the active alarm, if any."""
        return self._life.severity if self._life.active else None

    def acknowledge(
        self, by: str, comment: str | None = None, ts: datetime | None = None
    ) -> Alarm | None:
        """Acknowledge the active alarm (``ts`` defaults to now).

        Returns the ``acknowledged`` transition, or None when no alarm is
        raised or it is already acknowledged (acknowledging twice is harmless).
        """
        return self._life.acknowledge(by, comment, ts or datetime.now(UTC))
