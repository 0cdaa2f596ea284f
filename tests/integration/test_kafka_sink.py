"""The Kafka sink against the real broker, read back by kcat and by confluent-kafka."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import FixedPartitionedSink
from bytewax.testing import TestingSource, run_main

from connectors.kafka.producer import (
    DELIVERY_ERRORS,
    FALLBACK,
    REJECTED,
    SKIPPED,
    KafkaDeliveryError,
    KafkaRecordWriter,
)
from connectors.kafka.sink import KafkaBatchFlushSink, KafkaOutputSink, make_kafka_sink
from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.runtime.outputs import route_by_kind
from schemas.kinds import ALL_OUTPUT_KINDS
from schemas.models import SCHEMA_VERSION, DeadLetter, Reading, adapter, to_json
from schemas.settings import Settings
from tests.support.kafka_tools import (
    at,
    consume_all,
    delete_topics,
    headers_of,
    kcat_read,
    one_of_each,
    unique,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def sink_config(kafka_bootstrap: str) -> Iterator[KafkaSinkConfig]:
    """A sink config whose topics are unique to this test; they are deleted afterwards."""
    config = KafkaSinkConfig(topic_prefix=unique("sf-test") + ".", partitions=3)
    yield config
    delete_topics(kafka_bootstrap, [config.topic_for(k) for k in ALL_OUTPUT_KINDS])


def run_sink(sink: Any, items: list[tuple[str, Any]], batch_size: int = 1000) -> None:
    """Plain ``(kind, record)`` items; keyed by their kind for the partitioned sink."""
    if isinstance(sink, FixedPartitionedSink):
        items = route_by_kind(items)
    flow = Dataflow("kafka_sink_test")
    stream = op.input("in", flow, TestingSource(items, batch_size=batch_size))
    op.output("kafka", stream, sink)
    run_main(flow)


def test_each_kind_goes_to_its_topic_keyed_by_device_with_headers(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, settings: Settings
) -> None:
    items = one_of_each("press-1", "plant-a") + one_of_each("press-2", "plant-b")
    run_sink(KafkaOutputSink(sink_config, settings), items, batch_size=3)

    assert sink_config.topic_for("anomaly_score").endswith(".anomaly_scores")
    for kind in ALL_OUTPUT_KINDS:
        topic = sink_config.topic_for(kind)
        expected = [record for k, record in items if k == kind]
        # Independent client: kcat.
        envelopes = kcat_read(kafka_bootstrap, topic, expected=len(expected))
        assert len(envelopes) == len(expected), topic
        by_key = {e["key"]: e for e in envelopes}
        for record in expected:
            key = (
                f"{record.tenant}/{record.origin}"
                if isinstance(record, DeadLetter)
                else f"{record.tenant}/{record.device}"
            )
            envelope = by_key[key]
            assert headers_of(envelope) == {"schema-version": str(SCHEMA_VERSION), "kind": kind}
            assert json.loads(envelope["payload"]) == json.loads(to_json(record))
            # The value is the record's JSON and validates back into the same record.
            assert adapter(type(record)).validate_json(envelope["payload"]) == record


def test_records_read_back_with_confluent_kafka_in_device_order(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, settings: Settings
) -> None:
    devices = [f"dev-{i}" for i in range(12)]
    items = [
        ("telemetry", Reading(devices[i % 12], "speed", at(i), float(i), tenant="t1"))
        for i in range(3000)
    ]
    run_sink(KafkaOutputSink(sink_config, settings), items, batch_size=250)

    messages = consume_all(kafka_bootstrap, sink_config.topic_for("telemetry"))
    assert len(messages) == 3000
    partitions: dict[bytes, set[int]] = defaultdict(set)
    values: dict[bytes, list[float]] = defaultdict(list)
    for msg in sorted(messages, key=lambda m: (m.partition(), m.offset())):
        partitions[msg.key()].add(msg.partition())
        values[msg.key()].append(json.loads(msg.value())["value"])
        assert dict(msg.headers())["kind"] == b"telemetry"
    assert set(partitions) == {f"t1/{d}".encode() for d in devices}
    # One partition per device, and each device's values in the order written.
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # keys do spread
    for key, seen in values.items():
        assert seen == sorted(seen), key
        assert len(seen) == 250


def test_batch_flush_sink_writes_the_same(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, settings: Settings
) -> None:
    batch_config = sink_config.model_copy(update={"flush": "batch"})
    sink = make_kafka_sink(batch_config, settings)
    assert isinstance(sink, KafkaBatchFlushSink)
    items = one_of_each("press-9")
    run_sink(sink, items, batch_size=2)
    for kind in ("telemetry", "alarm", "dead_letter"):
        envelopes = kcat_read(kafka_bootstrap, sink_config.topic_for(kind), expected=1)
        assert [headers_of(e)["kind"] for e in envelopes] == [kind]


def test_only_configured_kinds_are_written(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, settings: Settings
) -> None:
    config = sink_config.model_copy(update={"kinds": ["alarm"]})
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    before = SKIPPED.value(kind="telemetry")
    assert writer.write(one_of_each("press-3")) == 1
    writer.close()
    assert SKIPPED.value(kind="telemetry") == before + 1
    assert len(kcat_read(kafka_bootstrap, config.topic_for("alarm"), expected=1)) == 1


def test_record_of_unknown_kind_becomes_a_dead_letter(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str
) -> None:
    writer = KafkaRecordWriter(sink_config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    before = REJECTED.value(kind="bogus")
    reading = Reading("press-4", "temperature", at(1), 1.0)
    assert writer.write([("bogus", reading)]) == 0
    writer.close()
    assert REJECTED.value(kind="bogus") == before + 1
    [envelope] = kcat_read(kafka_bootstrap, sink_config.topic_for("dead_letter"), expected=1)
    dead = adapter(DeadLetter).validate_json(envelope["payload"])
    assert "no topic for output kind 'bogus'" in dead.reason
    assert json.loads(dead.payload) == json.loads(to_json(reading))


def writer_to_nowhere() -> tuple[KafkaSinkConfig, KafkaRecordWriter]:
    """A writer to a port nothing listens on: every message times out after 1.5 s."""
    config = KafkaSinkConfig(
        topic_prefix=unique("sf-nowhere") + ".",
        create_topics=False,
        delivery_timeout=1.5,
        producer_config={"socket.connection.setup.timeout.ms": 1000},
    )
    return config, KafkaRecordWriter(config, "127.0.0.1:1")


def test_delivery_failure_raises_with_a_clear_message() -> None:
    config, writer = writer_to_nowhere()
    topic = config.topic_for("telemetry")
    before = DELIVERY_ERRORS.value(topic=topic, error="_MSG_TIMED_OUT")
    writer.write([("telemetry", Reading("d", "m", datetime.now(UTC), 1.0))])
    with pytest.raises(KafkaDeliveryError, match=r"Kafka delivery failed for 1 record"):
        writer.flush()
    assert DELIVERY_ERRORS.value(topic=topic, error="_MSG_TIMED_OUT") == before + 1
    # Sticky: the writer refuses to carry on as if nothing was lost.
    with pytest.raises(KafkaDeliveryError):
        writer.write([("telemetry", Reading("d", "m", datetime.now(UTC), 2.0))])


def test_delivery_failure_stops_the_dataflow(settings: Settings) -> None:
    config = KafkaSinkConfig(
        topic_prefix=unique("sf-nowhere") + ".",
        bootstrap_servers="127.0.0.1:1",
        create_topics=False,
        delivery_timeout=1.5,
    )
    items = [("telemetry", Reading("d", "m", at(i), float(i))) for i in range(10)]
    with pytest.raises(Exception, match="error snapshotting StatefulSink") as raised:
        run_sink(KafkaOutputSink(config, settings), items)
    cause = raised.value.__cause__
    assert isinstance(cause, KafkaDeliveryError)
    assert "Kafka delivery failed for 10 record(s)" in str(cause)
    assert "Message timed out" in str(cause)


def test_same_device_name_in_two_tenants_gets_two_keys(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, settings: Settings
) -> None:
    # The writer caches message keys per tenant and device: a device name
    # that two tenants use must still give each tenant's records its own key.
    items = [
        ("telemetry", Reading("press-1", "speed", at(i), float(i), tenant=f"t{i % 2}"))
        for i in range(100)
    ]
    run_sink(KafkaOutputSink(sink_config, settings), items, batch_size=10)

    messages = consume_all(kafka_bootstrap, sink_config.topic_for("telemetry"))
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for msg in messages:
        by_key[msg.key()].append(json.loads(msg.value())["tenant"])
    assert {k: set(v) for k, v in by_key.items()} == {b"t0/press-1": {"t0"}, b"t1/press-1": {"t1"}}
    assert sorted(len(v) for v in by_key.values()) == [50, 50]


def test_alarms_are_sent_at_once_while_the_bulk_lingers(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str
) -> None:
    # The bulk producer holds its records for 5 s (linger); the alarm goes
    # through the immediate producer and is acknowledged long before that.
    config = sink_config.model_copy(update={"linger": 5.0})
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    assert writer.immediate is not None
    records = one_of_each("press-5")
    assert writer.write(records) == len(records)
    assert writer.immediate.flush(4.0) == 0  # the alarm is acknowledged ...
    assert len(writer.producer) == len(records) - 1  # ... the other six still wait
    [envelope] = kcat_read(kafka_bootstrap, config.topic_for("alarm"), expected=1)
    assert headers_of(envelope)["kind"] == "alarm"
    assert json.loads(envelope["payload"])["device"] == "press-5"
    writer.close()  # flushes both producers
    assert len(writer.producer) == 0
    assert len(kcat_read(kafka_bootstrap, config.topic_for("telemetry"), expected=1)) == 1


def test_without_immediate_kinds_one_producer_sends_everything(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str
) -> None:
    config = sink_config.model_copy(update={"immediate_kinds": []})
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    assert writer.immediate is None
    assert writer.write(one_of_each("press-6")) == 7
    writer.close()
    for kind in ALL_OUTPUT_KINDS:
        assert len(kcat_read(kafka_bootstrap, config.topic_for(kind), expected=1)) == 1, kind


def test_undelivered_alarm_raises_like_any_record() -> None:
    config, writer = writer_to_nowhere()
    topic = config.topic_for("alarm")
    before = DELIVERY_ERRORS.value(topic=topic, error="_MSG_TIMED_OUT")
    writer.write([one_of_each("press-7")[2]])  # the alarm, via the immediate producer
    with pytest.raises(KafkaDeliveryError, match=r"Kafka delivery failed for 1 record"):
        writer.flush()
    assert DELIVERY_ERRORS.value(topic=topic, error="_MSG_TIMED_OUT") == before + 1


def _small_topics(bootstrap: str, config: KafkaSinkConfig, limits: dict[str, int]) -> None:
    """Create these kinds' topics with these message limits (bytes) before the sink does."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(config.topic_for(kind), 1, 1, config={"max.message.bytes": str(limit)})
        for kind, limit in limits.items()
    ]
    for future in admin.create_topics(new).values():
        future.result(30)


def _incompressible_reading() -> Reading:
    """A reading whose JSON stays far above 2,000 bytes even compressed."""
    return Reading("press-9", "note", at(1), base64.b64encode(os.urandom(6000)).decode())


def test_a_record_the_broker_refuses_for_good_becomes_a_dead_letter(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DeadLetter, "payload_limit", 65_536)  # restored after the test
    _small_topics(kafka_bootstrap, sink_config, {"telemetry": 2000})
    writer = KafkaRecordWriter(sink_config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    before = REJECTED.value(kind="telemetry")
    reading = _incompressible_reading()
    writer.write([("telemetry", reading)])
    writer.close()  # no KafkaDeliveryError: the flow would go on
    assert REJECTED.value(kind="telemetry") == before + 1
    [envelope] = kcat_read(kafka_bootstrap, sink_config.topic_for("dead_letter"), expected=1)
    dead = adapter(DeadLetter).validate_json(envelope["payload"])
    assert dead.reason.startswith("kafka refused a telemetry record")
    assert "MSG_SIZE_TOO_LARGE" in dead.reason or "too large" in dead.reason
    assert json.loads(dead.payload)["value"] == reading.value


def test_a_dead_letter_no_topic_takes_goes_to_the_fallback_file(
    sink_config: KafkaSinkConfig,
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DeadLetter, "payload_limit", 65_536)  # restored after the test
    config = sink_config.model_copy(
        update={"dead_letter_fallback": str(tmp_path / "fallback.jsonl")}
    )
    # a dead-letter topic smaller than any dead letter (the sink cuts payloads to 1 KiB at least)
    _small_topics(kafka_bootstrap, config, {"telemetry": 2000, "dead_letter": 600})
    writer = KafkaRecordWriter(config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    written = FALLBACK.value(outcome="written")
    reading = _incompressible_reading()
    writer.write([("telemetry", reading)])
    writer.close()  # the telemetry record was refused, then its dead letter: no error
    assert FALLBACK.value(outcome="written") == written + 1
    [line] = (tmp_path / "fallback.jsonl").read_text().splitlines()
    kept = json.loads(line)
    assert kept["kind"] == "dead_letter" and "MSG_SIZE_TOO_LARGE" in kept["reason"]
    # what the file keeps is the whole dead letter, which holds the refused reading:
    # cut to the 1 KiB the small topic allowed, with the reading's size and hash
    dead = adapter(DeadLetter).validate_json(kept["payload"])
    original = to_json(reading)
    assert original.decode().startswith(dead.payload) and len(dead.payload) == 1024
    assert dead.payload_size == len(original)
    assert dead.payload_sha256 == hashlib.sha256(original).hexdigest()


def test_dead_letter_payloads_are_cut_to_fit_the_dead_letter_topic(
    sink_config: KafkaSinkConfig, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    monkeypatch.setattr(DeadLetter, "payload_limit", 65_536)  # restored after the test
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = sink_config.topic_for("dead_letter")
    small = NewTopic(topic, 1, 1, config={"max.message.bytes": "100000"})
    admin.create_topics([small])[topic].result(30)
    writer = KafkaRecordWriter(sink_config, kafka_bootstrap)
    writer.ensure_topics(kafka_bootstrap)
    assert DeadLetter.payload_limit == (100_000 - 8192) // 6
    # the worst case (every character escaped as \\u00XX) now fits the topic
    dead = DeadLetter(at(1), "mqtt", "test", "\x01" * 200_000)
    writer.write([("dead_letter", dead)])
    writer.close()
    [envelope] = kcat_read(kafka_bootstrap, topic, expected=1)
    assert adapter(DeadLetter).validate_json(envelope["payload"]).payload_size == 200_000
