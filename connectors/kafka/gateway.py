"""The edge gateway's way to Kafka: every message is spooled on disk, then forwarded in order.

:class:`SpoolSink` is the Bytewax sink of ``flows.gateway``. Its items are
``(key, messages)``, each message a :func:`spooled` record (topic, key,
kind and value). ``write_batch`` appends them to the partition's spool
(:mod:`connectors.runtime.spool`) and returns once they are on disk; a
:class:`SpoolForwarder` thread per partition reads the spool in order,
sends to Kafka, and removes what Kafka confirmed. So:

* sources upstream see their items taken only once they are on disk: an
  MQTT QoS 1 message is acknowledged (``ack: epoch``) after the spool's
  fsync, whether Kafka is up or not;
* while Kafka is unreachable or slow, collection goes on into the spool
  (bounded: ``spool.max_bytes``, then ``spool.when_full``); when Kafka is
  back the backlog is forwarded first, then what came meanwhile, in order;
* a gateway killed (SIGKILL) and restarted forwards whatever its spool
  holds. What Kafka had confirmed but the spool's cursor had not yet
  recorded is sent again: at least once, and the ingest flow counts a
  repeated reading once (its duplicate guard and idempotent sinks).

A spooled message and what Kafka will carry:

>>> record = spooled("streamforge.raw", b"default/press-1", "readings", b'[{"value": 1}]')
>>> unspool(record)
('streamforge.raw', b'default/press-1', 'readings', b'[{"value": 1}]')

Kafka messages carry the headers ``kind`` (``readings`` or ``dead_letter``),
``gateway`` (:attr:`GatewayConfig.id`) and ``schema-version``.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import orjson
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.gateway_config import GatewayConfig
from connectors.kafka.producer import LIBRDKAFKA_LOG
from connectors.kafka.sink_config import TopicSpec, retention_ms
from connectors.runtime.logs import get_logger
from connectors.runtime.metrics import counter
from connectors.runtime.spool import Spool
from schemas.models import SCHEMA_VERSION
from schemas.settings import Settings

log = get_logger("connectors.kafka.gateway")

FORWARDED = counter(
    "streamforge_gateway_forwarded_records_total", "Spooled messages Kafka confirmed, by spool"
)
FORWARD_FAILURES = counter(
    "streamforge_gateway_forward_failures_total",
    "Sends from the spool Kafka did not confirm in forward_timeout (retried), by spool",
)

_MAX_BACKOFF = 5.0
"""Most seconds between two attempts to reach Kafka: the spool drains soon after it is back."""

GatewayItem = tuple[str, list[bytes]]
"""What :class:`SpoolSink` takes: (routing key, spooled messages)."""


def spooled(topic: str, key: bytes, kind: str, value: bytes) -> bytes:
    """One message as the spool keeps it: a JSON line ``[topic, key, kind]``, then the value.

    (The key goes as latin-1 text: any bytes survive the trip through JSON.)
    """
    return orjson.dumps([topic, key.decode("latin-1"), kind]) + b"\n" + value


def unspool(record: bytes) -> tuple[str, bytes, str, bytes]:
    """(topic, key, kind, value) of a :func:`spooled` record."""
    head, _, value = record.partition(b"\n")
    topic, key, kind = orjson.loads(head)
    return topic, key.encode("latin-1"), kind, value


def gateway_id(config: GatewayConfig) -> str:
    """The configured gateway id, else this host's name."""
    return config.id or socket.gethostname()


class SpoolForwarder:
    """A thread sending one spool's records to Kafka in order, removing what Kafka confirmed.

    It reads up to ``forward_batch`` records, sends them and waits until
    Kafka confirmed every one (``acks=all``, idempotent producer). If any
    is not confirmed within ``forward_timeout`` (Kafka down, slow, or
    refusing), the spool is rewound and the same records are sent again
    after a backoff (0.5 s doubling to 5 s: a send to a Kafka that is still
    down already waits ``forward_timeout``). The topic is created first,
    retried the same way while Kafka is unreachable.
    """

    def __init__(self, spool: Spool, config: GatewayConfig, bootstrap_servers: str) -> None:
        self.spool = spool
        self.config = config
        self.bootstrap_servers = bootstrap_servers
        self.gateway = gateway_id(config).encode()
        self._labels = {"spool": spool.name}
        self._stop = threading.Event()
        self._failed = 0
        self._last_error: KafkaError | None = None
        self._producer = self._make_producer()
        self._topics_ready = False
        self._thread = threading.Thread(
            target=self._run, name=f"spool-forwarder-{spool.name}", daemon=True
        )
        self._thread.start()

    def _make_producer(self) -> Producer:
        config = self.config
        settings: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": f"streamforge-gateway-{self.spool.name}",
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": int(config.linger * 1000),
            "compression.type": config.compression,
            "message.timeout.ms": int(config.forward_timeout * 1000),
            "queue.buffering.max.messages": max(config.forward_batch, 1000),
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            "logger": LIBRDKAFKA_LOG,
        }
        settings.update(config.producer_config)
        return Producer(settings)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed += 1
            self._last_error = err

    def _extra(self, step: str, **more: Any) -> dict[str, Any]:
        return {"step": step, "spool": self.spool.name, "topic": self.config.topic, **more}

    def _pause(self, seconds: float) -> None:
        """Wait before a retry, keeping the spool's gauges current (its oldest record ages)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.spool.publish_metrics()
            self._stop.wait(min(1.0, deadline - time.monotonic()))

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            self.spool.publish_metrics()
            try:
                if not self._topics_ready:
                    self._create_topic()
                batch = self.spool.read(max_records=self.config.forward_batch, wait=0.1)
                if batch.records:
                    self._send(batch.records)
                if batch.count or batch.end > self.spool.committed:
                    self.spool.commit(batch)
                if batch.records:
                    FORWARDED.inc(len(batch.records), **self._labels)
                backoff = 0.5
            except _NotConfirmedError as exc:
                FORWARD_FAILURES.inc(1, **self._labels)
                log.warning(
                    "kafka did not confirm records from the spool; sending them again",
                    extra=self._extra(
                        "forward",
                        error=str(exc),
                        retry_in_s=backoff,
                        spooled_records=self.spool.pending_records,
                    ),
                )
                self.spool.rewind()
                self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except KafkaException as exc:
                log.warning(
                    "kafka not reachable from the gateway; spooling meanwhile",
                    extra=self._extra("forward", error=str(exc.args[0]), retry_in_s=backoff),
                )
                self.spool.rewind()
                self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except Exception:  # a forwarder must not die silently: log and retry
                log.exception("spool forwarder failed; retrying", extra=self._extra("forward"))
                self.spool.rewind()
                self._pause(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _create_topic(self) -> None:
        admin = admin_client(self.bootstrap_servers, self.config.producer_config)
        spec = TopicSpec(
            name=self.config.topic,
            partitions=self.config.partitions,
            retention_ms=retention_ms(self.config.retention),
        )
        ensure_topics(admin, [spec], timeout=10.0, align_existing=False)
        self._topics_ready = True

    def _send(self, records: list[bytes]) -> None:
        producer = self._producer
        self._failed = 0
        gateway = self.gateway
        version = str(SCHEMA_VERSION).encode()
        for record in records:
            topic, key, kind, value = unspool(record)
            headers: list[tuple[str, str | bytes | None]] = [
                ("kind", kind.encode()),
                ("gateway", gateway),
                ("schema-version", version),
            ]
            while True:
                try:
                    producer.produce(topic, value, key, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)  # the producer's queue is full: let it deliver
        while len(producer) and not self._stop.is_set():
            producer.flush(0.5)
        if len(producer):
            raise _NotConfirmedError("stopping before Kafka confirmed")
        if self._failed:
            raise _NotConfirmedError(f"{self._failed} not confirmed: {self._last_error}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the send in progress (up to ``timeout`` s); the spool keeps the rest."""
        deadline = time.monotonic() + timeout
        while self.spool.pending_records and time.monotonic() < deadline:
            time.sleep(0.05)  # give what is spooled a chance to leave
        self._stop.set()
        self._thread.join(max(0.1, deadline - time.monotonic()) + 1.0)


class _NotConfirmedError(RuntimeError):
    """Kafka did not confirm every record of a send."""


class SpoolSinkPartition(StatefulSinkPartition[list[bytes], None]):
    """One spool directory and its forwarder."""

    def __init__(self, spool: Spool, forwarder: SpoolForwarder) -> None:
        self.spool = spool
        self.forwarder = forwarder

    def write_batch(self, items: list[list[bytes]]) -> None:
        """Append the messages (Bytewax strips the routing keys) to the spool, synced."""
        records = [record for messages in items for record in messages]
        self.spool.append(records)

    def snapshot(self) -> None:
        """The spool on disk is the state: nothing for Bytewax to keep."""
        return None

    def close(self) -> None:
        self.forwarder.stop()
        self.spool.close()


class SpoolSink(FixedPartitionedSink[list[bytes], None]):
    """``spool_partitions`` spools under ``spool.path`` (``part-<i>``), each forwarded to Kafka.

    Items are routed by key: a series bucket's number (``flows.gateway``
    keys readings by the bucket of their device), other keys to partition
    0. A device's messages thus stay in one spool, in order.
    """

    def __init__(self, config: GatewayConfig, settings: Settings | None = None) -> None:
        self.config = config
        settings = settings or Settings()
        self.bootstrap_servers = config.bootstrap_servers or settings.kafka_bootstrap_servers

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(self.config.spool_partitions)]

    def part_fn(self, item_key: str) -> int:
        return int(item_key) if item_key.isdigit() else 0

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> SpoolSinkPartition:
        spool_config = self.config.spool.model_copy(
            update={"path": f"{self.config.spool.path}/part-{for_part}"}
        )
        spool = Spool(spool_config, name=for_part)
        return SpoolSinkPartition(spool, SpoolForwarder(spool, self.config, self.bootstrap_servers))
