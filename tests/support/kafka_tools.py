"""Helpers of the Kafka tests: unique topic names, sample records, independent readers."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.models import (
    Alarm,
    AnomalyScore,
    DeadLetter,
    Event,
    LogRecord,
    Reading,
    Rollup,
)
from schemas.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def unique(prefix: str) -> str:
    """A name no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def at(second: float) -> datetime:
    return T0 + timedelta(seconds=second)


def alarm(device: str, seq: int, transition: str = "raised", tenant: str = "default") -> Alarm:
    state = "cleared" if transition == "cleared" else "raised"
    return Alarm(
        id=f"{tenant}/{device}/hot",
        tenant=tenant,
        device=device,
        metric="temperature",
        rule="hot",
        kind="threshold",
        severity="major",
        state=state,  # type: ignore[arg-type]
        transition=transition,  # type: ignore[arg-type]
        seq=seq,
        ts=at(seq),
        raised_at=at(0),
        value=95.0 + seq,
        threshold=90.0,
        message=f"temperature {95.0 + seq} above 90",
        cleared_at=at(seq) if state == "cleared" else None,
    )


def one_of_each(device: str = "press-1", tenant: str = "plant-a") -> list[tuple[str, Any]]:
    """One record of every output kind for one device."""
    return [
        ("telemetry", Reading(device, "temperature", at(1), 71.5, tenant=tenant, unit="°C")),
        ("event", Event(tenant, device, "door", at(2), "closed", "open")),
        ("alarm", alarm(device, 1, tenant=tenant)),
        ("log", LogRecord(tenant, device, at(3), "warning", "plc", "fan slow")),
        (
            "rollup",
            Rollup(
                tenant,
                device,
                "temperature",
                "1m",
                at(0),
                at(60),
                2,
                1.0,
                3.0,
                4.0,
                2.0,
                1.0,
                1.0,
                3.0,
                at(1),
                at(2),
            ),
        ),
        ("anomaly_score", AnomalyScore(tenant, device, "temperature", at(4), 71.5, 0.2, "hst")),
        (
            "dead_letter",
            DeadLetter(
                at(5), "mqtt", "invalid JSON", "{oops", origin=f"plant/{device}", tenant=tenant
            ),
        ),
    ]


def kcat_read(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[dict]:
    """Every message of a topic as kcat's JSON envelopes (key, headers, payload, partition)."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(
            ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-J"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        ).stdout
        messages = [json.loads(line) for line in out.splitlines() if line.strip()]
        if len(messages) >= expected or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)


def headers_of(envelope: dict) -> dict[str, str]:
    """kcat -J gives headers as a flat [name, value, name, value, ...] list."""
    flat = envelope.get("headers") or []
    return dict(zip(flat[::2], flat[1::2], strict=True))


def consume_all(bootstrap: str, topic: str, timeout: float = 20.0) -> list[Any]:
    """Every message of a topic, read with confluent-kafka up to the current end offsets."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique("test"), "enable.auto.commit": False}
    )
    try:
        tps = [TopicPartition(topic, p, 0) for p in parts]
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts
        }
        consumer.assign(tps)
        got: list[Any] = []
        done = {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    continue
                got.append(msg)
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= ends[partition]:
                    done.add(partition)
        return got
    finally:
        consumer.close()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Remove test topics (best effort)."""
    # Each name once: confluent-kafka 2.16 segfaults on a request naming a topic twice.
    names = sorted(set(names))
    if not names:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(names, operation_timeout=10).values():
        with contextlib.suppress(Exception):  # already gone is fine
            future.result(timeout=10)


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def produce_raw(
    readings: Iterable[dict[str, Any] | bytes],
    topic: str,
    settings: Settings | None = None,
    *,
    bootstrap_servers: str | None = None,
    per_message: int = 1,
) -> int:
    """Write raw readings to a topic as an edge gateway would; returns the messages written.

    Each reading dict becomes a JSON object keyed by ``tenant/device``
    (``per_message > 1``: JSON arrays of that many readings, keyed by the
    first); ``bytes`` items are written as they are, unkeyed. Returns once
    every message is acknowledged; raises ``RuntimeError`` if any is not.
    """
    servers = bootstrap_servers or (settings or Settings()).kafka_bootstrap_servers
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    producer = Producer(
        {
            "bootstrap.servers": servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        }
    )
    count = 0
    chunk: list[dict[str, Any]] = []

    def send(value: bytes, key: bytes | None) -> None:
        nonlocal count
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)

    def send_chunk() -> None:
        first = chunk[0]
        key = f"{first.get('tenant', 'default')}/{first.get('device', '')}".encode()
        body: Any = chunk[0] if per_message == 1 else chunk
        send(json.dumps(body, separators=(",", ":"), default=_json_default).encode(), key)
        chunk.clear()

    for item in readings:
        if isinstance(item, bytes):
            send(item, None)
            continue
        chunk.append(item)
        if len(chunk) >= per_message:
            send_chunk()
    if chunk:
        send_chunk()
    remaining = producer.flush(60.0)
    if failures or remaining:
        raise RuntimeError(
            f"produce_raw to {topic!r}: {len(failures)} failed, {remaining} unacknowledged"
            f" ({'; '.join(failures[:3])})"
        )
    return count
