"""Detect changes of state: a series' value differs from its previous one.

>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> def at(second, value):
...     ts = datetime(2026, 1, 1, 0, 0, second, tzinfo=timezone.utc)
...     return Reading(device="door-1", metric="state.open", ts=ts, value=value)
>>> detector = EventDetector()
>>> [(e.previous, e.value) if e else None
...  for e in map(detector.update, [at(0, False), at(1, False), at(2, True)])]
[(None, False), None, (False, True)]

One :class:`EventDetector` per series (kept in the series' keyed state). It
works in arrival order: a keyed step sees a series' readings in the order
its source delivered them, which for every StreamForge source is the
device's order.
"""

from __future__ import annotations

from schemas.models import Event, Reading, Value

__all__ = ["EventDetector"]


class EventDetector:
    """Emits an :class:`Event` when a series' value changes.

    The first value seen emits an event with ``previous=None``: after a
    (re)start the current state is reported once, so consumers never wait
    for the next change to learn it. (State restored by recovery keeps the
    last value, so a resumed flow does not re-emit it.)

    Equal means equal value *and* type: ``1``, ``1.0`` and ``True`` compare
    equal in Python but a change from ``1`` to ``True`` is a change of what
    the device reports, so it is an event.

    Snapshot: the last value (and whether one was seen), a few bytes.
    """

    __slots__ = ("last", "seen")

    def __init__(self) -> None:
        self.seen = False
        self.last: Value | None = None

    def update(self, reading: Reading) -> Event | None:
        """The event this reading causes, or None when the value did not change."""
        value = reading.value
        last = self.last
        if self.seen and last == value and type(last) is type(value):
            return None
        self.last = value
        self.seen = True
        return Event(
            tenant=reading.tenant,
            device=reading.device,
            metric=reading.metric,
            ts=reading.ts,
            previous=last,
            value=value,
            source=reading.source,
        )
