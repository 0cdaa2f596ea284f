"""Benchmark: the Modbus source polling many simulated devices through a Bytewax dataflow.

    .venv/bin/python -m tests.bench.bench_modbus            # ~80 s
    .venv/bin/python -m tests.bench.bench_modbus --quick    # ~25 s, shorter phases

One pymodbus server process (``tests.support.modbus_server``) serves every device
as its own unit id on one port; this process runs a single Bytewax worker
whose ModbusSource has one partition (connection, thread) per device. Each
device has 50 tags (40 holding registers of mixed types, 5 input registers,
5 coils: 3 requests per poll after coalescing).

Phases:

- ``sustained``: 100 devices x 50 tags every 1 s. Tags/s reaching the sink,
  CPU of this process and of the server process (``/proc``), poll jitter,
  latency from poll start to the sink.
- ``jitter_100ms``: 10 devices x 50 tags every 100 ms (the same 5,000 tags/s).
- ``stress_100ms``: 100 devices x 50 tags every 100 ms (50,000 tags/s asked),
  to show what happens past the capacity of 2 cores: missed ticks, not drift.

Prints the figures and writes ``tests/bench/reports/modbus.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from schemas.models import Reading
from tests.support.modbus_server import SimulatedServer, free_port, image_for

REPORT = Path(__file__).parent / "reports" / "modbus.json"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def device_tags() -> list[dict[str, Any]]:
    """50 tags: 40 mixed holding registers (70 registers), 5 input registers, 5 coils."""
    tags: list[dict[str, Any]] = []
    address = 0
    for kind, count, width in (
        ("float32", 10, 2),
        ("uint16", 10, 1),
        ("int16", 10, 1),
        ("int32", 5, 2),
        ("float64", 5, 4),
    ):
        for i in range(count):
            tags.append(
                {
                    "metric": f"{kind}_{i}",
                    "address": address,
                    "type": kind,
                    "word_order": "CDAB" if kind == "int32" else "ABCD",
                }
            )
            address += width
    tags += [
        {"metric": f"ir_{i}", "function": "input_register", "address": 2 * i, "type": "uint32"}
        for i in range(5)
    ]
    tags += [{"metric": f"coil_{i}", "function": "coil", "address": i} for i in range(5)]
    return tags


def make_config(devices: int, interval: float, port: int) -> ModbusSourceConfig:
    """``devices`` devices (unit ids 1..N) on one server port, one connection each."""
    return ModbusSourceConfig.model_validate(
        {
            "tenant": "bench",
            "log_plan": False,
            "devices": [
                {
                    "name": f"dev-{i:03d}",
                    "port": port,
                    "unit_id": i + 1,
                    "timeout": 1.0,
                    "groups": [{"interval": interval, "tags": device_tags()}],
                }
                for i in range(devices)
            ],
        }
    )


def serve(port: int, devices: int, ready: Any, done: Any) -> None:
    """Server process: every device of the largest phase, until ``done`` is set."""
    units, _ = image_for(make_config(devices, 1.0, port).devices)
    with SimulatedServer(units, port=port):
        ready.set()
        done.wait()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load_average() -> float:
    """1-minute load average: other processes on this machine skew every figure."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Counting:
    """What the sink saw: readings, status readings, latency samples (poll start -> sink)."""

    readings: int = 0
    statuses: int = 0
    latency: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _CountingPartition(StatelessSinkPartition[Reading]):
    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    def write_batch(self, items: list[Reading]) -> None:
        now = time.time()
        statuses = sum(1 for r in items if r.metric == "_status.online")
        with self.counting.lock:
            self.counting.readings += len(items) - statuses
            self.counting.statuses += statuses
            # One latency sample per batch keeps the sink cheap.
            if items:
                self.counting.latency.append(now - items[-1].ts.timestamp())


class CountingSink(DynamicSink[Reading]):
    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counting)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_phase(
    name: str,
    devices: int,
    interval: float,
    port: int,
    server_pid: int,
    warmup: float,
    measure: float,
) -> dict[str, Any]:
    """Poll ``devices`` devices for warmup + measure seconds; figures of the measured window."""
    config = make_config(devices, interval, port)
    stop = threading.Event()
    source = ModbusSource(config, stop_event=stop)
    counting = Counting()
    flow = Dataflow(f"bench-modbus-{name}")
    op.output("count", op.input("modbus", flow, source), CountingSink(counting))
    marks: dict[str, Any] = {}

    def measure_window() -> None:
        time.sleep(warmup)
        with counting.lock:
            counting.latency.clear()
            marks["start"] = (
                time.monotonic(),
                counting.readings,
                own_cpu_seconds(),
                process_cpu_seconds(server_pid),
            )
        time.sleep(measure)
        with counting.lock:
            marks["end"] = (
                time.monotonic(),
                counting.readings,
                own_cpu_seconds(),
                process_cpu_seconds(server_pid),
            )
        stop.set()

    timer = threading.Thread(target=measure_window, daemon=True)
    timer.start()
    run_main(flow)
    timer.join()

    (t0, n0, cpu0, srv0), (t1, n1, cpu1, srv1) = marks["start"], marks["end"]
    wall = t1 - t0
    pollers = [p.poller for p in source.partitions.values()]
    jitter_ms = [j * 1000 for p in pollers for j in p.stats.jitter_samples()]
    latency_ms = [x * 1000 for x in counting.latency]
    asked = devices * len(device_tags()) / interval
    return {
        "devices": devices,
        "tags_per_device": len(device_tags()),
        "interval_s": interval,
        "requests_per_poll": len(source.plan()) // devices,
        "tags_per_s_asked": asked,
        "tags_per_s": round((n1 - n0) / wall, 1),
        "measured_s": round(wall, 2),
        "cpu_source_pct_of_one_core": round(100 * (cpu1 - cpu0) / wall, 1),
        "cpu_server_pct_of_one_core": round(100 * (srv1 - srv0) / wall, 1),
        "cpu_source_us_per_tag": round(1e6 * (cpu1 - cpu0) / max(1, n1 - n0), 2),
        "jitter_ms": {
            "samples": len(jitter_ms),
            "p50": round(percentile(jitter_ms, 0.5), 3),
            "p99": round(percentile(jitter_ms, 0.99), 3),
            "max": round(max(jitter_ms), 3) if jitter_ms else None,
        },
        "latency_poll_to_sink_ms": {
            "p50": round(percentile(latency_ms, 0.5), 2),
            "p99": round(percentile(latency_ms, 0.99), 2),
        },
        "polls": sum(p.stats.polls for p in pollers),
        "failed_polls": sum(p.stats.failed_polls for p in pollers),
        "missed_ticks": sum(p.stats.missed_ticks for p in pollers),
        "dropped_readings": sum(p.buffer.dropped for p in source.partitions.values()),
        "status_readings": counting.statuses,
        "load_average_1m_at_end": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Modbus source benchmark")
    parser.add_argument("--quick", action="store_true", help="shorter phases (~25 s)")
    args = parser.parse_args()
    scale = 0.3 if args.quick else 1.0
    load_at_start = load_average()
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    server = ctx.Process(target=serve, args=(port, 100, ready, done), daemon=True)
    server.start()
    if not ready.wait(60):
        raise SystemExit("the Modbus server process did not start")
    assert server.pid is not None
    phases = {}
    try:
        for name, devices, interval, warmup, measure in (
            ("sustained", 100, 1.0, 3.0, 30.0 * scale),
            ("jitter_100ms", 10, 0.1, 2.0, 15.0 * scale),
            ("stress_100ms", 100, 0.1, 2.0, 15.0 * scale),
        ):
            result = run_phase(name, devices, interval, port, server.pid, warmup, measure)
            phases[name] = result
            print(f"{name}: {json.dumps(result)}", flush=True)
    finally:
        done.set()
        server.join(10)
    report = {
        "benchmark": "modbus source (pymodbus sync clients, one thread per device) -> bytewax",
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_start": load_at_start},
        "workers": 1,
        "phases": phases,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
