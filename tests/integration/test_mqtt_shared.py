"""Scaling out with an MQTT 5 shared subscription: every message taken by exactly one process.

Two StreamForge consumer processes (``mqtt_consumer.py``) share the group,
one of them with two clients (two Bytewax partitions): three clients in all
against the local Mosquitto.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.support.mqtt_broker import Consumer, Publisher, wait_until

pytestmark = pytest.mark.mqtt

N = 1500


@pytest.mark.timeout(60)
def test_shared_subscription_splits_messages_without_duplicates(
    mqtt_address: tuple[str, int], tmp_path: Path
) -> None:
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    run = uuid.uuid4().hex[:10]
    prefix = f"sf-test/{run}"

    def config(client_id: str, clients: int) -> dict[str, object]:
        return {
            "type": "mqtt",
            "url": url,
            "client_id": client_id,
            "clients": clients,
            "shared_group": f"sf-{run}",
            "persistent_session": False,
            "subscriptions": [{"topic": f"{prefix}/{{device}}/{{metric}}", "format": "number"}],
        }

    first = Consumer(config(f"sf-a-{run}", 1), tmp_path / "a.txt")
    second = Consumer(config(f"sf-b-{run}", 2), tmp_path / "b.txt")
    publisher = None
    try:
        first.start(wait=False)
        second.start(wait=False)
        first.wait_ready()
        second.wait_ready()
        publisher = Publisher(url)
        for i in range(N):
            publisher.publish(f"{prefix}/dev-{i % 7}/counter", str(i))
        publisher.flush()
        wait_until(
            lambda: len(first.lines()) + len(second.lines()) >= N, 30, f"{N} readings in all"
        )
    finally:
        first.stop()
        second.stop()
        if publisher is not None:
            publisher.close()

    taken_a = [int(float(line.split()[2])) for line in first.lines()]
    taken_b = [int(float(line.split()[2])) for line in second.lines()]
    both = Counter(taken_a + taken_b)
    assert set(both) == set(range(N))
    assert [v for v, n in both.items() if n > 1] == []
    # The broker really shared the work between the processes.
    assert taken_a and taken_b
