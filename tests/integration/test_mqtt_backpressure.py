"""Backpressure: a slow flow and a tiny queue; the source waits for room, it never drops.

Against the local Mosquitto, in process: the publisher sends far more than
the queue holds, the flow takes them slowly; every message must arrive and
the queue-full counter must show that the source really had to wait.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.source import QUEUE_DEPTH, QUEUE_FULL
from tests.integration.test_mqtt_decode import run_flow

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]

N = 400


def slow(item: Any) -> Any:
    time.sleep(0.002)
    return item


@pytest.mark.parametrize("qos", [0, 1])
def test_full_queue_waits_instead_of_dropping(mqtt_address: tuple[str, int], qos: int) -> None:
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    prefix = f"sf-test/{uuid.uuid4().hex[:10]}"
    config = MqttSourceConfig(
        url=url,
        client_id=f"sf-bp-{uuid.uuid4().hex[:8]}",
        subscriptions=[
            {"topic": f"{prefix}/{{device}}/{{metric}}", "format": "number", "qos": qos}
        ],
        persistent_session=False,
        receive_maximum=5,
        queue_size=10,
        batch_size=5,
        limit=N,
    )
    messages = [(f"{prefix}/dev-{i % 5}/counter", str(i).encode()) for i in range(N)]
    out = run_flow(config, messages, url, qos=qos, step=slow)
    assert sorted(int(float(r.value)) for r in out) == list(range(N))
    labels = {"source": "mqtt", "client": f"{config.client_id}-0"}
    assert QUEUE_FULL.value(**labels) > 0
    assert QUEUE_DEPTH.value(**labels) <= config.queue_size
