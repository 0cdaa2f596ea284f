"""The fault soak: the flow under a rain of crashes, then the database checked reading by reading.

    python -m tests.soak.soak_faults                      # 30 faults, seed 1 (make soak)
    python -m tests.soak.soak_faults --faults 10 --seed 7 --rate 300

An edge gateway's readings (the simulated plant, as ``produce_raw`` writes
them) go to a raw Kafka topic at ``--rate`` readings/s, acknowledged by
Kafka before they count as sent; ``flows.ingest`` runs with recovery from
that topic into TimescaleDB and Kafka. Meanwhile a driver, seeded, injects
``--faults`` faults at random moments, one at a time: SIGKILL of the flow
process (restarted 1-3 s later), of the Kafka broker, of PostgreSQL (all
its processes at once) or of Mosquitto (``deploy/services.sh kill``, then
``start``), and a 30 s database outage (``stop``, then ``start``).

At the end the producer stops, the flow catches up, and the database is
checked against what Kafka acknowledged: readings lost, duplicated (more
rows than keys, which the keys forbid, or values that differ: wrong), and
the 1-minute rollups against the readings they summarise (``time_bucket``
over the stored readings). It prints the figures and writes
``tests/soak/reports/soak.json``. It asserts nothing (it is not part of
``make test``); the report says whether the goal (0 lost, 0 duplicated,
0 wrong) was met.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Producer

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from connectors.timescale.migrate import migrate
from flows.classify import Classifier
from flows.config import PipelineConfig
from schemas.settings import Settings
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


class Feeder(threading.Thread):
    """Writes readings to the raw topic at a rate; counts only what Kafka acknowledged."""

    def __init__(self, bootstrap: str, topic: str, readings: list[dict[str, Any]], rate: float):
        super().__init__(daemon=True)
        self.topic, self.readings, self.rate = topic, readings, rate
        self.acked: list[dict[str, Any]] = []
        self.failed = 0
        self.stop = threading.Event()
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
        started = time.monotonic()
        for i, reading in enumerate(self.readings):
            if self.stop.is_set():
                break
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

            def on_delivery(err: Any, _msg: Any, reading: dict[str, Any] = reading) -> None:
                if err is None:
                    self.acked.append(reading)
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
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    settings = Settings()
    bootstrap = settings.kafka_bootstrap_servers
    raw_topic, prefix = unique("sf-soak-raw"), unique("sf-soak") + "."
    ensure_topics(admin_client(bootstrap), [TopicSpec(raw_topic, partitions=3)])
    url = create_database(settings.database_url)
    migrate(url)
    workdir = WORK / raw_topic
    workdir.mkdir(parents=True, exist_ok=True)
    flow = FlowProcess(pipeline_config(raw_topic, url, prefix, stop_at_end=False), workdir)
    expected_seconds = args.faults * args.gap + 60
    readings = plant_readings(int(args.rate * expected_seconds), replay_start(hours_ago=3))
    feeder = Feeder(bootstrap, raw_topic, readings, args.rate)
    injected: list[dict[str, Any]] = []
    started = time.time()
    try:
        flow.start()
        feeder.start()
        for n in range(args.faults):
            time.sleep(rng.expovariate(1 / args.gap))
            fault = rng.choice(FAULTS)
            t0 = time.monotonic()
            inject(fault, flow, rng)
            injected.append({"n": n, "fault": fault, "at_s": round(time.time() - started, 1),
                             "recovery_s": round(time.monotonic() - t0, 1)})  # fmt: skip
            print(f"fault {n + 1}/{args.faults}: {fault}", flush=True)
            if not flow.alive():
                flow.start()  # it died of a fault of another service: as systemd would
        feeder.stop.set()
        feeder.join(timeout=900)
        # The telemetry among them (what the readings table holds): numbers, not classified
        # as anything else by the default rules.
        classify = Classifier(PipelineConfig().classification)
        acked = {
            (r["tenant"], r["device"], r["metric"], datetime.fromisoformat(r["ts"])): float(
                r["value"]
            )
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
        rollups_wrong = sum(
            1 for key, (count, lo, hi, _total) in reference.items()
            if rollups.get(key, (None,))[:3] != (count, lo, hi)
        )  # fmt: skip
        report = {
            "benchmark": "soak_faults",
            "command": "python -m tests.soak.soak_faults " + " ".join(argv or []),
            "when": datetime.now(UTC).isoformat(),
            "seed": args.seed,
            "rate": args.rate,
            "seconds": round(time.time() - started, 1),
            "faults": injected,
            "faults_by_kind": {f: sum(1 for i in injected if i["fault"] == f) for f in FAULTS},
            "readings_acknowledged": len(acked),
            "producer_failures": feeder.failed,
            "readings_stored": len(stored_rows),
            "lost": len(lost),
            "duplicated": duplicated,
            "wrong": len(wrong) + len(unexpected),
            "rollup_windows_checked": len(reference),
            "rollup_windows_wrong": rollups_wrong,
            "examples": {"lost": [str(k) for k in lost[:5]], "wrong": [str(k) for k in wrong[:5]]},
            "goal_met": not lost and duplicated == 0 and not wrong and not unexpected,
        }
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "faults"}, indent=2))
        return report
    finally:
        feeder.stop.set()
        flow.stop()
        for service in ("kafka", "timescale", "mosquitto"):
            services("start", service)
        delete_topics(bootstrap, [raw_topic])
        drop_database(settings.database_url, url)


if __name__ == "__main__":
    main()
