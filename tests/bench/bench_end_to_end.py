"""End-to-end benchmark: raw Kafka topic -> flows.ingest -> Kafka topics + TimescaleDB.

    python -m tests.bench.bench_end_to_end                  # everything, ~5 minutes
    python -m tests.bench.bench_end_to_end --readings 200000 --no-latency
    python -m tests.bench.bench_end_to_end --readings 200000 --profile   # cProfile, 1 process

Needs the local services (``make up``). Prints a table and writes
``tests/bench/reports/end_to_end.json``; nothing is asserted. Each case has
output topics and a database of its own, dropped at the end.

1. **Preload**: ``--readings`` readings of a simulated plant (200 devices x
   17 metrics: telemetry, state events, alarm bits, log lines; replayed
   event time from an hour ago) into a raw topic of 6 partitions, as JSON
   arrays of ``--per-message`` readings of one device per message, keyed by
   device (so each series stays in order). Arrays make preloading fast and
   are what a batching gateway sends; ``flows.decode`` takes both.
2. **Flow, 1 process**: ``python -m bytewax.run flows.ingest`` with the
   default pipeline (classification, threshold alarms, 1m/5m/1h rollups,
   anomaly scores and alarms) and both sinks (Kafka, every kind; TimescaleDB),
   ``stop_at_end``. Readings/s = readings / wall time of the process
   (start-up included) and / time since its partitions were assigned.
3. **Flow, 2 processes**: the same with ``-i 0|1 -a "host:p1;host:p2"``.
4. **Passthrough** (the ceiling): one loop consuming the raw topic,
   decoding with ``flows.decode`` and binary-``COPY``-ing the readings into
   the ``readings`` table; no processing, no Kafka output.
5. **Naive**: one loop, ``json.loads`` and one ``INSERT`` per reading with
   autocommit, for ``--naive-seconds``.
6. **Latency**: a live plant at ``--rate`` readings/s (event time = now) with
   probe series that breach a threshold rule (``min_duration: 0``) every 2 s;
   latency = the alarm's arrival at a consumer of the alarms topic minus the
   breaching (or clearing) reading's event time. Three set-ups: the defaults
   (Kafka sink flushing at snapshots, 10 s epochs), snapshot flush with
   100 ms epochs, and ``flush: batch`` with 100 ms epochs.

Goals (issue 5): >= 50,000 readings/s end to end, >= 0.5 x passthrough,
>= 10 x naive; event-to-alarm p99 <= 50 ms at 5,000 readings/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from connectors.kafka_admin import admin_client, ensure_topics
from connectors.simulator import PlantSimulator
from connectors.timescale_rows import READINGS, reading_row
from flows.decode import decode_payload
from schemas.config import DecodeConfig
from schemas.migrate import migrate
from schemas.models import RawMessage, is_number, to_dict
from schemas.settings import Settings
from schemas.sink_kafka import TopicSpec
from schemas.sources.simulator import SimulatorSourceConfig
from tests.integration.e2e_tools import (
    REPO,
    FlowProcess,
    create_database,
    drop_database,
    output_topics,
    pipeline_config,
    replay_start,
    table_counts,
    topic_counts,
    unique,
)
from tests.integration.kafka_tools import delete_topics

REPORT = Path(__file__).parent / "reports" / "end_to_end.json"
WORK = Path("/tmp") / "streamforge-bench-e2e"
RAW_PARTITIONS = 6
CLASSIFIED = ("log.", "alarm.", "state.")


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


# ---------------------------------------------------------------- preload


def device_messages(n: int, devices: int, per_message: int) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, JSON array, numeric readings in it): each message holds one device's readings."""
    sim = SimulatorSourceConfig(
        devices=devices, metrics=17, rate=0, interval_s=1.0, start=replay_start(), limit=n
    )
    pending: dict[str, list[dict[str, Any]]] = {}
    for reading in PlantSimulator(sim).readings(n):
        item = to_dict(reading)
        del item["source"], item["attributes"]  # the connector sets the source
        chunk = pending.setdefault(reading.device, [])
        chunk.append(item)
        if len(chunk) >= per_message:
            yield _message(reading.device, chunk)
            pending[reading.device] = []
    for device, chunk in pending.items():
        if chunk:
            yield _message(device, chunk)


def _message(device: str, chunk: list[dict[str, Any]]) -> tuple[bytes, bytes, int]:
    numeric = sum(
        1 for r in chunk if is_number(r["value"]) and not r["metric"].startswith(CLASSIFIED)
    )
    body = json.dumps(chunk, separators=(",", ":")).encode()
    return f"default/{device}".encode(), body, numeric


def preload(bootstrap: str, topic: str, n: int, per_message: int) -> dict[str, Any]:
    """Write the plant's readings to the raw topic; returns figures and the telemetry count."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "compression.type": "lz4",
        }
    )
    started = time.perf_counter()
    messages = numeric = 0
    for key, value, count in device_messages(n, 200, per_message):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        messages += 1
        numeric += count
    if producer.flush(120):
        raise RuntimeError("preload: messages not acknowledged")
    seconds = time.perf_counter() - started
    return {
        "readings": n,
        "messages": messages,
        "readings_per_message": per_message,
        "telemetry_readings": numeric,
        "seconds": round(seconds, 1),
        "readings_per_s": round(n / seconds),
    }


# ---------------------------------------------------------------- the flow


def log_time(path: Path, message: str) -> float | None:
    """Wall time of the first log line with this message."""
    for line in path.read_text(errors="replace").splitlines():
        if f'"msg": "{message}"' in line:
            return datetime.fromisoformat(json.loads(line)["ts"]).timestamp()
    return None


def run_flow(
    res: Resources,
    raw: str,
    n: int,
    telemetry: int,
    processes: int,
    port: int,
    *,
    flush: str = "snapshot",
    scores: bool = True,
) -> dict[str, Any]:
    """The ingest flow over the preloaded topic in ``processes`` processes, to the end.

    ``flush`` is the Kafka sink's; ``scores=False`` stops emitting an
    anomaly score per telemetry value (half the output records).
    """
    url, prefix = res.database(), res.prefix()
    config = pipeline_config(raw, url, prefix, stop_at_end=True, kafka_flush=flush)
    if not scores:
        config["anomaly"] = {"emit_scores": False}
    addresses = ";".join(f"127.0.0.1:{port + i}" for i in range(processes))
    flows = []
    for i in range(processes):
        workdir = WORK / f"flow{processes}-{flush}-{scores}-{i}"
        workdir.mkdir(parents=True, exist_ok=True)
        args = ["-i", str(i), "-a", addresses] if processes > 1 else []
        flows.append(FlowProcess(config, workdir, recovery=False, extra_args=args))
    for flow in flows:
        flow.start()
    statuses = [flow.wait(timeout=900) for flow in flows]
    ended = time.time()
    started = min(f.started_at for f in flows)
    assigned = [log_time(f.log_path, "kafka partition assigned") for f in flows]
    first = min((t for t in assigned if t is not None), default=started)
    counts = table_counts(url)
    topics = output_topics(prefix)
    published = topic_counts(res.bootstrap, [topics["telemetry"]])[topics["telemetry"]]
    wall, steady = ended - started, ended - first
    return {
        "readings": n,
        "processes": processes,
        "kafka_flush": flush,
        "anomaly_scores_emitted": scores,
        "exit_status": statuses,
        "seconds": round(wall, 1),
        "seconds_after_assign": round(steady, 1),
        "readings_per_s": round(n / wall),
        "readings_per_s_after_assign": round(n / steady),
        "rows": counts,
        "telemetry_published": published,
        "complete": counts["readings"] == telemetry == published,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# ---------------------------------------------------------------- baselines


def raw_consumer(bootstrap: str, topic: str) -> tuple[Consumer, dict[int, int]]:
    """A group-less consumer of every partition from the beginning, and the end offsets."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("bench"),
            "enable.auto.commit": False,
            "queued.min.messages": 1_000_000,
        }
    )
    parts = range(RAW_PARTITIONS)
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts
    }
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    return consumer, ends


def passthrough(res: Resources, raw: str, n: int) -> dict[str, Any]:
    """Consume + decode + binary COPY of readings, one loop: the ceiling."""
    url = res.database()
    migrate(url)
    consumer, ends = raw_consumer(res.bootstrap, raw)
    decode = DecodeConfig()
    done: set[int] = {p for p, end in ends.items() if end == 0}
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        while len(done) < len(ends):
            msgs = consumer.consume(1000, 0.5)
            now = datetime.now(UTC)
            batch: list[tuple[Any, ...]] = []
            for msg in msgs:
                if msg.error():
                    continue
                raw_msg = RawMessage(msg.value() or b"", "kafka", now, None, None, "auto")
                readings, _dead = decode_payload(raw_msg, decode)
                batch.extend(reading_row(r) for r in readings)
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    done.add(msg.partition() or 0)
            if batch:
                with conn.cursor().copy(READINGS.copy_sql(direct=True)) as copy:
                    copy.set_types(list(READINGS.types))
                    for row in batch:
                        copy.write_row(row)
                conn.commit()
                rows += len(batch)
    seconds = time.perf_counter() - started
    consumer.close()
    return {
        "seconds": round(seconds, 1),
        "rows": rows,
        "readings_per_s": round(n / seconds),
        "complete": rows == n,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def naive(res: Resources, raw: str, seconds: float) -> dict[str, Any]:
    """One consumer loop, json.loads, one autocommitted INSERT per reading, time-bounded."""
    url = res.database()
    migrate(url)
    consumer, _ends = raw_consumer(res.bootstrap, raw)
    sql = (
        "INSERT INTO readings (tenant, device, metric, ts, value, value_text, value_bool, "
        "quality, source, unit) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING"
    )
    inserted = 0
    started = time.perf_counter()
    deadline = started + seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while time.perf_counter() < deadline:
            for msg in consumer.consume(100, 0.5):
                if msg.error():
                    continue
                for r in json.loads(msg.value() or b"[]"):
                    value = r["value"]
                    number = float(value) if is_number(value) else None
                    text = value if isinstance(value, str) else None
                    flag = value if isinstance(value, bool) else None
                    conn.execute(
                        sql,
                        (
                            r.get("tenant", "default"), r["device"], r["metric"],
                            datetime.fromisoformat(r["ts"]), number, text, flag,
                            r.get("quality", "good"), "kafka", r.get("unit"),
                        ),
                    )  # fmt: skip
                    inserted += 1
                if time.perf_counter() >= deadline:
                    break
    elapsed = time.perf_counter() - started
    consumer.close()
    return {
        "seconds": round(elapsed, 1),
        "rows": inserted,
        "readings_per_s": round(inserted / elapsed),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


# ---------------------------------------------------------------- latency

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
            msgs = self.consumer.consume(1000, 0.05)
            arrived = time.time()
            for msg in msgs:
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
            sys.executable, "-m", "tests.bench.bench_end_to_end", "--gateway", raw,
            "--rate", str(rate), "--latency-seconds", str(seconds),
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
        launcher = ["-m", "tests.bench.bench_end_to_end", "--child", "--epoch-ms", str(epoch_ms)]
    flow = FlowProcess(config, workdir, recovery=False, launcher=launcher)
    flow.start()
    watcher = ProbeWatcher(res.bootstrap, output_topics(prefix)["alarm"], "rule", "latency_probe")
    try:
        wait_for_log(flow, "kafka partition assigned", 3, 60)
        watcher.start()
        offered = run_gateway(raw, rate, 5.0 + seconds)
        since = time.time() - seconds
        time.sleep(2.0 if epoch_ms is not None else 12.0)  # let the last alarms arrive
        watcher.stop.set()
        watcher.join(30)
        alive = flow.alive()
    finally:
        flow.stop()
    return {
        "kafka_flush": flush,
        "epoch_interval_ms": epoch_ms if epoch_ms is not None else 10_000,
        "timescale_sink": database,
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


def profile_flow(res: Resources, raw: str) -> None:
    """The 1-process flow under cProfile (in one process: the profile sees every step)."""
    url, prefix = res.database(), res.prefix()
    workdir = WORK / "profile"
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "flow.prof"
    launcher = ["-m", "tests.bench.bench_end_to_end", "--child", "--epoch-ms", "10000"]
    flow = FlowProcess(
        pipeline_config(raw, url, prefix, stop_at_end=True),
        workdir,
        recovery=False,
        launcher=launcher,
        extra_args=["--profile", str(out)],
    )
    flow.start()
    flow.wait(timeout=1800)
    print(flow.log_path.read_text(errors="replace")[-12000:])


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every case, print the figures, write the JSON report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--naive-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5000.0, help="latency: readings/s")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--subset",
        type=int,
        default=200_000,
        help="readings for the slower variants (2 processes, no scores); 0 skips them",
    )
    parser.add_argument("--profile", nargs="?", const="", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gateway", help=argparse.SUPPRESS)
    parser.add_argument("--epoch-ms", type=int, default=10_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gateway:
        figures = live_gateway(
            Settings().kafka_bootstrap_servers, args.gateway, args.rate, args.latency_seconds
        )
        print(json.dumps(figures))
        return figures
    if args.child:
        child(args.epoch_ms, Path(args.profile) if args.profile else None)
        return {}

    settings = Settings()
    res = Resources(settings)
    WORK.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "end_to_end",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
    }
    try:
        raw = res.raw_topic(RAW_PARTITIONS)
        report["preload"] = pre = preload(res.bootstrap, raw, args.readings, args.per_message)
        print(f"preload: {pre}", flush=True)
        if args.profile is not None:
            profile_flow(res, raw)
            return report
        n, telemetry = args.readings, pre["telemetry_readings"]
        report["flow_1_process"] = one = run_flow(res, raw, n, telemetry, 1, 2101)
        print(f"flow, 1 process: {one}", flush=True)
        if args.subset:
            # Slower variants on a smaller topic, with the 1-process run to compare.
            sub = res.raw_topic(RAW_PARTITIONS)
            pre_sub = preload(res.bootstrap, sub, args.subset, args.per_message)
            m, tel = args.subset, pre_sub["telemetry_readings"]
            report["subset"] = cases = {
                "flow_1_process": run_flow(res, sub, m, tel, 1, 2111),
                "flow_1_process_no_scores": run_flow(res, sub, m, tel, 1, 2121, scores=False),
                "flow_2_processes_batch_flush": run_flow(res, sub, m, tel, 2, 2131, flush="batch"),
            }
            for name, figures in cases.items():
                print(f"subset {name}: {figures}", flush=True)
        report["passthrough"] = ceiling = passthrough(res, raw, n)
        print(f"passthrough: {ceiling}", flush=True)
        report["naive"] = slow = naive(res, raw, args.naive_seconds)
        print(f"naive: {slow}", flush=True)
        best = one["readings_per_s"]
        report["goals"] = {
            "end_to_end_readings_per_s": {"goal": 50_000, "measured": best},
            "fraction_of_passthrough": {
                "goal": 0.5,
                "measured": round(best / ceiling["readings_per_s"], 2),
            },
            "times_naive": {"goal": 10, "measured": round(best / slow["readings_per_s"], 1)},
        }
        if not args.no_latency:
            report["latency"] = {}
            for mode, flush, epoch, database in (
                ("default_snapshot_flush_10s_epochs", "snapshot", None, True),
                ("batch_flush_100ms_epochs", "batch", 100, True),
                ("default_without_timescale_sink", "snapshot", None, False),
            ):
                figures = latency(
                    res, mode, flush, epoch, args.rate, args.latency_seconds, database
                )
                report["latency"][mode] = figures
                print(f"latency {mode}: {figures}", flush=True)
            hop = kafka_hop(res, args.rate, min(args.latency_seconds, 10.0))
            report["latency"]["kafka_hop_only"] = hop
            print(f"latency, one Kafka hop (gateway -> raw topic -> consumer): {hop}", flush=True)
            report["goals"]["alarm_latency_p99_ms"] = {
                "goal": 50,
                "measured": {
                    m: f["alarms"].get("p99_ms")
                    for m, f in report["latency"].items()
                    if "alarms" in f
                },
            }
    finally:
        res.close()
    report["notes"] = (
        "2 cores shared by the flow, Kafka (1 GiB heap), TimescaleDB 2.19 Apache and the "
        "load generator, and with other work on the machine (see load_average_1m); "
        "readings/s = readings / wall time of the flow processes including start-up; "
        "raw messages are JSON arrays of one device's readings"
    )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report.get("goals", {}), indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
