"""Processing benchmark: simulator -> decode -> series step -> null sink, one process.

    python -m tests.bench.bench_pipeline            # all cases, 3-8 minutes
    python -m tests.bench.bench_pipeline --keys 10000 --repeat 5 --no-pure

Each case runs in its own subprocess (so its peak RSS is its own) on one
Bytewax worker, with the default pipeline (classification, threshold alarms,
1m/5m/1h rollups, the default anomaly detector with scores emitted) and
replayed timestamps, so every key gets ``--steps`` values. Each case runs
``--repeat`` times as built (the Cython extensions of setup.py, if any)
and as many times as pure Python (``STREAMFORGE_PURE_PYTHON=1``),
interleaved, so the reported speed-up holds however the machine's speed
drifts. Then the state per series is measured (see :func:`measure_state`).
Prints a table and writes ``tests/bench/reports/pipeline.json``.
Nothing is asserted.
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

    from connectors.runtime.metrics import counter
    from connectors.simulator.config import SimulatorSourceConfig
    from connectors.stdout.config import NullSinkConfig
    from flows.config import PipelineConfig
    from flows.ingest import build_flow, tune_gc

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


def measure_state(series: int = 1000, steps: int = 600) -> dict[str, Any]:
    """Memory held per series after ``steps`` values each: live bytes and snapshot bytes.

    600 values at the simulator's 1 s interval are 10 minutes of event time:
    past the default allowed lateness (5 minutes), so the 1-minute and
    5-minute windows held for corrections are at their steady count.

    Runs the series step directly (no Bytewax) on simulated readings made
    beforehand, so ``tracemalloc`` sees exactly what the states keep: every
    allocation made during the run and still alive after it, divided by the
    series count (the last reading each series keeps, made before, is not
    in it: ~100 B, its strings shared with the other readings). The
    snapshot size is the pickled ``{series: (state, last reading)}`` that
    Bytewax recovery stores, per series.
    """
    import gc
    import pickle
    import tracemalloc

    from connectors.simulator.config import SimulatorSourceConfig
    from connectors.simulator.source import SimulatorPartition
    from flows.config import PipelineConfig
    from flows.kernels.series import OutputChunks
    from flows.series import series_processor

    devices = max(1, series // METRICS_PER_DEVICE)
    sim = SimulatorSourceConfig(
        devices=devices,
        metrics=METRICS_PER_DEVICE,
        rate=0,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        limit=devices * METRICS_PER_DEVICE * steps,
    )
    partition = SimulatorPartition(sim, list(range(devices)))
    batches = []
    try:
        while True:
            batches.append(partition.next_batch())
    except StopIteration:
        pass
    processor = series_processor(PipelineConfig())
    states: dict[str, list[Any]] = {}
    last_seen: dict[str, float] = {}
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for batch in batches:
        processor.process_batch([batch], states, last_seen, time.time(), OutputChunks())
    gc.collect()
    # (the batches stay alive until here: the readings were made before the
    # first snapshot, and freeing them would be counted against the states)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    live = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    snapshot = len(pickle.dumps({key: (e[0], e[1]) for key, e in states.items()}))
    return {
        "series": len(states),
        "values_per_series": steps,
        "live_bytes_per_series": round(live / len(states)),
        "snapshot_bytes_per_series": round(snapshot / len(states)),
    }


def run_subprocess(flags: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """This module run with ``flags`` in a fresh process (its own peak RSS): its JSON line."""
    cmd = [sys.executable, "-m", "tests.bench.bench_pipeline", *flags]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run_case_subprocess(keys: int, steps: int, pure: bool) -> dict[str, Any]:
    """One case in a fresh process; ``pure``: STREAMFORGE_PURE_PYTHON=1."""
    env = dict(os.environ, STREAMFORGE_PURE_PYTHON="1" if pure else "0")
    return run_subprocess(["--one", "--keys", str(keys), "--steps", str(steps)], env)


def main() -> None:
    """Run the cases (each in a subprocess), print a table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, action="append", help="only these key counts")
    parser.add_argument("--steps", type=int, default=0, help="values per key (0: per case)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per case below 100,000 keys (1 above)"
    )
    parser.add_argument(
        "--no-pure", action="store_true", help="skip the pure-Python runs of each case"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.state:
        print(json.dumps(measure_state()))
        return
    if args.one:
        result = run_case(args.keys[0], args.steps)
        import connectors.runtime.compiled

        result["compiled_modules"] = connectors.runtime.compiled.compiled_modules()
        print(json.dumps(result))
        return
    cases = args.keys or [100, 10_000, 100_000]
    results = []
    for keys in cases:
        # Enough values per key for windows to close, within ~1 minute per case.
        steps = args.steps or max(10, min(3000, 600_000 // keys))
        repeat = args.repeat if keys < 100_000 else 1
        runs: dict[str, list[dict[str, Any]]] = {"compiled": [], "pure": []}
        # Interleaved, so a drift in the machine's speed hits both builds alike.
        for _ in range(repeat):
            runs["compiled"].append(run_case_subprocess(keys, steps, pure=False))
            if not args.no_pure:
                runs["pure"].append(run_case_subprocess(keys, steps, pure=True))
        first = runs["compiled"][0]
        result = {k: first[k] for k in ("keys", "readings", "outputs", "compiled_modules")}
        for build, done in runs.items():
            if not done:
                continue
            rates = sorted(r["readings_per_s"] for r in done)
            result[build] = {
                "readings_per_s_median": rates[len(rates) // 2],
                "readings_per_s_best": rates[-1],
                "runs": rates,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in done),
                "rss_growth_kb_per_key": max(r["rss_growth_kb_per_key"] for r in done),
            }
        if runs["pure"]:
            result["speedup_median"] = round(
                result["compiled"]["readings_per_s_median"]
                / result["pure"]["readings_per_s_median"],
                2,
            )
        results.append(result)
        c = result["compiled"]
        line = (
            f"{result['keys']:>8} keys  {result['readings']:>9} readings  "
            f"{c['readings_per_s_median']:>8} readings/s median, {c['readings_per_s_best']} best "
            f"of {repeat}  peak RSS {c['peak_rss_mb']:>6} MB ({c['rss_growth_kb_per_key']} KB/key)"
        )
        if runs["pure"]:
            line += (
                f"  | pure Python {result['pure']['readings_per_s_median']} median "
                f"(compiled {result['speedup_median']}x)"
            )
        print(line, flush=True)
    state = run_subprocess(["--state"])
    print(
        f"state per series after {state['values_per_series']} values "
        f"({state['series']} series, default pipeline): "
        f"{state['live_bytes_per_series']} B live (tracemalloc), "
        f"{state['snapshot_bytes_per_series']} B in the recovery snapshot",
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
        "builds": "compiled: the Cython extensions of setup.py (modules listed per case); "
        "pure: the same code as Python (STREAMFORGE_PURE_PYTHON=1), runs interleaved",
        "results": results,
        "state": state,
    }
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
