"""Kafka sink: every output kind to its own topic, keyed by device, flushed at snapshots.

>>> import bytewax.operators as op
>>> from bytewax.dataflow import Dataflow
>>> from bytewax.testing import TestingSource, run_main
>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from schemas.settings import Settings
>>> from connectors.kafka.sink_config import KafkaSinkConfig
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> flow = Dataflow("to_kafka")
>>> outputs = op.input("in", flow, TestingSource([("0", ("telemetry", [r]))]))
>>> sink = KafkaOutputSink(KafkaSinkConfig(), Settings())
>>> op.output("kafka", outputs, sink)
>>> run_main(flow)  # doctest: +SKIP
>>> # kcat -b 127.0.0.1:9092 -C -t streamforge.telemetry -e -f '%k %h %s\\n'
>>> # default/press-1 schema-version=1,kind=telemetry {"device":"press-1",...}

Before anything is sent: the partitions, where a series bucket's records
go, and the sink ``flush: batch`` builds instead:

>>> len(sink.list_parts()), sink.part_fn("default/press-1/temperature")
(240, 140)
>>> type(make_kafka_sink(KafkaSinkConfig(flush="batch"), Settings())).__name__
'KafkaBatchFlushSink'

Topics (``topic_prefix`` + name, defaults): ``streamforge.telemetry``,
``.events``, ``.alarms``, ``.logs``, ``.rollups``, ``.anomaly_scores``,
``.dead_letters``; each can be renamed and given its own partitions and
retention (:class:`connectors.kafka.sink_config.KafkaSinkConfig`). Missing topics are
created when the sink starts (:mod:`connectors.kafka.admin`). Message
format, keys and failure handling: :mod:`connectors.kafka.producer`.

**Guarantee: a snapshot is never taken over unsent records.**
:class:`KafkaOutputSink` is a ``FixedPartitionedSink``. Bytewax calls a
partition's ``snapshot()`` at the end of every epoch in which it was
written, before the epoch's snapshot is committed; ``snapshot()`` flushes
the producer, i.e. returns only once Kafka acknowledged (``acks=all``)
every record handed over so far, and raises
:class:`~connectors.kafka.producer.KafkaDeliveryError` if any was not
delivered within ``delivery_timeout``. Between snapshots the producer
batches freely (``linger``). So after a crash, everything after the last
committed snapshot is replayed: **at-least-once**, duplicates possible
after a crash (consumers de-duplicate by the record's natural key:
``(id, seq)`` for alarms, ``(tenant, device, metric, ts)`` for readings).
A delivery error is never skipped: it fails the next ``write_batch`` or
``snapshot``, the dataflow stops, and a restart with recovery resends.
Outages shorter than ``delivery_timeout`` are ridden out by librdkafka's
own retries (idempotent, order kept) with nothing to do here; meanwhile the
bounded producer queue fills and ``write_batch`` waits (backpressure).

**Partitions.** The sink takes :data:`connectors.runtime.outputs.RoutedOutput` items,
keyed by the series bucket that made them, and has the
:data:`~connectors.runtime.routing.ALIGNED_PARTITIONS` partitions of
:mod:`connectors.runtime.routing`:
a bucket's records go to a partition on the worker that processed the
bucket, so they never cross to another process, and each process writes
through one producer of its own. (Partitions by output kind would send
every kind's records from all workers to one worker.)

**Alarms do not wait for a batch.** The ``immediate_kinds`` (default:
alarms) go through a second producer per process with no ``linger``. With
one producer, an alarm would wait up to ``linger`` for its topic's batch to
fill; with its own producer it reaches consumers sooner. Each kind always
uses the same producer, so a device's records of a kind keep their order;
snapshots flush both.

**Why snapshot flushes and not per batch.** :class:`KafkaBatchFlushSink`
is a ``DynamicSink`` that flushes at the end of every ``write_batch`` (what
``bytewax.connectors.kafka.KafkaSink`` does). A flush per batch costs a
broker round trip per batch, so it loses the more the smaller the batches
a flow hands over (a lightly loaded flow hands small ones); snapshot
flushes keep librdkafka's batching. Most of a record's cost is
librdkafka's ``produce``, not serialising it. The comparison is
``tests/bench/bench_kafka.py``. :func:`make_kafka_sink` builds
:class:`KafkaBatchFlushSink` for ``flush: batch``.

**Order.** A series is processed on one worker and written by that
worker's producer, and the key ``tenant/device`` picks the Kafka
partition: a series' records stay in order. Records of *different* series
of one device may come from different workers, so their relative order on
the topic follows processing, not event time.
"""

from __future__ import annotations

import threading

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from connectors.kafka.producer import KafkaDeliveryError, KafkaRecordWriter
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.runtime.logs import get_logger
from connectors.runtime.outputs import Output, iter_outputs
from connectors.runtime.routing import ALIGNED_PARTITION_NAMES, aligned_partition
from schemas.settings import Settings

__all__ = [
    "KafkaBatchFlushSink",
    "KafkaDeliveryError",
    "KafkaOutputSink",
    "make_kafka_sink",
]

log = get_logger("connectors.kafka.sink")


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


class KafkaSinkPartition(StatefulSinkPartition[Output, None]):
    """One of the sink's partitions; ``snapshot()`` flushes the process's (shared) producer.

    The resume state is ``None``: nothing about Kafka needs remembering, the
    replay after a crash comes from the inputs' snapshots.
    """

    def __init__(self, writer: KafkaRecordWriter) -> None:
        self.writer = writer

    def write_batch(self, values: list[Output]) -> None:
        """Queue ``(kind, records)`` outputs, each chunk to its kind's topic.

        (A record of another type than its kind's, which only a flow bug
        makes, is sent by its own type's kind, or dead-lettered.)
        """
        write_kind = self.writer.write_kind
        for kind, records in values:
            write_kind(kind, records if type(records) is list else [records])

    def snapshot(self) -> None:
        """Flush: returns once Kafka has every record so far, raises if any failed."""
        self.writer.flush()

    def close(self) -> None:
        """Flush at the end of a finite flow (errors are logged: see :func:`_close`)."""
        _close(self.writer)


class KafkaOutputSink(FixedPartitionedSink[Output, None]):
    """Writes routed ``(key, (kind, records))`` outputs to one topic per kind, flushing at
    snapshots.

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
        """The aligned partitions of :mod:`connectors.runtime.routing` (any worker writes Kafka)."""
        return list(ALIGNED_PARTITION_NAMES)

    def part_fn(self, item_key: str) -> int:
        """The partition on the worker that processed the item's bucket."""
        return aligned_partition(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> KafkaSinkPartition:
        """A partition sharing this process's producer."""
        return KafkaSinkPartition(self._shared.get(step_id))


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
