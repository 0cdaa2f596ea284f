"""Restart time of a 2-process flow with 10,000 series of state (and with 100, as a baseline).

    .venv/bin/python -m tests.bench.bench_restart          # ~5 minutes
    .venv/bin/python -m tests.bench.bench_restart --repeats 1 --devices 1000 10

Needs the local Kafka (``make up``); the database is not used. For each
plant size (``--devices`` x 10 metrics: 1,000 devices = 10,000 series,
10 devices = 100 series) the benchmark:

1. preloads ``--values`` readings per series (one JSON reading per
   message, keyed ``tenant/device``, event time the last few minutes) into
   a raw topic of its own with 2 partitions;
2. creates a recovery store with 2 partitions (``python -m flows.recovery
   DIR 2``) and starts ``flows.ingest`` as 2 processes, as a deployment on
   this 2-core machine runs it::

       python -m bytewax.run flows.ingest -i 0|1 -a "127.0.0.1:P0;127.0.0.1:P1" \\
           -r DIR -s 5 -b 0

   with the default processing (classification, threshold alarms,
   1m/5m/1h rollups, anomaly scores) into a ``null`` sink, so that no
   database or output topic sets the pace;
3. waits until every preloaded message is consumed (the sum of
   ``streamforge_kafka_consumed_total`` on both processes' ``/metrics``,
   ``STREAMFORGE_METRICS_PORT`` + process id), then ``--snapshot-wait``
   seconds (> ``-s 5``: a snapshot holds all the state), and records the
   recovery store's size on disk and the snapshots in it;
4. ``--repeats`` times each, alternately: stops both processes with
   SIGKILL (a crash) or SIGINT (a clean stop: ``flows.ingest`` ends at
   once, as on SIGKILL, see ``stop_on_signals``), starts both again with
   the same command (new ports) and, right after the start command, writes
   one new reading to each of ``--new`` series (event time = now). Then
   it measures, from the start command:

   - ``seconds_to_processing`` (the figure): until every new reading is
     consumed, i.e. both processes have rejoined, loaded their state and
     read each partition again (the new readings cover both partitions);
   - ``seconds_to_first_new``: until the first new reading is consumed;
   - ``seconds_to_first_output``: until the null sink counts its first
     record (normally a new reading's telemetry, out of the stateful series step);
   - ``seconds_to_assigned``: until the later process log line ``kafka
     partition assigned`` (the source partitions built from the resume
     offsets; optional, from the logs);

   ``peer_connect_retries`` counts the processes' ``error connecting to
   worker ...; retrying`` lines: a process that dials its peer before the
   peer listens waits 1 s (Timely's retry) and the restart takes ~1 s more;

   then waits ``--snapshot-wait`` seconds again so that the next restart
   does not replay the new readings (``replayed``: messages read again
   after a restart, from the logged resume offsets; 0 expected).

The metrics are polled every 25 ms: the figures are ±25 ms. The 100-series
flow shows what a restart costs without state (Python start-up, the
processes meeting, the Kafka consumers connecting); the difference to the
10,000-series flow is the state's share, compared between restarts
with and without a peer retry separately (``state_share``). Medians and every run are printed
and written to ``tests/bench/reports/restart.json`` with the machine's
load; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.settings import Settings
from tests.bench.bench_end_to_end import machine_before, machine_figures, python_loop_us
from tests.bench.e2e_latency import Resources
from tests.integration.e2e_tools import REPO, FlowProcess, plant_readings
from tests.support.kafka_tools import produce_raw

REPORT = Path(__file__).parent / "reports" / "restart.json"
WORK = Path("/tmp") / "streamforge-bench-restart"
PROCESSES = 2
PARTITIONS = 2
METRICS = 10
INTERVAL_S = 5.0
SNAPSHOT_S = 5
POLL_S = 0.025
CONSUMED = "streamforge_kafka_consumed_total"
OUTPUTS = "streamforge_outputs_total"
ASSIGNED = "kafka partition assigned"
RETRY = "error connecting to worker"
"""Timely's line when a process dials a peer that does not listen yet (it retries after 1 s)."""


# ---------------------------------------------------------------- helpers


def free_base(count: int) -> int:
    """A port such that it and the ``count - 1`` above it are free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20_000, 40_000)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def scrape(port: int, name: str) -> float | None:
    """The sum of a metric's values over its label sets, or None if ``/metrics`` does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def store_bytes(directory: Path) -> int:
    """Bytes of every file of the recovery store (the SQLite partitions and their journals)."""
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file())


def snapshot_figures(directory: Path) -> dict[str, Any]:
    """Rows and bytes of the snapshots in the store, in all and per step (read-only)."""
    rows = size = 0
    steps: dict[str, int] = {}
    epochs: set[int] = set()
    for part in sorted(directory.glob("part-*.sqlite3")):
        with sqlite3.connect(f"file:{part}?mode=ro", uri=True) as conn:
            for step, n, b, epoch in conn.execute(
                "SELECT step_id, count(*), coalesce(sum(length(ser_change)), 0), max(snap_epoch)"
                " FROM snaps GROUP BY step_id"
            ):
                rows += n
                size += b
                steps[step] = steps.get(step, 0) + b
                epochs.add(epoch)
        conn.close()
    return {
        "snapshot_rows": rows,
        "snapshot_bytes": size,
        "snapshot_bytes_by_step": dict(sorted(steps.items(), key=lambda kv: -kv[1])),
        "latest_snapshot_epoch": max(epochs, default=None),
    }


def assignments(path: Path) -> list[dict[str, Any]]:
    """The ``kafka partition assigned`` log lines of a process: wall time, partition, offset."""
    found = []
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        if f'"msg": "{ASSIGNED}"' not in line:
            continue
        entry = json.loads(line)
        found.append(
            {
                "ts": datetime.fromisoformat(entry["ts"]).timestamp(),
                "partition": entry.get("partition"),
                "resume_offset": entry.get("resume_offset"),
            }
        )
    return found


# ---------------------------------------------------------------- the flow


class Cluster:
    """The 2 processes of one flow, sharing a recovery store; new ports at every start."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.recovery = workdir / "recovery"
        subprocess.run(
            [sys.executable, "-m", "flows.recovery", str(self.recovery), str(PARTITIONS)],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        self.flows = []
        for i in range(PROCESSES):
            home = workdir / f"process-{i}"
            home.mkdir(parents=True)
            # recovery=False: FlowProcess would create a 1-partition store; -r is ours.
            flow = FlowProcess(config, home, recovery=False)
            flow.env["STREAMFORGE_METRICS_BYTEWAX"] = "off"
            self.flows.append(flow)
        self.metrics_ports: list[int] = []

    def start(self) -> float:
        """Start both processes; the wall time of the start command."""
        peers = free_base(PROCESSES)
        metrics = free_base(PROCESSES)
        addresses = ";".join(f"127.0.0.1:{peers + i}" for i in range(PROCESSES))
        self.metrics_ports = [metrics + i for i in range(PROCESSES)]
        started = time.time()
        for i, flow in enumerate(self.flows):
            flow.extra_args = [
                "-i", str(i), "-a", addresses,
                "-r", str(self.recovery), "-s", str(SNAPSHOT_S), "-b", "0",
            ]  # fmt: skip
            flow.env["STREAMFORGE_METRICS_PORT"] = str(metrics)
            flow.start()
        return started

    def command(self) -> str:
        """The latest start command of process 0, as a shell line."""
        cmd = self.flows[0].command()
        return " ".join(f'"{a}"' if ";" in a else a for a in ["python", *cmd[1:]])

    def counters(self, name: str) -> list[float | None]:
        """A metric per process (None: that process does not answer yet)."""
        return [scrape(port, name) for port in self.metrics_ports]

    def total(self, name: str) -> float | None:
        """A metric summed over both processes, or None until both answer."""
        values = self.counters(name)
        return None if any(v is None for v in values) else sum(v or 0.0 for v in values)

    def stop(self, how: signal.Signals) -> list[int | None]:
        """Send ``how`` to both processes, wait for them to end; their exit statuses."""
        procs = [f.process for f in self.flows if f.process is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(how)
        statuses: list[int | None] = []
        for proc in procs:
            try:
                statuses.append(proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                proc.kill()
                statuses.append(proc.wait(timeout=30))
        return statuses

    def alive(self) -> bool:
        return all(f.alive() for f in self.flows)

    def kill(self) -> None:
        """SIGKILL whatever still runs (the ``finally`` of the benchmark)."""
        for flow in self.flows:
            flow.kill()

    def log_tails(self) -> str:
        return "\n".join(f"--- process {i}\n{f.log_tail(15)}" for i, f in enumerate(self.flows))

    def wait_total(self, name: str, at_least: float, timeout: float) -> float:
        """Poll until the metric's sum reaches ``at_least``; the wall time it did."""
        return self.wait_totals({name: [at_least]}, timeout)[name][0]

    def wait_totals(
        self, targets: dict[str, list[float]], timeout: float
    ) -> dict[str, list[float]]:
        """Poll until each metric's sum reached each of its thresholds; when it did (wall time)."""
        reached: dict[str, list[float]] = {name: [] for name in targets}
        deadline = time.monotonic() + timeout
        while True:
            for name, levels in targets.items():
                if len(reached[name]) == len(levels):
                    continue
                value = self.total(name)
                now = time.time()
                while value is not None and len(reached[name]) < len(levels):
                    if value < levels[len(reached[name])]:
                        break
                    reached[name].append(now)
            if all(len(reached[n]) == len(levels) for n, levels in targets.items()):
                return reached
            if not self.alive():
                raise RuntimeError(f"a flow process ended:\n{self.log_tails()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{targets} not reached after {timeout:g}s: {reached}")
            time.sleep(POLL_S)


def new_readings(devices: int, count: int) -> list[tuple[bytes, bytes]]:
    """(key, JSON) of one reading, event time now, for ``count`` existing series of devices."""
    ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    step = max(1, devices // count)
    out = []
    for d in range(0, devices, step)[:count]:
        device = f"dev-{d:03d}"
        body = {"device": device, "metric": "temperature", "ts": ts, "value": 60.0}
        out.append((f"default/{device}".encode(), json.dumps(body).encode()))
    return out


def produce_new(producer: Producer, topic: str, messages: list[tuple[bytes, bytes]]) -> set[int]:
    """Write the new readings (keyed as the preload, so each series keeps its partition)."""
    partitions: set[int] = set()

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            partitions.add(msg.partition() or 0)

    for key, value in messages:
        producer.produce(topic, value, key, on_delivery=delivered)
    if producer.flush(30):
        raise RuntimeError("new readings not acknowledged")
    return partitions


# ---------------------------------------------------------------- one plant size


def restart_once(
    cluster: Cluster,
    producer: Producer,
    topic: str,
    devices: int,
    new: int,
    how: signal.Signals,
    end_offsets: int,
    snapshot_wait: float,
) -> dict[str, Any]:
    """Stop both processes with ``how``, start them again, time their return to work."""
    store = store_bytes(cluster.recovery)
    statuses = cluster.stop(how)
    snaps = snapshot_figures(cluster.recovery)
    messages = new_readings(devices, new)
    machine = machine_before()
    started = cluster.start()
    covered = produce_new(producer, topic, messages)
    reached = cluster.wait_totals({CONSUMED: [1, len(messages)], OUTPUTS: [1]}, 300)
    (first, done), (output,) = reached[CONSUMED], reached[OUTPUTS]
    figures = machine_figures(machine)
    found = [a for f in cluster.flows for a in assignments(f.log_path)]
    resumed = sum(a["resume_offset"] or 0 for a in found)
    run = {
        "stop": how.name,
        "exit_status": statuses,
        "seconds_to_processing": round(done - started, 2),
        "seconds_to_first_new": round(first - started, 2),
        "seconds_to_first_output": round(output - started, 2),
        "seconds_to_assigned": (
            round(max(a["ts"] for a in found) - started, 2) if len(found) == PARTITIONS else None
        ),
        "peer_connect_retries": sum(
            f.log_path.read_text(errors="replace").count(RETRY) for f in cluster.flows
        ),
        "new_readings": len(messages),
        "new_readings_partitions": sorted(covered),
        "replayed": end_offsets - resumed if len(found) == PARTITIONS else None,
        "store_bytes_before_stop": store,
        **snaps,
        **figures,
    }
    time.sleep(snapshot_wait)  # the new readings into a snapshot: the next restart replays none
    return run


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median and every value of the timed figures."""
    out: dict[str, Any] = {"runs": len(runs)}
    for key in (
        "seconds_to_processing",
        "seconds_to_first_new",
        "seconds_to_first_output",
        "seconds_to_assigned",
    ):
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = {
            "median": round(statistics.median(values), 2) if values else None,
            "all": values,
        }
    # A peer dialled before it listened costs ~1 s (Timely's retry), at random:
    # the medians of the restarts with and without it, to compare like with like.
    for name, keep in (("without_peer_retry", False), ("with_peer_retry", True)):
        values = [
            r["seconds_to_processing"] for r in runs if (r["peer_connect_retries"] > 0) == keep
        ]
        out[f"seconds_to_processing_{name}"] = {
            "median": round(statistics.median(values), 2) if values else None,
            "all": values,
        }
    return out


def plant(
    res: Resources, devices: int, values: int, repeats: int, new: int, snapshot_wait: float
) -> dict[str, Any]:
    """Preload, first run, then the restarts of one plant size."""
    series = devices * METRICS
    topic = res.raw_topic(PARTITIONS)
    start = datetime.now(UTC) - timedelta(seconds=values * INTERVAL_S + 60)
    readings = plant_readings(
        series * values, start, devices=devices, metrics=METRICS, interval_s=INTERVAL_S
    )
    began = time.perf_counter()
    messages = produce_raw(readings, topic, bootstrap_servers=res.bootstrap)
    preload_s = time.perf_counter() - began
    workdir = WORK / f"series-{series}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = {
        "sources": [{"type": "kafka", "topic": topic, "partitions": PARTITIONS}],
        "sinks": [{"type": "null"}],
    }
    cluster = Cluster(config, workdir)
    producer = Producer({"bootstrap.servers": res.bootstrap, "acks": "all", "linger.ms": 0})
    result: dict[str, Any] = {
        "series": series,
        "devices": devices,
        "metrics_per_device": METRICS,
        "values_per_series": values,
        "preload": {"messages": messages, "seconds": round(preload_s, 1)},
    }
    try:
        machine = machine_before()
        started = cluster.start()
        result["command"] = cluster.command()
        consumed = cluster.wait_total(CONSUMED, messages, 600)
        result["first_run"] = {
            "seconds_to_consume_preload": round(consumed - started, 2),
            **machine_figures(machine),
        }
        time.sleep(snapshot_wait)
        result["store_bytes_after_preload"] = size = store_bytes(cluster.recovery)
        print(
            f"{series} series: preload of {messages} messages consumed in"
            f" {consumed - started:.1f} s; store {size / 1e6:.2f} MB",
            flush=True,
        )
        runs = []
        end_offsets = messages
        for k in range(2 * repeats):
            how = (signal.SIGKILL, signal.SIGINT)[k % 2]
            run = restart_once(
                cluster, producer, topic, devices, new, how, end_offsets, snapshot_wait
            )
            end_offsets += run["new_readings"]
            runs.append(run)
            print(
                f"  restart {k + 1} ({how.name}): processing after"
                f" {run['seconds_to_processing']:.2f} s (first new reading"
                f" {run['seconds_to_first_new']:.2f} s, first output"
                f" {run['seconds_to_first_output']:.2f} s, partitions assigned"
                f" {run['seconds_to_assigned']} s); store"
                f" {run['store_bytes_before_stop'] / 1e6:.2f} MB, snapshots"
                f" {run['snapshot_bytes'] / 1e6:.2f} MB, replayed {run['replayed']},"
                f" peer retries {run['peer_connect_retries']},"
                f" load {run['load_average_1m']}",
                flush=True,
            )
        result["store_bytes_at_end"] = store_bytes(cluster.recovery)
        result["runs"] = runs
        result["sigkill"] = summary([r for r in runs if r["stop"] == "SIGKILL"])
        result["sigint"] = summary([r for r in runs if r["stop"] == "SIGINT"])
        result["all_restarts"] = summary(runs)
    finally:
        cluster.kill()
        producer.flush(5)
        shutil.rmtree(cluster.recovery, ignore_errors=True)  # logs stay in WORK
    return result


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every plant size, print the figures, write the JSON report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=[1000, 10],
        help="plant sizes, in devices of 10 metrics (1000: 10,000 series)",
    )
    parser.add_argument("--values", type=int, default=5, help="preloaded readings per series")
    parser.add_argument("--repeats", type=int, default=3, help="restarts per stop signal")
    parser.add_argument("--new", type=int, default=10, help="new readings after each restart")
    parser.add_argument("--snapshot-wait", type=float, default=8.0)
    args = parser.parse_args(argv)
    settings = Settings()
    res = Resources(settings)
    WORK.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "restart",
        "command": "python -m tests.bench.bench_restart",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python_loop_us_at_start": python_loop_us(),
        },
        "processes": PROCESSES,
        "raw_partitions": PARTITIONS,
        "snapshot_interval_s": SNAPSHOT_S,
        "snapshot_wait_s": args.snapshot_wait,
        "poll_interval_s": POLL_S,
        "sink": "null",
        "plants": {},
    }
    try:
        for devices in args.devices:
            result = plant(res, devices, args.values, args.repeats, args.new, args.snapshot_wait)
            report["plants"][f"series_{result['series']}"] = result
    finally:
        res.close()
    report["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    plants = report["plants"]
    print("restart time (start command -> new readings consumed on both partitions), median:")
    for name, result in plants.items():
        print(
            f"  {name:13s} SIGKILL {result['sigkill']['seconds_to_processing']['median']} s"
            f" {result['sigkill']['seconds_to_processing']['all']},"
            f" SIGINT {result['sigint']['seconds_to_processing']['median']} s"
            f" {result['sigint']['seconds_to_processing']['all']};"
            f" store {result['store_bytes_at_end'] / 1e6:.2f} MB"
        )
    if "series_10000" in plants and "series_100" in plants:
        # The state's share, like with like: the medians of all restarts mix
        # ones with and without a peer retry (~1 s) in different proportions.
        share: dict[str, Any] = {}
        for key in (
            "seconds_to_processing",
            "seconds_to_processing_without_peer_retry",
            "seconds_to_processing_with_peer_retry",
        ):
            big = plants["series_10000"]["all_restarts"][key]["median"]
            small = plants["series_100"]["all_restarts"][key]["median"]
            share[key] = {
                "median_10000_series": big,
                "median_100_series": small,
                "due_to_state": round(big - small, 2) if None not in (big, small) else None,
            }
            print(f"  state's share ({key}): {share[key]}")
        report["state_share"] = share
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {REPORT}")
    return report


if __name__ == "__main__":
    main()
