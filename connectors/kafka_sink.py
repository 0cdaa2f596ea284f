"""Kafka sink: every output kind to its own topic, keyed by device, flushed at snapshots.

>>> import bytewax.operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSource, run_main
>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from schemas.settings import Settings
>>> from schemas.sink_kafka import KafkaSinkConfig
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> flow = Dataflow("to_kafka")
>>> outputs = op.input("in", flow, TestingSource([("telemetry", r)]))
>>> op.output("kafka", outputs, KafkaOutputSink(KafkaSinkConfig(), Settings()))
>>> run_main(flow)  # doctest: +SKIP
>>> # kcat -b 127.0.0.1:9092 -C -t streamforge.telemetry -e -f '%k %h %s\\n'
>>> # default/press-1 schema-version=1,kind=telemetry {"device":"press-1",...}

Topics (``topic_prefix`` + name, defaults): ``streamforge.telemetry``,
``.events``, ``.alarms``, ``.logs``, ``.rollups``, ``.anomaly_scores``,
``.dead_letters``; each can be renamed and given its own partitions and
retention (:class:`schemas.sink_kafka.KafkaSinkConfig`). Missing topics are
created when the sink starts (:mod:`connectors.kafka_admin`). Message
format, keys and failure handling: :mod:`connectors.kafka_producer`.

**Guarantee: a snapshot is never taken over unsent records.**
:class:`KafkaOutputSink` is a ``FixedPartitionedSink`` whose partitions are
the output kinds. Bytewax calls a partition's ``snapshot()`` at the end of
every epoch in which it was written, before the epoch's snapshot is
committed; ``snapshot()`` flushes the producer, i.e. returns only once
Kafka acknowledged (``acks=all``) every record handed over so far, and
raises :class:`~connectors.kafka_producer.KafkaDeliveryError` if any was
not delivered within ``delivery_timeout``. Between snapshots the producer
batches freely (``linger``). So after a crash, everything after the last
committed snapshot is replayed: **at-least-once**, duplicates possible
after a crash (consumers de-duplicate by the record's natural key:
``(id, seq)`` for alarms, ``(tenant, device, metric, ts)`` for readings).
A delivery error is never skipped: it fails the next ``write_batch`` or
``snapshot``, the dataflow stops, and a restart with recovery resends.
Outages shorter than ``delivery_timeout`` are ridden out by librdkafka's
own retries (idempotent, order kept) with nothing to do here; meanwhile the
bounded producer queue fills and ``write_batch`` waits (backpressure).

**Why snapshot flushes and not per batch.** Measured in
``tests/bench/bench_kafka.py`` (``tests/bench/reports/kafka.json``; 2 cores
shared with the broker, load average ~4, 200k readings, best of 3) against
:class:`KafkaBatchFlushSink`, a ``DynamicSink`` that flushes at the end of
every ``write_batch`` (what ``bytewax.connectors.kafka.KafkaSink`` does):

====================  ==============  ===========
Bytewax batch size    snapshot flush  batch flush
====================  ==============  ===========
1000                  84k records/s   72k /s
50                    66k records/s   24k /s
====================  ==============  ===========

A flush per batch costs a broker round trip per batch, so it loses the
more the smaller the batches a flow hands over (a lightly loaded flow hands
small ones); snapshot flushes keep librdkafka's batching. (Serialising
alone, ``to_json`` + key, runs at ~230k/s: the rest is librdkafka's
``produce`` with headers, ~5 µs a record here.) The price of a fixed
partitioned sink: Bytewax routes items by their key, here the kind, to the
worker that owns the kind's partition. With one worker that is free; with
several workers or processes, each kind is written by one worker and the
others' records of that kind cross to it (pickled between processes).
Where that matters, use :class:`KafkaBatchFlushSink` (every worker writes
its own records): :func:`make_kafka_sink` builds it for ``flush: batch``.

The per-device order holds because a series is processed on one worker
and the key ``tenant/device`` picks the Kafka partition.
"""

from __future__ import annotations

import threading
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from connectors.kafka_producer import KafkaDeliveryError, KafkaRecordWriter
from flows.logs import get_logger
from flows.outputs import KIND_PARTITIONS, chunk_records, iter_outputs, kind_partition
from schemas.settings import Settings
from schemas.sink_kafka import KafkaSinkConfig

__all__ = [
    "KafkaBatchFlushSink",
    "KafkaDeliveryError",
    "KafkaOutputSink",
    "make_kafka_sink",
]

log = get_logger("connectors.kafka_sink")

Output = tuple[str, Any]


class _SharedWriter:
    """One producer per sink object per process, created (and topics ensured) on first use."""

    def __init__(self, config: KafkaSinkConfig, settings: Settings) -> None:
        self.config = config
        self.bootstrap = config.bootstrap_servers or settings.kafka_bootstrap_servers
        self._writer: KafkaRecordWriter | None = None
        self._lock = threading.Lock()

    def get(self, step_id: str) -> KafkaRecordWriter:
        with self._lock:
            if self._writer is None:
                writer = KafkaRecordWriter(self.config, self.bootstrap, f"streamforge-{step_id}")
                if self.config.create_topics:
                    done = writer.ensure_topics(self.bootstrap)
                    log.info(
                        "kafka sink ready",
                        extra={"step": step_id, "bootstrap": self.bootstrap, "topics": done},
                    )
                self._writer = writer
            return self._writer


def _close(writer: KafkaRecordWriter) -> None:
    # Bytewax calls close() from a destructor, where an exception aborts the
    # whole process (a Rust panic while unwinding), hiding the real error.
    # The last epoch's snapshot() has flushed, and raised, before this.
    try:
        writer.flush()
    except KafkaDeliveryError as exc:
        log.error("kafka sink closed with undelivered records", extra={"error": str(exc)})


class KafkaKindPartition(StatefulSinkPartition[Any, None]):
    """The records of one output kind; ``snapshot()`` flushes the (shared) producer.

    The resume state is ``None``: nothing about Kafka needs remembering, the
    replay after a crash comes from the inputs' snapshots.
    """

    def __init__(self, writer: KafkaRecordWriter, kind: str) -> None:
        self.writer = writer
        self.kind = kind

    def write_batch(self, values: list[Any]) -> None:
        """Queue a batch of records or chunks of records of this partition's kind.

        (A record of another type than the kind's, which only a flow bug
        makes, is sent by its own type's kind, or dead-lettered.)
        """
        self.writer.write_kind(self.kind, chunk_records(values))

    def snapshot(self) -> None:
        """Flush: returns once Kafka has every record so far, raises if any failed."""
        self.writer.flush()

    def close(self) -> None:
        """Flush at the end of a finite flow (errors are logged: see :func:`_close`)."""
        _close(self.writer)


class KafkaOutputSink(FixedPartitionedSink[Any, None]):
    """Writes ``(kind, record)`` outputs to one Kafka topic per kind, flushing at snapshots.

    ``settings`` gives the brokers unless ``config.bootstrap_servers`` is set.
    """

    def __init__(self, config: KafkaSinkConfig, settings: Settings | None = None) -> None:
        self.config = config
        self._shared = _SharedWriter(config, settings or Settings())
        if config.flush != "snapshot":
            log.warning(
                "KafkaOutputSink always flushes at snapshots; build the sink with "
                "make_kafka_sink() to get flush: batch",
                extra={"step": "kafka_sink", "flush": config.flush},
            )

    def list_parts(self) -> list[str]:
        """Every output kind is a partition (every worker can write to Kafka)."""
        return list(KIND_PARTITIONS)

    def part_fn(self, item_key: str) -> int:
        """The kind's own partition (Bytewax indexes the sorted list of partitions)."""
        return kind_partition(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> KafkaKindPartition:
        """The partition of one kind, sharing this process's producer."""
        return KafkaKindPartition(self._shared.get(step_id), for_part)


class _FlushingPartition(StatelessSinkPartition[Output]):
    def __init__(self, writer: KafkaRecordWriter) -> None:
        self.writer = writer

    def write_batch(self, items: list[Output]) -> None:
        self.writer.write(iter_outputs(items))
        self.writer.flush()

    def close(self) -> None:
        _close(self.writer)


class KafkaBatchFlushSink(DynamicSink[Output]):
    """Like :class:`KafkaOutputSink` but a ``DynamicSink`` that flushes every batch.

    Every worker writes its own outputs (no routing between workers), and
    ``write_batch`` returns only once Kafka acknowledged the batch, so the
    snapshot guarantee holds as well; each batch costs a broker round trip.
    """

    def __init__(self, config: KafkaSinkConfig, settings: Settings | None = None) -> None:
        self.config = config
        self._shared = _SharedWriter(config, settings or Settings())

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FlushingPartition:
        """One partition per worker, sharing this process's producer."""
        return _FlushingPartition(self._shared.get(step_id))


def make_kafka_sink(
    config: KafkaSinkConfig, settings: Settings | None = None
) -> KafkaOutputSink | KafkaBatchFlushSink:
    """The sink ``config.flush`` asks for: ``snapshot`` (default) or ``batch``."""
    if config.flush == "batch":
        return KafkaBatchFlushSink(config, settings)
    return KafkaOutputSink(config, settings)
