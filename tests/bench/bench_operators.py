"""Micro-benchmarks of the per-series operators: rollups and anomaly detectors.

    .venv/bin/python -m tests.bench.bench_operators          # ~1 minute
    .venv/bin/python -m tests.bench.bench_operators --quick  # ~15 s

Measures, on one core:

- :class:`flows.kernels.rollups.RollupState` per-item cost (1m/5m/1h tiers, one value
  per key every 5 s, 1 % of values 30-400 s late) with 100, 10,000 and
  100,000 keys, plus the pickled state per key;
- each detector's cost per value and pickled state per key after 20,000
  values (on/off machine with a daily shape);
- the same rollup stream through Bytewax: our RollupState in one
  ``stateful_batch`` step, against Bytewax's built-in ``fold_window`` with
  ``EventClock`` (``to_system_utc=lambda t: None`` so replayed timestamps
  do not busy-loop) and three ``TumblingWindower`` steps (1m, 5m, 1h).

Prints a table and writes ``tests/bench/reports/operators.json``. Figures are
measured, never asserted. Wall time is ``perf_counter``; CPU time of this
process (``process_time``) is reported too, since it is what a loaded
machine does not distort.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.anomaly import build_detector
from flows.kernels.rollups import RollupState
from schemas.config import DetectorConfig
from schemas.models import SourceKind

REPORT = Path(__file__).parent / "reports" / "operators.json"
TIERS = [("1m", 60.0), ("5m", 300.0), ("1h", 3600.0)]
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Ident:
    """Names a series in emitted records."""

    tenant: str
    device: str
    metric: str
    source: SourceKind = "simulator"


def rollup_stream(keys: int, items: int, seed: int = 1) -> list[tuple[int, float, float]]:
    """``(key, ts, value)`` round robin over keys, 5 s apart per key, 1 % late."""
    rng = random.Random(seed)
    steps = max(1, items // keys)
    out = []
    for step in range(steps):
        ts = T0 + 5.0 * step
        for key in range(keys):
            late = rng.uniform(30, 400) if rng.random() < 0.01 else 0.0
            out.append((key, ts - late, 50.0 + rng.gauss(0, 5)))
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, result) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w0, time.process_time() - c0, result


def bench_rollups(keys: int, items: int) -> dict[str, Any]:
    """RollupState.add per item, plain Python loop, one state per key."""
    stream = rollup_stream(keys, items)
    idents = [Ident("t", f"dev-{k}", "power") for k in range(keys)]
    states = [RollupState(TIERS, 5.0, 300.0) for _ in range(keys)]
    out: list[Any] = []

    def run() -> None:
        for key, ts, value in stream:
            states[key].add(ts, value, out, idents[key])

    wall, cpu, _ = timed(run)
    sample = states[: min(keys, 200)]
    return {
        "keys": keys,
        "items": len(stream),
        "us_per_item": round(wall / len(stream) * 1e6, 3),
        "cpu_us_per_item": round(cpu / len(stream) * 1e6, 3),
        "records_out": len(out),
        "pickled_bytes_per_key": round(sum(len(pickle.dumps(s)) for s in sample) / len(sample)),
    }


def detector_series(n: int, seed: int = 2) -> list[float]:
    """An on/off machine (0 / 50 kW) with a slow daily shape and noise."""
    rng = random.Random(seed)
    values, on, left = [], False, 0
    for i in range(n):
        if left == 0:
            on, left = not on, rng.randint(50, 400)
        left -= 1
        base = 50.0 + 3.0 * math.sin(2 * math.pi * i / 1440) if on else 0.3
        values.append(base + rng.gauss(0, 1.0 if on else 0.05))
    return values


def bench_detector(kind: str, n: int) -> dict[str, Any]:
    """Cost per value and pickled state of one detector over ``n`` values."""
    config = None if kind == "default" else DetectorConfig.model_validate({"type": kind})
    det = build_detector(config)
    values = detector_series(n)
    stamps = [T0 + i for i in range(n)]

    def run() -> None:
        score = det.score_one
        for ts, v in zip(stamps, values, strict=True):
            score(ts, v)

    wall, cpu, _ = timed(run)
    return {
        "detector": kind,
        "values": n,
        "us_per_value": round(wall / n * 1e6, 2),
        "cpu_us_per_value": round(cpu / n * 1e6, 2),
        "pickled_bytes_per_key": len(pickle.dumps(det)),
    }


def _builder() -> list[float]:
    return []


def _folder(acc: list[float], item: tuple[datetime, float]) -> list[float]:
    # count, mean, m2, min, max, sum, first, last: what our rollups compute.
    x = item[1]
    if not acc:
        return [1, x, 0.0, x, x, x, x, x]
    n = acc[0] + 1
    d = x - acc[1]
    acc[0] = n
    acc[1] += d / n
    acc[2] += d * (x - acc[1])
    acc[3] = min(acc[3], x)
    acc[4] = max(acc[4], x)
    acc[5] += x
    acc[7] = x
    return acc


def _merger(a: list[float], b: list[float]) -> list[float]:
    return a  # tumbling windows never merge


def bench_bytewax(keys: int, items: int) -> dict[str, Any]:
    """Our RollupState in one stateful_batch step vs three fold_window steps."""
    from bytewax import operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators import StatefulBatchLogic
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.testing import TestingSource, run_main

    raw = rollup_stream(keys, items)
    data = [(str(k), (datetime.fromtimestamp(ts, UTC), v)) for k, ts, v in raw]
    batch = 1000

    class Rollups(StatefulBatchLogic[Any, Any, Any]):
        def __init__(self, resume: Any) -> None:
            self.state = resume or RollupState(TIERS, 5.0, 300.0)
            self.ident: Ident | None = None

        def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
            out: list[Any] = []
            ident = self.ident
            if ident is None:
                ident = self.ident = Ident("t", "dev", "power")
            add = self.state.add
            for ts, v in values:
                add(ts.timestamp(), v, out, ident)
            return out, StatefulBatchLogic.RETAIN

        def on_eof(self) -> tuple[list[Any], bool]:
            out: list[Any] = []
            if self.ident is not None:
                self.state.flush(out, self.ident)
            return out, StatefulBatchLogic.RETAIN

        def snapshot(self) -> Any:
            return self.state

    counts = {"ours": 0, "fold_window": 0}

    def ours() -> None:
        flow = Dataflow("ours")
        s = op.input("in", flow, TestingSource(data, batch_size=batch))
        keyed = op.key_on("key", s, lambda kv: kv[0])
        vals = op.map_value("val", keyed, lambda kv: kv[1])
        rolled = op.stateful_batch("rollups", vals, Rollups)
        op.inspect("count", rolled, lambda _s, _x: counts.__setitem__("ours", counts["ours"] + 1))
        run_main(flow)

    def builtin() -> None:
        flow = Dataflow("builtin")
        s = op.input("in", flow, TestingSource(data, batch_size=batch))
        keyed = op.key_on("key", s, lambda kv: kv[0])
        vals = op.map_value("val", keyed, lambda kv: kv[1])
        clock: EventClock[Any] = EventClock(
            ts_getter=lambda item: item[0],
            wait_for_system_duration=timedelta(seconds=5),
            to_system_utc=lambda _t: None,  # no wake-ups: replayed time must not busy-loop
        )
        align = datetime(2026, 1, 1, tzinfo=UTC)
        for name, seconds in TIERS:
            windower = TumblingWindower(length=timedelta(seconds=seconds), align_to=align)
            win = fold_window(f"w{name}", vals, clock, windower, _builder, _folder, _merger)
            op.inspect(
                f"c{name}",
                win.down,
                lambda _s, _x: counts.__setitem__("fold_window", counts["fold_window"] + 1),
            )
        run_main(flow)

    w_ours, c_ours, _ = timed(ours)
    w_fold, c_fold, _ = timed(builtin)
    n = len(data)
    return {
        "keys": keys,
        "items": n,
        "rollupstate_stateful_batch_us_per_item": round(w_ours / n * 1e6, 2),
        "fold_window_x3_us_per_item": round(w_fold / n * 1e6, 2),
        "cpu_rollupstate_us_per_item": round(c_ours / n * 1e6, 2),
        "cpu_fold_window_x3_us_per_item": round(c_fold / n * 1e6, 2),
        "speedup": round(w_fold / w_ours, 2),
        "records_out": dict(counts),
    }


def main() -> None:
    """Run the benchmarks, print a table, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller streams")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    items = int(600_000 * scale)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        # Every key gets at least 14 values (70 s): its first 1m window closes.
        "rollups": [bench_rollups(k, max(items, 14 * k)) for k in (100, 10_000, 100_000)],
        "detectors": [
            bench_detector(kind, int(20_000 * scale))
            for kind in ("default", "zscore", "gaussian", "halfspacetrees")
        ],
        "bytewax": [bench_bytewax(k, int(200_000 * scale)) for k in (100, 1_000)],
    }
    print("RollupState.add (1m/5m/1h, 1 % late)")
    print(f"{'keys':>8} {'items':>9} {'µs/item':>9} {'cpu µs':>8} {'out':>8} {'B/key':>7}")
    for r in report["rollups"]:
        print(
            f"{r['keys']:>8} {r['items']:>9} {r['us_per_item']:>9} {r['cpu_us_per_item']:>8} "
            f"{r['records_out']:>8} {r['pickled_bytes_per_key']:>7}"
        )
    print("\nDetectors (score + learn)")
    print(f"{'detector':>16} {'µs/value':>9} {'cpu µs':>8} {'B/key':>7}")
    for d in report["detectors"]:
        print(
            f"{d['detector']:>16} {d['us_per_value']:>9} {d['cpu_us_per_value']:>8} "
            f"{d['pickled_bytes_per_key']:>7}"
        )
    print("\nBytewax: RollupState in stateful_batch vs fold_window x3 (µs/item, wall)")
    print(f"{'keys':>8} {'items':>9} {'ours':>8} {'fold x3':>8} {'speedup':>8}")
    for b in report["bytewax"]:
        print(
            f"{b['keys']:>8} {b['items']:>9} {b['rollupstate_stateful_batch_us_per_item']:>8} "
            f"{b['fold_window_x3_us_per_item']:>8} {b['speedup']:>8}"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport: {REPORT}")


if __name__ == "__main__":
    main()
