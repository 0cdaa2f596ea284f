"""Alarm KPIs of an hour of the demo plant, with alarm management on and off.

    .venv/bin/python -m tests.bench.bench_alarm_kpis              # 1 h, ~1 min
    .venv/bin/python -m tests.bench.bench_alarm_kpis --hours 8

The demo's pipeline (``deploy/pipeline.demo.yaml``: 20 devices x 5 metrics
at 1 value/s each, with the simulator's machine starts and stops, overheats
and injected anomalies) runs in memory over ``--hours`` of simulated event
time, unpaced, three times: as configured (alarm management on:
suppression, chattering, floods, priorities); without flood detection (so
the raises a flood holds back are counted); and with every management
feature off (no suppression, no chatter handling, no floods, no dropping of
anomaly alarms that duplicate a threshold alarm), as before it existed.
From the alarm transitions of each run it computes the KPIs that
``GET /alarms/kpis`` serves (same definitions: raises exclude flood alarms;
the peak is the most raises in one aligned 10-minute bucket), plus raises by
kind and by cause: anomaly alarms within 2 minutes after a machine start or
stop (what operators saw as noise), floods, and the raises a flood held
back (passed on late, at its end or with their clear) against those
annunciated as they happened. EEMUA 191's benchmarks: about
1 alarm per 10 minutes per operator is acceptable; more than 10 in 10 minutes
is a flood. Figures are printed and written to
``tests/bench/reports/alarm_kpis.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bytewax.testing import TestingSink, run_main

from flows.alarm_flood import HELD
from flows.config import PipelineConfig, load_pipeline_config
from flows.ingest import build_flow
from schemas.models import Alarm

REPORT = Path(__file__).parent / "reports" / "alarm_kpis.json"
DEMO = Path(__file__).parents[2] / "deploy" / "pipeline.demo.yaml"
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)


def demo_config(
    hours: float, managed: bool, floods: bool = True, anomalies: bool = True
) -> PipelineConfig:
    """The demo pipeline on ``hours`` of unpaced simulated time, management on or off."""
    import os

    os.environ["STREAMFORGE_CONFIG"] = str(DEMO)
    config = load_pipeline_config()
    # Its simulator only (the demo also listens on MQTT), in this one process.
    sim = next(s for s in config.sources if s.type == "simulator")
    series = sim.devices * sim.metrics  # type: ignore[union-attr]
    steps = int(hours * 3600 / sim.interval_s)  # type: ignore[union-attr]
    unpaced = {
        "rate": 0.0,
        "start": T0,
        "limit": series * steps,
        "partitions": 1,
        "anomalies": anomalies,
    }
    sim = sim.model_copy(update=unpaced)
    update: dict[str, Any] = {"sources": [sim], "sinks": [], "topology": "combined"}
    if not floods or not managed:
        update["alarm_management"] = config.alarm_management.model_copy(
            update={"flood": config.alarm_management.flood.model_copy(update={"enabled": False})}
        )
    if not managed:
        off = {"while_stopped": False, "after_start": 0.0, "while_other_alarm": False}
        update["alarms"] = [
            r.model_copy(update={"suppression": r.suppression.model_copy(update=off),
                                 "chatter": None})
            for r in config.alarms
        ]  # fmt: skip
        update["anomaly"] = config.anomaly.model_copy(
            update={"suppression": config.anomaly.suppression.model_copy(update=off),
                    "chatter": None, "duplicate_window": 0.0}
        )  # fmt: skip
    return config.model_copy(update=update)


def held_so_far() -> float:
    """Raises the flood step has held back in this process so far (its counter)."""
    return sum(HELD.value(outcome=o) for o in ("released", "came_and_went"))


def run(config: PipelineConfig) -> tuple[list[Alarm], list[Any], float]:
    out: list[tuple[str, Any]] = []
    started = time.perf_counter()
    run_main(build_flow(config, sinks=[TestingSink(out)]))
    seconds = time.perf_counter() - started
    alarms = [record for kind, record in out if kind == "alarm"]
    events = [record for kind, record in out if kind == "event"]
    return alarms, events, seconds


def kpis(alarms: list[Alarm], events: list[Any], hours: float) -> dict[str, Any]:
    """The KPIs of ``GET /alarms/kpis`` over the run, and raises by kind and cause."""
    raises = [a for a in alarms if a.transition == "raised" and a.kind != "flood"]
    floods = [a for a in alarms if a.transition == "raised" and a.kind == "flood"]
    buckets = Counter(int(a.ts.timestamp() // 600) for a in raises)
    latest: dict[str, Alarm] = {}
    for a in alarms:
        latest[a.id] = a
    active = [a for a in latest.values() if a.state in ("raised", "acknowledged")]
    by_device_changes: dict[str, list[float]] = {}
    for e in events:
        if e.metric == "state.running" and e.previous is not None and e.previous != e.value:
            by_device_changes.setdefault(e.device, []).append(e.ts.timestamp())
    near_change = sum(
        1
        for a in raises
        if a.kind == "anomaly"
        and any(0 <= a.ts.timestamp() - t <= 120 for t in by_device_changes.get(a.device, []))
    )
    return {
        "raises": len(raises),
        "raises_per_hour": round(len(raises) / hours, 1),
        "raises_per_10_minutes_avg": round(len(raises) / (hours * 6), 2),
        "peak_per_10_minutes": max(buckets.values(), default=0),
        "ten_minute_buckets_over_10": sum(1 for n in buckets.values() if n > 10),
        "floods": len(floods),
        "flood_active_at_end": any(a.kind == "flood" for a in active),
        "flood_messages": [a.message for a in alarms if a.kind == "flood"],
        "chattering": sum(1 for a in raises if a.chattering),
        "active_at_end": len(active),
        "raises_by_kind": dict(Counter(a.kind for a in raises)),
        "raises_by_priority": dict(Counter(a.priority for a in raises)),
        "anomaly_raises_within_2_min_of_a_start_or_stop": near_change,
        "machine_starts_and_stops": sum(len(c) for c in by_device_changes.values()),
        "top_rules": Counter(a.rule for a in raises).most_common(10),
        "top_devices": Counter(a.device for a in raises).most_common(10),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument(
        "--no-anomalies",
        action="store_true",
        help="no injected anomalies: every anomaly alarm is a false one (report alarm_kpis_normal)",
    )
    args = parser.parse_args(argv)
    anomalies = not args.no_anomalies
    report_path = REPORT if anomalies else REPORT.with_name("alarm_kpis_normal.json")
    report: dict[str, Any] = {
        "benchmark": "alarm_kpis",
        "command": "python -m tests.bench.bench_alarm_kpis"
        + (f" --hours {args.hours:g}" if args.hours != 1.0 else "")
        + ("" if anomalies else " --no-anomalies"),
        "injected_anomalies": anomalies,
        "when": datetime.now(UTC).isoformat(),
        "config": "deploy/pipeline.demo.yaml (20 devices x 5 metrics, 1 value/s per series)",
        "hours": args.hours,
    }
    variants = (
        ("managed", True, True),
        ("managed_without_floods", True, False),
        ("unmanaged", False, False),
    )
    for name, managed, floods in variants:
        held_before = held_so_far()
        alarms, events, seconds = run(demo_config(args.hours, managed, floods, anomalies))
        report[name] = kpis(alarms, events, args.hours)
        held = int(held_so_far() - held_before)
        report[name]["raises_held_back_by_floods"] = held
        report[name]["raises_annunciated_live"] = report[name]["raises"] - held
        devices = 20  # the demo plant's
        anomaly_raises = report[name]["raises_by_kind"].get("anomaly", 0)
        report[name]["anomaly_raises_per_device_per_8_hours"] = round(
            anomaly_raises / devices / args.hours * 8, 2
        )
        report[name]["run_seconds"] = round(seconds, 1)
        k = report[name]
        print(
            f"{name:22s} raises {k['raises']:4d} (held back by a flood {held})"
            f" ({k['raises_per_10_minutes_avg']:.2f} per 10 min,"
            f" peak {k['peak_per_10_minutes']}), floods {k['floods']}, by kind"
            f" {k['raises_by_kind']}, anomaly raises near a start/stop"
            f" {k['anomaly_raises_within_2_min_of_a_start_or_stop']}"
            f" (of {k['machine_starts_and_stops']} starts and stops), chattering"
            f" {k['chattering']}, active at end {k['active_at_end']}"
        )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"report: {report_path}")
    return report


if __name__ == "__main__":
    main()
