"""A broker's redelivery after a reconnect reaches the flow once, on a real Mosquitto.

QoS 1 messages handed to the flow on a connection that is then lost cannot
be acknowledged on the next one; the broker delivers them again (DUP). The
partition recognises them, hands them over no second time (rollups and
detectors would count them twice) and acknowledges them, so a fresh client
of the same session gets nothing back.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from connectors.mqtt.client import parse_broker_url
from connectors.mqtt.config import MqttSourceConfig
from connectors.mqtt.partition import REDELIVERIES, MqttPartition
from schemas.models import RawMessage
from tests.support.mqtt_broker import Mosquitto, Publisher

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]


def _drain(partition: MqttPartition, quiet_s: float = 1.5) -> list[RawMessage]:
    """Everything handed over until nothing came for ``quiet_s``."""
    got: list[RawMessage] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        batch = partition.next_batch()
        if batch:
            got.extend(batch)
            last = time.monotonic()
        time.sleep(0.02)
    return got


def _payload(i: int) -> str:
    return f'{{"device":"d","metric":"m","value":{i}}}'


def _subscriber(url: str, prefix: str) -> tuple[str, MqttSourceConfig, str, MqttPartition]:
    """(topic, config, client id, partition): a QoS 1 subscription to a topic of its own."""
    topic = f"sf-redeliver/{uuid.uuid4().hex[:10]}"
    config = MqttSourceConfig(
        url=url,
        client_id=f"{prefix}-{uuid.uuid4().hex[:8]}",
        subscriptions=[{"topic": topic, "qos": 1}],
        reconnect_max_delay=1,
    )
    client_id = f"{config.client_id}-0"
    return topic, config, client_id, MqttPartition(config, parse_broker_url(url), client_id)


def test_messages_taken_before_a_reconnect_are_handed_over_once(
    mqtt_address: tuple[str, int],
) -> None:
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    topic, config, client_id, partition = _subscriber(url, "sf-redeliver")
    labels = {"source": config.name, "client": client_id}
    publisher = Publisher(url)
    try:
        for i in range(20):
            publisher.publish(topic, _payload(i))
        publisher.flush()
        first = _drain(partition)
        assert len(first) == 20  # taken, not yet acknowledged (no epoch ended)

        # The connection drops under the client; paho reconnects to the same session.
        sock = partition._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        before = REDELIVERIES.value(**labels)
        deadline = time.monotonic() + 20
        while REDELIVERIES.value(**labels) - before < 20 and time.monotonic() < deadline:
            assert partition.next_batch() == []
            time.sleep(0.05)
        assert REDELIVERIES.value(**labels) - before == 20

        publisher.publish(topic, '{"device":"d","metric":"m","value":20}')
        publisher.flush()
        assert [m.payload for m in _drain(partition)] == [b'{"device":"d","metric":"m","value":20}']
        partition.snapshot()  # the epoch ends: its messages may be acknowledged
        partition.next_batch()
        time.sleep(0.5)
    finally:
        partition.close()
        publisher.close()

    # A new client of the session: the broker has nothing left to deliver.
    again = MqttPartition(config, parse_broker_url(url), client_id)
    try:
        assert _drain(again, quiet_s=2.0) == []
    finally:
        again.close()


def test_a_broker_restored_from_an_older_save_replays_nothing_twice(tmp_path: Path) -> None:
    """Mosquitto killed after our acknowledgements restores them from its last save.

    It sends them again first thing after the reconnection, as queued
    messages (no DUP); the partition recognises the replay, acknowledges it
    and hands over only what is new.
    """
    topic = "sf-restore/m"
    with Mosquitto(tmp_path / "broker") as broker:
        config = MqttSourceConfig(
            url=broker.url,
            client_id="sf-restore",
            subscriptions=[{"topic": topic, "qos": 1}],
            reconnect_max_delay=1,
        )
        client_id = f"{config.client_id}-0"
        labels = {"source": config.name, "client": client_id}
        MqttPartition(config, parse_broker_url(broker.url), client_id).close()  # the session
        publisher = Publisher(broker.url)
        try:
            for i in range(30):
                publisher.publish(topic, _payload(i))
            publisher.flush()
        finally:
            publisher.close()
        broker.save()  # the save holds 30 messages queued for the session

        partition = MqttPartition(config, parse_broker_url(broker.url), client_id)
        try:
            assert len(_drain(partition)) == 30
            partition.snapshot()  # the epoch ends, and the next batch acknowledges it
            partition.next_batch()
            time.sleep(0.5)

            broker.kill()  # the acknowledgements were never saved
            broker.start()
            before = REDELIVERIES.value(**labels)
            deadline = time.monotonic() + 20
            while REDELIVERIES.value(**labels) - before < 30 and time.monotonic() < deadline:
                assert partition.next_batch() == []
                time.sleep(0.05)
            assert REDELIVERIES.value(**labels) - before == 30

            publisher = Publisher(broker.url)
            try:
                # A new message equal to an acknowledged one, after the replay: kept.
                publisher.publish(topic, '{"device":"d","metric":"m","value":29}')
                publisher.publish(topic, '{"device":"d","metric":"m","value":30}')
                publisher.flush()
            finally:
                publisher.close()
            assert [m.payload for m in _drain(partition)] == [
                b'{"device":"d","metric":"m","value":29}',
                b'{"device":"d","metric":"m","value":30}',
            ]
        finally:
            partition.close()


def test_messages_still_queued_when_the_connection_drops_are_handed_over_once(
    mqtt_address: tuple[str, int],
) -> None:
    """Received, not yet taken by the flow, when the connection dropped (the flow was stalled).

    They can never be acknowledged on the next connection, and the broker
    delivers them again (DUP) first thing: the copies already queued are the
    ones handed over, the redeliveries are recognised.
    """
    url = f"mqtt://{mqtt_address[0]}:{mqtt_address[1]}"
    topic, config, client_id, partition = _subscriber(url, "sf-queued")
    labels = {"source": config.name, "client": client_id}
    publisher = Publisher(url)
    try:
        for i in range(20):
            publisher.publish(topic, _payload(i))
        publisher.flush()
        deadline = time.monotonic() + 10
        while len(partition._queue) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(partition._queue) == 20  # received, not taken: the flow is busy

        sock = partition._client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        # Still busy: the redeliveries queue up behind the first copies.
        deadline = time.monotonic() + 20
        while len(partition._queue) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(partition._queue) == 40
        before = REDELIVERIES.value(**labels)
        got = _drain(partition, quiet_s=3.0)
        assert sorted(m.payload for m in got) == sorted(_payload(i).encode() for i in range(20))
        assert REDELIVERIES.value(**labels) - before == 20
        partition.snapshot()
        partition.next_batch()
        time.sleep(0.5)
    finally:
        partition.close()
        publisher.close()
