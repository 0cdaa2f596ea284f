"""Benchmark: 10,000 OPC UA monitored items changing every second, through a Bytewax dataflow.

    .venv/bin/python -m tests.bench.bench_opcua             # ~1-2 min (server start included)
    .venv/bin/python -m tests.bench.bench_opcua --quick     # shorter window
    .venv/bin/python -m tests.bench.bench_opcua --polling   # also the polling phase (+~1 min)

Two asyncua server processes (``tests/support/opcua_server.py``) serve
5,000 Double variables each and write all of them every second (``--servers
1`` puts all 10,000 on one); this process runs one Bytewax worker whose
OpcuaSource has one endpoint per server (one partition and one asyncua
thread each).

Phases:

- ``subscribe``: time from building the partition to the first value of
  every item (connect, 10 CreateMonitoredItems requests of 1,000, initial
  values).
- ``subscription``: publishing interval 1 s; values/s reaching the sink, CPU
  of this process and of the server (``/proc``), latency from the source
  timestamp to the sink (includes up to one publishing interval of
  server-side batching, by design of OPC UA subscriptions).
- ``polling`` (``--polling``): the same 10,000 nodes read every 1 s (10 Read
  requests of 1,000): values/s and poll overruns.

The peer is a Python server: on 2 shared cores it, not the client, sets
the pace (``rounds_per_s`` < 1 means its 10,000 writes took longer than a
second). ``client_cpu_us_per_value`` is the client's own cost (asyncua
decoding, conversion to Reading, hand-over, Bytewax), the figure that
bounds what one StreamForge process can take from a faster server.

Prints the figures and writes ``tests/bench/reports/opcua.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.opcua.config import OpcuaSourceConfig
from connectors.opcua.connection import POLL_OVERRUNS
from connectors.opcua.handoff import BUFFER_FULL
from connectors.opcua.source import OpcuaPartition, OpcuaSource
from schemas.models import Reading
from tests.ports import free_port

REPORT = Path(__file__).parent / "reports" / "opcua.json"
SERVER = Path(__file__).parents[1] / "support" / "opcua_server.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ITEMS = 10_000


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load_average() -> float:
    """1-minute load average: other processes on this machine skew every figure."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Counting:
    """What the sink saw: count, distinct items, latency samples, time of the last full round."""

    count: int = 0
    metrics: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    all_seen_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _CountingPartition(StatelessSinkPartition[Reading]):
    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    def write_batch(self, items: list[Reading]) -> None:
        now = datetime.now(UTC)
        c = self.counting
        with c.lock:
            c.count += len(items)
            if c.all_seen_at is None:
                c.metrics.update(r.metric for r in items)
                if len(c.metrics) >= ITEMS:
                    c.all_seen_at = time.monotonic()
            for r in items[:: max(1, len(items) // 50)]:  # sample: 50 latencies per batch
                c.latencies.append((now - r.ts).total_seconds())


class CountingSink(DynamicSink[Reading]):
    def __init__(self, counting: Counting) -> None:
        self.counting = counting

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counting)


class TimedSource(OpcuaSource):
    """The OPC UA source, but its partition ends after ``seconds`` (so run_main returns)."""

    def __init__(self, config: OpcuaSourceConfig, seconds: float, on_built: Any) -> None:
        super().__init__(config)
        self.seconds = seconds
        self.on_built = on_built

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> OpcuaPartition:
        part = super().build_part(step_id, for_part, resume_state)
        self.on_built(part)
        deadline = time.monotonic() + self.seconds
        inner = part.next_batch

        def next_batch() -> list[Reading]:
            if time.monotonic() >= deadline:
                part.close()
                raise StopIteration
            return inner()

        part.next_batch = next_batch  # type: ignore[method-assign]
        return part


def config(ports: list[int], mode: str) -> OpcuaSourceConfig:
    """One endpoint per server, ITEMS split evenly; metric names unique over all endpoints."""
    per = ITEMS // len(ports)
    return OpcuaSourceConfig.model_validate(
        {
            "endpoints": [
                {
                    "name": f"bench{e}",
                    "url": f"opc.tcp://127.0.0.1:{port}/streamforge/test",
                    "mode": mode,
                    "publishing_interval_ms": 1000,
                    "poll_interval_ms": 1000,
                    "queue_size": 1,
                    "request_timeout_s": 30,
                    "open_timeout_s": 120,
                    "nodes": [
                        {
                            "node_id": f"ns=2;i={100000 + k}",
                            "device": f"dev{(e * per + k) // 100:03d}",
                            "metric": f"v{e * per + k:05d}",
                        }
                        for k in range(per)
                    ],
                }
                for e, port in enumerate(ports)
            ]
        }
    )


def servers_cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


def run_phase(
    name: str, ports: list[int], pids: list[int], mode: str, seconds: float, warmup: float
) -> dict[str, Any]:
    """Run the flow for ``warmup + seconds``, measuring the last ``seconds``."""
    counting = Counting()
    marks: dict[str, Any] = {}

    def on_built(part: OpcuaPartition) -> None:
        marks.setdefault("built", []).append(time.monotonic())
        if len(marks["built"]) < len(ports):
            return

        def measure() -> None:
            time.sleep(warmup)
            with counting.lock:
                marks["start"] = (time.monotonic(), counting.count, len(counting.latencies))
            marks["cpu0"] = (time.process_time(), servers_cpu_seconds(pids))
            time.sleep(seconds - 0.5)
            with counting.lock:
                marks["end"] = (time.monotonic(), counting.count)
            marks["cpu1"] = (time.process_time(), servers_cpu_seconds(pids))

        threading.Thread(target=measure, daemon=True).start()

    full0, overruns0 = BUFFER_FULL.total(), POLL_OVERRUNS.total()
    started = time.monotonic()
    flow = Dataflow(f"bench_opcua_{name}")
    readings = op.input("opcua", flow, TimedSource(config(ports, mode), warmup + seconds, on_built))
    op.output("count", readings, CountingSink(counting))
    run_main(flow)
    t0, n0, lat0 = marks["start"]
    t1, n1 = marks["end"]
    cpu_self = marks["cpu1"][0] - marks["cpu0"][0]
    cpu_server = marks["cpu1"][1] - marks["cpu0"][1]
    window = t1 - t0
    latencies = counting.latencies[lat0:]
    result = {
        "mode": mode,
        "items": ITEMS,
        "endpoints": len(ports),
        "open_s": round(marks["built"][-1] - started, 2),
        "all_items_seen_s": round(counting.all_seen_at - started, 2)
        if counting.all_seen_at
        else None,
        "window_s": round(window, 1),
        "values_per_s": round((n1 - n0) / window),
        "rounds_per_s": round((n1 - n0) / window / ITEMS, 2),
        "client_cpu_pct": round(100 * cpu_self / window, 1),
        "client_cpu_us_per_value": round(1e6 * cpu_self / max(1, n1 - n0), 1),
        "servers_cpu_pct": round(100 * cpu_server / window, 1),
        "latency_p50_ms": round(1000 * percentile(latencies, 0.5), 1),
        "latency_p99_ms": round(1000 * percentile(latencies, 0.99), 1),
        "buffer_full_events": BUFFER_FULL.total() - full0,
        "poll_overruns": POLL_OVERRUNS.total() - overruns0,
    }
    print(f"{name}: {result}", flush=True)
    return result


def start_servers(count: int) -> tuple[list[subprocess.Popen[str]], list[int]]:
    """``count`` server processes sharing ITEMS variables, started in parallel; and their ports."""
    procs, ports = [], []
    for _ in range(count):
        ports.append(free_port())
        argv = [sys.executable, str(SERVER), "--port", str(ports[-1]),
                "--bench-vars", str(ITEMS // count), "--period-ms", "1000"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    for proc in procs:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("READY"):
            raise SystemExit("an OPC UA server did not start")
    return procs, ports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--polling", action="store_true", help="also run the polling phase")
    parser.add_argument("--servers", type=int, default=2, help="server processes (endpoints)")
    args = parser.parse_args()
    seconds, warmup = (10.0, 5.0) if args.quick else (20.0, 5.0)
    started = time.monotonic()
    procs, ports = start_servers(args.servers)
    try:
        pids = [p.pid for p in procs]
        server_start_s = time.monotonic() - started
        print(f"{args.servers} servers, {ITEMS} variables, ready in {server_start_s:.1f} s")
        phases = {
            "subscription": run_phase("subscription", ports, pids, "subscription", seconds, warmup)
        }
        if args.polling:
            phases["polling"] = run_phase("polling", ports, pids, "polling", seconds, warmup)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    report = {
        "benchmark": "opcua",
        "machine": {"cpus": os.cpu_count(), "load_average_1m": load_average()},
        "servers": args.servers,
        "server_start_s": round(server_start_s, 1),
        "phases": phases,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
