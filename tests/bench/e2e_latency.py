"""Live-traffic parts of the end-to-end benchmark: a paced gateway, alarm latency, the flow runner.

Used by :mod:`tests.bench.bench_end_to_end`, which runs them; this module's
command line is what it starts in subprocesses::

    python -m tests.bench.e2e_latency --gateway TOPIC --rate 5000 --seconds 25
    STREAMFORGE_CONFIG=pipeline.yaml python -m tests.bench.e2e_latency --child --epoch-ms 100

``--gateway`` produces live readings (see :func:`live_gateway`) and prints
what it produced as JSON; ``--child`` runs ``flows.ingest`` with a chosen
epoch interval (``python -m bytewax.run`` takes whole seconds only), under
cProfile with ``--profile FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from connectors.kafka.admin import admin_client, ensure_topics
from connectors.kafka.sink_config import TopicSpec
from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.source import PlantSimulator
from schemas.settings import Settings
from tests.integration.e2e_tools import (
    REPO,
    FlowProcess,
    create_database,
    drop_database,
    output_topics,
    pipeline_config,
    replay_start,
    unique,
)
from tests.support.kafka_tools import delete_topics

WORK = Path("/tmp") / "streamforge-bench-e2e"


class Resources:
    """Topics and databases made by the benchmark, removed at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bootstrap = settings.kafka_bootstrap_servers
        self.topics: list[str] = []
        self.databases: list[str] = []

    def raw_topic(self, partitions: int) -> str:
        topic = unique("sf-bench-raw")
        ensure_topics(admin_client(self.bootstrap), [TopicSpec(topic, partitions)])
        self.topics.append(topic)
        return topic

    def prefix(self) -> str:
        prefix = unique("sf-bench") + "."
        self.topics.extend(output_topics(prefix).values())
        return prefix

    def database(self) -> str:
        url = create_database(self.settings.database_url)
        self.databases.append(url)
        return url

    def close(self) -> None:
        delete_topics(self.bootstrap, self.topics)
        for url in self.databases:
            drop_database(self.settings.database_url, url)


PROBES = 20
PROBE_RULE = {
    "name": "latency_probe",
    "metric": "probe",
    "device": "probe-*",
    "levels": {"critical": 100.0},
    "clear_at": 50.0,
    "min_duration": 0,
}


def live_gateway(bootstrap: str, topic: str, rate: float, seconds: float) -> dict[str, Any]:
    """Raw readings at ``rate``/s for ``seconds``, event time = now: a live plant plus probes.

    Runs in a process of its own (``--gateway``), so neither its work nor the
    GIL delays the alarm watcher's clock. Every 10 ms: ``rate / 100``
    readings stamped with the current time, two of them probe readings;
    each of the ``PROBES`` probe series sends every 100 ms and breaches
    (150 against a threshold of 100) once every 2 s, clearing on its next
    reading. Returns what it produced.
    """
    per_tick = max(3, round(rate / 100))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all"})
    sim = SimulatorSourceConfig(devices=50, metrics=5, rate=0, start=replay_start())
    plant = PlantSimulator(sim).readings()
    probe_counts = [0] * PROBES
    produced = tick = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        wait = started + tick * 0.01 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        ts = datetime.now(UTC).isoformat()
        for k in range(per_tick):
            if k < 2:
                p = (2 * tick + k) % PROBES
                value = "150.0" if probe_counts[p] % 20 == p % 20 else "10.0"
                probe_counts[p] += 1
                device, metric = f"probe-{p:02d}", "probe"
            else:
                r = next(plant)
                device, metric, value = r.device, r.metric, json.dumps(r.value)
            body = f'{{"device":"{device}","metric":"{metric}","value":{value},"ts":"{ts}"}}'
            while True:
                try:
                    producer.produce(topic, body.encode(), f"default/{device}".encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            produced += 1
        producer.poll(0)
        tick += 1
    elapsed = time.monotonic() - started
    producer.flush(30)
    return {"produced": produced, "seconds": elapsed}


class ProbeWatcher(threading.Thread):
    """Reads a topic as it fills; records (event time, arrival) of records with ``field == value``.

    Arrival is the wall time a consume call returned the record (this
    thread's process does nothing else, so its clock reading is prompt).
    """

    def __init__(self, bootstrap: str, topic: str, field: str, value: str) -> None:
        super().__init__(daemon=True, name=f"watch-{topic}")
        self.topic, self.field, self.value = topic, field, value
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []  # (event time, arrival) in epoch s
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": unique("bench-watch"),
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )

    def run(self) -> None:
        """Consume until stopped (the sink creates its topics when their first record comes)."""
        parts: Any = None
        while not parts and not self.stop.is_set():
            topic = self.consumer.list_topics(timeout=10).topics.get(self.topic)
            parts = topic.partitions if topic is not None and topic.error is None else None
            time.sleep(0.05)
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        needle = self.value.encode()
        while not self.stop.is_set():
            # poll(), not consume(n, timeout): consume waits for n messages or
            # the whole timeout, which added up to 50 ms to every sample.
            msg = self.consumer.poll(0.05)
            arrived = time.time()
            if msg is not None:
                value = msg.value()
                if msg.error() or not value or needle not in value:
                    continue
                record = json.loads(value)
                if record.get(self.field) == self.value:
                    event = datetime.fromisoformat(record["ts"]).timestamp()
                    self.samples.append((event, arrived))
        self.consumer.close()

    def figures(self, since: float) -> dict[str, Any]:
        """Count and percentiles (ms) of the latencies of records with event time >= since."""
        ms = sorted((a - e) * 1000 for e, a in self.samples if e >= since)
        if not ms:
            return {"measured": 0}
        return {
            "measured": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[int(0.90 * (len(ms) - 1))], 1),
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "max_ms": round(ms[-1], 1),
        }


def run_gateway(raw: str, rate: float, seconds: float) -> dict[str, Any]:
    """The live gateway in a process of its own; what it produced."""
    gateway = subprocess.run(
        [
            sys.executable, "-m", "tests.bench.e2e_latency", "--gateway", raw,
            "--rate", str(rate), "--seconds", str(seconds),
        ],
        capture_output=True, check=True, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(gateway.stdout.strip().splitlines()[-1])
    return figures


def kafka_hop(res: Resources, rate: float, seconds: float) -> dict[str, Any]:
    """The floor: gateway -> raw topic -> consumer, one Kafka hop, no flow."""
    raw = res.raw_topic(3)
    watcher = ProbeWatcher(res.bootstrap, raw, "metric", "probe")
    watcher.start()
    offered = run_gateway(raw, rate, 5.0 + seconds)
    since = time.time() - seconds
    time.sleep(1.0)
    watcher.stop.set()
    watcher.join(30)
    return {
        "offered_readings_per_s": round(offered["produced"] / offered["seconds"]),
        "probe_readings": watcher.figures(since),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def wait_for_log(flow: FlowProcess, message: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if flow.log_path.exists() and flow.log_path.read_text().count(message) >= count:
            return
        if not flow.alive():
            raise RuntimeError(f"flow exited:\n{flow.log_tail()}")
        time.sleep(0.1)
    raise RuntimeError(f"flow not ready ({message!r}):\n{flow.log_tail()}")


def latency(
    res: Resources,
    mode: str,
    flush: str,
    epoch_ms: int | None,
    rate: float,
    seconds: float,
    database: bool = True,
) -> dict[str, Any]:
    """Event-to-alarm latency at a steady ``rate`` for ``seconds`` after a 5 s warm-up.

    ``epoch_ms=None`` runs ``python -m bytewax.run flows.ingest`` (10 s
    epochs); otherwise the flow runs with that epoch interval.
    ``database=False`` drops the TimescaleDB sink (Kafka only).
    """
    raw, prefix = res.raw_topic(3), res.prefix()
    url = res.database() if database else None
    config = pipeline_config(raw, url, prefix, stop_at_end=False, kafka_flush=flush)
    config["alarms"] = [
        {
            "name": "high_temperature",
            "metric": "temperature",
            "levels": {"warning": 80.0, "critical": 95.0},
            "clear_at": 75.0,
            "min_duration": 3.0,
        },
        PROBE_RULE,
    ]
    workdir = WORK / f"latency-{mode}"
    workdir.mkdir(parents=True, exist_ok=True)
    launcher = None
    if epoch_ms is not None:
        launcher = ["-m", "tests.bench.e2e_latency", "--child", "--epoch-ms", str(epoch_ms)]
    flow = FlowProcess(config, workdir, recovery=False, launcher=launcher)
    flow.start()
    watcher = ProbeWatcher(res.bootstrap, output_topics(prefix)["alarm"], "rule", "latency_probe")
    try:
        wait_for_log(flow, "kafka partition assigned", 3, 60)
        watcher.start()
        offered = run_gateway(raw, rate, 5.0 + seconds)
        since = time.time() - seconds
        # Let the last alarms arrive; any still missing shows as measured < expected.
        time.sleep(3.0)
        watcher.stop.set()
        watcher.join(30)
        alive = flow.alive()
    finally:
        flow.stop()
    return {
        "kafka_flush": flush,
        "epoch_interval_ms": epoch_ms if epoch_ms is not None else 10_000,
        "sinks": [s["type"] for s in config["sinks"]],
        "offered_readings_per_s": round(offered["produced"] / offered["seconds"]),
        # 20 probes, each raising and clearing once per 2 s: ~20 alarm transitions/s.
        "alarms_expected_about": round(PROBES * seconds),
        "alarms": watcher.figures(since),
        "flow_alive": alive,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def child(epoch_ms: int, profile: Path | None) -> None:
    """The flow in this process with a chosen epoch interval (``bytewax.run`` takes whole s)."""
    from bytewax.run import cli_main

    from flows.ingest import flow_from_environment

    flow = flow_from_environment()
    run = lambda: cli_main(flow, epoch_interval=timedelta(milliseconds=epoch_ms))  # noqa: E731
    if profile is None:
        run()
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    try:
        profiler.runcall(run)
    finally:  # also after Ctrl-C (SIGINT) of a flow that runs forever
        profiler.dump_stats(profile)
        stats = pstats.Stats(str(profile))
        stats.sort_stats("tottime").print_stats(30)


def main(argv: list[str] | None = None) -> None:
    """``--gateway`` or ``--child`` (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--gateway", help="raw topic to feed")
    parser.add_argument("--rate", type=float, default=5000.0)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--epoch-ms", type=int, default=10_000)
    parser.add_argument("--profile", default=None)
    args = parser.parse_args(argv)
    if args.gateway:
        figures = live_gateway(
            Settings().kafka_bootstrap_servers, args.gateway, args.rate, args.seconds
        )
        print(json.dumps(figures))
    elif args.child:
        child(args.epoch_ms, Path(args.profile) if args.profile else None)
    else:
        parser.error("--gateway or --child")


if __name__ == "__main__":
    main(sys.argv[1:])
