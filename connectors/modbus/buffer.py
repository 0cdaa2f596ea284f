"""The bounded hand-over of readings from a polling thread to the dataflow.

>>> from datetime import UTC, datetime
>>> from schemas.models import Reading
>>> buffer = PollBuffer(capacity=2, partition="press-1")
>>> poll = [Reading(device="press-1", metric="t", ts=datetime.now(UTC), value=1.0)]
>>> buffer.put(poll); buffer.put(poll); buffer.put(poll)
>>> len(buffer.drain()), buffer.dropped
(2, 1)

The polling thread must never wait for the dataflow (that would shift its
schedule), so ``put`` never blocks: a full buffer drops its *oldest* poll,
keeping the freshest values, and the loss is counted
(``streamforge_modbus_dropped_readings_total``) and logged.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from schemas.models import Reading

log = get_logger("connectors.modbus.source")

DROPPED = counter(
    "streamforge_modbus_dropped_readings_total", "Readings dropped because a buffer was full"
)


class PollBuffer:
    """Bounded hand-over of polls from a polling thread to the dataflow.

    ``put`` never blocks the polling thread: when ``capacity`` polls are
    waiting, the oldest is dropped, counted and logged (at most every 10 s).
    """

    def __init__(self, capacity: int, partition: str) -> None:
        self.capacity = capacity
        self.partition = partition
        self._polls: deque[list[Reading]] = deque()
        self._lock = threading.Lock()
        self.dropped = 0
        self._dropped_since_log = 0
        self._last_log = -math.inf

    def put(self, readings: list[Reading]) -> None:
        """Hand over one poll's readings."""
        if not readings:
            return
        lost: list[Reading] = []
        with self._lock:
            if len(self._polls) >= self.capacity:
                lost = self._polls.popleft()
            self._polls.append(readings)
        if lost:
            self._count_drop(len(lost))

    def drain(self) -> list[Reading]:
        """Every waiting reading, oldest first (empty when none)."""
        with self._lock:
            polls, self._polls = self._polls, deque()
        return [reading for poll in polls for reading in poll]

    def __len__(self) -> int:
        return len(self._polls)

    def _count_drop(self, readings: int) -> None:
        self.dropped += readings
        self._dropped_since_log += readings
        DROPPED.inc(readings, partition=self.partition)
        now = time.monotonic()
        if now - self._last_log >= 10.0:
            log.warning(
                "modbus buffer full, oldest polls dropped",
                extra={
                    "device": self.partition,
                    "step": "buffer",
                    "dropped": self._dropped_since_log,
                    "capacity": self.capacity,
                },
            )
            self._dropped_since_log = 0
            self._last_log = now
