"""De-duplicating what the output topics carry: each record's stable identity, and a bounded memory.

The flow writes each output at least once: after a crash it replays what
it read since its last snapshot, and the Kafka sink writes those outputs
again (the database upserts them by the same identities, so it stays
exact). Every record carries, in its JSON, the fields that identify it
whatever the run that made it:

================  ===========================================================
kind              identity
================  ===========================================================
``telemetry``     ``tenant, device, metric, ts``
``event``         ``tenant, device, metric, ts``
``anomaly_score`` ``tenant, device, metric, ts``
``alarm``         ``id, seq`` (one alarm from raise to clear; each transition)
``rollup``        ``tenant, device, metric, tier, window_start, revision``
``log``           ``tenant, device, ts, component, message``
``dead_letter``   ``origin, step, reason, payload`` (``origin`` is the Kafka
                  ``topic/partition/offset`` or MQTT topic the payload came from)
================  ===========================================================

A consumer that must see each record once keeps the identities it has seen
for as far back as a replay can reach (a flow replays at most what it read
since its last snapshot: seconds to minutes), which :class:`Deduplicator`
does with a bounded memory:

>>> seen = Deduplicator(capacity=1000)
>>> alarm = {"id": "a1", "seq": 2, "state": "acknowledged"}
>>> seen.is_new("alarm", alarm), seen.is_new("alarm", dict(alarm))
(True, False)
>>> seen.is_new("alarm", {**alarm, "seq": 3})        # the alarm's next transition
True
>>> reading = {"tenant": "t", "device": "d", "metric": "m", "ts": "2026-01-01T00:00:00Z"}
>>> record_identity("telemetry", {**reading, "value": 1})
('telemetry', 't', 'd', 'm', '2026-01-01T00:00:00Z')

``python -m connectors.kafka.alerts`` uses it, so a replay does not page
anyone twice.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

IDENTITY_FIELDS: dict[str, tuple[str, ...]] = {
    "telemetry": ("tenant", "device", "metric", "ts"),
    "event": ("tenant", "device", "metric", "ts"),
    "anomaly_score": ("tenant", "device", "metric", "ts"),
    "alarm": ("id", "seq"),
    "rollup": ("tenant", "device", "metric", "tier", "window_start", "revision"),
    "log": ("tenant", "device", "ts", "component", "message"),
    "dead_letter": ("origin", "step", "reason", "payload"),
}
"""The fields that identify a record of each output kind (see the module docstring)."""


def record_identity(kind: str, record: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of one record (its JSON as a dict); long text is hashed to keep it small."""
    fields = IDENTITY_FIELDS.get(kind)
    if fields is None:
        raise ValueError(f"no identity known for output kind {kind!r}")
    values: list[Any] = [kind]
    for name in fields:
        value = record.get(name)
        if isinstance(value, str) and len(value) > 256:
            value = hashlib.sha256(value.encode()).hexdigest()
        values.append(value)
    return tuple(values)


class Deduplicator:
    """Remembers the last ``capacity`` identities seen; says whether a record is new.

    Size ``capacity`` to cover the records a flow can replay: the records it
    writes in one snapshot interval (``-s``), with room to spare.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()

    def is_new(self, kind: str, record: dict[str, Any]) -> bool:
        """True the first time this record's identity is seen (then remembered)."""
        identity = record_identity(kind, record)
        if identity in self._seen:
            self._seen.move_to_end(identity)
            return False
        self._seen[identity] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True
