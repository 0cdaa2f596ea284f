"""The edge gateway through Kafka outages: Modbus, OPC UA and MQTT in, none lost or doubled.

These tests really stop the local Kafka (``deploy/services.sh stop kafka``)
and start it again, so anything else using it meanwhile sees the outage.
The split topology runs as two processes, as in a deployment:
``python -m bytewax.run flows.gateway`` (the sources -> spool -> raw topic)
and ``python -m bytewax.run flows.ingest`` (raw topic -> TimescaleDB, with
recovery), each with the same pipeline config. What the servers produced
is known exactly:

* Modbus: the pymodbus server counts the reads it serves, and one of its
  registers holds that count, so each poll's reading carries its number
  (1, 2, 3, ...): a poll lost is a gap, a poll doubled is a repeat.
* MQTT: the test publishes numbered QoS 1 messages (each confirmed by the
  broker) and knows how many.
* OPC UA: the asyncua server's temperature steps by 0.1 every tick, so the
  ticks a subscription delivered must form one run without gaps.
"""

from __future__ import annotations

import json
import math
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from connectors.modbus.config import ModbusTag
from connectors.timescale.migrate import migrate
from tests.integration.e2e_tools import FlowProcess, create_database, services, wait_until
from tests.integration.opcua_harness import OpcuaTestServer
from tests.ports import free_port
from tests.support.modbus_server import SimulatedServer, UnitImage

pytestmark = [pytest.mark.kafka, pytest.mark.timescale]

OUTAGE_S = 60.0
MQTT_RATE = 20.0  # messages/s, one reading each
POLL_S = 0.2  # Modbus poll interval


@pytest.fixture()
def database(database_url: str) -> Iterator[str]:
    url = create_database(database_url)
    migrate(url)
    yield url
    with psycopg.connect(database_url, autocommit=True) as conn:
        name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def modbus() -> Iterator[SimulatedServer]:
    image = UnitImage()
    image.put(ModbusTag(metric="poll", address=0), 0)
    server = SimulatedServer({1: image})
    server.counters[1] = 0
    with server:
        yield server


class Publisher:
    """Numbered QoS 1 readings to one MQTT topic, each waited for until the broker confirms it."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self.start = datetime.now(UTC) - timedelta(minutes=30)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, count: int, rate: float) -> None:
        for _ in range(count):
            ts = self.start + timedelta(milliseconds=10 * self.sent)
            payload = json.dumps({"value": self.sent, "ts": ts.isoformat()})
            self.client.publish(self.topic, payload, qos=1).wait_for_publish(10)
            self.sent += 1
            time.sleep(1 / rate)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _config(
    tmp_path: Path,
    url: str,
    modbus_port: int,
    opcua_url: str | None,
    mqtt_topic: str,
    raw_topic: str,
    **spool: Any,
) -> dict[str, Any]:
    sources: list[dict[str, Any]] = [
        {
            "type": "modbus",
            "name": "plc",
            "devices": [
                {
                    "name": "plc-1",
                    "port": modbus_port,
                    "timeout": 0.5,
                    "backoff_initial": 0.1,
                    "backoff_max": 0.5,
                    "groups": [{"interval": POLL_S, "tags": [{"metric": "poll", "address": 0}]}],
                }
            ],
        },
        {
            "type": "mqtt",
            "name": "devices",
            "client_id": f"gw-{uuid.uuid4().hex[:8]}",
            "subscriptions": [
                {"topic": mqtt_topic.replace("mqtt-1/seq", "{device}/{metric}"), "format": "object"}
            ],
        },
    ]
    if opcua_url is not None:
        sources.append(
            {
                "type": "opcua",
                "name": "line",
                "endpoints": [
                    {
                        "name": "line1",
                        "url": opcua_url,
                        "publishing_interval_ms": 200,
                        "queue_size": 100,
                        "nodes": [
                            {
                                "node_id": "ns=2;s=Line1.Temperature",
                                "device": "opcua-1",
                                "metric": "temperature",
                            }
                        ],
                    }
                ],
            }
        )
    return {
        "topology": "split",
        "gateway": {
            "id": "edge-test",
            "topic": raw_topic,
            "forward_timeout": "5s",
            "spool": {
                "path": str(tmp_path / "spool"),
                "max_bytes": "64MiB",
                **spool,
            },
        },
        "sources": sources,
        "rollups": {"idle_timeout": "3s"},
        "sinks": [
            {"type": "timescale", "database_url": url, "retry_initial": "200ms", "retry_max": "2s"}
        ],
    }


def _gateway(config: dict[str, Any], workdir: Path) -> tuple[FlowProcess, int]:
    workdir.mkdir(exist_ok=True)
    gateway = FlowProcess(
        config,
        workdir,
        recovery=False,
        launcher=["-m", "bytewax.run", "flows.gateway", "-s", "1"],
    )
    port = free_port()
    gateway.env["STREAMFORGE_METRICS_PORT"] = str(port)
    gateway.env["STREAMFORGE_METRICS_BYTEWAX"] = "off"
    return gateway, port


def _ingest(config: dict[str, Any], workdir: Path) -> FlowProcess:
    workdir.mkdir(exist_ok=True)
    ingest = FlowProcess(config, workdir)
    ingest.env["STREAMFORGE_METRICS_PORT"] = "off"
    return ingest


def _metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a gateway's /metrics (NaN while it is not serving)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return math.nan
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


def _values(url: str, device: str, metric: str) -> list[float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT value FROM readings WHERE device = %s AND metric = %s ORDER BY ts",
            (device, metric),
        ).fetchall()
    return [row[0] for row in rows]


def _kafka_down() -> None:
    services("stop", "kafka")


def _kafka_up() -> None:
    services("start", "kafka")


@pytest.fixture()
def kafka_restored() -> Iterator[None]:
    yield
    _kafka_up()  # whatever happened, the next tests get their Kafka back


def test_a_kafka_outage_of_a_minute_loses_and_doubles_nothing_from_modbus_opcua_and_mqtt(
    tmp_path: Path,
    database: str,
    modbus: SimulatedServer,
    mqtt_address: tuple[str, int],
    kafka_restored: None,
) -> None:
    opcua = OpcuaTestServer("--period-ms", "100").start()
    uid = uuid.uuid4().hex[:8]
    topic = f"gwtest/{uid}/mqtt-1/seq"
    config = _config(tmp_path, database, modbus.port, opcua.url, topic, f"gwtest.{uid}.raw")
    gateway, metrics_port = _gateway(config, tmp_path / "gateway")
    ingest = _ingest(config, tmp_path / "ingest")
    publisher = Publisher(*mqtt_address, topic)
    try:
        gateway.start()
        ingest.start()
        wait_until(lambda: len(_values(database, "plc-1", "poll")) > 10, 60, "first polls stored")
        wait_until(lambda: _metric(metrics_port, "streamforge_mqtt_connected") >= 1, 60, "MQTT")
        _kafka_down()
        outage_started = time.monotonic()
        publisher.publish(int(MQTT_RATE * 10), MQTT_RATE)
        spooled = _metric(metrics_port, "streamforge_spool_records")
        assert spooled > 0, "the gateway spools while Kafka is down"
        publisher.publish(int(MQTT_RATE * 20), MQTT_RATE)
        assert _metric(metrics_port, "streamforge_spool_records") > spooled, "the spool grows"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        assert gateway.alive(), gateway.log_tail()
        peak = _metric(metrics_port, "streamforge_spool_records")
        peak_bytes = _metric(metrics_port, "streamforge_spool_bytes")
        _kafka_up()
        drain_started = time.monotonic()
        publisher.publish(int(MQTT_RATE * 5), MQTT_RATE)  # new data while the backlog drains
        modbus.busy = True  # from here the server answers "busy": its count is final
        polls = modbus.requests(1)
        opcua.freeze()
        wait_until(
            lambda: _metric(metrics_port, "streamforge_spool_records") == 0, 120, "spool drained"
        )
        print(
            f"spool at the end of the outage: {peak:.0f} messages, {peak_bytes:.0f} bytes;"
            f" drained {time.monotonic() - drain_started:.1f} s after Kafka's start began"
        )
        wait_until(
            lambda: (
                len(_values(database, "plc-1", "poll")) >= polls
                and len(_values(database, "mqtt-1", "seq")) >= publisher.sent
            ),
            120,
            "every reading stored",
        )
        time.sleep(2)  # anything doubled would arrive now
        assert _values(database, "plc-1", "poll") == [float(i) for i in range(1, polls + 1)]
        assert sorted(_values(database, "mqtt-1", "seq")) == [
            float(i) for i in range(publisher.sent)
        ]
        ticks = [round((v - 20.0) * 10) for v in _values(database, "opcua-1", "temperature")]
        print(f"stored: {polls} Modbus polls, {publisher.sent} MQTT messages, {len(ticks)} OPC UA")
        assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), "OPC UA ticks without a gap"
        assert len(ticks) > OUTAGE_S * 10 * 0.8, "OPC UA ticks through the outage"
        assert polls > OUTAGE_S / POLL_S * 0.8
        assert _metric(metrics_port, "streamforge_spool_dropped_records_total") == 0
    finally:
        publisher.close()
        opcua.kill()
        gateway.stop()
        ingest.stop()


def test_a_gateway_killed_mid_spool_forwards_everything_once_after_its_restart(
    tmp_path: Path,
    database: str,
    modbus: SimulatedServer,
    mqtt_address: tuple[str, int],
    kafka_restored: None,
) -> None:
    """SIGKILL with a backlog in the spool: what it had spooled or acknowledged is forwarded once.

    MQTT messages keep coming through the kill (the broker keeps what the
    gateway had not acknowledged). The Modbus server answers "busy" around
    the kill: a poll answered and not yet spooled when a gateway dies is
    gone, as with any poller (Modbus has nothing to replay), so the test
    holds the polls while the gateway is down and checks everything else.
    OPC UA is left out here for the same reason: a subscription's values
    published while no client is connected are not kept by the server.
    """
    uid = uuid.uuid4().hex[:8]
    topic = f"gwtest/{uid}/mqtt-1/seq"
    config = _config(tmp_path, database, modbus.port, None, topic, f"gwtest.{uid}.raw")
    gateway, metrics_port = _gateway(config, tmp_path / "gateway")
    ingest = _ingest(config, tmp_path / "ingest")
    publisher = Publisher(*mqtt_address, topic)
    try:
        gateway.start()
        ingest.start()
        wait_until(lambda: len(_values(database, "plc-1", "poll")) > 5, 60, "first polls stored")
        wait_until(lambda: _metric(metrics_port, "streamforge_mqtt_connected") >= 1, 60, "MQTT")
        # rejected at the gateway, it travels on the raw topic and is stored as it was
        publisher.client.publish(topic, b"not json", qos=1).wait_for_publish(10)
        _kafka_down()
        publisher.publish(int(MQTT_RATE * 10), MQTT_RATE)
        assert _metric(metrics_port, "streamforge_spool_records") > 0
        modbus.busy = True
        time.sleep(1.0)  # the last answered polls reach the spool
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGKILL)
        gateway.process.wait(10)
        publisher.publish(int(MQTT_RATE * 3), MQTT_RATE)  # while the gateway is dead
        gateway.start()
        # the reopened spool still holds what was spooled before the kill
        wait_until(lambda: _metric(metrics_port, "streamforge_spool_records") > 0, 60, "restart")
        modbus.busy = False
        publisher.publish(int(MQTT_RATE * 5), MQTT_RATE)
        _kafka_up()
        publisher.publish(int(MQTT_RATE * 2), MQTT_RATE)
        modbus.busy = True
        polls = modbus.requests(1)
        wait_until(
            lambda: _metric(metrics_port, "streamforge_spool_records") == 0, 120, "spool drained"
        )
        wait_until(
            lambda: (
                len(_values(database, "plc-1", "poll")) >= polls
                and len(_values(database, "mqtt-1", "seq")) >= publisher.sent
            ),
            120,
            "every reading stored",
        )
        time.sleep(2)
        assert _values(database, "plc-1", "poll") == [float(i) for i in range(1, polls + 1)]
        assert sorted(_values(database, "mqtt-1", "seq")) == [
            float(i) for i in range(publisher.sent)
        ]
        with psycopg.connect(database) as conn:
            letters = conn.execute(
                "SELECT origin, source, step, payload FROM dead_letters"
            ).fetchall()
        assert letters == [(topic, "mqtt", "decode", "not json")]
    finally:
        publisher.close()
        gateway.stop()
        ingest.stop()


def test_a_full_spool_blocks_or_drops_its_oldest_as_configured_and_counts_it(
    tmp_path: Path,
    database: str,
    modbus: SimulatedServer,
    mqtt_address: tuple[str, int],
    kafka_restored: None,
) -> None:
    """Two gateways with a 64 KiB spool through one outage: one blocks, one drops its oldest.

    ``block`` (the default) holds the MQTT source back (the broker keeps the
    messages), so everything arrives once Kafka is back; ``drop_oldest``
    drops whole segments of the oldest messages, counts them, and keeps the
    newest. Both write to one raw topic read by one ingest flow.
    """
    uid = uuid.uuid4().hex[:8]
    raw = f"gwtest.{uid}.raw"
    topics = {policy: f"gwtest/{uid}/{policy}/mqtt-{policy}/seq" for policy in ("block", "drop")}
    gateways: dict[str, tuple[FlowProcess, int]] = {}
    for policy, topic in topics.items():
        config = _config(
            tmp_path / policy,
            database,
            modbus.port,
            None,
            topic.replace(f"mqtt-{policy}", "mqtt-1"),
            raw,
            max_bytes="64KiB",
            segment_bytes="16KiB",
            when_full="drop_oldest" if policy == "drop" else "block",
        )
        config["sources"] = [s for s in config["sources"] if s["type"] == "mqtt"]
        subscription = config["sources"][0]["subscriptions"][0]
        subscription["topic"] = f"gwtest/{uid}/{policy}/{{device}}/{{metric}}"
        config["sources"][0]["client_id"] = f"gw-{policy}-{uid}"
        gateways[policy] = _gateway(config, tmp_path / policy)
    ingest = _ingest(config, tmp_path / "ingest")
    publishers = {policy: Publisher(*mqtt_address, topic) for policy, topic in topics.items()}
    try:
        for gateway, _port in gateways.values():
            gateway.start()
        ingest.start()
        wait_until(
            lambda: all(
                _metric(port, "streamforge_mqtt_connected") >= 1 for _, port in gateways.values()
            ),
            60,
            "the gateways subscribed",
        )
        for publisher in publishers.values():
            publisher.publish(5, 50)
        wait_until(
            lambda: all(len(_values(database, f"mqtt-{policy}", "seq")) == 5 for policy in topics),
            60,
            "first messages stored",
        )
        _kafka_down()
        for _ in range(10):  # ~1,500 messages each, over 200 KB in the spool: 3x its limit
            for publisher in publishers.values():
                publisher.publish(150, 1000)
        block_port, drop_port = gateways["block"][1], gateways["drop"][1]
        wait_until(
            lambda: _metric(drop_port, "streamforge_spool_dropped_records_total") > 0,
            30,
            "drop_oldest dropping",
        )
        assert _metric(block_port, "streamforge_spool_bytes") <= 65536
        assert _metric(drop_port, "streamforge_spool_bytes") <= 65536
        _kafka_up()
        wait_until(
            lambda: _metric(block_port, "streamforge_spool_blocked_seconds_total") > 0,
            60,
            "the blocked time counted",
        )
        for publisher in publishers.values():
            publisher.publish(5, 50)
        block_sent = publishers["block"].sent
        drop_sent = publishers["drop"].sent
        wait_until(
            lambda: (
                len(_values(database, "mqtt-block", "seq")) >= block_sent
                and drop_sent - 1 in _values(database, "mqtt-drop", "seq")
            ),
            120,
            "the newest messages stored",
        )
        time.sleep(2)
        # block: nothing lost, nothing doubled
        assert sorted(_values(database, "mqtt-block", "seq")) == [
            float(i) for i in range(block_sent)
        ]
        assert _metric(block_port, "streamforge_spool_dropped_records_total") == 0
        # drop_oldest: one run of the oldest spooled messages is gone, the rest once each
        kept = sorted(_values(database, "mqtt-drop", "seq"))
        assert len(kept) == len(set(kept))
        missing = sorted(set(range(drop_sent)) - {int(v) for v in kept})
        assert missing, "some messages were dropped"
        assert missing == list(range(missing[0], missing[-1] + 1)), "the oldest, in one run"
        assert missing[0] >= 5, "what Kafka had before the outage is not touched"
        assert drop_sent - 1 - missing[-1] >= 5, "the newest are kept"
        dropped = _metric(drop_port, "streamforge_spool_dropped_records_total")
        blocked = _metric(block_port, "streamforge_spool_blocked_seconds_total")
        print(
            f"drop_oldest: {len(missing)} of {drop_sent} messages dropped, counted as"
            f" {dropped:.0f} spool records; block: {blocked:.1f} s blocked"
        )
    finally:
        for publisher in publishers.values():
            publisher.close()
        for gateway, _port in gateways.values():
            gateway.stop()
        ingest.stop()
