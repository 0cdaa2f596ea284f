"""The fault soak: the flow under a rain of crashes, then the database checked reading by reading.

    python -m tests.soak.soak_faults                      # 30 faults, seed 1 (make soak)
    python -m tests.soak.soak_faults --faults 10 --seed 7 --rate 300

Three inputs, each with devices of its own, count what they were told was
taken: an edge gateway's readings (the simulated plant, as ``produce_raw``
writes them) on a raw Kafka topic at ``--rate`` readings/s, acknowledged by
Kafka; readings published with QoS 1 to Mosquitto (``--mqtt-rate``),
acknowledged by the broker (PUBACK); and batches posted to ``POST /ingest``
of a real API process (``--http-rate``), answered 200 (a 503 or a refused
connection is retried, as a client should). ``flows.ingest`` runs with
recovery, reading the Kafka topic and the MQTT subscription, into
TimescaleDB and Kafka. Meanwhile a driver, seeded, injects ``--faults``
faults at random moments, one at a time: SIGKILL of the flow process
(restarted 1-3 s later), of the Kafka broker, of PostgreSQL (all its
processes at once) or of Mosquitto (``deploy/services.sh kill``, then
``start``), and a 30 s database outage (``stop``, then ``start``).

At the end the inputs stop, the flow catches up, and the database is
checked against what the inputs were told was taken: readings lost,
duplicated (more rows than keys, which the keys forbid, or values that
differ: wrong); the 1-minute rollups against the readings they summarise
(``time_bucket`` over the stored readings); and the alarm transitions
against those the same readings give in memory without any fault (the
oracle: ``flows.ingest.build_flow`` on a testing source). It prints the
figures and writes ``tests/soak/reports/soak.json``. It asserts nothing
(it is not part of ``make test``); the report says whether the goal (0
lost, 0 duplicated, 0 wrong) was met.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psycopg
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Producer

from api.keys import create_key
from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from connectors.timescale.migrate import migrate
from flows.classify import Classifier
from flows.config import PipelineConfig
from flows.ingest import build_flow
from schemas.models import Alarm, RawMessage
from schemas.settings import Settings
from tests.bench.bench_api import serve_api
from tests.integration.e2e_tools import (
    FlowProcess,
    create_database,
    drop_database,
    pipeline_config,
    plant_readings,
    replay_start,
    rollup_reference,
    services,
    stored_rollups,
    unique,
)
from tests.support.kafka_tools import _json_default, delete_topics

REPORT = Path(__file__).parent / "reports" / "soak.json"
WORK = Path("/tmp/streamforge-soak")
FAULTS = ("kill_flow", "kill_kafka", "kill_timescale", "kill_mosquitto", "stall_timescale")


class Input(threading.Thread):
    """One input of the soak: its readings, sent at a rate; ``acked`` what was taken."""

    name = "input"

    def __init__(self, readings: list[dict[str, Any]], rate: float) -> None:
        super().__init__(daemon=True)
        self.readings, self.rate = readings, rate
        self.acked_index: set[int] = set()
        self.failed = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def ack(self, index: int) -> None:
        with self.lock:
            self.acked_index.add(index)

    @property
    def acked(self) -> list[dict[str, Any]]:
        """The readings taken, in the order they were sent."""
        return [self.readings[i] for i in sorted(self.acked_index)]

    def paced(self) -> Any:
        """(index, reading) at the rate, until the end or ``stop``."""
        started = time.monotonic()
        for i, reading in enumerate(self.readings):
            if self.stop.is_set():
                return
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield i, reading


class Feeder(Input):
    """Writes readings to the raw topic at a rate; counts only what Kafka acknowledged."""

    name = "kafka"

    def __init__(self, bootstrap: str, topic: str, readings: list[dict[str, Any]], rate: float):
        super().__init__(readings, rate)
        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "message.timeout.ms": 600_000,  # ride out broker restarts
                "linger.ms": 20,
                "log_level": 0,  # the broker's restarts are the point: no line for each
            }
        )

    def run(self) -> None:
        for i, reading in self.paced():

            def on_delivery(err: Any, _msg: Any, i: int = i) -> None:
                if err is None:
                    self.ack(i)
                else:
                    self.failed += 1

            key = f"{reading['tenant']}/{reading['device']}".encode()
            body = json.dumps(reading, default=_json_default).encode()
            while True:
                try:
                    self.producer.produce(self.topic, body, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        self.producer.flush(600)


class MqttFeeder(Input):
    """Publishes readings with QoS 1 to a topic per device; counts what the broker acknowledged.

    A persistent session (MQTT 5, no expiry) and paho's own reconnection: what
    was in flight when the broker died is published again on reconnection.
    """

    name = "mqtt"

    def __init__(self, host: str, port: int, prefix: str, readings: list[dict[str, Any]],
                 rate: float) -> None:  # fmt: skip
        super().__init__(readings, rate)
        self.prefix = prefix
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-pub", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        self.mids: dict[int, int] = {}
        self.pubacks: deque[int] = deque()  # packet ids acknowledged, from paho's thread
        self.early: set[int] = set()  # acknowledged before their publish() returned
        self.client.on_publish = self._on_publish
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0xFFFFFFFF
        self.client.connect(host, port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_publish(self, _client: Any, _data: Any, mid: int, reason: Any, _props: Any) -> None:
        # paho's thread, which may hold paho's own locks: never wait for the publishing one.
        if not reason.is_failure:
            self.pubacks.append(mid)

    def _settle(self) -> None:
        """Count the readings whose PUBACK came (packet ids are reused only once settled)."""
        while self.pubacks:
            mid = self.pubacks.popleft()
            index = self.mids.pop(mid, None)
            if index is None:
                self.early.add(mid)
            else:
                self.ack(index)

    def run(self) -> None:
        for i, reading in self.paced():
            body = json.dumps(reading, default=_json_default)
            info = self.client.publish(f"{self.prefix}/{reading['device']}", body, qos=1)
            self._settle()
            if info.mid in self.early:  # its PUBACK came before this line
                self.early.discard(info.mid)
                self.ack(i)
            else:
                self.mids[info.mid] = i
        deadline = time.monotonic() + 120
        while self.mids and time.monotonic() < deadline:
            time.sleep(0.2)
            self._settle()
        self.client.disconnect()
        self.client.loop_stop()


class HttpFeeder(Input):
    """Posts batches to ``POST /ingest``; counts a batch once it is answered 200, else retries."""

    name = "http"

    def __init__(self, url: str, key: str, readings: list[dict[str, Any]], rate: float,
                 batch: int = 20) -> None:  # fmt: skip
        super().__init__(readings, rate)
        self.url, self.key, self.batch = url, key, batch
        self.statuses: dict[str, int] = {}

    def run(self) -> None:
        pending: list[tuple[int, dict[str, Any]]] = []
        with httpx.Client(headers={"X-API-Key": self.key}, timeout=30) as client:
            for i, reading in self.paced():
                pending.append((i, reading))
                if len(pending) >= self.batch:
                    self._post(client, pending)
                    pending = []
            if pending:
                self._post(client, pending)

    def _post(self, client: httpx.Client, batch: list[tuple[int, dict[str, Any]]]) -> None:
        body = json.dumps([r for _, r in batch], default=_json_default)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                status = str(client.post(self.url, content=body).status_code)
            except httpx.TransportError as exc:
                status = type(exc).__name__
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == "200":
                for i, _ in batch:
                    self.ack(i)
                return
            time.sleep(1)
        self.failed += len(batch)


def renamed(readings: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The readings of devices of their own: ``press-1`` becomes ``<prefix>-press-1``."""
    return [{**r, "device": f"{prefix}-{r['device']}"} for r in readings]


def oracle_alarms(config: PipelineConfig, inputs: list[Input]) -> list[Alarm]:
    """The alarm transitions the acknowledged readings give in memory, without any fault.

    Each input's readings in the order it sent them: every series keeps its
    order (its device belongs to one input), which is all the alarms depend on.
    """
    received = datetime.now(UTC)
    messages = [
        RawMessage(json.dumps(r, default=_json_default).encode(), "kafka", received, "oracle")
        for i in inputs
        for r in i.acked
    ]
    out: list[tuple[str, Any]] = []
    memory = config.model_copy(update={"sinks": []})
    run_main(build_flow(memory, sources=[TestingSource(messages)], sinks=[TestingSink(out)]))
    return [a for kind, a in out if kind == "alarm"]


def compare_alarms(url: str, expected: list[Alarm]) -> dict[str, Any]:
    """Stored alarm transitions against the oracle's: lost, unexpected, wrong.

    A flood alarm is compared by its raise only: with no later alarm to end
    it, a flood ends when the wall clock says its window has passed
    (``flows.alarm_flood``), which a finite in-memory run never waits for.
    """
    want = {
        (a.id, a.seq): (a.transition, a.severity, a.ts)
        for a in expected
        if a.kind != "flood" or a.transition == "raised"
    }
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT alarm_id, seq, transition, severity, ts FROM alarm_transitions"
            " WHERE kind <> 'flood' OR transition = 'raised'"
        ).fetchall()
    got = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    lost = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and got[k] != want[k]]
    return {
        "alarm_transitions_expected": len(want),
        "alarm_transitions_stored": len(rows),
        "alarm_transitions_lost": len(lost),
        "alarm_transitions_unexpected": len(unexpected),
        "alarm_transitions_wrong": len(wrong),
        "alarm_examples": {"lost": [str(k) for k in lost[:5]],
                           "unexpected": [str(k) for k in unexpected[:5]]},
    }  # fmt: skip


def inject(fault: str, flow: FlowProcess, rng: random.Random) -> None:
    """One fault, and the recovery from it."""
    if fault == "kill_flow":
        flow.kill()
        time.sleep(rng.uniform(1, 3))
        flow.start()
    elif fault == "stall_timescale":
        services("stop", "timescale")
        time.sleep(30)
        services("start", "timescale")
    else:
        service = fault.removeprefix("kill_")
        services("kill", service)
        time.sleep(rng.uniform(0.5, 2))
        services("start", service)


def db_readings(url: str) -> dict[tuple[Any, ...], float | None]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tenant, device, metric, ts, value FROM readings").fetchall()
    return {tuple(r[:4]): r[4] for r in rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--faults", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=300.0, help="readings/s to the raw topic")
    parser.add_argument("--gap", type=float, default=12.0, help="mean seconds between faults")
    parser.add_argument("--kinds", nargs="+", choices=FAULTS, default=list(FAULTS),
                        help="the kinds of fault to draw from")  # fmt: skip
    parser.add_argument("--mqtt-rate", type=float, default=40.0, help="readings/s over MQTT")
    parser.add_argument("--http-rate", type=float, default=40.0, help="readings/s over HTTP")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    settings = Settings()
    bootstrap = settings.kafka_bootstrap_servers
    raw_topic, prefix = unique("sf-soak-raw"), unique("sf-soak") + "."
    mqtt_prefix = unique("sf-soak-mqtt")
    host, _, mqtt_port = settings.mqtt_url.split("://", 1)[1].partition(":")
    mqtt_address = (host, int(mqtt_port or 1883))
    ensure_topics(admin_client(bootstrap), [TopicSpec(raw_topic, partitions=3)])
    url = create_database(settings.database_url)
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        key = create_key(conn, "default", "operator", "soak")
    workdir = WORK / raw_topic
    workdir.mkdir(parents=True, exist_ok=True)
    config = pipeline_config(raw_topic, url, prefix, stop_at_end=False)
    config["sources"].append(
        {"type": "mqtt", "name": "soak-mqtt", "client_id": mqtt_prefix,
         "url": settings.mqtt_url,
         "subscriptions": [{"topic": f"{mqtt_prefix}/+", "qos": 1}],
         "reconnect_max_delay": 2}
    )  # fmt: skip
    flow = FlowProcess(config, workdir)
    api_env = {
        **os.environ,
        "STREAMFORGE_DATABASE_URL": url,
        "STREAMFORGE_RAW_TOPIC": raw_topic,
        "STREAMFORGE_API_SUPERVISE_FLOWS": "false",
    }
    api, port = serve_api(api_env, 1, workdir / "api.log")
    expected_seconds = args.faults * args.gap + 60
    start = replay_start(hours_ago=3)
    readings = plant_readings(int(args.rate * expected_seconds), start)
    inputs: list[Input] = [
        Feeder(bootstrap, raw_topic, readings, args.rate),
        MqttFeeder(*mqtt_address, mqtt_prefix,
                   renamed(plant_readings(int(args.mqtt_rate * expected_seconds), start,
                                          devices=2, seed=7), "mq"), args.mqtt_rate),
        HttpFeeder(f"http://127.0.0.1:{port}/ingest", key,
                   renamed(plant_readings(int(args.http_rate * expected_seconds), start,
                                          devices=2, seed=8), "http"), args.http_rate),
    ]  # fmt: skip
    injected: list[dict[str, Any]] = []
    started = time.time()
    try:
        flow.start()
        # MQTT keeps messages only for sessions that exist: publish once the flow subscribed.
        deadline = time.monotonic() + 120
        while "connected to MQTT broker" not in flow.log_tail(200):
            if time.monotonic() > deadline or not flow.alive():
                raise RuntimeError(f"the flow never subscribed:\n{flow.log_tail()}")
            time.sleep(0.2)
        for feeder in inputs:
            feeder.start()
        for n in range(args.faults):
            time.sleep(rng.expovariate(1 / args.gap))
            fault = rng.choice(args.kinds)
            t0 = time.monotonic()
            inject(fault, flow, rng)
            injected.append({"n": n, "fault": fault, "at_s": round(time.time() - started, 1),
                             "recovery_s": round(time.monotonic() - t0, 1)})  # fmt: skip
            print(f"fault {n + 1}/{args.faults}: {fault}", flush=True)
            if not flow.alive():
                flow.start()  # it died of a fault of another service: as systemd would
        for feeder in inputs:
            feeder.stop.set()
        for feeder in inputs:
            feeder.join(timeout=900)
        # The telemetry among them (what the readings table holds): numbers, not classified
        # as anything else by the default rules.
        classify = Classifier(PipelineConfig().classification)
        acked = {
            (r["tenant"], r["device"], r["metric"], datetime.fromisoformat(r["ts"])): float(
                r["value"]
            )
            for feeder in inputs
            for r in feeder.acked
            if type(r["value"]) in (int, float)
            and classify.resolve(r["device"], r["metric"]) in (None, "telemetry")
        }
        # Catch up: until the database holds every acknowledged reading, or stops moving.
        last, still = -1, 0
        while still < 45:
            stored = len(db_readings(url))
            if stored >= len(acked):
                break
            still = still + 1 if stored == last else 0
            last = stored
            if not flow.alive():
                flow.start()
            time.sleep(2)
        time.sleep(10)  # the last rollup windows (idle_timeout)
        stored_rows = db_readings(url)
        lost = [k for k in acked if k not in stored_rows]
        wrong = [k for k, v in acked.items() if k in stored_rows and stored_rows[k] != v]
        unexpected = [k for k in stored_rows if k not in acked]
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT (tenant, device, metric, ts)) FROM readings"
            ).fetchone()
        duplicated = (row[0] - row[1]) if row else -1
        reference, rollups = rollup_reference(url, "1m"), stored_rollups(url, "1m")
        rollups_bad = [
            (key, (count, lo, hi), rollups.get(key, (None,))[:3])
            for key, (count, lo, hi, _total) in reference.items()
            if rollups.get(key, (None,))[:3] != (count, lo, hi)
        ]
        rollups_wrong = len(rollups_bad)
        alarms = compare_alarms(url, oracle_alarms(PipelineConfig.model_validate(config), inputs))
        alarms_bad = sum(
            alarms[k]
            for k in ("alarm_transitions_lost", "alarm_transitions_unexpected",
                      "alarm_transitions_wrong")
        )  # fmt: skip
        report = {
            "benchmark": "soak_faults",
            "command": " ".join(["python -m tests.soak.soak_faults", *(argv or sys.argv[1:])]),
            "when": datetime.now(UTC).isoformat(),
            "seed": args.seed,
            "rate": {i.name: i.rate for i in inputs},
            "seconds": round(time.time() - started, 1),
            "faults": injected,
            "faults_by_kind": {f: sum(1 for i in injected if i["fault"] == f) for f in FAULTS},
            "readings_acknowledged": len(acked),
            "readings_acknowledged_by_input": {i.name: len(i.acked) for i in inputs},
            "input_failures": {i.name: i.failed for i in inputs},
            "http_answers": inputs[2].statuses if isinstance(inputs[2], HttpFeeder) else {},
            "readings_stored": len(stored_rows),
            "lost": len(lost),
            "duplicated": duplicated,
            "wrong": len(wrong) + len(unexpected),
            "rollup_windows_checked": len(reference),
            "rollup_windows_wrong": rollups_wrong,
            **alarms,
            "examples": {"lost": [str(k) for k in lost[:5]], "wrong": [str(k) for k in wrong[:5]],
                         "unexpected": [str(k) for k in unexpected[:5]],
                         "rollups (key, readings, stored)": [str(r) for r in rollups_bad[:8]]},
            "goal_met": not lost and duplicated == 0 and not wrong and not unexpected
            and rollups_wrong == 0 and alarms_bad == 0,
        }  # fmt: skip
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=2))
        return report
    finally:
        for feeder in inputs:
            feeder.stop.set()
        flow.stop()
        api.terminate()
        api.wait(30)
        for service in ("kafka", "timescale", "mosquitto"):
            services("start", service)
        delete_topics(bootstrap, [raw_topic])
        drop_database(settings.database_url, url)


if __name__ == "__main__":
    main()
