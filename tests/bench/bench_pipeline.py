"""Processing benchmark: simulator -> decode -> series step -> null sink, one process.

    python -m tests.bench.bench_pipeline            # all cases, ~2-3 minutes
    python -m tests.bench.bench_pipeline --keys 10000

Each case runs in its own subprocess (so its peak RSS is its own) on one
Bytewax worker, with the default pipeline (classification, threshold alarms,
1m/5m/1h rollups, the default anomaly detector with scores emitted) and
replayed timestamps, so every key gets ``--steps`` values. Prints a table
and writes ``tests/bench/reports/pipeline.json``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPORT = Path(__file__).parent / "reports" / "pipeline.json"
METRICS_PER_DEVICE = 5  # simulator default: 4 telemetry series + 1 event series


def run_case(keys: int, steps: int) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    from bytewax.testing import run_main

    from flows.ingest import build_flow, tune_gc
    from flows.metrics import counter
    from schemas.config import PipelineConfig
    from schemas.sinks import NullSinkConfig
    from schemas.sources.simulator import SimulatorSourceConfig

    devices = max(1, keys // METRICS_PER_DEVICE)
    readings = devices * METRICS_PER_DEVICE * steps
    sim = SimulatorSourceConfig(
        devices=devices,
        metrics=METRICS_PER_DEVICE,
        rate=0,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        limit=readings,
    )
    config = PipelineConfig(sources=[sim], sinks=[NullSinkConfig()])
    flow = build_flow(config)
    tune_gc()  # as python -m bytewax.run flows.ingest does
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outputs = counter("streamforge_outputs_total", "").value(sink="null")
    return {
        "keys": devices * METRICS_PER_DEVICE,
        "readings": readings,
        "seconds": round(elapsed, 2),
        "readings_per_s": round(readings / elapsed),
        "cpu_seconds": round(cpu, 2),
        "outputs": int(outputs),
        "peak_rss_mb": round(rss_after / 1024, 1),
        "rss_growth_kb_per_key": round(
            (rss_after - rss_before) / (devices * METRICS_PER_DEVICE), 2
        ),
    }


def main() -> None:
    """Run the cases (each in a subprocess), print a table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, action="append", help="only these key counts")
    parser.add_argument("--steps", type=int, default=0, help="values per key (0: per case)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_case(args.keys[0], args.steps)))
        return
    cases = args.keys or [100, 10_000, 100_000]
    results = []
    for keys in cases:
        # Enough values per key for windows to close, within ~1 minute per case.
        steps = args.steps or max(10, min(3000, 600_000 // keys))
        cmd = [sys.executable, "-m", "tests.bench.bench_pipeline", "--one"]
        cmd += ["--keys", str(keys), "--steps", str(steps)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        print(
            f"{result['keys']:>8} keys  {result['readings']:>9} readings  "
            f"{result['readings_per_s']:>8} readings/s  peak RSS {result['peak_rss_mb']:>7} MB  "
            f"({result['rss_growth_kb_per_key']} KB/key)",
            flush=True,
        )
    report = {
        "benchmark": "pipeline",
        "command": "python -m tests.bench.bench_pipeline",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average": os.getloadavg(),
        "pipeline": "simulator -> decode -> classify/events/alarms/rollups(1m,5m,1h)/anomaly "
        "-> null sink, 1 worker",
        "results": results,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
