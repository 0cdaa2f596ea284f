"""MQTT source -> flows.decode on the local Mosquitto: right readings, bad ones dead letters.

A publisher sends a known set of readings over several topics and payload
formats (JSON object, JSON array, bare number), plus malformed payloads; the
flow runs in this process until it has taken every message (``limit``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import CONNECTED, RECEIVED, TAKEN, MqttSource
from flows.decode import decode_many
from schemas.config import DecodeConfig
from schemas.models import DeadLetter, Reading
from tests.support.mqtt_broker import Publisher

pytestmark = pytest.mark.mqtt

TS = "2026-01-01T00:00:00Z"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_flow(
    config: MqttSourceConfig,
    messages: list[tuple[str, bytes]],
    url: str,
    qos: int = 1,
    step: Callable[[Any], Any] | None = None,
) -> list[Any]:
    """Run source -> decode [-> step] until ``config.limit`` messages are taken.

    Publishes ``messages`` from another thread once the source is subscribed.
    """
    client = f"{config.client_id}-0"
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            deadline = time.monotonic() + 20
            while CONNECTED.value(source=config.name, client=client) != 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("source never subscribed")
                time.sleep(0.01)
            publisher = Publisher(url)
            for topic, payload in messages:
                publisher.publish(topic, payload, qos=qos)
            publisher.flush()
            publisher.close()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    out: list[Any] = []
    decode = DecodeConfig()
    flow = Dataflow("mqtt_decode_test")
    raw = op.input("mqtt", flow, MqttSource(config))
    decoded = op.flat_map_batch("decode", raw, lambda batch: decode_many(batch, decode))
    if step is not None:
        decoded = op.map("step", decoded, step)
    op.output("out", decoded, TestingSink(out))
    run_main(flow, epoch_interval=timedelta(milliseconds=100))
    thread.join(5)
    assert not errors, errors
    return out


@pytest.fixture
def prefix() -> str:
    """A topic prefix of its own, so runs never see each other's messages."""
    return f"sf-test/{uuid.uuid4().hex[:10]}"


@pytest.mark.timeout(60)
def test_readings_and_dead_letters_over_several_topics_and_formats(
    mqtt_address: tuple[str, int], prefix: str
) -> None:
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    subscriptions = [
        {"topic": f"{prefix}/obj/{{site}}/{{device}}", "format": "object",
         "defaults": {"tenant": "acme"}},
        {"topic": f"{prefix}/arr/{{device}}", "format": "array"},
        {"topic": f"{prefix}/num/{{device}}/{{metric}}", "format": "number", "qos": 0,
         "defaults": {"unit": "bar"}},
    ]  # fmt: skip
    expected: list[tuple[str, str, str, Any, datetime, str | None]] = []
    messages: list[tuple[str, bytes]] = []
    for i in range(20):
        obj = {"metric": "temperature", "value": 20.0 + i, "ts": f"2026-01-01T00:00:{i:02d}Z"}
        messages.append((f"{prefix}/obj/north/press-{i % 3}", json.dumps(obj).encode()))
        expected.append(
            ("acme", f"press-{i % 3}", "temperature", 20.0 + i, T0 + timedelta(seconds=i), None)
        )
    for i in range(5):
        batch = [
            {"metric": f"m{j}", "value": i * 10 + j, "ts": TS, "unit": "rpm"} for j in range(10)
        ]
        messages.append((f"{prefix}/arr/mixer-{i}", json.dumps(batch).encode()))
        expected += [("default", f"mixer-{i}", f"m{j}", i * 10 + j, T0, "rpm") for j in range(10)]
    for i in range(10):
        messages.append((f"{prefix}/num/pump-{i}/pressure", str(1.5 * i).encode()))
    # A 1 MB JSON array: under max_payload_bytes (2 MiB) and max_batch_items (10,000).
    big = [
        {"metric": f"vibration_{j % 50}", "value": j, "ts": TS, "unit": "mm/s",
         "attributes": {"axis": "x", "sensor": f"accelerometer-{j % 7}"}}
        for j in range(8000)
    ]  # fmt: skip
    big_payload = json.dumps(big).encode()
    assert 1_000_000 <= len(big_payload) < 2 * 1024 * 1024
    messages.append((f"{prefix}/arr/big-press", big_payload))
    expected += [
        ("default", "big-press", f"vibration_{j % 50}", j, T0, "mm/s") for j in range(8000)
    ]
    bad = {
        f"{prefix}/obj/north/broken": (b'{"metric": "temperature", "value": ', "not valid JSON"),
        f"{prefix}/obj/north/arrayed": (b'[{"metric": "t", "value": 1}]', "expected a JSON object"),
        f"{prefix}/num/pump-x/pressure": (b'"high"', "expected a bare number"),
        f"{prefix}/arr/latin1": (b'[{"metric": "temp\xe9rature", "value": 1}]', "not UTF-8"),
        f"{prefix}/arr/huge": (b"[" + b"1," * 1_100_000 + b"1]", "exceeds max_payload_bytes"),
    }
    messages += [(topic, payload) for topic, (payload, _) in bad.items()]

    config = MqttSourceConfig(
        url=url,
        client_id=f"sf-test-{uuid.uuid4().hex[:8]}",
        subscriptions=subscriptions,
        persistent_session=False,
        limit=len(messages),
    )
    out = run_flow(config, messages, url)

    readings = [r for r in out if isinstance(r, Reading)]
    dead = [d for d in out if isinstance(d, DeadLetter)]
    numbers = sorted((r.device, r.value, r.unit) for r in readings if r.metric == "pressure")
    assert numbers == sorted((f"pump-{i}", 1.5 * i, "bar") for i in range(10))
    others = sorted(
        (r.tenant, r.device, r.metric, r.value, r.ts, r.unit)
        for r in readings
        if r.metric != "pressure"
    )
    assert others == sorted(expected)
    assert {r.source for r in readings} == {"mqtt"}

    assert len(dead) == len(bad)
    by_origin = {d.origin: d for d in dead}
    assert set(by_origin) == set(bad)
    for topic, (_, reason) in bad.items():
        assert reason in by_origin[topic].reason, (topic, by_origin[topic].reason)
    assert by_origin[f"{prefix}/arr/latin1"].payload_encoding == "base64"
    client = f"{config.client_id}-0"
    assert RECEIVED.value(source="mqtt", client=client) == len(messages)
    assert TAKEN.value(source="mqtt", client=client) == len(messages)
