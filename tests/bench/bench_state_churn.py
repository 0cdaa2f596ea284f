"""Series state over a day of device churn: with a state lifetime, with the registry, with neither.

    .venv/bin/python -m tests.bench.bench_state_churn          # ~1 min

A plant of 200 devices x 5 metrics, one value per series per minute of
event time, in which every hour 20 devices are decommissioned (they stop
sending) and 20 new ones appear: 24 hours of event time through the series
step (``SeriesBucketLogic`` of the default pipeline, 8 buckets by device),
once with ``series_ttl: 6h``, once with ``0`` (never expire), and once with
``6h`` and the device registry, in which the leaving devices are
decommissioned (as ``POST /devices/{device}/decommission`` does). Every hour
it records the series held and the size of the pickled snapshots (what
Bytewax writes to the recovery store each epoch). The expiry check, once a
minute of wall clock in a flow, is run at every simulated hour here (the
bench covers a day in seconds). Figures are printed and written to
``tests/bench/reports/state_churn.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.config import PipelineConfig
from flows.kernels.series import SeriesBucketLogic, bucket_of
from flows.series import series_processor
from schemas.devices import DeviceInfo, DeviceRegistry
from schemas.models import Reading

REPORT = Path(__file__).parent / "reports" / "state_churn.json"
T0 = datetime(2026, 1, 5, tzinfo=UTC)
METRICS = ("temperature", "pressure", "vibration", "power", "flow")
BUCKETS = 8


def run(
    ttl: float, hours: int, devices: int, churn: int, with_registry: bool = False
) -> list[dict[str, Any]]:
    """The hourly series count and snapshot size of one run."""
    config = PipelineConfig(series_ttl=ttl, alarms=[])
    registry = DeviceRegistry() if with_registry else None
    processor = series_processor(config, registry)
    logics = {str(b): SeriesBucketLogic(processor, None) for b in range(BUCKETS)}
    first, live = 0, devices  # live devices: ids first .. first + devices - 1
    if registry is not None:
        registry.replace([DeviceInfo("default", f"dev-{d:05d}") for d in range(devices)], {})
    rows = []
    for hour in range(hours):
        for minute in range(60):
            ts = T0 + timedelta(hours=hour, minutes=minute)
            chunks: dict[str, list[Reading]] = {}
            for d in range(first, first + live):
                device = f"dev-{d:05d}"
                bucket = bucket_of(f"default/{device}", BUCKETS)
                chunk = chunks.setdefault(bucket, [])
                for i, metric in enumerate(METRICS):
                    value = 20.0 + i + (d % 7) * 0.1 + (minute % 5) * 0.01
                    chunk.append(Reading(device=device, metric=metric, ts=ts, value=value))
            for bucket, chunk in chunks.items():
                logic = logics[bucket]
                if minute == 0:
                    logic._expire_at = 0.0  # the minute's expiry check (see the docstring)
                logic.on_batch([chunk])
        snapshot = sum(len(pickle.dumps(logic.snapshot())) for logic in logics.values())
        held = sum(len(logic.series) for logic in logics.values())
        rows.append({"hour": hour + 1, "series": held, "snapshot_bytes": snapshot})
        if registry is not None:
            registry.update(
                [
                    *(DeviceInfo("default", f"dev-{d:05d}", status="decommissioned", revision=2)
                      for d in range(first, first + churn)),
                    *(DeviceInfo("default", f"dev-{d:05d}")
                      for d in range(first + live, first + live + churn)),
                ],
                {},
            )  # fmt: skip
        first += churn  # the oldest `churn` devices are decommissioned, as many new ones come
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--churn", type=int, default=20, help="devices replaced per hour")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "benchmark": "state_churn",
        "command": "python -m tests.bench.bench_state_churn",
        "when": datetime.now(UTC).isoformat(),
        "devices": args.devices,
        "metrics_per_device": len(METRICS),
        "churn_per_hour": args.churn,
        "hours": args.hours,
        "buckets": BUCKETS,
    }
    runs = (("ttl_6h", 6 * 3600.0, False), ("no_ttl", 0.0, False),
            ("registry", 6 * 3600.0, True))  # fmt: skip
    for name, ttl, with_registry in runs:
        started = time.perf_counter()
        rows = run(ttl, args.hours, args.devices, args.churn, with_registry)
        report[name] = {"hourly": rows, "run_seconds": round(time.perf_counter() - started, 1)}
        last = rows[-1]
        print(
            f"{name:8s} after {args.hours} h: {last['series']:6d} series,"
            f" snapshots {last['snapshot_bytes'] / 1e6:.2f} MB"
            f" (after 6 h: {rows[min(5, len(rows) - 1)]['snapshot_bytes'] / 1e6:.2f} MB)"
        )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {REPORT}")
    return report


if __name__ == "__main__":
    main()
