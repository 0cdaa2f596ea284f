"""Benchmark: the plant simulator's cost per reading, alone and as a Bytewax source.

    .venv/bin/python -m tests.bench.bench_simulator          # ~30 s

Generation figures are the best of 7 timed repeats (the least disturbed by
other processes on the machine), in ns per reading, next to the cost of
building one ``Reading`` (the floor: every reading is one). The flow figure
is readings per second through ``input -> count`` on one worker, unpaced.

Prints the figures and writes ``tests/bench/reports/simulator.json``.
"""

from __future__ import annotations

import json
import platform
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.source import PlantSimulator, SimulatorSource
from schemas.models import Reading

REPORT = Path(__file__).parent / "reports" / "simulator.json"
START = datetime(2026, 1, 1, tzinfo=UTC)
PLANTS = [(10, 5), (100, 10), (1000, 5), (20, 50)]  # devices x metrics


class _Count(StatelessSinkPartition[Any]):
    def __init__(self, total: list[int]) -> None:
        self.total = total

    def write_batch(self, items: list[Any]) -> None:
        self.total[0] += len(items)


class CountSink(DynamicSink[Any]):
    """Counts items; keeps nothing (so the flow figure is not a list's growth)."""

    def __init__(self) -> None:
        self.total = [0]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count(self.total)


def generation_ns(devices: int, metrics: int, anomalies: bool = True) -> float:
    """Best-of-7 ns per reading of ~1000-reading batches, as the source asks for them."""
    config = SimulatorSourceConfig(
        devices=devices, metrics=metrics, start=START, anomalies=anomalies
    )
    plant = PlantSimulator(config)
    batch = max(1, 1000 // plant.width) * plant.width if plant.width <= 1000 else 1000
    position = [0]

    def run() -> None:
        for _ in range(20):
            plant.readings_range(position[0], position[0] + batch)
            position[0] += batch

    return min(timeit.repeat(run, number=1, repeat=7)) / (20 * batch) * 1e9


def reading_ns() -> float:
    """Best-of-7 ns to build one Reading positionally (the simulator's floor)."""
    return (
        min(
            timeit.repeat(
                lambda: Reading("d", "m", START, 1.0, "default", "good", "simulator", "u"),
                number=100_000,
                repeat=7,
            )
        )
        / 100_000
        * 1e9
    )


def flow_rate(devices: int, metrics: int, limit: int, partitions: int = 1) -> float:
    """Readings per second through input -> count on one worker."""
    config = SimulatorSourceConfig(
        devices=devices, metrics=metrics, rate=0, start=START, limit=limit, partitions=partitions
    )
    sink = CountSink()
    flow = Dataflow("bench-simulator")
    op.output("count", op.input("plant", flow, SimulatorSource(config)), sink)
    began = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - began
    assert sink.total[0] == limit
    return limit / elapsed


def main() -> None:
    figures: dict[str, Any] = {"reading_ns": round(reading_ns())}
    for devices, metrics in PLANTS:
        name = f"{devices}x{metrics}"
        figures[f"generate_ns_{name}"] = round(generation_ns(devices, metrics))
        figures[f"generate_ns_{name}_no_anomalies"] = round(
            generation_ns(devices, metrics, anomalies=False)
        )
    figures["flow_readings_per_s_10x5"] = round(flow_rate(10, 5, 500_000))
    figures["flow_readings_per_s_100x10_4_partitions"] = round(flow_rate(100, 10, 500_000, 4))
    for key, value in figures.items():
        print(f"{key:48s} {value:>12,}")
    REPORT.parent.mkdir(exist_ok=True)
    report = {"machine": platform.processor() or platform.machine(), "figures": figures}
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
