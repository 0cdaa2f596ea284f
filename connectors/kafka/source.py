"""Kafka source: raw readings from a topic, one Bytewax partition per Kafka partition.

>>> import bytewax.operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSink, run_main
>>> from schemas.settings import Settings
>>> from connectors.kafka.source_config import KafkaSourceConfig
>>> settings = Settings()
>>> flow = Dataflow("from_kafka")
>>> config = KafkaSourceConfig(topic="streamforge.raw", stop_at_end=True)
>>> raw = op.input("kafka", flow, KafkaRawSource(config, settings))
>>> out = []
>>> op.output("out", raw, TestingSink(out))
>>> run_main(flow)  # doctest: +SKIP
>>> out[0].origin  # doctest: +SKIP
'streamforge.raw/0/0'

A recovery store remembers offsets per ``<topic>/<n>`` partition, so a
store written for another topic is refused before anything connects:

>>> KafkaRawSource(config, settings).build_part("kafka", "plant-b.raw/0", None)
Traceback (most recent call last):
    ...
ValueError: partition 'plant-b.raw/0' is not of topic 'streamforge.raw': the recovery store
belongs to a flow with another topic

In a pipeline config it is one more source (``flows.ingest`` decodes its
items like MQTT payloads)::

    sources:
      - type: kafka
        topic: plant-a.raw
        defaults: {tenant: plant-a}

**Topology: Kafka as the system of record.** Edge gateways write every raw
reading to a Kafka topic first (JSON objects, JSON arrays of objects, or
bare numbers -- see :mod:`flows.decode`), and the processing flow reads
from that topic. The raw topic then holds what the plant sent, for its
retention, independent of StreamForge: a flow that was down catches up from
where its last snapshot stopped, a new flow (or a fixed one) can re-read
history from ``start: earliest``, and several flows can read the same
topic. It is only a choice of config: edge sources (MQTT, Modbus, OPC UA)
can feed the flow directly instead, or a first flow can write them to the
raw topic and a second read from it.

**Partitions and offsets.** Each Kafka partition of the topic is one
Bytewax partition (``<topic>/<n>``), spread over the workers by Bytewax.
A partition's snapshot is the **next offset to read**; Bytewax recovery
stores it and a resumed flow continues exactly there, so what was read
before the last snapshot is not read again. Offsets live only in the
recovery store: no consumer-group commits (a committed offset could run
ahead of what the sinks have written). Without resume state a partition
starts at ``start`` (``earliest`` or ``latest``).

**Errors.** A broker that goes away is librdkafka's to reconnect to: its
errors are logged (at most one line per 10 s per partition) and counted in
``streamforge_kafka_consumer_errors_total``, and the partition simply reads
nothing meanwhile; nothing is raised. An empty payload (a tombstone) goes
to the decoder like any other and becomes a dead letter with a reason.

**Speed.** Reading is not the bottleneck of a flow with this source:
decoding is (``tests/bench/bench_kafka.py`` measures both).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.producer import LIBRDKAFKA_LOG
from connectors.kafka.sink_config import TopicSpec, retention_ms
from connectors.kafka.source_config import KafkaSourceConfig
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.models import DeadLetter, RawMessage, adapter
from schemas.settings import Settings

log = get_logger("connectors.kafka.source")

CONSUMED = counter("streamforge_kafka_consumed_total", "Kafka messages read, by source")
CONSUMER_ERRORS = counter(
    "streamforge_kafka_consumer_errors_total",
    "Kafka consumer errors (retried), by source and error",
)
LAG = gauge("streamforge_kafka_consumer_lag", "Messages behind the partition's end, by partition")

_DEAD_LETTER_HEADER = ("kind", b"dead_letter")
"""The header of a dead letter a gateway put on the raw topic (connectors/kafka/gateway.py)."""


def _dead_letter(value: bytes | None) -> DeadLetter | None:
    """The dead letter a gateway sent, or None if the value is not one (then decoded as usual)."""
    try:
        letter: DeadLetter = adapter(DeadLetter).validate_json(value or b"")
    except ValueError:
        return None
    return letter


def _partition_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


class KafkaPartition(StatefulSourcePartition[RawMessage | DeadLetter, int | None]):
    """One Kafka partition, read with ``assign`` (no group); snapshot = next offset.

    With ``stop_at_end`` the partition ends (``StopIteration``) once it has
    read up to the end offset it saw when it was built: finite runs in tests
    and benchmarks.
    """

    def __init__(
        self,
        config: KafkaSourceConfig,
        bootstrap_servers: str,
        partition: int,
        resume_offset: int | None,
    ) -> None:
        self._config = config
        self._topic = config.topic
        self._partition = partition
        self._name = _partition_name(config.topic, partition)
        self._defaults = dict(config.defaults) or None
        self._next: int | None = resume_offset
        self._awake: datetime | None = None
        self._busy = False  # data seen within the last idle_wait: poll again at once
        self._last_data = 0.0
        self._done = False
        self._last_error_log = 0.0
        self._next_lag = 0.0
        settings: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": f"streamforge-{config.name}-{partition}",
            # Required by librdkafka; never used: assign() does no group work
            # and nothing is committed (offsets live in the recovery store).
            "group.id": f"streamforge-{config.name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": config.start,
            "enable.partition.eof": False,
            # Prefetch deeper than librdkafka's default: a backlog is read
            # much faster. Memory stays bounded by queued.max.messages.kbytes
            # (64 MiB/partition).
            "queued.min.messages": 1_000_000,
            "error_cb": self._on_error,
            "logger": LIBRDKAFKA_LOG,
        }
        settings.update(config.consumer_config)
        self._consumer = Consumer(settings)
        start = resume_offset
        if start is None:
            start = OFFSET_BEGINNING if config.start == "earliest" else OFFSET_END
        self._tp = TopicPartition(self._topic, partition, start)
        self._consumer.assign([self._tp])
        self._end: int | None = None
        if config.stop_at_end:
            low, high = self._consumer.get_watermark_offsets(
                self._tp, timeout=config.connect_timeout
            )
            self._end = high
            if self._next is None:
                self._next = low if config.start == "earliest" else high
            self._done = self._next >= high
        log.info(
            "kafka partition assigned",
            extra={
                "step": "assign",
                "source": config.name,
                "partition": self._name,
                "resume_offset": resume_offset,
                "end_offset": self._end,
            },
        )

    def next_batch(self) -> list[RawMessage | DeadLetter]:
        """Up to ``batch_size`` messages as RawMessage items.

        While messages keep coming (catching up on a backlog) an empty poll
        waits up to 1 ms for the next fetch, then is retried at once; after
        ``idle_wait`` without data the partition pauses ``idle_wait``
        between polls that do not wait at all.
        """
        if self._done:
            raise StopIteration()
        msgs = self._consumer.consume(self._config.batch_size, 0.001 if self._busy else 0.0)
        if not msgs:
            if self._busy and time.monotonic() - self._last_data < self._config.idle_wait:
                return []
            self._busy = False
            self._awake = datetime.now(UTC) + timedelta(seconds=self._config.idle_wait)
            return []
        self._awake = None
        self._busy = True
        self._last_data = time.monotonic()
        now = datetime.now(UTC)
        prefix = self._name + "/"
        defaults, fmt = self._defaults, self._config.format
        out: list[RawMessage | DeadLetter] = []
        append = out.append
        last = None
        # received_at is the message's Kafka timestamp, not the time it was read: a
        # replay after a crash then gives the same received_at, so what depends on it
        # (a reading without "ts", a dead letter's identity) is the same again and
        # the sinks store it once. (One datetime per distinct millisecond.)
        stamp_ms, stamp = -1, now
        for msg in msgs:
            error = msg.error()
            if error is not None:
                self._on_error(error)
                continue
            kind, ms = msg.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                received = now
            elif ms == stamp_ms:
                received = stamp
            else:
                stamp_ms, stamp = ms, datetime.fromtimestamp(ms / 1000, UTC)
                received = stamp
            offset = msg.offset()
            last = offset
            headers = msg.headers()
            if headers is not None and _DEAD_LETTER_HEADER in headers:
                letter = _dead_letter(msg.value())
                if letter is not None:
                    append(letter)  # rejected at a gateway (flows.gateway): kept as it was
                    continue
            append(
                RawMessage(
                    msg.value() or b"", "kafka", received, f"{prefix}{offset}", defaults, fmt
                )
            )
        if last is not None:
            self._next = last + 1
            CONSUMED.inc(len(out), source=self._config.name)
            if self._end is not None and self._next >= self._end:
                self._done = True  # emit this batch; stop on the next call
        self._report_lag()
        return out

    def next_awake(self) -> datetime | None:
        """After an empty poll, pause ``idle_wait`` instead of spinning."""
        return self._awake

    def snapshot(self) -> int | None:
        """The next offset to read (None before anything was read or positioned)."""
        if self._next is None:
            position = self._consumer.position([self._tp])[0].offset
            if position >= 0:
                self._next = position
        return self._next

    def close(self) -> None:
        """Leave the broker (end of a finite flow)."""
        self._consumer.close()

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag or self._next is None:
            return
        self._next_lag = now + 1.0
        try:
            _low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except KafkaException:
            return
        if high >= 0:
            LAG.set(max(high - self._next, 0), partition=self._name)

    def _on_error(self, err: KafkaError) -> None:
        # Broker down, leader moving, ...: librdkafka retries by itself.
        CONSUMER_ERRORS.inc(source=self._config.name, error=err.name())
        now = time.monotonic()
        if now - self._last_error_log >= 10.0:
            self._last_error_log = now
            log.warning(
                "kafka consumer error; retrying",
                extra={
                    "step": "consume",
                    "source": self._config.name,
                    "partition": self._name,
                    "error": err.str(),
                },
            )


class KafkaRawSource(FixedPartitionedSource[RawMessage | DeadLetter, int | None]):
    """Raw payloads from one Kafka topic as :class:`~schemas.models.RawMessage` items.

    ``settings`` gives the brokers unless ``config.bootstrap_servers`` is set.
    """

    def __init__(self, config: KafkaSourceConfig, settings: Settings | None = None) -> None:
        self.config = config
        self.bootstrap = (
            config.bootstrap_servers or (settings or Settings()).kafka_bootstrap_servers
        )

    def list_parts(self) -> list[str]:
        """``<topic>/<n>`` for each partition; creates the topic first if configured.

        Waits up to ``connect_timeout`` for the broker, then raises saying so.
        """
        config = self.config
        admin = admin_client(self.bootstrap, config.consumer_config)
        deadline = time.monotonic() + config.connect_timeout
        delay = 0.5
        while True:
            try:
                if config.create_topic:
                    spec = TopicSpec(
                        config.topic, config.partitions, 1, retention_ms(config.retention)
                    )
                    ensure_topics(admin, [spec], align_existing=False)
                # Not list_topics(topic=...): that auto-creates on many brokers.
                metadata = admin.list_topics(timeout=5.0)
                topic = metadata.topics.get(config.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    return [_partition_name(config.topic, p) for p in sorted(topic.partitions)]
                reason = str(topic.error) if topic is not None else "topic not found"
            except KafkaException as exc:
                reason = str(exc.args[0])
            if time.monotonic() + delay > deadline:
                raise RuntimeError(
                    f"Kafka source {config.name!r}: no metadata for topic {config.topic!r} on "
                    f"{self.bootstrap} within {config.connect_timeout:g}s ({reason})"
                )
            log.warning(
                "kafka topic metadata not available; retrying",
                extra={"step": "list_parts", "source": config.name, "error": reason},
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> KafkaPartition:
        """Read one partition from ``resume_state`` (the next offset) or from ``start``."""
        topic, _, index = for_part.rpartition("/")
        if topic != self.config.topic:
            raise ValueError(
                f"partition {for_part!r} is not of topic {self.config.topic!r}: the recovery "
                "store belongs to a flow with another topic"
            )
        return KafkaPartition(self.config, self.bootstrap, int(index), resume_state)
