"""The bounded hand-over of readings from the asyncua event loop thread to the Bytewax worker.

>>> import asyncio
>>> buf = HandoffBuffer(capacity=3, endpoint="demo")
>>> asyncio.run(buf.put([1, 2]))
>>> buf.drain(10)
[1, 2]

Why the loop *waits* instead of dropping when the buffer is full: asyncua's
publish loop keeps one Publish request outstanding and sends the next one
only after our callback returns (``UaClient._publish_loop``). Awaiting space
in the callback therefore throttles publishing at the protocol level: the
server keeps new samples in its own monitored-item queues (``queue_size``)
and, if those fill too, reports it with the Overflow bit, which the source
counts. Nothing is dropped silently on our side, and the event loop stays
free, so the session watchdog and channel renewal keep running.

Each wait is counted (``streamforge_opcua_buffer_full_total``), its
duration summed (``streamforge_opcua_buffer_wait_seconds_total``) and
logged once at its start and once at its end, never per reading.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Generic, TypeVar

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge

T = TypeVar("T")

_log = get_logger("connectors.opcua.source")
BUFFER_FULL = counter(
    "streamforge_opcua_buffer_full_total", "Times the OPC UA hand-over buffer was full"
)
BUFFER_WAIT = counter(
    "streamforge_opcua_buffer_wait_seconds_total",
    "Seconds OPC UA publishing waited for buffer space",
)
BUFFER_DEPTH = gauge(
    "streamforge_opcua_buffer_depth", "Readings waiting in the OPC UA hand-over buffer"
)

# How often a full buffer is re-checked. The consumer is Bytewax's worker,
# which drains on its own schedule; a 5 ms poll costs nothing and avoids a
# cross-thread wake-up protocol.
_RECHECK_S = 0.005


class HandoffBuffer(Generic[T]):
    """A FIFO of at most ``capacity`` items (one batch may exceed it when the buffer is empty).

    ``put`` runs on the event loop and waits while full; ``drain`` runs on
    the Bytewax thread and never blocks. Thread-safe.
    """

    def __init__(self, capacity: int, endpoint: str) -> None:
        self.capacity = capacity
        self.endpoint = endpoint
        self._batches: deque[list[T]] = deque()
        self._size = 0
        self._lock = threading.Lock()
        self.waiting = False
        """True while ``put`` is waiting for space (the session's silence watchdog reads it)."""

    def __len__(self) -> int:
        return self._size

    def _try_put(self, batch: list[T]) -> bool:
        with self._lock:
            if self._size and self._size + len(batch) > self.capacity:
                return False
            self._batches.append(batch)
            self._size += len(batch)
            return True

    async def put(self, batch: list[T]) -> None:
        """Append a batch; wait (without blocking the loop) while the buffer is full."""
        if not batch or self._try_put(batch):
            return
        started = time.monotonic()
        self.waiting = True
        BUFFER_FULL.inc(endpoint=self.endpoint)
        _log.warning(
            "hand-over buffer full, publishing paused until the flow catches up",
            extra={
                "device": self.endpoint,
                "step": "handoff",
                "buffered": self._size,
                "capacity": self.capacity,
            },
        )
        try:
            while not self._try_put(batch):
                await asyncio.sleep(_RECHECK_S)
        finally:
            self.waiting = False
            waited = time.monotonic() - started
            BUFFER_WAIT.inc(waited, endpoint=self.endpoint)
        _log.info(
            "hand-over buffer has space again, publishing resumed",
            extra={"device": self.endpoint, "step": "handoff", "waited_s": round(waited, 3)},
        )

    def drain(self, max_items: int) -> list[T]:
        """Up to about ``max_items`` items in arrival order (whole batches), never blocking."""
        out: list[T] = []
        with self._lock:
            while self._batches and len(out) < max_items:
                batch = self._batches.popleft()
                out.extend(batch)
            self._size -= len(out)
        BUFFER_DEPTH.set(self._size, endpoint=self.endpoint)
        return out
