"""Detector benchmark on real and simulated labelled data: NAB-style score, detection, false alarms.

    .venv/bin/python -m tests.bench.bench_detectors                 # all, ~3 min
    .venv/bin/python -m tests.bench.bench_detectors --detectors default,zscore --parts skab

Per detector (``default``, ``zscore``, ``halfspacetrees``, ``gaussian``; and
``regime``, the default detector before issue 18, for comparison), a value is
*flagged* when its score is >= 0.9 (``AnomalyConfig.threshold``), and:

- **SKAB** (``../shared/data/skab/``, read in place, never copied): one file
  is one device, each of its 8 sensor columns one series with a detector of
  its own; the device is flagged when any of its series is. An anomalous
  period is a run of rows labelled ``anomaly = 1``; it is *detected* when the
  device is flagged inside it, with the delay in rows (seconds) from its
  first row. A *false alarm onset* is a flagged row, labelled normal, after
  an unflagged one; counted per 1,000 normal rows. The anomaly-free file is
  scored apart (it has no periods).
- **Simulator** (:mod:`connectors.simulator`, ground truth): each numeric
  series is judged on its own injected anomalies (window: ``[start, end +
  3]`` for a spike, at least 100 values for the others); normal values are
  all the others, machine starts and stops and overheats included (they
  are normal operation).
- **Synthetic**: NAB-like series (:func:`nablike_corpus`: clean periodic
  signals, on/off cycles, noisy daily shapes, random walks, bursty counts;
  one or two labelled anomalies or none) and the base x anomaly grid of
  :mod:`tests.bench.eval_detector`.
- **NAB score** (:func:`nab_file_score`), from NAB's published rules
  (``nab/sweeper.py``, standard profile): windows of 10 % of a file's length
  shared among its anomalies, centred on each labelled start (SKAB: the
  labelled period itself, which is longer); the first flag in a window earns
  ``scaledSigmoid(position) / scaledSigmoid(-1)`` (1 at the window's left
  edge, 0 at its right), a missed window costs 1, every flag outside windows
  costs ``0.11 * scaledSigmoid(distance past the previous window)`` (0.11 if
  none); the first ``min(15 %, 750)`` values are not scored. Summed over a
  corpus and normalised: 0 = never flags, 100 = perfect. The threshold is
  fixed at 0.9 (NAB tunes it per detector; here it is the alarm threshold).
- **Alarms**: each series drives the real alarm lifecycle
  (:class:`flows.alarms.AnomalyAlarmTracker` with ``AnomalyConfig()``'s
  defaults: raised on 2 scores >= 0.9 or one >= 0.99, cleared after 5 under
  0.5); a raise at a normal value counts against normal operation, per
  device-hour (1 value per second). Simulator: also the raises within 30 s
  of a machine start or stop, and each figure again after the first hour
  and after the first three (4 devices, 13 series each, 30,000 steps: 8.3
  hours by default).

Nothing is asserted: a complete run (all detectors, all parts) writes its
figures to ``tests/bench/reports/detector_bench.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.alarms import AnomalyAlarmTracker
from flows.anomaly import RegimeDetector, build_detector
from schemas.config import AnomalyConfig, DetectorConfig
from tests.bench.eval_detector import BASES, KINDS, make_series, simulator_series

ROOT = Path(__file__).resolve().parents[2]
SKAB = ROOT.parent / "shared" / "data" / "skab" / "data"
REPORT = Path(__file__).parent / "reports" / "detector_bench.json"
THRESHOLD = 0.9
DETECTORS = ("default", "zscore", "halfspacetrees", "gaussian", "regime")
T0 = datetime(2026, 1, 1, tzinfo=UTC)

# NAB's standard profile (nab/sweeper.py, config/profiles.json).
A_TP, A_FP, A_FN = 1.0, 0.11, 1.0


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def scaled_sigmoid(position: float) -> float:
    """NAB's ``scaledSigmoid``: ~0.987 at a window's left edge (-1), 0 at its right, -1 far past.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if position >= 3.0:
        return -1.0
    return 2.0 * _sigmoid(-5.0 * position) - 1.0


def nab_windows(n: int, starts: Sequence[int]) -> list[tuple[int, int]]:
    """NAB's windows: 10 % of the length shared among the anomalies, centred on each."""
    if not starts:
        return []
    width = int(0.1 * n / len(starts))
    out: list[tuple[int, int]] = []
    for s in sorted(starts):
        lo, hi = max(0, s - width // 2), min(n - 1, s + width // 2)
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], hi)  # overlapping windows merge, as in NAB's labeller
        else:
            out.append((lo, hi))
    return out


def nab_file_score(flags: Sequence[bool], windows: Sequence[tuple[int, int]]) -> float:
    """A file's raw NAB score (NAB ``Sweeper.calcSweepScore`` + ``calcScoreByThreshold``).

    ``flags[i]``: the detector's score at ``i`` is >= the threshold;
    ``windows``: sorted, disjoint, inclusive ``(left, right)`` indices.

    >>> nab_file_score([False] * 100, [(50, 59)])                # a missed window
    -1.0
    >>> nab_file_score([i == 50 for i in range(100)], [(50, 59)])  # at its start: perfect
    1.0
    >>> round(nab_file_score([i == 59 for i in range(100)], [(50, 59)]), 2)  # at its end: little
    0.25
    >>> nab_file_score([i == 50 for i in range(100)], [])  # a false positive (after probation)
    -0.11
    """
    n = len(flags)
    probation = min(math.floor(0.15 * n), 0.15 * 5000)
    max_tp = scaled_sigmoid(-1.0)
    best = [-A_FN] * len(windows)
    fp = 0.0
    w = 0
    prev_right: int | None = None
    prev_width = 0.0
    for i in range(n):
        while w < len(windows) and i > windows[w][1]:
            prev_right, prev_width = windows[w][1], float(windows[w][1] - windows[w][0] + 1)
            w += 1
        inside = w < len(windows) and windows[w][0] <= i <= windows[w][1]
        if not flags[i] or i < probation:
            continue
        if inside:
            left, right = windows[w]
            position = -(right - i + 1) / float(right - left + 1)
            best[w] = max(best[w], scaled_sigmoid(position) * A_TP / max_tp)
        else:
            past = 3.0 if prev_right is None else abs(prev_right - i) / max(1.0, prev_width - 1.0)
            fp += scaled_sigmoid(past) * A_FP
    return sum(best) + fp


def nab_normalised(raw: float, windows: int) -> float | None:
    """100 * (raw - null) / (perfect - null): null never flags (-1 a window), perfect earns 1."""
    if windows == 0:
        return None
    return round(100.0 * (raw + A_FN * windows) / ((A_TP + A_FN) * windows), 1)


# -- detectors -----------------------------------------------------------------


def make_detector(name: str) -> Any:
    if name == "regime":
        return RegimeDetector()
    if name == "default":
        return build_detector(None)
    return build_detector(DetectorConfig.model_validate({"type": name}))


def run_scores(name: str, values: Sequence[float]) -> tuple[list[float], float]:
    """A fresh detector's scores over ``values`` (score then learn) and seconds taken."""
    det = make_detector(name)
    step = det.score_learn_one
    t0 = time.perf_counter()
    scores = [step(float(i), v) for i, v in enumerate(values)]
    return scores, time.perf_counter() - t0


def alarm_raises(scores: Sequence[float], values: Sequence[float]) -> list[int]:
    """Indices at which the real anomaly alarm tracker raises (1 value per second)."""
    tracker = AnomalyAlarmTracker(AnomalyConfig(), "bench", "device", "metric")
    raises = []
    for i, (s, v) in enumerate(zip(scores, values, strict=True)):
        for out in tracker.update(T0 + timedelta(seconds=i), v, s):
            # (flattened: the lifecycle may return its records in a list of their own)
            for alarm in out if isinstance(out, list) else [out]:
                if alarm.transition == "raised":
                    raises.append(i)
    return raises


def onsets(flags: Sequence[bool]) -> list[int]:
    """Indices where a run of flags starts."""
    return [i for i in range(len(flags)) if flags[i] and (i == 0 or not flags[i - 1])]


def runs(labels: Sequence[bool]) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` of each run of true labels."""
    out, start = [], None
    for i, x in enumerate(labels):
        if x and start is None:
            start = i
        elif not x and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(labels) - 1))
    return out


@dataclass
class Tally:
    """Counts summed over files or series, summarised by :meth:`summary`."""

    periods: int = 0
    detected: int = 0
    delays: list[int] = field(default_factory=list)
    normal: int = 0
    fa_onsets: int = 0
    raises_normal: int = 0
    raises_startstop: int = 0
    device_hours: float = 0.0
    nab_raw: float = 0.0
    nab_windows: int = 0
    values: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "nab": nab_normalised(self.nab_raw, self.nab_windows),
            "periods": self.periods,
            "detected": self.detected,
            "detected_pct": round(100 * self.detected / self.periods, 1) if self.periods else None,
            "delay_median": statistics.median(self.delays) if self.delays else None,
            "normal_values": self.normal,
            "fa_onsets": self.fa_onsets,
            "fa_onsets_per_1k": round(1000 * self.fa_onsets / self.normal, 2)
            if self.normal
            else None,
            "raises_normal": self.raises_normal,
            "raises_per_device_hour": round(self.raises_normal / self.device_hours, 2)
            if self.device_hours
            else None,
            "raises_at_start_stop": self.raises_startstop,
            "us_per_value": round(1e6 * self.seconds / self.values, 2) if self.values else None,
        }


# -- SKAB ----------------------------------------------------------------------


@dataclass
class Device:
    """One SKAB file: its sensor series and its labels (None for the anomaly-free file)."""

    name: str
    series: dict[str, list[float]]
    labels: list[bool] | None


def skab_devices(root: Path = SKAB) -> list[Device]:
    """Every SKAB file, read in place."""
    out = []
    for path in sorted(root.glob("*/*.csv")):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        sensors = [c for c in rows[0] if c not in ("datetime", "anomaly", "changepoint")]
        series = {c: [float(r[c]) for r in rows] for c in sensors}
        labels = [float(r["anomaly"]) > 0 for r in rows] if "anomaly" in rows[0] else None
        out.append(Device(f"{path.parent.name}/{path.stem}", series, labels))
    return out


def bench_skab(name: str, devices: list[Device]) -> dict[str, Any]:
    labelled, free = Tally(), Tally()
    per_device = {}
    for dev in devices:
        n = len(next(iter(dev.series.values())))
        flags = [False] * n
        raises_at: list[int] = []
        tally = labelled if dev.labels is not None else free
        for values in dev.series.values():
            scores, seconds = run_scores(name, values)
            tally.values += n
            tally.seconds += seconds
            for i, s in enumerate(scores):
                if s >= THRESHOLD:
                    flags[i] = True
            raises_at += alarm_raises(scores, values)
        labels = dev.labels or [False] * n
        periods = runs(labels)
        tally.periods += len(periods)
        for lo, hi in periods:
            hit = next((i for i in range(lo, hi + 1) if flags[i]), None)
            if hit is not None:
                tally.detected += 1
                tally.delays.append(hit - lo)
        normal = n - sum(labels)
        fa = sum(1 for i in onsets(flags) if not labels[i])
        tally.normal += normal
        tally.fa_onsets += fa
        tally.raises_normal += sum(1 for i in raises_at if not labels[i])
        tally.device_hours += normal / 3600.0
        tally.nab_raw += nab_file_score(flags, periods)
        tally.nab_windows += len(periods)
        per_device[dev.name] = {"periods": len(periods), "fa_onsets": fa, "normal": normal}
    return {
        "labelled": labelled.summary(),
        "anomaly_free": free.summary(),
        "per_device": per_device,
    }


# -- simulator -----------------------------------------------------------------


def bench_simulator(name: str, steps: int) -> dict[str, Any]:
    from connectors.simulator.config import SimulatorSourceConfig
    from connectors.simulator.plant import PlantSimulator

    config = SimulatorSourceConfig(devices=4, metrics=13, start=T0, anomaly_rate=1e-3)
    switches: dict[str, list[int]] = defaultdict(list)
    for a in PlantSimulator(config).excursions(steps):
        if a.metric == "state.running":
            switches[a.device].append(a.start_step)
    # all values; after the first hour; after the first three (the memory settled)
    tally, learned, settled = Tally(), Tally(), Tally()
    for s in simulator_series(steps):
        _, device, _ = s.name.split("/")
        n = len(s.values)
        scores, seconds = run_scores(name, s.values)
        tally.values += n
        tally.seconds += seconds
        flags = [x >= THRESHOLD for x in scores]
        abnormal = [False] * n
        windows = []
        for kind, lo, hi in s.anomalies:
            end = hi + 3 if kind == "spike" else max(hi, lo + 99) + 20
            windows.append((lo, min(n - 1, end)))
            for i in range(lo, min(n, end + 1)):
                abnormal[i] = True
        near_switch = [False] * n
        for t in switches[device]:
            for i in range(max(0, t - 2), min(n, t + 31)):
                near_switch[i] = True
        raises_at = alarm_raises(scores, s.values)
        for tl, first in ((tally, 0), (learned, 3600), (settled, 10800)):
            for lo, hi in windows:
                if lo < first:
                    continue
                tl.periods += 1
                hit = next((i for i in range(lo, hi + 1) if flags[i]), None)
                if hit is not None:
                    tl.detected += 1
                    tl.delays.append(hit - lo)
            tl.normal += sum(1 for i in range(first, n) if not abnormal[i])
            tl.fa_onsets += sum(1 for i in onsets(flags) if i >= first and not abnormal[i])
            false = [i for i in raises_at if i >= first and not abnormal[i]]
            tl.raises_normal += len(false)
            tl.raises_startstop += sum(1 for i in false if near_switch[i])
            if first == 0:  # (the NAB score is for the whole run only)
                starts = [lo for lo, _ in windows]
                tl.nab_raw += nab_file_score(flags, nab_windows(n, starts))
                tl.nab_windows += len(starts)
    # Device-hours: each device's series share its hours (count them once per device).
    devices = len(switches) or 4
    tally.device_hours = devices * steps / 3600.0
    learned.device_hours = devices * max(0, steps - 3600) / 3600.0
    settled.device_hours = devices * max(0, steps - 10800) / 3600.0
    return {
        "all": tally.summary(),
        "after_first_hour": learned.summary(),
        "after_three_hours": settled.summary(),
    }


# -- synthetic -----------------------------------------------------------------


def nablike_series(kind: str, seed: int, n: int = 4000) -> tuple[list[float], list[int]]:
    """One NAB-like series of ``kind`` and the starts of its labelled anomalies."""
    rng = random.Random(f"nablike/{kind}/{seed}")
    t = range(n)
    anomalies: list[int] = []
    if kind == "clean_sine":
        period = rng.choice([60, 97, 144, 288])
        v = [10.0 + 5.0 * math.sin(2 * math.pi * i / period) for i in t]
    elif kind == "clean_square":  # an on/off cycle without noise: flat stretches, steps
        on, off = rng.choice([(30, 70), (50, 50), (120, 200)])
        v = [40.0 if i % (on + off) < on else 2.0 for i in t]
    elif kind == "machine_temp":  # a noisy daily shape
        period = 288
        v = [80.0 + 6.0 * math.sin(2 * math.pi * i / period) + rng.gauss(0, 0.8) for i in t]
    elif kind == "cpu":  # a mean-reverting random walk with bursts of noise
        x, v = 40.0, []
        for _ in t:
            x += 0.05 * (40.0 - x) + rng.gauss(0, 1.5)
            v.append(max(0.0, x))
    elif kind == "counts":  # bursty counts (tweets, requests)
        v = [float(sum(1 for _ in range(30) if rng.random() < 0.2)) for _ in t]
        for _ in range(8):  # normal bursts
            at = rng.randrange(n)
            for i in range(at, min(n, at + 3)):
                v[i] += rng.uniform(5, 12)
    else:
        raise ValueError(kind)
    count = seed % 3  # 0, 1 or 2 anomalies
    for k in range(count):
        start = int(n * (0.35 + 0.3 * k) + rng.randrange(0, int(0.2 * n)))
        anomalies.append(start)
        what = rng.choice(["spike", "shift", "stuck", "noise"])
        scale = statistics.pstdev(v[:start]) or 1.0
        if what == "spike":
            v[start] += rng.choice([-1, 1]) * 3.0 * scale + 5.0
        elif what == "shift":
            delta = rng.choice([-1, 1]) * 1.5 * scale + 1.0
            for i in range(start, n):
                v[i] += delta
        elif what == "stuck":
            for i in range(start, min(n, start + 150)):
                v[i] = v[start - 1]
        else:  # the signal turns noisy for a while
            for i in range(start, min(n, start + 100)):
                v[i] += rng.gauss(0, 0.5 * scale + 0.5)
    return v, anomalies


NABLIKE = ("clean_sine", "clean_square", "machine_temp", "cpu", "counts")
DAILY = ("jumpsup", "jumpsdown", "flatmiddle", "nojump", "spike_density", "normal")


def daily_series(kind: str, seed: int) -> tuple[list[float], list[int]]:
    """A day-shaped series like NAB's artificial ones (288 values a day, 14 days).

    Low at night, high by day with short ramps and small noise; on day 9 or
    10 one anomaly of ``kind``: the day's high level higher (``jumpsup``) or
    lower (``jumpsdown``), the signal flat for a day (``flatmiddle``), the
    day's rise missing (``nojump``), spikes ever more frequent
    (``spike_density``); ``normal`` has none.
    """
    rng = random.Random(f"daily/{kind}/{seed}")
    period, days = 288, 14
    low, high = rng.uniform(10, 30), rng.uniform(60, 90)
    noise = rng.uniform(0.5, 3.0)
    rise, fall = rng.randrange(60, 100), rng.randrange(180, 240)
    day = rng.choice([9, 10])
    start = day * period + rise
    v: list[float] = []
    for i in range(period * days):
        phase, d = i % period, i // period
        top = high
        if d == day and kind == "jumpsup":
            top = high + 0.6 * (high - low)
        elif d == day and kind == "jumpsdown":
            top = low + 0.6 * (high - low)
        elif d == day and kind == "nojump":
            top = low
        if phase < rise:
            x = low
        elif phase < rise + 6:
            x = low + (top - low) * (phase - rise) / 6
        elif phase < fall:
            x = top
        elif phase < fall + 6:
            x = top - (top - low) * (phase - fall) / 6
        else:
            x = low
        v.append(x + rng.gauss(0, noise))
    if kind == "flatmiddle":
        for i in range(start, start + period):
            v[i] = v[start - 1]
    elif kind == "spike_density":
        for i in range(start, len(v)):
            if rng.random() < 0.002 + 0.03 * (i - start) / (len(v) - start):
                v[i] += rng.uniform(0.5, 1.0) * (high - low)
    return v, ([] if kind == "normal" else [start])


def bench_synthetic(name: str, seeds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    total = Tally()
    clean_high: list[float] = []
    for kind in NABLIKE:
        tl = Tally()
        for seed in range(seeds):
            values, starts = nablike_series(kind, seed)
            scores, seconds = run_scores(name, values)
            flags = [s >= THRESHOLD for s in scores]
            windows = nab_windows(len(values), starts)
            for t in (tl, total):
                t.nab_raw += nab_file_score(flags, windows)
                t.nab_windows += len(windows)
                t.values += len(values)
                t.seconds += seconds
            if kind.startswith("clean") and not starts:
                skip = int(0.15 * len(values))
                clean_high.append(sum(s >= THRESHOLD for s in scores[skip:]) / (len(values) - skip))
        out[kind] = nab_normalised(tl.nab_raw, tl.nab_windows)
    for kind in DAILY:
        tl = Tally()
        for seed in range(max(1, seeds // 3)):
            values, starts = daily_series(kind, seed)
            scores, seconds = run_scores(name, values)
            flags = [s >= THRESHOLD for s in scores]
            windows = nab_windows(len(values), starts)
            for t in (tl, total):
                t.nab_raw += nab_file_score(flags, windows)
                t.nab_windows += len(windows)
                t.values += len(values)
                t.seconds += seconds
        out["daily_" + kind] = (
            nab_normalised(tl.nab_raw, tl.nab_windows) if tl.nab_windows else round(tl.nab_raw, 2)
        )
    out["all"] = nab_normalised(total.nab_raw, total.nab_windows)
    out["clean_periodic_flagged_pct"] = round(100 * statistics.mean(clean_high), 2)
    grid = Tally()
    for base in BASES:
        for kind in KINDS:
            for seed in range(max(1, seeds // 3)):
                s = make_series(base, kind, 4000, seed)
                scores, _ = run_scores(name, s.values)
                flags = [x >= THRESHOLD for x in scores]
                grid.nab_raw += nab_file_score(
                    flags, nab_windows(4000, [a[1] for a in s.anomalies])
                )
                grid.nab_windows += len(s.anomalies)
    out["eval_detector_grid"] = nab_normalised(grid.nab_raw, grid.nab_windows)
    return out


# -- main ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--parts", default="skab,simulator,synthetic")
    parser.add_argument("--sim-steps", type=int, default=30_000, help="8.3 device-hours")
    parser.add_argument("--seeds", type=int, default=9)
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    devices = skab_devices() if "skab" in parts and SKAB.exists() else []
    report: dict[str, Any] = {"threshold": THRESHOLD, "sim_steps": args.sim_steps, "detectors": {}}
    for name in args.detectors.split(","):
        result: dict[str, Any] = {}
        started = time.perf_counter()
        if devices:
            result["skab"] = bench_skab(name, devices)
        if "simulator" in parts:
            result["simulator"] = bench_simulator(name, args.sim_steps)
        if "synthetic" in parts:
            result["synthetic"] = bench_synthetic(name, args.seeds)
        report["detectors"][name] = result
        _print(name, result, time.perf_counter() - started)
    if parts == {"skab", "simulator", "synthetic"} and args.detectors == ",".join(DETECTORS):
        # (the report holds complete runs only)
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nreport: {REPORT}")


def _print(name: str, result: dict[str, Any], seconds: float) -> None:
    print(f"\n== {name} ({seconds:.0f} s)")
    cols = ("nab", "detected_pct", "delay_median", "fa_onsets_per_1k", "raises_per_device_hour")
    show: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if "skab" in result:
        show += [("skab", lambda: result["skab"]["labelled"])]
        show += [("skab free", lambda: result["skab"]["anomaly_free"])]
    if "simulator" in result:
        show += [("sim", lambda: result["simulator"]["all"])]
        show += [("sim >1h", lambda: result["simulator"]["after_first_hour"])]
        show += [("sim >3h", lambda: result["simulator"]["after_three_hours"])]
    print(f"{'':10}" + "".join(f"{c:>24}" for c in cols) + f"{'start/stop':>12}")
    for title, get in show:
        stats = get()
        print(
            f"{title:10}"
            + "".join(f"{stats[c]!s:>24}" for c in cols)
            + f"{stats['raises_at_start_stop']!s:>12}"
        )
    if "synthetic" in result:
        print("synthetic nab:", json.dumps(result["synthetic"]))


if __name__ == "__main__":
    main()
