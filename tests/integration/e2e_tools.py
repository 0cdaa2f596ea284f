"""Helpers of the end-to-end tests and benchmark: plant data, databases, flows as processes.

    readings = plant_readings(20_000, replay_start())      # JSON-ready raw readings
    url = create_database(admin_url)                       # empty, TimescaleDB, own name
    config = pipeline_config(raw_topic, url, prefix, stop_at_end=False)
    flow = FlowProcess(config, tmp_path, recovery=True)    # python -m bytewax.run ...
    flow.start(); ...; flow.kill(); flow.start(); ...; flow.stop()
    rows = table_rows(url, "readings")                     # every row, in key order

Nothing here asserts: the tests do.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.kafka.sink_config import TOPIC_SUFFIX
from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.source import PlantSimulator
from flows.recovery import ensure_recovery_store
from schemas.models import to_dict

REPO = Path(__file__).resolve().parents[2]
SERVICES = REPO / "deploy" / "services.sh"

# Every table of schemas/sql/001_core.sql with the columns that order it (its key).
TABLE_KEYS: dict[str, str] = {
    "readings": "tenant, device, metric, ts",
    "anomaly_scores": "tenant, device, metric, ts",
    "rollups": "tenant, device, metric, tier, window_start",
    "events": "tenant, device, metric, ts",
    "alarm_transitions": "alarm_id, seq",
    "alarms": "id",
    "logs": "tenant, device, ts, fingerprint",
    "dead_letters": "received_at, fingerprint",
}
TABLES = tuple(TABLE_KEYS)
TIERS = {"1m": "1 minute", "5m": "5 minutes", "1h": "1 hour"}

# A plant with every kind of series: the simulator's 17 metrics are 12
# analog ones (telemetry), state.running and state.mode (events),
# alarm.overheat (a device alarm bit) and log.message (device logs).
DEVICES = 10
METRICS = 17
INTERVAL_S = 5.0


def replay_start(hours_ago: float = 1.0) -> datetime:
    """A recent whole minute: the sink's retention job (30 days) keeps such data."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    return now - timedelta(hours=hours_ago)


def plant_readings(
    n: int,
    start: datetime,
    *,
    devices: int = DEVICES,
    metrics: int = METRICS,
    interval_s: float = INTERVAL_S,
    seed: int = 42,
) -> list[dict[str, Any]]:
    """The simulated plant's first ``n`` readings as JSON-ready dicts (an edge gateway's output)."""
    sim = SimulatorSourceConfig(
        devices=devices,
        metrics=metrics,
        rate=0,
        interval_s=interval_s,
        start=start,
        limit=n,
        seed=seed,
    )
    return [to_dict(r) for r in PlantSimulator(sim).readings(n)]


def unique(prefix: str) -> str:
    """A name no other run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- databases


def create_database(admin_url: str) -> str:
    """A new empty database from template1 (TimescaleDB installed); returns its URL."""
    name = f"streamforge_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for attempt in range(80):
            try:
                conn.execute(f"CREATE DATABASE {name} TEMPLATE template1")
                break
            except psycopg.errors.ObjectInUse:
                # TimescaleDB's scheduler (or another test creating a
                # database) holds template1 for a moment; try again.
                if attempt == 79:
                    raise
                time.sleep(0.25)
    return psycopg.conninfo.make_conninfo(admin_url, dbname=name)


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database made by :func:`create_database` (best effort)."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def table_counts(url: str) -> dict[str, int]:
    """Rows per table (0 for tables the sink has not created yet)."""
    counts: dict[str, int] = {}
    with psycopg.connect(url, connect_timeout=5) as conn:
        for table in TABLES:
            exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            if exists is None or exists[0] is None:
                counts[table] = 0
                continue
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts


def table_rows(url: str, table: str, exclude: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Every row of a table in key order, without the ``exclude`` columns."""
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"SELECT * FROM {table} ORDER BY {TABLE_KEYS[table]}")
        names = [d.name for d in cur.description or []]
        keep = [i for i, name in enumerate(names) if name not in exclude]
        return [tuple(row[i] for i in keep) for row in cur.fetchall()]


def rows_differ(
    left: list[tuple[Any, ...]], right: list[tuple[Any, ...]], rel_tol: float = 0.0
) -> list[str]:
    """Where two row lists differ (at most 5 lines); floats compared with ``rel_tol``."""
    problems: list[str] = []
    if len(left) != len(right):
        problems.append(f"{len(left)} rows against {len(right)}")
    for a, b in zip(left, right, strict=False):
        if len(problems) >= 5:
            break
        same = len(a) == len(b) and all(
            math.isclose(x, y, rel_tol=rel_tol, abs_tol=rel_tol)
            if isinstance(x, float) and isinstance(y, float)
            else x == y
            for x, y in zip(a, b, strict=False)
        )
        if not same:
            problems.append(f"{a!r} != {b!r}")
    return problems


def rollup_reference(url: str, tier: str) -> dict[tuple[Any, ...], tuple[int, float, float, float]]:
    """Rollups of one tier recomputed from the readings table with ``time_bucket``.

    (tenant, device, metric, window_start) -> (count, min, max, sum), over
    the values rollups take: numeric and not of bad quality.
    """
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tenant, device, metric, time_bucket(%s::interval, ts) AS w, "
            "count(*), min(value), max(value), sum(value) FROM readings "
            "WHERE value IS NOT NULL AND quality <> 'bad' GROUP BY 1, 2, 3, 4",
            (TIERS[tier],),
        ).fetchall()
    return {tuple(r[:4]): (int(r[4]), float(r[5]), float(r[6]), float(r[7])) for r in rows}


def stored_rollups(
    url: str, tier: str
) -> dict[tuple[Any, ...], tuple[int, float, float, float, float]]:
    """The rollups table of one tier: key -> (count, min, max, sum, mean)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tenant, device, metric, window_start, count, min, max, sum, mean "
            "FROM rollups WHERE tier = %s",
            (tier,),
        ).fetchall()
    return {tuple(r[:4]): (int(r[4]), r[5], r[6], r[7], r[8]) for r in rows}


# ---------------------------------------------------------------- kafka


def output_topics(prefix: str) -> dict[str, str]:
    """Output kind -> topic name, for a Kafka sink with this ``topic_prefix``."""
    return {kind: prefix + suffix for kind, suffix in TOPIC_SUFFIX.items()}


def topic_counts(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Messages per topic from the partitions' watermarks (0 for a missing topic).

    Exact for the sink's topics: nothing is ever deleted from them during a
    test, and an idempotent producer writes no transaction markers.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap})
    metadata = admin.list_topics(timeout=10)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("e2e-count")})
    try:
        counts: dict[str, int] = {}
        for topic in topics:
            info = metadata.topics.get(topic)
            total = 0
            for p in info.partitions if info is not None else []:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += high - low
            counts[topic] = total
        return counts
    finally:
        consumer.close()


class PacedProducer(threading.Thread):
    """Writes raw readings to a topic at about ``rate`` readings/s, as a live gateway would.

    One JSON object per message keyed ``tenant/device`` (like
    :func:`connectors.kafka.source.produce_raw`), in the order given, so each
    device's readings stay in order within one Kafka partition.
    """

    def __init__(
        self, bootstrap: str, topic: str, readings: Sequence[dict[str, Any]], rate: float
    ) -> None:
        super().__init__(daemon=True, name=f"paced-{topic}")
        self.topic = topic
        self.readings = readings
        self.rate = rate
        self.produced = 0
        self.error: str | None = None
        self.finished = threading.Event()
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
            }
        )

    def run(self) -> None:
        """Produce in 20 ms slices, then wait for every acknowledgement."""
        import json

        started = time.monotonic()
        try:
            for i, reading in enumerate(self.readings):
                due = started + i / self.rate
                wait = due - time.monotonic()
                if wait > 0.02:
                    self.producer.poll(0)
                    time.sleep(wait)
                key = f"{reading.get('tenant', 'default')}/{reading['device']}".encode()
                value = json.dumps(reading, separators=(",", ":")).encode()
                while True:
                    try:
                        self.producer.produce(self.topic, value, key)
                        break
                    except BufferError:
                        self.producer.poll(0.05)
                self.produced = i + 1
            remaining = self.producer.flush(60)
            if remaining:
                self.error = f"{remaining} raw readings not acknowledged"
        except Exception as exc:  # reported by the test, not lost in a thread
            self.error = repr(exc)
        finally:
            self.finished.set()


# ---------------------------------------------------------------- flows


def pipeline_config(
    raw_topic: str,
    database_url: str | None,
    topic_prefix: str | None,
    *,
    stop_at_end: bool,
    idle_timeout: str = "3s",
    kafka_flush: str = "snapshot",
) -> dict[str, Any]:
    """The pipeline of these tests: a raw Kafka topic -> the default processing -> sinks.

    Default classification, alarm rule, rollups (1m/5m/1h) and anomaly
    detection. ``idle_timeout`` is short so that a running flow emits its
    last open rollup windows soon after the input stops. The TimescaleDB
    sink retries every ≤ 2 s (instead of 30 s) so a test sees the database
    come back quickly. The sinks are listed TimescaleDB first; the
    flow attaches the Kafka sink first anyway (see ``flows.ingest.build_flow``).
    """
    sinks: list[dict[str, Any]] = []
    if database_url is not None:
        sinks.append(
            {
                "type": "timescale",
                "database_url": database_url,
                "retry_initial": "200ms",
                "retry_max": "2s",
            }
        )
    if topic_prefix is not None:
        kafka = {"type": "kafka", "topic_prefix": topic_prefix, "flush": kafka_flush}
        sinks.append(kafka)
    return {
        "sources": [{"type": "kafka", "topic": raw_topic, "stop_at_end": stop_at_end}],
        "rollups": {"idle_timeout": idle_timeout},
        "sinks": sinks,
    }


class FlowProcess:
    """``python -m bytewax.run flows.ingest`` in a subprocess, with a config file of its own.

    With ``recovery`` the flow snapshots every ``snapshot_s`` seconds into
    ``workdir/recovery`` (created by :func:`flows.recovery.ensure_recovery_store`
    on the first start), so a restart resumes. Its output (JSON logs) goes
    to ``workdir/flow-<n>.log``.
    """

    def __init__(
        self,
        config: dict[str, Any],
        workdir: Path,
        *,
        recovery: bool = True,
        snapshot_s: int = 1,
        extra_args: Sequence[str] = (),
        launcher: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.config_path = workdir / "pipeline.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.recovery = workdir / "recovery" if recovery else None
        self.snapshot_s = snapshot_s
        self.extra_args = list(extra_args)
        self.launcher = list(launcher) if launcher is not None else None
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.started_at = 0.0
        self.env = {
            **os.environ,
            "STREAMFORGE_CONFIG": str(self.config_path),
            "PYTHONPATH": str(REPO),
        }

    def command(self) -> list[str]:
        """The command line of the flow (``launcher``: ``python <launcher...>`` instead)."""
        if self.launcher is not None:
            return [sys.executable, *self.launcher, *self.extra_args]
        cmd = [sys.executable, "-m", "bytewax.run", "flows.ingest", *self.extra_args]
        if self.recovery is not None:
            cmd += ["-r", str(self.recovery), "-s", str(self.snapshot_s), "-b", "0"]
        return cmd

    def start(self) -> None:
        """Start (or restart) the flow."""
        if self.recovery is not None:
            ensure_recovery_store(self.recovery, 1)  # as deployments do: created once
        self.starts += 1
        self.started_at = time.time()
        log = (self.workdir / f"flow-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            self.command(), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def alive(self) -> bool:
        """Whether the flow is still running."""
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for a finite flow to end; its exit status."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    @property
    def log_path(self) -> Path:
        """The latest run's output."""
        return self.workdir / f"flow-{self.starts}.log"

    def kill(self) -> None:
        """SIGKILL: no snapshot, no flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """End the flow at the end of a test (it would run forever)."""
        self.kill()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the latest run's output, for failure messages."""
        path = self.log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def services(action: str, service: str = "timescale") -> None:
    """``deploy/services.sh start|stop <service>``."""
    subprocess.run(
        ["bash", str(SERVICES), action, service], check=True, capture_output=True, timeout=180
    )


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Poll ``condition`` until true; returns the seconds waited, raises TimeoutError."""
    started = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - started
        except psycopg.OperationalError:
            pass  # the database is restarting: not yet
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
