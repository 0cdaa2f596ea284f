"""The services started by ``make up`` are the real thing.

Kafka: produce with confluent-kafka, read back with kcat (an independent
client). TimescaleDB: a hypertable, ``time_bucket``, and the edition the
storage layer detects. Mosquitto: QoS 1 with paho, and an MQTT 5 shared
subscription splitting messages between two clients with none duplicated.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import psycopg
from confluent_kafka import Producer
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from connectors.timescale.edition import detect_edition


def test_kafka_round_trip_read_back_by_kcat(kafka_bootstrap: str) -> None:
    topic = f"test.services.{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i in range(20):
        producer.produce(topic, key=f"k{i % 3}", value=f"v{i}")
    assert producer.flush(15) == 0
    done = subprocess.run(
        [
            "kcat",
            "-b",
            kafka_bootstrap,
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s\n",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = done.stdout.split()
    assert sorted(lines) == sorted(f"k{i % 3}=v{i}" for i in range(20))


def test_timescale_hypertable_time_bucket_and_edition(database_url: str) -> None:
    table = f"svc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert detect_edition(conn) == "apache"  # Debian's build; the Docker image: "timescale"
        conn.execute(f"CREATE TABLE {table} (ts timestamptz NOT NULL, v double precision)")
        try:
            conn.execute("SELECT create_hypertable(%s, 'ts')", (table,))
            conn.execute(
                f"INSERT INTO {table} SELECT '2026-01-01'::timestamptz + i * interval '1 second',"
                " i FROM generate_series(0, 599) i"
            )
            rows = conn.execute(
                f"SELECT time_bucket('5 minutes', ts) b, count(*), avg(v) FROM {table}"
                " GROUP BY b ORDER BY b"
            ).fetchall()
            assert [(r[1], r[2]) for r in rows] == [(300, 149.5), (300, 449.5)]
            chunks = conn.execute("SELECT count(*) FROM show_chunks(%s)", (table,)).fetchone()
            assert chunks is not None and chunks[0] >= 1
        finally:
            conn.execute(f"DROP TABLE {table}")


def _client(host: str, port: int, name: str, protocol: int = mqtt.MQTTv5) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=protocol)
    client.connect(host, port)
    client.loop_start()
    return client


def test_mosquitto_qos1_and_shared_subscription_split(mqtt_address: tuple[str, int]) -> None:
    host, port = mqtt_address
    topic = f"test/services/{uuid.uuid4().hex[:8]}"
    received: dict[str, list[str]] = {"a": [], "b": []}
    lock = threading.Lock()
    subscribed = threading.Semaphore(0)

    def consumer(name: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{topic}-{name}", protocol=mqtt.MQTTv5
        )

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            with lock:
                received[name].append(msg.payload.decode())

        client.on_message = on_message
        client.on_subscribe = lambda *_args: subscribed.release()
        client.connect(host, port)
        client.subscribe(f"$share/sf-test/{topic}", qos=1)
        client.loop_start()
        return client

    consumers = [consumer("a"), consumer("b")]
    for _ in consumers:
        assert subscribed.acquire(timeout=10)
    publisher = _client(host, port, f"{topic}-pub")
    sent = [f"m{i}" for i in range(200)]
    props = Properties(PacketTypes.PUBLISH)
    for payload in sent:
        publisher.publish(topic, payload, qos=1, properties=props).wait_for_publish(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with lock:
            if len(received["a"]) + len(received["b"]) >= len(sent):
                break
        time.sleep(0.05)
    for client in [*consumers, publisher]:
        client.loop_stop()
        client.disconnect()
    union = received["a"] + received["b"]
    assert sorted(union) == sorted(sent)  # every message once: no loss, no duplicate
    assert received["a"] and received["b"]  # the group really split the stream
