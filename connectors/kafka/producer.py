"""The producer behind the Kafka sink: (kind, record) -> the kind's topic, failures loud.

>>> from datetime import datetime, timezone
>>> from schemas.models import Reading
>>> from schemas.settings import Settings
>>> from connectors.kafka.sink_config import KafkaSinkConfig
>>> servers = Settings().kafka_bootstrap_servers
>>> writer = KafkaRecordWriter(KafkaSinkConfig(), servers)  # doctest: +SKIP
>>> r = Reading("press-1", "temperature", datetime(2026, 1, 1, tzinfo=timezone.utc), 71.5)
>>> writer.write([("telemetry", r)])   # queued; sent within linger  # doctest: +SKIP
>>> writer.flush()                     # returns once the broker has it (acks=all)  # doctest: +SKIP

The key and the producer's settings need no broker:

>>> message_key(r)
b'default/press-1'
>>> conf = producer_config(KafkaSinkConfig(), servers, "streamforge-sink")
>>> conf["acks"], conf["enable.idempotence"], conf["linger.ms"], conf["compression.type"]
('all', True, 10, 'lz4')

A message is the record's JSON (:func:`schemas.models.to_json`), keyed by
``tenant/device`` (dead letters: ``tenant/origin``), with the headers
``schema-version`` (:data:`schemas.models.SCHEMA_VERSION`) and ``kind``.
The Kafka timestamp is the produce time, not the record's event time: a
replay of last month's data must not fall outside the topic's retention the
moment it is written.

**Failures.** The producer is idempotent (``acks=all``,
``enable.idempotence``): librdkafka retries a failed send by itself, in
order and without duplicates, for up to ``delivery_timeout``. A message it
could not deliver by then comes back as a delivery error; the writer counts
it (``streamforge_kafka_delivery_errors_total``), logs it, and from then on
:meth:`KafkaRecordWriter.write` and :meth:`KafkaRecordWriter.flush` raise
:class:`KafkaDeliveryError` -- the error is sticky, so a sink that lost a
record never carries on as if it had not. A record Kafka refuses outright
(too large) is written to the dead-letter topic instead, with the reason.
The producer's queue is bounded (``max_buffered``); when it is full,
``write`` waits for deliveries (backpressure), counted in
``streamforge_kafka_backpressure_waits_total``.

The ``immediate_kinds`` (alarms by default) have a producer of their own
with the same settings but ``linger.ms`` 0, so they are sent at once rather
than batched with the bulk; both producers' failures are handled alike.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from orjson import JSONEncodeError, dumps

from connectors.kafka.admin import admin_client, ensure_topics, topic_max_message_bytes
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.runtime.logs import RepeatFilter, get_logger
from connectors.runtime.metrics import counter, gauge
from schemas.decode_reasons import payload_text
from schemas.models import (
    FAST_JSON_FIELDS,
    JSON_OPTIONS,
    SCHEMA_VERSION,
    Alarm,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
    to_json,
)

log = get_logger("connectors.kafka.sink")
LIBRDKAFKA_LOG = get_logger("connectors.librdkafka")
"""librdkafka's own log lines, as JSON logs like the rest (instead of raw stderr); a line
repeated within 10 s (each client's every failed connection attempt while a broker is
down) is held back and counted in the next one's ``repeated``."""
LIBRDKAFKA_LOG.addFilter(RepeatFilter(10.0))

PRODUCED = counter("streamforge_kafka_produced_total", "Records queued to Kafka, by topic")
DELIVERY_ERRORS = counter(
    "streamforge_kafka_delivery_errors_total",
    "Records Kafka did not acknowledge within delivery_timeout, by topic and error",
)
REJECTED = counter(
    "streamforge_kafka_rejected_total",
    "Records Kafka refused (too large, not serialisable), sent as dead letters, by kind",
)
SKIPPED = counter(
    "streamforge_kafka_skipped_total", "Records of a kind this sink is not configured for"
)
BACKPRESSURE = counter(
    "streamforge_kafka_backpressure_waits_total", "Waits for room in a full producer queue"
)
FALLBACK = counter(
    "streamforge_dead_letter_fallback_total",
    "Dead letters Kafka refused too, written to the local fallback file (or lost: outcome)",
)
UNDELIVERED = gauge(
    "streamforge_kafka_undelivered_records", "Records queued but not yet acknowledged, by client"
)

KIND_BY_TYPE: dict[type, str] = {
    Reading: "telemetry",
    Event: "event",
    Alarm: "alarm",
    LogRecord: "log",
    Rollup: "rollup",
    AnomalyScore: "anomaly_score",
    DeadLetter: "dead_letter",
}
"""The output kind of each record type (one type per kind)."""

_DEAD_LETTER_OVERHEAD = 8192
"""Room for a dead letter's fields besides its payload (reason, origin, times, JSON)."""

REFUSED_FOR_GOOD = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
    }
)
"""Delivery errors about the record itself: sending it again can never succeed, so it
becomes a dead letter and the flow goes on (other errors stop the flow, to be replayed)."""

_MAX_CACHED_KEYS = 100_000
"""Message keys cached per tenant (devices beyond it get theirs built per record)."""


class KafkaDeliveryError(RuntimeError):
    """Kafka did not take records the sink handed to it; the flow must stop and replay."""


def message_key(record: Any) -> bytes:
    """``tenant/device``: all records of a device go to one partition, in order."""
    if type(record) is DeadLetter:
        return f"{record.tenant or 'default'}/{record.origin or record.source}".encode()
    return f"{record.tenant}/{record.device}".encode()


def producer_config(
    config: KafkaSinkConfig, bootstrap_servers: str, client_id: str
) -> dict[str, Any]:
    """librdkafka settings of the sink's producer (``producer_config`` overrides)."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": int(config.linger * 1000),
        "compression.type": config.compression,
        "message.timeout.ms": int(config.delivery_timeout * 1000),
        "queue.buffering.max.messages": config.max_buffered,
        # Successes need no callback (len(producer) says what is pending);
        # a Python call per delivered message would be paid on every record.
        "delivery.report.only.error": True,
    }
    settings.update(config.producer_config)
    return settings


class KafkaRecordWriter:
    """One idempotent producer writing ``(kind, record)`` pairs to the kinds' topics.

    Thread-safe (librdkafka's producer is; the error list has a lock), so the
    workers of one process can share it.
    """

    def __init__(
        self, config: KafkaSinkConfig, bootstrap_servers: str, client_id: str = "streamforge-sink"
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.topics: dict[str, str] = {kind: config.topic_for(kind) for kind in config.kinds}
        self.headers: dict[str, list[tuple[str, str | bytes | None]]] = {
            kind: [("schema-version", str(SCHEMA_VERSION).encode()), ("kind", kind.encode())]
            for kind in self.topics
        }
        settings = producer_config(config, bootstrap_servers, client_id)
        settings["on_delivery"] = self._on_delivery
        settings["error_cb"] = self._on_error
        settings["logger"] = LIBRDKAFKA_LOG
        self.producer = Producer(settings)
        """The bulk producer: every kind not in ``immediate_kinds``, batched for ``linger``."""
        self.immediate: Producer | None = None
        """The producer of ``immediate_kinds`` (alarms): no linger, so an alarm is sent at
        once instead of waiting up to ``linger`` for a batch of its topic to fill."""
        self._by_kind: dict[str, Producer] = dict.fromkeys(self.topics, self.producer)
        immediate = [kind for kind in config.immediate_kinds if kind in self.topics]
        if immediate:
            self.immediate = Producer(
                {**settings, "client.id": f"{client_id}-immediate", "linger.ms": 0}
            )
            self._by_kind.update(dict.fromkeys(immediate, self.immediate))
        self._producers = [p for p in (self.producer, self.immediate) if p is not None]
        self._kind_of_topic = {topic: kind for kind, topic in self.topics.items()}
        self._lock = threading.Lock()
        self._failures: list[str] = []
        self._keys: dict[str, dict[str, bytes]] = {}  # tenant -> device -> message key
        self._failed = 0
        self._last_error_log = 0.0

    def ensure_topics(self, bootstrap_servers: str) -> dict[str, str]:
        """Create the configured topics if missing; retries while the broker is unreachable."""
        admin = admin_client(bootstrap_servers, self.config.producer_config)
        delay, deadline = 0.5, time.monotonic() + self.config.delivery_timeout
        while True:
            try:
                outcomes = ensure_topics(admin, self.config.topic_specs())
                self.fit_dead_letters(admin)
                return outcomes
            except KafkaException as exc:
                error = exc.args[0]
                retriable = error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)
                if not retriable or time.monotonic() + delay > deadline:
                    raise KafkaDeliveryError(
                        f"cannot create the Kafka sink's topics on {bootstrap_servers}: {error}"
                    ) from exc
                log.warning(
                    "kafka not reachable to create topics; retrying",
                    extra={"step": "admin", "error": str(error), "retry_in_s": delay},
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def fit_dead_letters(self, admin: AdminClient) -> None:
        """Lower the dead letters' payload limit to what the dead-letter topic takes.

        A dead letter's JSON can be up to 6 times its payload (``\\u00XX``
        escapes) plus its other fields; the limit is lowered (never raised)
        so that the worst case fits the topic's ``max.message.bytes`` and the
        producer's ``message.max.bytes``, and a warning says so.
        """
        topic = self.topics.get("dead_letter")
        if topic is None:
            return
        limits = [int(self.config.producer_config.get("message.max.bytes", 1_000_000))]
        topic_limit = topic_max_message_bytes(admin, topic)
        if topic_limit is not None:
            limits.append(topic_limit)
        fits = max(1024, (min(limits) - _DEAD_LETTER_OVERHEAD) // 6)
        if DeadLetter.payload_limit > fits:
            log.warning(
                "dead-letter payloads cut shorter to fit the dead-letter topic",
                extra={
                    "step": "admin",
                    "topic": topic,
                    "max_message_bytes": min(limits),
                    "configured_payload_bytes": DeadLetter.payload_limit,
                    "payload_bytes": fits,
                },
            )
            DeadLetter.payload_limit = fits

    def write(self, items: Iterable[tuple[str, Any]]) -> int:
        """Queue records for their topics (returns how many); raises after a delivery error."""
        self.check()
        by_kind: dict[str, list[Any]] = {}
        for kind, record in items:
            records = by_kind.get(kind)
            if records is None:
                by_kind[kind] = [record]
            else:
                records.append(record)
        sent = sum(self._produce_kind(kind, records) for kind, records in by_kind.items())
        self._served()
        return sent

    def write_kind(self, kind: str, records: list[Any]) -> int:
        """Queue records all of one kind (a chunk): :meth:`write` without per-record lookups."""
        if any(KIND_BY_TYPE.get(type(r)) != kind for r in records):
            # Not this kind's records (a flow bug): each by its own type's kind, or
            # a name that is no kind, so that the record is dead-lettered.
            return self.write(
                [(KIND_BY_TYPE.get(type(r)) or f"<{type(r).__name__}>", r) for r in records]
            )
        self.check()
        sent = self._produce_kind(kind, records)
        self._served()
        return sent

    def _served(self) -> None:
        """Serve delivery reports (failures only) and update the undelivered gauge."""
        pending = 0
        for producer in self._producers:
            producer.poll(0)
            pending += len(producer)
        UNDELIVERED.set(pending, client=self.client_id)

    def _produce_kind(self, kind: str, records: list[Any]) -> int:
        """Produce records of one kind to its topic; how many were queued."""
        topic = self.topics.get(kind)
        if topic is None:
            for record in records:
                self._not_configured(kind, record)
            return 0
        producer = self._by_kind[kind]
        produce = producer.produce
        headers = self.headers[kind]
        # A chunk holds records of one type: look up its JSON fast path once.
        first_type = type(records[0]) if records else None
        as_dict = FAST_JSON_FIELDS.get(first_type) if first_type is not None else None
        keys = self._keys
        sent = 0
        for record in records:
            try:
                if as_dict is not None and type(record) is first_type:
                    try:
                        value = dumps(as_dict(record), option=JSON_OPTIONS)
                    except JSONEncodeError:
                        value = to_json(record)  # a value orjson refuses: pydantic's way
                else:
                    value = to_json(record)
                # message_key(), cached per device: it costs a string build per record
                if type(record) is DeadLetter:
                    key = message_key(record)
                else:
                    devices = keys.get(record.tenant)
                    if devices is None:
                        devices = keys[record.tenant] = {}
                    cached = devices.get(record.device)
                    if cached is None:
                        cached = message_key(record)
                        if len(devices) < _MAX_CACHED_KEYS:
                            devices[record.device] = cached
                    key = cached
            except Exception as exc:  # a flow bug; keep the record as a dead letter
                self._reject(kind, record, f"cannot serialise: {exc}")
                continue
            try:
                produce(topic, value, key, headers=headers)
            except BufferError:
                self._produce(producer, topic, value, key, headers)
            except KafkaException as exc:
                self._reject(kind, record, str(exc.args[0]), value)
                continue
            sent += 1
        PRODUCED.inc(sent, topic=topic)
        return sent

    def flush(self) -> None:
        """Return once Kafka acknowledged every queued record; raise if any failed.

        Waits as long as librdkafka keeps retrying (``delivery_timeout``),
        logging every 10 s how many records are still pending.
        """
        started = time.monotonic()
        next_log = started + 10.0
        limit = self.config.delivery_timeout + 30.0
        while True:
            remaining = sum(producer.flush(1.0) for producer in self._producers)
            self.check()
            UNDELIVERED.set(remaining, client=self.client_id)
            if remaining == 0:
                return
            waited = time.monotonic() - started
            if waited >= limit:
                raise KafkaDeliveryError(
                    f"{remaining} record(s) still unacknowledged by Kafka after {waited:.0f}s"
                )
            if time.monotonic() >= next_log:
                next_log += 10.0
                log.warning(
                    "waiting for Kafka to acknowledge records",
                    extra={"step": "flush", "pending": remaining, "waited_s": round(waited, 1)},
                )

    def check(self) -> None:
        """Raise :class:`KafkaDeliveryError` if any record failed delivery (sticky)."""
        if self._failed:
            with self._lock:
                first = "; ".join(self._failures[:3])
                raise KafkaDeliveryError(
                    f"Kafka delivery failed for {self._failed} record(s): {first}. The flow "
                    "stops so that recovery replays them from the last snapshot."
                )

    def close(self) -> None:
        """Flush and release the producer (end of a finite flow)."""
        try:
            self.flush()
        finally:
            for producer in self._producers:
                producer.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Called from poll()/flush() for failed messages only.
        if err is None:
            return
        topic = msg.topic() or "?"
        DELIVERY_ERRORS.inc(topic=topic, error=err.name())
        if err.code() in REFUSED_FOR_GOOD:
            # The broker refused this record (too large for the topic, say): no
            # retry or replay can change that, so it becomes a dead letter.
            kind = self._kind_of_topic.get(topic, "?")
            reason = f"broker refused it: {err.name()}: {err.str()}"
            # (inside poll/flush: no waiting for room here, a full queue means the file)
            self._refused(kind, msg.value() or b"", reason, topic, wait=False)
            return
        with self._lock:
            self._failed += 1
            if len(self._failures) < 10:
                self._failures.append(f"topic {topic}: {err.str()}")
        self._log_error("kafka delivery failed", err, topic=topic)

    def _on_error(self, err: KafkaError) -> None:
        # Client-level errors: brokers down, authentication. librdkafka keeps
        # retrying; only a fatal error (idempotence state lost) ends the producer.
        if err.fatal():
            with self._lock:
                self._failed += 1
                self._failures.append(f"fatal producer error: {err.str()}")
        self._log_error("kafka producer error", err)

    def _log_error(self, message: str, err: KafkaError, **extra: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 5.0 or err.fatal():  # at most one line per 5 s
            self._last_error_log = now
            log.error(message, extra={"step": "produce", "error": err.str(), **extra})

    def _produce(
        self, producer: Producer, topic: str, value: bytes, key: bytes, headers: Any
    ) -> None:
        """Produce with ``producer``, waiting for deliveries while its bounded queue is full."""
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                BACKPRESSURE.inc()
                producer.poll(0.05)
                self.check()

    def _not_configured(self, kind: str, record: Any) -> None:
        if kind in KIND_BY_TYPE.values():
            SKIPPED.inc(kind=kind)  # another sink's kind: nothing to do here
            return
        self._reject(kind, record, f"no topic for output kind {kind!r}")

    def _reject(self, kind: str, record: Any, reason: str, value: bytes | None = None) -> None:
        """A record Kafka cannot take (too large, not serialisable): to the dead letters."""
        try:
            payload = value if value is not None else to_json(record)
        except Exception:
            payload = repr(record).encode()
        self._refused(kind, payload, reason, self.topics.get(kind, "?"), record, wait=True)

    def _refused(
        self, kind: str, payload: bytes, reason: str, topic: str, record: Any = None, *, wait: bool
    ) -> None:
        """Send a refused record to the dead-letter topic; a refused dead letter to the file.

        ``wait``: wait for room in a full producer queue (backpressure), as every
        write does; a delivery callback cannot, and falls back to the file instead.
        """
        REJECTED.inc(kind=kind)
        log.error(
            "record refused; sending it as a dead letter",
            extra={"step": "produce", "kind": kind, "topic": topic, "reason": reason},
        )
        text, encoding = payload_text(payload)
        dead_topic = self.topics.get("dead_letter")
        if kind == "dead_letter" or type(record) is DeadLetter or dead_topic is None:
            # The dead letters' own destination refused it (or there is none): the
            # last resort is a local file, so that the flow goes on and nothing is silent.
            self._fall_back(kind, text, encoding, reason, len(payload))
            return
        dead = DeadLetter(
            received_at=datetime.now(UTC),
            source=getattr(record, "source", None) or "kafka",
            reason=f"kafka refused a {kind} record ({len(payload)} bytes): {reason}",
            payload=text,  # cut to DeadLetter.payload_limit, with its size and hash
            payload_encoding=encoding,
            origin=f"kafka-sink/{kind}",
            step="kafka",
            tenant=getattr(record, "tenant", None),
        )
        # Through the dead-letter kind's own producer: a kind always uses one producer.
        producer, headers = self._by_kind["dead_letter"], self.headers["dead_letter"]
        try:
            if wait:
                self._produce(producer, dead_topic, to_json(dead), message_key(dead), headers)
            else:
                producer.produce(dead_topic, to_json(dead), message_key(dead), headers=headers)
        except (BufferError, KafkaException) as exc:
            reason = f"{reason}; dead-letter topic: {exc}"
            self._fall_back(kind, text, encoding, reason, len(payload))

    def _fall_back(self, kind: str, text: str, encoding: str, reason: str, size: int) -> None:
        """Append a record no Kafka topic took to the fallback file (JSON lines)."""
        path = self.config.dead_letter_fallback
        line = {
            "at": datetime.now(UTC).isoformat(),
            "kind": kind,
            "reason": reason,
            "payload_size": size,  # bytes of the refused payload
            "payload_encoding": encoding,
            "payload": text,  # whole: a local file has no message size limit
        }
        try:
            with self._lock, open(path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")
            outcome = "written"
        except OSError as exc:
            outcome = "lost"
            reason = f"{reason}; fallback file {path}: {exc}"
        FALLBACK.inc(outcome=outcome)
        log.error(
            "a record no Kafka topic takes: written to the fallback file"
            if outcome == "written"
            else "a record no Kafka topic takes, and the fallback file failed: lost",
            extra={"step": "produce", "kind": kind, "path": str(path), "reason": reason},
        )
