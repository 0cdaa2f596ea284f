"""One alarm's life: raised, escalated or de-escalated, acknowledged, cleared.

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> life = AlarmLifecycle("default", "press-1", "temperature", "hot", "threshold")
>>> (raised,) = life.raise_(t0, "warning", 82.0, 80.0, "temperature 82.0 >= 80.0 (warning)")
>>> acked = life.acknowledge("alice", "on it", t0 + timedelta(minutes=1))
>>> (cleared,) = life.clear(t0 + timedelta(minutes=5), 74.0, 75.0, "cleared")
>>> [(a.transition, a.state, a.seq) for a in (raised, acked, cleared)]
[('raised', 'raised', 1), ('acknowledged', 'acknowledged', 2), ('cleared', 'cleared', 3)]
>>> raised.id == cleared.id == alarm_id("default", "press-1", "temperature", "hot", t0)
True

The trackers of :mod:`flows.alarms` decide *when*; this module keeps the
record straight: one ``id`` per alarm, ``seq`` 1 for ``raised`` and +1 per
transition, the full state on every :class:`schemas.models.Alarm` record.

**Operators' actions.** The API acknowledges and clears alarms by storing
the alarm's next transition itself (``seq`` + 1 of what the database holds)
and writing it to the operator actions topic, which the flow follows
(:meth:`AlarmLifecycle.follow`). Normally the action arrives before the
flow's next transition of the alarm: the flow takes its ``seq`` and state,
so its next transition is numbered after it and keeps the acknowledgement
(a de-escalation stays acknowledged; an escalation needs a new one).

A *collision* is the rare race where the flow made a transition of the
alarm after the API read it and before the action reached the flow: both
carry the same ``seq``, and the database (``ON CONFLICT (alarm_id, seq) DO
NOTHING``) and consumers that de-duplicate by ``(id, seq)`` keep only one.
The flow then *restates*: it merges the operator's action into its own
state and emits the result as one more transition with a ``seq`` above
both, so the alarm's latest record (what the ``alarms`` table and alert
consumers show) is right again; an acknowledgement is merged only if the
alarm is still raised at a severity no worse than the one acknowledged.
The history may then lack the one flow transition that lost the race.

>>> action = life.last  # (the cleared alarm, as a stand-in for an API record)
>>> life.follow(action)  # an action the flow already knows: nothing to do
(False, None)
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.models import (
    SEVERITY_RANK,
    Alarm,
    AlarmKind,
    AlarmState,
    AlarmTransition,
    Priority,
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
        "chatter",
        "chattering",
        "comment",
        "device",
        "followed",
        "held_clear",
        "id",
        "kind",
        "last",
        "message",
        "metric",
        "priority",
        "raise_times",
        "raised_at",
        "rule",
        "seq",
        "severity",
        "shelved_until",
        "silent",
        "state",
        "tenant",
        "threshold",
        "value",
    )

    def __init__(
        self,
        tenant: str,
        device: str,
        metric: str,
        rule: str,
        kind: AlarmKind,
        priority: Priority = "medium",
        chatter: tuple[int, float] | None = None,
    ) -> None:
        self.tenant = tenant
        self.device = device
        self.metric = metric
        self.rule = rule
        self.kind: AlarmKind = kind
        # The latest transition of the current (or last) alarm, whoever made it:
        # what operators' actions are checked against (see follow()).
        self.last: Alarm | None = None
        # The seq of the last operator action followed on that alarm.
        self.followed = 0
        self._manage(priority, chatter)
        self._reset()

    def _manage(self, priority: Priority, chatter: tuple[int, float] | None) -> None:
        """The alarm management settings and state, which outlive one alarm."""
        self.priority: Priority = priority
        self.chatter = chatter  # (raises, window seconds), or None
        self.raise_times: list[float] = []  # epochs of the latest raises (chatter counting)
        # Shelved by an operator until then (event time), raises and all.
        self.shelved_until: datetime | None = None

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

    _MANAGED = ("priority", "chatter", "raise_times", "shelved_until")
    _ALARM_MANAGED = ("chattering", "held_clear", "silent")

    def __getstate__(self) -> tuple[object, ...]:
        # A tuple without slot names, and only the identity (and the last
        # record, if any) when no alarm is active: this is pickled once per
        # series and rule in every snapshot. The alarm management fields come
        # as one tuple after ``followed`` (a snapshot of an earlier version,
        # without it, has two fields fewer: see __setstate__).
        managed: tuple[object, ...] = tuple(getattr(self, name) for name in self._MANAGED)
        head = (
            *(getattr(self, name) for name in self._IDENTITY),
            self.last,
            self.followed,
            managed,
        )
        if self.id is None:
            return head
        alarm = tuple(getattr(self, name) for name in self._ALARM)
        return head + alarm + (tuple(getattr(self, name) for name in self._ALARM_MANAGED),)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        self._manage("medium", None)
        self._reset()
        identity = len(self._IDENTITY)
        for name, value in zip(self._IDENTITY, state[:identity], strict=True):
            setattr(self, name, value)
        self.last = state[identity]  # type: ignore[assignment]
        self.followed = state[identity + 1]  # type: ignore[assignment]
        rest = state[identity + 2 :]
        if len(rest) in (1, len(self._ALARM) + 2):  # this version's layout
            for name, value in zip(self._MANAGED, rest[0], strict=True):  # type: ignore[call-overload]
                setattr(self, name, value)
            rest = rest[1:]
            if rest:
                for name, value in zip(self._ALARM_MANAGED, rest[-1], strict=True):  # type: ignore[call-overload]
                    setattr(self, name, value)
                rest = rest[:-1]
        for name, value in zip(self._ALARM, rest, strict=False):
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
        self.chattering = False
        # A chattering alarm's clear, held until the condition stays clear for
        # the chatter window: (epoch, value, threshold, message) of the first.
        self.held_clear: tuple[float, Value | None, float | None, str] | None = None
        self.silent = False  # raised while shelved: no record made yet

    @property
    def active(self) -> bool:
        """Whether an alarm is raised or acknowledged (not yet cleared)."""
        return self.id is not None

    def _record(self, transition: AlarmTransition, ts: datetime) -> Alarm:
        self.seq += 1
        assert self.id is not None and self.raised_at is not None
        self.last = record = Alarm(
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
            priority=self.priority,
            shelved_until=self.shelved_until if self.state == "shelved" else None,
            chattering=self.chattering,
        )
        return record

    def _shelved(self, ts: datetime) -> bool:
        """Whether the point is shelved at ``ts`` (an expired shelve is forgotten)."""
        until = self.shelved_until
        if until is None:
            return False
        if ts < until:
            return True
        self.shelved_until = None
        return False

    def raise_(
        self, ts: datetime, severity: Severity, value: Value, threshold: float | None, message: str
    ) -> list[Alarm]:
        """Raise a new alarm (there must be none active).

        Its record, or none while the point is shelved: then the alarm is
        kept silently and announced at the unshelve (:meth:`tick`) if it is
        still active.
        """
        assert self.id is None, "an alarm is already active"
        self.id = alarm_id(self.tenant, self.device, self.metric, self.rule, ts)
        self.followed = 0
        self.raised_at = ts
        self.state = "raised"
        self.severity = severity
        self.value, self.threshold, self.message = value, threshold, message
        if self.chatter is not None:
            raises, window = self.chatter
            epoch = ts.timestamp()
            recent = [t for t in self.raise_times if epoch - t < window]
            recent.append(epoch)
            self.raise_times = recent[-raises:]
            if len(recent) >= raises:
                self.chattering = True
                self.message = f"chattering ({len(recent)} raises within {window:g} s): {message}"
        if self._shelved(ts):
            self.state = "shelved"
            self.silent = True
            return []
        return [self._record("raised", ts)]

    def change(
        self, ts: datetime, severity: Severity, value: Value, threshold: float | None, message: str
    ) -> list[Alarm]:
        """Escalate or de-escalate the active alarm to ``severity``.

        A chattering alarm whose clear is held continues instead (no record
        unless the severity changed); a shelved one changes silently.
        """
        self.held_clear = None
        if severity == self.severity:
            self.value = value
            return []
        escalated = SEVERITY_RANK[severity] > SEVERITY_RANK[self.severity]
        if escalated and self.state == "acknowledged":
            self.state = "raised"
            self.acknowledged_at = self.acknowledged_by = None
        self.severity = severity
        self.value, self.threshold = value, threshold
        if not self.chattering:
            self.message = message
        if self.state == "shelved":
            return []
        return [self._record("escalated" if escalated else "deescalated", ts)]

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
        *,
        hold: bool = True,
    ) -> list[Alarm]:
        """Clear the active alarm; the tracker is then free to raise a new one.

        A chattering alarm clears only once the condition has been clear for
        the chatter window (the tracker calls again; ``hold=False`` clears at
        once, as an operator's clear does). An alarm raised silently while
        shelved and clear before the unshelve ends without any record.
        """
        assert self.id is not None, "no active alarm"
        if hold and self.chattering and self.chatter is not None:
            epoch = ts.timestamp()
            held = self.held_clear
            if held is None:
                self.held_clear = (epoch, value, threshold, message)
                return []
            if epoch - held[0] < self.chatter[1]:
                return []
            message = f"{held[3]} (after chattering; clear for {self.chatter[1]:g} s)"
        if self.silent:
            self._reset()
            return []
        self.state = "cleared"
        self.value, self.threshold, self.message = value, threshold, message
        if comment is not None:
            self.comment = comment
        record = self._record("cleared", ts)
        self._reset()
        return [record]

    def retract(self) -> None:
        """Forget the alarm just raised, whose record was held back and never passed on."""
        assert self.id is not None and self.seq == 1, "only a raise not yet passed on"
        if self.raise_times:
            self.raise_times.pop()
        self._reset()

    def tick(self, ts: datetime) -> list[Alarm]:
        """The unshelve of the active alarm, once its shelve has expired at ``ts``.

        An alarm raised silently meanwhile is announced now (``raised``); one
        shelved by an operator comes back as ``unshelved`` (state ``raised``:
        it needs a fresh acknowledgement).
        """
        if self.shelved_until is None or self._shelved(ts) or self.id is None:
            return []
        if self.state != "shelved":
            return []
        self.state = "raised"
        self.acknowledged_at = self.acknowledged_by = None
        if self.silent:
            self.silent = False
            return [self._record("raised", ts)]
        return [self._record("unshelved", ts)]

    def follow(self, action: Alarm) -> tuple[bool, Alarm | None]:
        """Apply an operator's transition made by the API (ack, shelve, unshelve, clear).

        Returns ``(cleared, restatement)``: ``cleared`` when the action
        cleared the active alarm (the tracker resets what it keeps about the
        condition), and the record to emit when the action collided with a
        transition of the flow (see the module docstring). Actions for
        another alarm than the current or last one, and actions already
        known, change nothing.
        """
        last = self.last
        if last is None or action.id != last.id:
            return False, None  # not this tracker's alarm (any more)
        if action.transition not in ("acknowledged", "cleared", "shelved", "unshelved"):
            return False, None
        if action.seq <= self.followed or (
            action.seq == last.seq and action.transition == last.transition and action.ts == last.ts
        ):
            return False, None  # already known (a replay, or the flow's own record)
        self.followed = action.seq
        active = self.id == action.id
        if action.transition in ("shelved", "unshelved"):
            # Shelving holds the point (this series and rule) until then, raises and all.
            self.shelved_until = action.shelved_until if action.transition == "shelved" else None
            if active and self.state != "cleared":
                self.state = "shelved" if action.transition == "shelved" else "raised"
                if action.transition == "shelved":
                    self.acknowledged_at = self.acknowledged_by = None
            if action.seq > last.seq:
                self.last = action
                if active:
                    self.seq = action.seq
                return False, None
            if not active:
                return False, None
            self.seq = max(self.seq, action.seq)
            return False, self._record(action.transition, action.ts)
        if action.seq > last.seq:
            # The usual case: the flow's next transition comes after the action.
            self.last = action
            if not active:
                return False, None  # the flow cleared it meanwhile; its clear is later
            self.seq = action.seq
            if action.transition == "acknowledged":
                if self.state == "raised":
                    self.state = "acknowledged"
                    self.acknowledged_at = action.acknowledged_at
                    self.acknowledged_by = action.acknowledged_by
                    self.comment = action.comment
                return False, None
            self._reset()
            return True, None
        # A collision: restate the merged state above both sequence numbers.
        if not active:
            restated = dataclasses.replace(last, seq=last.seq + 1)
            self.last = restated
            return False, restated
        self.seq = max(self.seq, action.seq)
        if action.transition == "cleared":
            self.state = "cleared"
            self.message = action.message
            self.comment = action.comment
            record = self._record("cleared", action.ts)
            self._reset()
            return True, record
        if (
            self.state == "raised"
            and SEVERITY_RANK[self.severity] <= SEVERITY_RANK[action.severity]
        ):
            self.state = "acknowledged"
            self.acknowledged_at = action.acknowledged_at
            self.acknowledged_by = action.acknowledged_by
            self.comment = action.comment
            return False, self._record("acknowledged", action.ts)
        # The flow escalated past what was acknowledged: its state stands.
        assert last.transition != "cleared"
        return False, self._record(last.transition, last.ts)


class AlarmTrackerBase:
    """What every tracker offers operators: acknowledge, and a look at its state."""

    __slots__ = ("_life",)

    _life: AlarmLifecycle
    _FIELDS: tuple[str, ...] = ("_life",)
    """Every slot, in order: subclasses list theirs so the pickle is a plain tuple."""

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        # A snapshot of an earlier version may lack the newest (last) fields.
        self._defaults()
        for name, value in zip(self._FIELDS, state, strict=False):
            setattr(self, name, value)

    def _defaults(self) -> None:
        """Values of fields a snapshot of an earlier version lacks (subclasses)."""

    @property
    def active(self) -> bool:
        """Whether this tracker has an active (raised or acknowledged) alarm."""
        return self._life.active

    @property
    def rule(self) -> str:
        """The name of the rule this tracker applies (``anomaly``, ``device`` or a rule's)."""
        return self._life.rule

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

    def follow(self, action: Alarm) -> list[Alarm]:
        """Apply an operator's action on this tracker's alarm (see :meth:`AlarmLifecycle.follow`).

        Returns the transitions to emit: none, or a restatement after a
        collision.
        """
        cleared, restated = self._life.follow(action)
        if cleared:
            self._cleared_by_operator()
        return [restated] if restated is not None else []

    def retire(self, last: Any, reason: str) -> list[Alarm]:
        """Clear the active alarm of a rule that no longer applies (``reason`` says why).

        ``last`` is the series' last reading (its time is the clear's), or None (now).
        """
        life = self._life
        if life.id is None:
            return []
        ts = last.ts if last is not None else datetime.now(UTC)
        return life.clear(ts, life.value, life.threshold, f"cleared: {reason}", hold=False)

    def _cleared_by_operator(self) -> None:
        """What a tracker forgets when an operator cleared its alarm (subclasses)."""
