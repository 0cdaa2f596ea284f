"""Benchmark: decoding, classification, event detection and alarm tracking per reading.

    .venv/bin/python -m tests.bench.bench_decode_alarms          # ~30 s

Each figure is the best of 7 timed repeats of this process's CPU time
(``time.process_time``: other processes on a shared machine do not count),
in µs per reading or per message. Compared with
pydantic's own ``validate_json`` of the same payload into ``list[Reading]``
(the floor the decoder builds on). Also reports the pickled size of each
per-series state object (what a Bytewax snapshot stores per key).

Prints the figures and writes ``tests/bench/reports/decode_alarms.json``.
"""

from __future__ import annotations

import json
import pickle
import platform
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flows.alarms import AnomalyAlarmTracker, DeviceAlarmTracker, ThresholdAlarmTracker
from flows.classify import Classifier
from flows.config import PipelineConfig
from flows.decode import decode_many, decode_payload
from flows.events import EventDetector
from schemas.config import AnomalyConfig, DecodeConfig, ThresholdAlarmRule
from schemas.models import RawMessage, Reading, adapter

REPORT = Path(__file__).parent / "reports" / "decode_alarms.json"
N = 1000  # readings per batch / message list


def best_us(fn: Callable[[], Any], per: int, number: int) -> float:
    """Best-of-7 time of ``fn`` in µs, divided by ``per`` items."""
    timings = timeit.repeat(fn, number=number, repeat=7, timer=time.process_time)
    return min(timings) / number / per * 1e6


def bench_decode() -> dict[str, float]:
    config = DecodeConfig()
    now = datetime.now(UTC)
    items = [
        {
            "device": f"d{i % 10}",
            "metric": "temperature",
            "value": 70.0 + i % 7,
            "ts": (now - timedelta(seconds=N - i)).isoformat(),
        }
        for i in range(N)
    ]
    array = json.dumps(items).encode()
    no_ts = json.dumps(
        [{"metric": "temperature", "value": 70.0 + i % 7} for i in range(N)]
    ).encode()
    bad = list(items)
    bad[N // 2] = {"device": "x", "metric": "m", "value": None}
    bad_array = json.dumps(bad).encode()
    single = json.dumps(items[0]).encode()

    def raw(payload: bytes, **kw: Any) -> RawMessage:
        return RawMessage(payload=payload, source="mqtt", received_at=now, **kw)

    array_raw, no_ts_raw = raw(array), raw(no_ts, defaults={"device": "press-1"})
    bad_raw = raw(bad_array)
    singles = [raw(single, defaults={"device": "press-1"}) for _ in range(N)]
    number = [raw(b"71.5", defaults={"device": "d", "metric": "m"}) for _ in range(N)]
    floor = adapter(list[Reading])
    return {
        "floor_pydantic_list_reading_validate_json_us_per_item": best_us(
            lambda: floor.validate_json(array), N, 20
        ),
        "array_with_iso_ts_us_per_item": best_us(
            lambda: decode_payload(array_raw, config, now), N, 20
        ),
        "array_without_ts_us_per_item": best_us(
            lambda: decode_payload(no_ts_raw, config, now), N, 20
        ),
        "array_with_one_bad_item_us_per_item": best_us(
            lambda: decode_payload(bad_raw, config, now), N, 10
        ),
        "single_object_messages_decode_many_us_per_message": best_us(
            lambda: decode_many(singles, config, now), N, 10
        ),
        "bare_number_messages_decode_many_us_per_message": best_us(
            lambda: decode_many(number, config, now), N, 10
        ),
    }


def bench_per_reading() -> dict[str, float]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    readings = [
        Reading(
            device="press-1",
            metric="temperature",
            ts=t0 + timedelta(seconds=i),
            value=60.0 + i % 10,
        )
        for i in range(N)
    ]
    states = [
        Reading(device="press-1", metric="state.mode", ts=t0 + timedelta(seconds=i), value="RUN")
        for i in range(N)
    ]
    classifier = Classifier(PipelineConfig().classification)
    rule = ThresholdAlarmRule(
        name="hot",
        metric="temperature",
        levels={"warning": 80, "critical": 95},
        clear_at=75,
        min_duration=3,
    )
    quiet = ThresholdAlarmTracker(rule, "default", "press-1", "temperature")
    hot = ThresholdAlarmTracker(rule, "default", "press-1", "temperature")
    hot_readings = [
        Reading(
            device="press-1", metric="temperature", ts=t0 + timedelta(seconds=i), value=85.0 + i % 5
        )
        for i in range(N)
    ]
    for r in hot_readings[:10]:
        hot.update(r)
    assert hot.active
    detector = EventDetector()
    anomaly = AnomalyAlarmTracker(AnomalyConfig(), "default", "press-1", "temperature")

    def classify() -> None:
        for r in readings:
            classifier.kind_of(r.device, r.metric, r.value)

    def resolve() -> None:
        for r in readings:
            classifier.resolve(r.device, r.metric)

    def events() -> None:
        for r in states:
            detector.update(r)

    def threshold_quiet() -> None:
        for r in readings:
            quiet.update(r)

    def threshold_active() -> None:
        for r in hot_readings:
            hot.update(r)

    def anomaly_quiet() -> None:
        for r in readings:
            anomaly.update(r.ts, 1.0, 0.1)

    def loop_only() -> None:
        for _r in readings:
            pass

    return {
        "loop_overhead_us_per_reading": best_us(loop_only, N, 200),
        "classifier_kind_of_us_per_reading": best_us(classify, N, 200),
        "classifier_resolve_cached_us_per_reading": best_us(resolve, N, 200),
        "event_detector_no_change_us_per_reading": best_us(events, N, 200),
        "threshold_tracker_no_alarm_us_per_reading": best_us(threshold_quiet, N, 200),
        "threshold_tracker_active_no_change_us_per_reading": best_us(threshold_active, N, 200),
        "anomaly_tracker_low_score_us_per_reading": best_us(anomaly_quiet, N, 200),
    }


def pickle_sizes() -> dict[str, int]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rule = PipelineConfig().alarms[0]
    threshold = ThresholdAlarmTracker(rule, "default", "press-1", "temperature")
    idle = len(pickle.dumps(threshold))
    for i in range(5):
        threshold.update(
            Reading(
                device="press-1", metric="temperature", ts=t0 + timedelta(seconds=i), value=90.0
            )
        )
    device = DeviceAlarmTracker("default", "press-1", "alarm.fault")
    detector = EventDetector()
    detector.update(Reading(device="press-1", metric="state.mode", ts=t0, value="RUN"))
    return {
        "threshold_tracker_idle_bytes": idle,
        "threshold_tracker_active_bytes": len(pickle.dumps(threshold)),
        "anomaly_tracker_bytes": len(
            pickle.dumps(AnomalyAlarmTracker(AnomalyConfig(), "default", "press-1", "t"))
        ),
        "device_tracker_bytes": len(pickle.dumps(device)),
        "event_detector_bytes": len(pickle.dumps(detector)),
    }


def main() -> None:
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "decode": bench_decode(),
        "per_reading": bench_per_reading(),
        "pickle_sizes": pickle_sizes(),
    }
    for section in ("decode", "per_reading", "pickle_sizes"):
        print(f"[{section}]")
        for name, value in results[section].items():
            print(
                f"  {name:55s} {value:10.3f}"
                if isinstance(value, float)
                else f"  {name:55s} {value:10d}"
            )
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
