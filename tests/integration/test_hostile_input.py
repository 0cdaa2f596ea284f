"""Hostile payloads on the raw Kafka topic and over MQTT: the flow runs through all of them.

Huge, deeply nested, wrong types, NaN and infinities, bad UTF-8, timestamps
far in the past and future, duplicate keys, arrays of many tiny items, text
on a numeric series, and a few hundred random JSON documents (seeded), go
through the real flow: a raw Kafka topic in, Kafka topics and TimescaleDB
out. The flow must end normally, and what it wrote must be exactly what the
same payloads give in memory (the oracle): every payload is readings or
dead letters, and nothing is dropped on the way to the sinks.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka.sink_config import KafkaSinkConfig
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import CONNECTED
from flows.config import PipelineConfig
from flows.decode import decode_payload
from flows.ingest import build_flow
from schemas.config import DecodeConfig
from schemas.kinds import ALL_OUTPUT_KINDS as KINDS
from schemas.models import RawMessage
from schemas.settings import Settings
from tests.integration.e2e_tools import create_database, drop_database
from tests.support.kafka_tools import consume_all, delete_topics, unique
from tests.support.mqtt_broker import Publisher

pytestmark = [pytest.mark.kafka, pytest.mark.timescale]

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def _reading(device: str, metric: str, second: int, value: Any) -> bytes:
    ts = (T0 + timedelta(seconds=second)).isoformat()
    return json.dumps({"device": device, "metric": metric, "ts": ts, "value": value}).encode()


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value, objects often shaped like (broken) readings."""
    roll = rng.random()
    if depth > 3 or roll < 0.3:
        return rng.choice(
            [None, True, False, 0, -1, 1e308, -1e-308, 2**70, "", "x" * rng.randint(1, 50),
             "\u0000\ud7ff\uffff", rng.uniform(-1e9, 1e9), "2026-01-01T00:00:00Z"]
        )  # fmt: skip
    if roll < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = ["device", "metric", "value", "ts", "tenant", "unit", "quality", "source", "x"]
    return {k: _random_json(rng, depth + 1) for k in rng.sample(keys, rng.randint(0, len(keys)))}


def hostile_payloads() -> list[bytes]:
    """Every payload once (identical payloads in one batch would share a dead-letter row)."""
    nasty = [
        *(_reading("fz-ok", "pressure", i, 1.5 + i) for i in range(5)),
        # a numeric series, then text and a bool on it
        _reading("fz-1", "temp", 0, 20.5),
        _reading("fz-1", "temp", 1, "high-127"),
        _reading("fz-1", "temp", 2, True),
        json.dumps({"device": "d", "metric": "m", "value": 1, "pad": "x" * 2_200_000}).encode(),
        b"[" * 100_000 + b"]" * 100_000,
        b'{"device":"d","metric":"m","value":{"a":1}}',
        b'{"device":"d","metric":"m","value":[1,2]}',
        b'{"device":"d","metric":"m","value":null}',
        b'{"device":5,"metric":"m","value":1}',
        b'{"device":"d","metric":"m","value":NaN}',
        b'{"device":"d","metric":"m","value":Infinity}',
        b'{"device":"d","metric":"m","value":-Infinity}',
        b'{"device":"d","metric":"m","value":1e400}',
        b'{"device":"d","metric":"m","value":' + b"9" * 5000 + b"}",
        b'\xff\xfe{"device":"d","metric":"m","value":1}',
        b'{"device":"d\xc3\x28","metric":"m","value":1}',
        b'{"device":"d","metric":"m","value":1,"ts":"0001-01-01T00:00:00Z"}',
        b'{"device":"d","metric":"m","value":1,"ts":"9999-12-31T23:59:59Z"}',
        b'{"device":"d","metric":"m","value":1,"ts":-1e20}',
        b'{"device":"d","metric":"m","value":1,"ts":1e20}',
        b'{"device":"dup","metric":"m","value":1,"value":"x"}',
        json.dumps([{"device": "many", "metric": f"m{i}", "value": i} for i in range(10_001)])
        .encode(),
        json.dumps([{"device": "tiny", "metric": "m", "value": 1}] * 300_000).encode(),
        b"", b" ", b"null", b"[]", b"{}", b"true", b'"text"', b"0",
    ]  # fmt: skip
    rng = random.Random(20261204)
    fuzzed = [json.dumps(_random_json(rng)).encode() for _ in range(400)]
    unique_payloads = list(dict.fromkeys([*nasty, *fuzzed]))
    return unique_payloads


def _config(raw_topic: str, url: str, prefix: str) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "sources": [{"type": "kafka", "topic": raw_topic, "stop_at_end": True}],
            "sinks": [
                {"type": "timescale", "database_url": url},
                {"type": "kafka", "topic_prefix": prefix},
            ],
        }
    )


def _produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 20_000_000})
    for payload in payloads:
        producer.produce(topic, payload)
        producer.poll(0)
    assert producer.flush(60) == 0


def test_hostile_payloads_neither_stop_the_flow_nor_vanish(
    kafka_bootstrap: str, database_url: str, settings: Settings
) -> None:
    payloads = hostile_payloads()
    # Each payload alone gives at least one reading or dead letter: nothing is dropped.
    now = datetime.now(UTC)
    for payload in payloads:
        readings, dead = decode_payload(RawMessage(payload, "kafka", now), DecodeConfig())
        assert readings or dead, payload[:100]

    raw_topic, prefix = unique("sf-fuzz-raw"), unique("sf-fuzz") + "."
    # 1 partition: payloads are read in order (the text after the number on fz-1)
    big = NewTopic(raw_topic, 1, 1, config={"max.message.bytes": "20000000"})
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # (alive until the result)
    admin.create_topics([big])[raw_topic].result(30)
    url = create_database(database_url)
    config = _config(raw_topic, url, prefix)
    try:
        _produce(kafka_bootstrap, raw_topic, payloads)
        run_main(build_flow(config, settings))  # raises if anything stops the flow

        # The oracle: the same payloads through the same flow in memory.
        oracle: list[tuple[str, Any]] = []
        messages = [RawMessage(p, "kafka", now, f"fuzz/0/{i}") for i, p in enumerate(payloads)]
        run_main(build_flow(config, settings, sources=[TestingSource(messages)],
                            sinks=[TestingSink(oracle)]))  # fmt: skip
        expected = Counter(kind for kind, _ in oracle)
        assert expected["dead_letter"] >= 30 and expected["telemetry"] >= 6

        kafka_sink = config.sinks[1]
        assert kafka_sink.type == "kafka"
        for kind in ("telemetry", "dead_letter", "event"):
            written = consume_all(kafka_bootstrap, kafka_sink.topic_for(kind))
            assert len(written) == expected[kind], kind

        keys = {(r.tenant, r.device, r.metric, r.ts) for k, r in oracle if k == "telemetry"}
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT count(*) FROM readings").fetchone()
            dead_rows = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE step = 'series'"
            ).fetchone()
        assert rows is not None and rows[0] == len(keys)
        assert dead_rows == (2,)  # "high-127" and True on the numeric series fz-1/temp
    finally:
        delete_topics(
            kafka_bootstrap,
            [raw_topic, *(KafkaSinkConfig(topic_prefix=prefix).topic_for(k) for k in KINDS)],
        )
        drop_database(database_url, url)


@pytest.mark.mqtt
@pytest.mark.timeout(180)
def test_hostile_payloads_over_mqtt_neither_stop_the_flow_nor_vanish(
    mqtt_address: tuple[str, int], settings: Settings
) -> None:
    """The same payloads published with QoS 1 to the local Mosquitto, through the MQTT source."""
    payloads = hostile_payloads()
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    topic = f"sf-fuzz/{uuid.uuid4().hex[:10]}/in"
    name = "fuzz"
    config = PipelineConfig.model_validate(
        {
            "sources": [
                {"type": "mqtt", "name": name, "url": url, "limit": len(payloads),
                 "subscriptions": [{"topic": topic, "qos": 1}]}
            ],
            "sinks": [{"type": "null"}],
        }
    )  # fmt: skip
    source = config.sources[0]
    assert isinstance(source, MqttSourceConfig)
    client = f"{source.client_id}-0"
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            deadline = time.monotonic() + 30
            while CONNECTED.value(source=name, client=client) != 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("the MQTT source never subscribed")
                time.sleep(0.01)
            publisher = Publisher(url)
            for payload in payloads:
                publisher.publish(topic, payload, qos=1)
            publisher.flush(60)
            publisher.close()
        except BaseException as exc:
            errors.append(exc)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    out: list[tuple[str, Any]] = []
    run_main(build_flow(config, settings, sinks=[TestingSink(out)]))  # ends at `limit`
    publisher.join(10)
    assert errors == []

    now = datetime.now(UTC)
    oracle: list[tuple[str, Any]] = []
    messages = [RawMessage(p, "mqtt", now, topic) for p in payloads]
    run_main(build_flow(config, settings, sources=[TestingSource(messages)],
                        sinks=[TestingSink(oracle)]))  # fmt: skip
    got, expected = Counter(k for k, _ in out), Counter(k for k, _ in oracle)
    assert expected["dead_letter"] >= 30 and got == expected
