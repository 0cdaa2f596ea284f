"""Kafka from the API: produce and await the broker's acknowledgement, without blocking the loop.

>>> import asyncio
>>> async def demo() -> None:
...     producer = AsyncProducer("127.0.0.1:9092")
...     await producer.send("streamforge.raw", [(b"default/press-1", b'{"value": 1}', None)])
...     producer.close()
>>> asyncio.run(demo())  # doctest: +SKIP

A batch is settled message by message as delivery reports arrive; the
first error fails the whole ``send`` (the answer is then 503):

>>> async def one_refused() -> None:
...     batch = _Batch(asyncio.get_running_loop(), "streamforge.raw", 2, _Batch.resolve)
...     batch.settle(1, None)                               # acknowledged
...     batch.settle(1, "Broker: Message size too large")   # refused
...     await batch.future
>>> asyncio.run(one_refused())
Traceback (most recent call last):
    ...
api.kafka.KafkaUnavailableError: Broker: Message size too large

:meth:`AsyncProducer.send` queues a batch of messages and returns once
Kafka acknowledged all of them (``acks=all``, idempotent producer), or
raises :class:`KafkaUnavailableError` with the first error: the API answers only
for what Kafka really has. A thread serves librdkafka's delivery reports
and hands results back to the event loop. The queue is bounded by
librdkafka (``queue.buffering.max.messages``); when full, ``send`` waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.producer import LIBRDKAFKA_LOG
from connectors.kafka.sink_config import TopicSpec
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter

log = get_logger("api.kafka")
PRODUCED = counter("streamforge_api_kafka_produced_total", "Messages the API produced, by topic")
FAILED = counter("streamforge_api_kafka_failed_total", "Messages Kafka did not take, by topic")

Headers = list[tuple[str, str | bytes | None]] | None
Message3 = tuple[bytes | None, bytes, Headers]
"""(key, value, headers) of one message."""


class KafkaUnavailableError(RuntimeError):
    """Kafka did not acknowledge a message (answered 503)."""


class _Batch:
    __slots__ = ("count", "error", "finished", "future", "lock", "loop", "remaining", "topic")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topic: str,
        count: int,
        finished: Callable[[_Batch], None],
    ) -> None:
        self.loop = loop
        self.topic = topic
        self.count = count
        self.finished = finished
        self.future: asyncio.Future[None] = loop.create_future()
        self.remaining = count
        self.error: str | None = None
        self.lock = threading.Lock()

    def done(self, err: KafkaError | None, _msg: Message | None) -> None:
        # librdkafka calls this from the poll thread, once per message.
        self.settle(1, err.str() if err is not None else None)

    def settle(self, count: int, error: str | None) -> None:
        with self.lock:
            if error is not None and self.error is None:
                self.error = error
            self.remaining -= count
            finished = self.remaining == 0
        if finished:
            self.finished(self)

    def resolve(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(KafkaUnavailableError(self.error))


def _resolve_all(batches: list[_Batch]) -> None:
    for batch in batches:
        batch.resolve()


def _count(batches: list[_Batch]) -> None:
    """Add finished batches to the produced / failed counters, one increment per topic."""
    produced: dict[str, int] = {}
    failed: dict[str, int] = {}
    for batch in batches:
        counts = produced if batch.error is None else failed
        counts[batch.topic] = counts.get(batch.topic, 0) + batch.count
    for topic, n in produced.items():
        PRODUCED.inc(n, topic=topic)
    for topic, n in failed.items():
        FAILED.inc(n, topic=topic)


class AsyncProducer:
    """One idempotent producer shared by every request of the process."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        linger_ms: int = 2,
        delivery_timeout_s: float = 15.0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "streamforge-api",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": linger_ms,
            "compression.type": "lz4",
            # A request waits at most this long for Kafka, then answers 503.
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "queue.buffering.max.messages": 200_000,
            "logger": LIBRDKAFKA_LOG,
        }
        config.update(extra or {})
        self.producer = Producer(config)
        self._stop = threading.Event()
        self._done: list[_Batch] = []  # finished in the poll thread, not yet handed over
        self._thread = threading.Thread(target=self._poll, name="api-kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        # Batches finished during one poll() go back to their event loop in
        # one call_soon_threadsafe (one wake-up) rather than one each, and
        # are counted here, once per topic, not on the event loop's thread.
        while not self._stop.is_set():
            self.producer.poll(0.05)
            if self._done:
                done, self._done = self._done, []
                _count(done)  # before the futures resolve: counted when send() returns
                by_loop: dict[asyncio.AbstractEventLoop, list[_Batch]] = {}
                for batch in done:
                    by_loop.setdefault(batch.loop, []).append(batch)
                for loop, batches in by_loop.items():
                    with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                        loop.call_soon_threadsafe(_resolve_all, batches)

    def _finished(self, batch: _Batch) -> None:
        if threading.current_thread() is self._thread:
            self._done.append(batch)
        else:  # refused in produce(), on the loop's own thread
            _count([batch])
            batch.loop.call_soon_threadsafe(batch.resolve)

    def ensure_topics(
        self, topics: Sequence[str], partitions: int = 3, timeout: float = 10.0
    ) -> dict[str, str]:
        """Create missing topics (blocking; at start-up). Existing ones are left as they are."""
        specs = [TopicSpec(name=t, partitions=partitions) for t in topics]
        return ensure_topics(
            admin_client(self.bootstrap_servers), specs, timeout=timeout, align_existing=False
        )

    async def send(self, topic: str, messages: Sequence[Message3]) -> None:
        """Produce ``messages`` to ``topic``; return once Kafka has all of them."""
        if not messages:
            return
        batch = _Batch(asyncio.get_running_loop(), topic, len(messages), self._finished)
        produce = self.producer.produce
        for index, (key, value, headers) in enumerate(messages):
            try:
                try:
                    produce(topic, value, key, headers=headers, on_delivery=batch.done)
                except BufferError:  # queue full: wait for deliveries to drain it
                    await self._produce(topic, key, value, headers, batch)
            except KafkaException as exc:  # refused outright (too large, ...)
                batch.settle(len(messages) - index, str(exc.args[0]))
                break
        await batch.future  # KafkaUnavailableError if any message was not acknowledged

    async def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, batch: _Batch
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=batch.done)
                return
            except BufferError:
                await asyncio.sleep(0.005)  # queue full: let deliveries drain it

    async def ping(self, timeout: float = 3.0) -> None:
        """Raise unless a broker answers a metadata request."""
        await asyncio.to_thread(self.producer.list_topics, timeout=timeout)

    def close(self) -> None:
        """Deliver what is queued (up to 10 s) and stop the poll thread."""
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.producer.flush(10.0)
