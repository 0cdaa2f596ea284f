"""Live updates for the console: one Kafka consumer per API process, fanned out by tenant.

>>> hub = LiveHub("127.0.0.1:9092", "streamforge.alarms", "")   # not started: no Kafka
>>> sub = hub.subscribe("plant-a")
>>> hub._dispatch([("alarm", "plant-a", {"id": "a1"}), ("alarm", "plant-b", {"id": "b1"})])
>>> sub.queue.get_nowait()
('alarm', {'id': 'a1'})
>>> sub.queue.empty()                                  # plant-b's alarm is not ours
True
>>> hub.unsubscribe(sub)

A browser never talks to Kafka: the consumer thread reads the alarms topic
(every transition, sent at once) and the telemetry topic (the newest value
of each series, sent at most once per ``tick_s``, so a plant of thousands of
readings a second costs each browser one small message a second), and hands
them to the event loop, which puts them on each subscriber's queue of its
tenant. The consumer joins no group and starts at the end of each topic:
the console loads history from the database and only needs what comes next.
A subscriber too slow to keep up (queue full) is told to ``resync`` (reload
from the database) instead of holding the others back.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError

from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge, histogram

log = get_logger("api.console.live")

SUBSCRIBERS = gauge("streamforge_console_live_subscribers", "Console live streams open")
SENT = counter("streamforge_console_live_events_total", "Live events queued to consoles, by kind")
RESYNCS = counter(
    "streamforge_console_live_resyncs_total",
    "Consoles too slow for the live stream, told to reload",
)
DELAY = histogram(
    "streamforge_console_live_delay_seconds",
    "From an alarm's Kafka timestamp to its hand-over to the consoles' streams",
)

Event = tuple[str, Any]
"""(kind, data): ``alarm`` (an alarm as JSON), ``readings`` (newest values), ``resync``."""
QUEUE_SIZE = 1000


@dataclass(eq=False)
class Subscription:
    """One console's live stream: its tenant and the queue its events wait in."""

    tenant: str
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))


class LiveHub:
    """Reads alarms and telemetry from Kafka in a thread; queues them per tenant."""

    def __init__(
        self, bootstrap: str, alarms_topic: str, telemetry_topic: str, tick_s: float = 1.0
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = [t for t in (alarms_topic, telemetry_topic) if t]
        self.alarms_topic = alarms_topic
        self.tick_s = tick_s
        self._subs: dict[str, set[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.ready = threading.Event()
        """Set once the consumer has its partitions (tests wait for it before producing)."""

    def subscribe(self, tenant: str) -> Subscription:
        """A new stream of this tenant's events (starts the consumer on first use)."""
        sub = Subscription(tenant)
        self._subs.setdefault(tenant, set()).add(sub)
        SUBSCRIBERS.set(sum(len(s) for s in self._subs.values()))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """End a stream."""
        self._subs.get(sub.tenant, set()).discard(sub)
        SUBSCRIBERS.set(sum(len(s) for s in self._subs.values()))

    def start(self) -> None:
        """Start the consumer thread, once, bound to the running event loop."""
        if self._thread is not None or not self.topics:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._consume, name="console-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the consumer thread (within a poll interval)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _dispatch(self, events: Iterable[tuple[str, str, Any]]) -> None:
        """On the event loop: queue (kind, tenant, data) to the tenant's subscribers."""
        for kind, tenant, data in events:
            for sub in list(self._subs.get(tenant, ())):
                try:
                    sub.queue.put_nowait((kind, data))
                    SENT.inc(kind=kind)
                except asyncio.QueueFull:
                    RESYNCS.inc()
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    sub.queue.put_nowait(("resync", None))

    def _send(self, events: list[tuple[str, str, Any]]) -> None:
        if events and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed while shutting down
                self._loop.call_soon_threadsafe(self._dispatch, events)

    def _consume(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                # A group of its own, never committed: every API process sees everything.
                "group.id": f"streamforge-console-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                "topic.metadata.refresh.interval.ms": 5000,
                "session.timeout.ms": 10000,
            }
        )

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            # Start exactly at each partition's end as of now (not "latest" at
            # some later fetch): whatever is produced after ``ready`` arrives.
            for tp in partitions:
                tp.offset = consumer.get_watermark_offsets(tp, timeout=10)[1]
            consumer.assign(partitions)
            if partitions:
                self.ready.set()

        consumer.subscribe(self.topics, on_assign=assigned)
        latest: dict[tuple[str, str, str], dict[str, Any]] = {}
        next_tick = time.monotonic() + self.tick_s
        try:
            while not self._stop.is_set():
                alarms: list[tuple[str, str, Any]] = []
                # Wait for one message, then take what is already buffered:
                # consume(n, timeout) alone would hold a lone alarm back until
                # n arrive or the timeout ends.
                first = consumer.poll(0.2)
                batch = [first, *consumer.consume(499, 0)] if first is not None else []
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("live consumer error", extra={"error": str(err)})
                        continue
                    try:
                        record = orjson.loads(msg.value() or b"")
                    except orjson.JSONDecodeError:
                        continue  # not ours to judge: the flow's dead letters say why
                    if not isinstance(record, dict) or "tenant" not in record:
                        continue
                    if msg.topic() == self.alarms_topic:
                        alarms.append(("alarm", record["tenant"], record))
                        kind, ts_ms = msg.timestamp()
                        if kind != TIMESTAMP_NOT_AVAILABLE:
                            DELAY.observe(max(0.0, time.time() - ts_ms / 1000))
                    else:
                        key = (record["tenant"], record.get("device", ""), record.get("metric", ""))
                        latest[key] = {
                            k: record.get(k) for k in ("device", "metric", "ts", "value", "score")
                        }
                self._send(alarms)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self.tick_s
                    by_tenant: dict[str, list[dict[str, Any]]] = {}
                    for (tenant, _d, _m), value in latest.items():
                        by_tenant.setdefault(tenant, []).append(value)
                    latest.clear()
                    self._send([("readings", t, values) for t, values in by_tenant.items()])
        except Exception:
            log.exception("live consumer stopped")
        finally:
            consumer.close()
