"""MQTT QoS 1 with persistent sessions: nothing lost across a StreamForge crash or a broker restart.

Each test runs a private Mosquitto (with persistence, under tmp_path) and the
consumer flow of ``mqtt_consumer.py`` as a real process, so "crash" is a
SIGKILL and "restart" a new process with the same client id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mqtt_broker import Consumer, Mosquitto, Publisher, wait_until

pytestmark = pytest.mark.mqtt


def _values(lines: list[str]) -> list[int]:
    return [int(float(line.split()[2])) for line in lines if not line.startswith("DEAD")]


def _config(url: str, client_id: str, **overrides: object) -> dict[str, object]:
    config: dict[str, object] = {
        "type": "mqtt",
        "url": url,
        "client_id": client_id,
        "subscriptions": [{"topic": "seq/{device}/{metric}", "format": "number", "qos": 1}],
        "receive_maximum": 50,
        "queue_size": 100,
        "batch_size": 10,
        "reconnect_min_delay": 1,
        "reconnect_max_delay": 2,
    }
    config.update(overrides)
    return config


@pytest.fixture
def broker(tmp_path: Path):
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [1, 2])
def test_crash_loses_nothing_and_backlog_arrives_after_restart(
    broker: Mosquitto, tmp_path: Path, workers: int
) -> None:
    """SIGKILL while messages are queued and unacknowledged; the publisher goes on; restart.

    At the kill, messages had been delivered to the consumer but not written
    by its (slow) sink: had they been acknowledged on receipt, the broker
    would have forgotten them and they would be missing. With two workers the
    decoded batches travel to the other worker's sink first, so they are also
    not written yet when the source is polled again: acknowledging "when
    Bytewax asks for the next batch" (``ack: batch``) loses them here; the
    default ``ack: epoch`` does not.
    """
    out = tmp_path / "taken.txt"
    consumer = Consumer(_config(broker.url, "crashy"), out, sink_delay=0.05, workers=workers)
    publisher = Publisher(broker.url)
    try:
        consumer.start()
        for i in range(1000):
            publisher.publish("seq/dev-1/counter", str(i))
        publisher.flush()
        wait_until(lambda: len(consumer.lines()) >= 150, 20, "the consumer to write 150 readings")
        consumer.kill()
        written_before_crash = set(_values(consumer.lines()))
        assert len(written_before_crash) < 1000, "the crash must happen mid-stream"

        # StreamForge is down: the publisher goes on; the persistent session queues it.
        for i in range(1000, 1500):
            publisher.publish("seq/dev-1/counter", str(i))
        publisher.flush()

        consumer = Consumer(_config(broker.url, "crashy"), out, sink_delay=0.0)
        consumer.start()
        wait_until(
            lambda: set(_values(consumer.lines())) >= set(range(1500)),
            30,
            "every published value to be written",
        )
    finally:
        consumer.stop()
        publisher.close()
    values = _values(consumer.lines())
    assert set(values) == set(range(1500))
    # At-least-once: what was written before the kill but not yet acknowledged
    # comes again; duplicates are allowed, gaps are not.
    assert len(values) >= 1500


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_broker_restart_mid_stream_loses_nothing(
    broker: Mosquitto, tmp_path: Path, protocol: str
) -> None:
    """The broker restarts while messages for the consumer are queued; more are published
    while the consumer waits out its reconnect backoff. All of them arrive."""
    out = tmp_path / "taken.txt"
    config = _config(
        broker.url,
        f"restart-{protocol}",
        protocol=protocol,
        receive_maximum=100,
        queue_size=1000,
        reconnect_min_delay=2,
        reconnect_max_delay=4,
    )
    consumer = Consumer(config, out, sink_delay=0.02)
    try:
        consumer.start()
        before = Publisher(broker.url)
        for i in range(600):
            before.publish("seq/dev-2/counter", str(i))
        before.flush()
        before.close()
        wait_until(lambda: len(consumer.lines()) >= 50, 20, "the consumer to write 50 readings")

        broker.restart()  # SIGTERM: mosquitto saves the sessions and their queued messages
        after = Publisher(broker.url)
        for i in range(600, 1000):
            after.publish("seq/dev-2/counter", str(i))
        after.flush()
        after.close()

        wait_until(
            lambda: set(_values(consumer.lines())) >= set(range(1000)),
            30,
            "every published value to be written",
        )
        log = consumer.log_text()
    finally:
        consumer.stop()
    assert set(_values(consumer.lines())) == set(range(1000))
    assert "disconnected from MQTT broker, reconnecting with backoff" in log
    assert '"msg": "reconnected to MQTT broker", "step": "reconnect"' in log
    assert '"session": true' in log  # the broker kept the session through its restart
