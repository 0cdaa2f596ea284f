"""Labelled evaluation of the anomaly detectors: recall, precision, delay per anomaly type.

    .venv/bin/python -m tests.bench.eval_detector            # all detectors, ~1 min
    .venv/bin/python -m tests.bench.eval_detector --detectors default --seeds 2

Synthetic series (``make_series``) put one known anomaly (``spike``,
``level_shift``, ``drift``, ``stuck``) or none (``clean``) on top of a base
behaviour: white noise, AR(1) noise, a daily shape, an on/off machine
(regimes ~0 and ~50 kW), heavy-tailed noise, a quantised sensor. When
:mod:`connectors.simulator.plant` is importable, the plant simulator's own
ground truth is scored too (its machine starts/stops and overheats are normal
excursions, not counted as false positives).

A value is *flagged* when its score is >= the threshold (0.9, the default
``AnomalyConfig.threshold``). Per anomaly type:

- recall: anomalies flagged inside their detection window (``[start, end +
  grace]``, at least 100 values for persistent changes);
- delay: values from the anomaly's start to its first flag (median, p90);
- precision: detected anomalies / (detected + false-positive episodes),
  an episode being a run of flags outside every window;
- fp_per_1k: false-positive episodes per 1,000 scored values on the same series;
- nab: a NAB-style score (first detection in a window earns
  ``2 / (1 + e^(5y)) - 1`` with ``y`` the relative position in the window,
  -1 at its start and 0 at its end; a missed window costs 1; each flagged
  value outside windows costs 0.11), normalised to 100 = perfect, 0 = none.

The first 15 % of each series (the probation period, as in NAB) is not
scored. The report goes to ``tests/bench/reports/detector_eval.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.anomaly import build_detector
from schemas.config import DetectorConfig

REPORT = Path(__file__).parent / "reports" / "detector_eval.json"
THRESHOLD = 0.9
PROBATION = 0.15
BASES = ("noise", "ar1", "daily", "onoff", "heavy", "quantized")
KINDS = ("spike", "level_shift", "drift", "stuck", "clean")


@dataclass
class Labelled:
    """One series with its anomaly windows ``(kind, start, end)`` (inclusive indices)."""

    name: str
    values: list[float]
    anomalies: list[tuple[str, int, int]]
    ignore: list[tuple[int, int]]  # normal excursions: flags there are neither TP nor FP


def _base(kind: str, n: int, rng: random.Random) -> tuple[list[float], float]:
    """A normal series and its noise standard deviation."""
    level = rng.uniform(-50, 150)
    sigma = rng.uniform(0.2, 3.0)
    if kind == "noise":
        return [level + rng.gauss(0, sigma) for _ in range(n)], sigma
    if kind == "ar1":
        phi = rng.uniform(0.7, 0.95)
        e, out = 0.0, []
        for _ in range(n):
            e = phi * e + rng.gauss(0, sigma * math.sqrt(1 - phi * phi))
            out.append(level + e)
        return out, sigma
    if kind == "daily":
        period = rng.choice([288, 1440])
        amp = rng.uniform(3, 10) * sigma
        phase = rng.uniform(0, 2 * math.pi)
        return [
            level + amp * math.sin(2 * math.pi * t / period + phase) + rng.gauss(0, sigma)
            for t in range(n)
        ], sigma
    if kind == "onoff":
        on_level, on_sigma, off_sigma = rng.uniform(40, 60), rng.uniform(0.5, 2.0), 0.05
        out, running = [], rng.random() < 0.5
        while len(out) < n:
            for _ in range(int(rng.expovariate(1 / rng.choice([60, 150, 400]))) + 5):
                out.append(
                    on_level + rng.gauss(0, on_sigma) if running else abs(rng.gauss(0, off_sigma))
                )
            if rng.random() < 0.5:  # a one-value ramp between the regimes
                out.append(on_level * rng.uniform(0.2, 0.8))
            running = not running
        return out[:n], on_sigma
    if kind == "heavy":
        # Student t with 3 degrees of freedom: occasional large but normal values.
        def t3() -> float:
            z = rng.gauss(0, 1)
            chi = sum(rng.gauss(0, 1) ** 2 for _ in range(3))
            return z / math.sqrt(chi / 3)

        return [level + sigma * t3() for _ in range(n)], sigma * math.sqrt(3)
    if kind == "quantized":
        sigma = rng.uniform(0.6, 2.0)
        return [float(round(level + rng.gauss(0, sigma))) for _ in range(n)], sigma
    raise ValueError(kind)


def make_series(base: str, kind: str, n: int, seed: int) -> Labelled:
    """A ``base`` series of ``n`` values with one anomaly of ``kind`` (or none: ``clean``)."""
    rng = random.Random(f"{base}/{kind}/{seed}")
    values, sigma = _base(base, n, rng)
    anomalies: list[tuple[str, int, int]] = []
    start = rng.randrange(int(0.3 * n), int(0.75 * n))
    sign = rng.choice([-1, 1])
    if kind == "spike":
        values[start] += sign * rng.uniform(6, 12) * sigma
        anomalies.append((kind, start, start))
    elif kind == "level_shift":
        delta = sign * rng.uniform(3, 8) * sigma
        for t in range(start, n):
            values[t] += delta
        anomalies.append((kind, start, min(n - 1, start + 99)))
    elif kind == "drift":
        length = rng.randrange(200, 600)
        total = sign * rng.uniform(5, 10) * sigma
        for t in range(start, n):
            values[t] += total * min(1.0, (t - start + 1) / length)
        anomalies.append((kind, start, min(n - 1, start + length)))
    elif kind == "stuck":
        length = rng.randrange(50, 400)
        for t in range(start, min(n, start + length)):
            values[t] = values[start - 1]
        anomalies.append((kind, start, min(n - 1, start + length - 1)))
    return Labelled(f"{base}/{kind}/{seed}", values, anomalies, [])


def simulator_series(steps: int) -> list[Labelled]:
    """The plant simulator's numeric series and ground truth, if the simulator exists."""
    try:
        from connectors.simulator.config import SimulatorSourceConfig
        from connectors.simulator.plant import PlantSimulator
    except ImportError:
        return []
    from datetime import UTC, datetime

    config = SimulatorSourceConfig(
        devices=4, metrics=13, start=datetime(2026, 1, 1, tzinfo=UTC), anomaly_rate=1e-3
    )
    plant = PlantSimulator(config)
    series: dict[tuple[str, str], list[float]] = defaultdict(list)
    for reading in plant.readings(limit=steps * 4 * 13):
        if type(reading.value) is float:
            series[(reading.device, reading.metric)].append(reading.value)
    truth = plant.ground_truth(steps)
    normal = plant.excursions(steps)
    out = []
    for (device, metric), values in series.items():
        anomalies = [
            (str(a.kind), a.start_step, a.end_step)
            for a in truth
            if a.device == device and a.metric == metric
        ]
        # Machine starts/stops move power, flow... of the device; overheats its temperatures.
        ignore = [
            (a.start_step, a.end_step + 3)
            for a in normal
            if a.device == device and (a.metric == metric or a.metric == "state.running")
        ]
        out.append(Labelled(f"sim/{device}/{metric}", values, anomalies, ignore))
    return out


def _window(kind: str, start: int, end: int, n: int) -> tuple[int, int]:
    """Where a flag counts as detecting the anomaly."""
    if kind == "spike":
        return start, min(n - 1, end + 3)
    return start, min(n - 1, max(end, start + 99) + 20)


def evaluate(series: Labelled, scores: list[float]) -> list[dict[str, Any]]:
    """Per-anomaly outcomes plus the series' false positives (as a ``kind: fp`` row)."""
    n = len(scores)
    first = int(PROBATION * n)
    windows = [(kind, *_window(kind, s, e, n)) for kind, s, e in series.anomalies if s >= first]
    rows: list[dict[str, Any]] = []
    for kind, lo, hi in windows:
        hit = next((t for t in range(lo, hi + 1) if scores[t] >= THRESHOLD), None)
        delay = None if hit is None else hit - lo
        y = -1.0 if hit is None else (hit - hi) / max(1, hi - lo + 1)
        reward = -1.0 if hit is None else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0
        rows.append({"kind": kind, "detected": hit is not None, "delay": delay, "nab": reward})
    covered = [False] * n
    for _, lo, hi in windows:
        for t in range(lo, hi + 1):
            covered[t] = True
    for _kind, s, e in series.anomalies:  # anomalies in the probation period: not scored
        if s < first:
            for t in range(s, min(n, e + 100)):
                covered[t] = True
    for lo, hi in series.ignore:
        for t in range(max(0, lo), min(n, hi + 1)):
            covered[t] = True
    episodes, fp_points, inside = 0, 0, False
    for t in range(first, n):
        flagged = scores[t] >= THRESHOLD and not covered[t]
        if flagged:
            fp_points += 1
            if not inside:
                episodes += 1
        inside = flagged
    rows.append({"kind": "fp", "episodes": episodes, "points": fp_points, "scored": n - first})
    return rows


def run_detector(config: DetectorConfig | None, values: list[float]) -> tuple[list[float], float]:
    """Scores of a fresh detector over the values, and µs per value."""
    det = build_detector(config)
    t0 = time.perf_counter()
    step = det.score_learn_one
    scores = [step(float(i), v) for i, v in enumerate(values)]
    return scores, (time.perf_counter() - t0) / max(1, len(values)) * 1e6


def summarise(rows_by_group: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Recall, precision, delays, false positives and NAB-style score per group."""
    out = {}
    for group, rows in sorted(rows_by_group.items()):
        hits = [r for r in rows if r["kind"] != "fp"]
        fps = [r for r in rows if r["kind"] == "fp"]
        detected = sum(r["detected"] for r in hits)
        episodes = sum(r["episodes"] for r in fps)
        fp_points = sum(r["points"] for r in fps)
        scored = sum(r["scored"] for r in fps)
        delays = sorted(r["delay"] for r in hits if r["delay"] is not None)
        raw = sum(r["nab"] for r in hits) - 0.11 * fp_points
        null = -len(hits)
        perfect = float(sum(1 for _ in hits))
        out[group] = {
            "anomalies": len(hits),
            "recall": round(detected / len(hits), 3) if hits else None,
            "precision": (
                round(detected / (detected + episodes), 3) if detected + episodes else None
            ),
            "delay_median": statistics.median(delays) if delays else None,
            "delay_p90": delays[int(0.9 * (len(delays) - 1))] if delays else None,
            "fp_episodes": episodes,
            "fp_per_1k": round(1000 * episodes / scored, 3) if scored else None,
            "nab": round(100 * (raw - null) / (perfect - null), 1) if hits else None,
        }
    return out


def main() -> None:
    """Run the evaluation, print the tables, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detectors", default="default,zscore,gaussian,halfspacetrees")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--length", type=int, default=4000)
    parser.add_argument("--sim-steps", type=int, default=20_000)
    args = parser.parse_args()
    corpus = [
        make_series(base, kind, args.length, seed)
        for base in BASES
        for kind in KINDS
        for seed in range(args.seeds)
    ]
    sim = simulator_series(args.sim_steps) if args.sim_steps else []
    report: dict[str, Any] = {
        "threshold": THRESHOLD,
        "series": len(corpus),
        "simulator_series": len(sim),
        "length": args.length,
        "detectors": {},
    }
    for name in args.detectors.split(","):
        config = None if name == "default" else DetectorConfig.model_validate({"type": name})
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        by_base: dict[str, list[dict[str, Any]]] = defaultdict(list)
        by_sim: dict[str, list[dict[str, Any]]] = defaultdict(list)
        costs = []
        for s in corpus:
            scores, us = run_detector(config, s.values)
            costs.append(us)
            base, kind, _ = s.name.split("/")
            rows = evaluate(s, scores)
            # FPs of a series count against the anomaly type it carries.
            by_kind[kind].extend(rows)
            by_base[base].extend(rows)
            by_kind["all"].extend(rows)
        for s in sim:
            scores, us = run_detector(config, s.values)
            costs.append(us)
            for row in evaluate(s, scores):
                by_sim[row["kind"]].append(row)
                by_sim["all"].append(row)
        by_sim.pop("fp", None)  # false positives are counted in "all"
        result = {
            "us_per_value": round(statistics.mean(costs), 2),
            "by_anomaly": summarise(by_kind),
            "by_base": summarise(by_base),
            "simulator": summarise(by_sim) if sim else None,
        }
        report["detectors"][name] = result
        _print(name, result)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nreport: {REPORT}")


def _print(name: str, result: dict[str, Any]) -> None:
    cols = ("anomalies", "recall", "precision", "delay_median", "delay_p90", "fp_per_1k", "nab")
    print(f"\n== {name}  ({result['us_per_value']} µs/value)")
    print(f"{'':14}" + "".join(f"{c:>13}" for c in cols))
    tables = (("by anomaly", "by_anomaly"), ("by base", "by_base"), ("simulator", "simulator"))
    for title, table in tables:
        if not result.get(table):
            continue
        print(f"-- {title}")
        for group, stats in result[table].items():
            print(f"{group:14}" + "".join(f"{stats[c]!s:>13}" for c in cols))


if __name__ == "__main__":
    main()
