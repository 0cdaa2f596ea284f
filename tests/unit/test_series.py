"""The series step outside Bytewax: buckets, idle flush scheduling and resume."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime, timedelta

from connectors.runtime.outputs import flatten_outputs
from flows.config import PipelineConfig
from flows.kernels.series import SeriesBucketLogic, bucket_of
from flows.series import series_processor
from schemas.models import Reading, Rollup

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _readings(n: int, start: int = 0, device: str = "pump-1") -> list[Reading]:
    return [
        Reading(device, "pressure", T0 + timedelta(seconds=i), 2.0 + i % 3)
        for i in range(start, start + n)
    ]


def test_buckets_are_stable_and_spread_series() -> None:
    keys = [f"default/dev-{i}/pressure" for i in range(1000)]
    buckets = [bucket_of(k, 64) for k in keys]
    assert buckets == [bucket_of(k, 64) for k in keys]  # no per-process hash seed
    assert len(set(buckets)) == 64


def test_one_bucket_keeps_each_series_apart() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    mixed = [
        r for pair in zip(_readings(30), _readings(30, device="pump-2"), strict=True) for r in pair
    ]
    logic.on_batch([mixed])
    out, _ = logic.on_eof()
    minutes = sorted(
        (r.device, r.count)
        for _, r in flatten_outputs(out)
        if isinstance(r, Rollup) and r.tier == "1m"
    )
    assert minutes == [("pump-1", 30), ("pump-2", 30)]


def test_quiet_series_is_flushed_after_idle_timeout() -> None:
    config = PipelineConfig()
    config.rollups.idle_timeout = 40.0
    logic = SeriesBucketLogic(series_processor(config), None)
    before = time.time()
    out, _ = logic.on_batch([_readings(30)])
    assert [kind for kind, _ in out] == ["telemetry"]  # one chunk per kind
    assert len(out[0][1]) == 30
    assert all(r.score is not None for r in out[0][1])  # each scored on its own record
    assert not [
        r for _, r in flatten_outputs(out) if isinstance(r, Rollup)
    ]  # the minute is still open
    wake = logic.notify_at()
    assert wake is not None
    assert before + 30 <= wake.timestamp() <= time.time() + 40
    early, _ = logic.on_notify()  # woken too early: the series spoke just now
    assert not [r for _, r in flatten_outputs(early) if isinstance(r, Rollup)]
    logic.last_seen["default/pump-1/pressure"] -= 40  # as if 40 s passed in silence
    flushed, _ = logic.on_notify()
    rollups = [r for _, r in flatten_outputs(flushed) if isinstance(r, Rollup)]
    assert {r.tier for r in rollups} == {"1m", "5m", "1h"}
    assert all(r.count == 30 for r in rollups)
    assert logic.notify_at() is None  # nothing open: no more wake-ups
    # The series speaks again at once (before the next quarter-timeout refresh):
    # its new window needs a wake-up all the same.
    logic.on_batch([_readings(5, start=600)])
    assert logic.notify_at() is not None


def test_resumed_bucket_continues_and_still_flushes() -> None:
    processor = series_processor(PipelineConfig())
    logic = SeriesBucketLogic(processor, None)
    logic.on_batch([_readings(20)])
    snapshot = pickle.loads(pickle.dumps(logic.snapshot()))
    resumed = SeriesBucketLogic(processor, snapshot)
    assert resumed.notify_at() is not None  # restored windows get flushed eventually
    resumed.on_batch([_readings(10, start=20)])
    flushed, _ = resumed.on_eof()
    minute = next(
        r for _, r in flatten_outputs(flushed) if isinstance(r, Rollup) and r.tier == "1m"
    )
    assert minute.count == 30 and minute.first_ts == T0


def test_scores_ride_on_readings_and_separate_records_are_opt_in() -> None:
    bad = Reading("pump-1", "pressure", T0 + timedelta(seconds=40), 9.0, quality="bad")
    readings = [*_readings(40), bad]
    inline = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    out, _ = inline.on_batch([readings])
    assert [kind for kind, _ in out] == ["telemetry"]
    scores = [r.score for r in out[0][1]]
    assert all(s is not None and 0.0 <= s <= 1.0 for s in scores[:40])
    assert scores[40] is None  # bad quality: stored, never scored

    config = PipelineConfig.model_validate({"anomaly": {"emit_scores": True}})
    separate = SeriesBucketLogic(series_processor(config), None)
    copies = [Reading(r.device, r.metric, r.ts, r.value, quality=r.quality) for r in readings]
    out, _ = separate.on_batch([copies])
    by_kind = dict(out)
    assert [s.score for s in by_kind["anomaly_score"]] == scores[:40]
    assert [r.score for r in by_kind["telemetry"]] == scores
    assert all(s.detector == "default" for s in by_kind["anomaly_score"])


def test_text_on_a_numeric_series_is_a_dead_letter_not_telemetry() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    at = T0 + timedelta(seconds=60)
    conflicts = [
        Reading("pump-1", "pressure", at, "high-127"),
        Reading("pump-1", "pressure", at + timedelta(seconds=1), True),
        Reading("pump-1", "pressure", at + timedelta(seconds=2), 4.5),
    ]
    out, _ = logic.on_batch([[*_readings(3), *conflicts]])
    pairs = flatten_outputs(out)
    telemetry = [r.value for k, r in pairs if k == "telemetry"]
    dead = [r for k, r in pairs if k == "dead_letter"]
    assert telemetry == [2.0, 3.0, 4.0, 4.5]  # the numbers only, the series goes on
    assert [d.step for d in dead] == ["series", "series"]
    assert "'high-127' (str) on numeric series 'pressure'" in dead[0].reason
    assert "True (bool)" in dead[1].reason
    assert dead[0].origin == "default/pump-1/pressure" and dead[0].received_at == at


def test_a_series_a_rule_makes_an_event_series_takes_text() -> None:
    config = PipelineConfig(classification=[{"metric": "mode", "kind": "event"}])
    logic = SeriesBucketLogic(series_processor(config), None)
    out, _ = logic.on_batch(
        [[Reading("pump-1", "mode", T0, 1), Reading("pump-1", "mode", T0 + timedelta(1), "AUTO")]]
    )
    kinds = [k for k, _ in flatten_outputs(out)]
    assert "dead_letter" not in kinds and "event" in kinds


def test_a_number_on_a_text_series_is_a_dead_letter() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    door = [
        Reading("pump-1", "door", T0, "open"),
        Reading("pump-1", "door", T0 + timedelta(seconds=1), 3),
        Reading("pump-1", "door", T0 + timedelta(seconds=2), "closed"),
        Reading("pump-1", "door", T0 + timedelta(seconds=3), 0.5),
    ]
    out, _ = logic.on_batch([door])
    pairs = flatten_outputs(out)
    events = [e.value for k, e in pairs if k == "event"]
    dead = [d for k, d in pairs if k == "dead_letter"]
    assert events == ["open", "closed"]  # the text goes on as events
    assert len(dead) == 2 and all(d.step == "series" for d in dead)
    assert "3 (int) on text series 'door'" in dead[0].reason
    assert "0.5 (float)" in dead[1].reason


def test_a_bool_series_takes_bools_and_text() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    values: list[bool | str] = [True, False, "fault", True]
    readings = [
        Reading("pump-1", "running", T0 + timedelta(seconds=i), v) for i, v in enumerate(values)
    ]
    out, _ = logic.on_batch([readings])
    assert "dead_letter" not in [k for k, _ in flatten_outputs(out)]


def test_a_redelivered_reading_counts_once() -> None:
    """A broker resending what it had sent (same instant, same value) moves nothing twice."""
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    first = _readings(10)
    again = [Reading(r.device, r.metric, r.ts, r.value) for r in first[4:]]  # as redelivered
    out, _ = logic.on_batch([[*first, *again, *_readings(5, start=10)]])
    pairs = flatten_outputs(out)
    assert [r.ts for k, r in pairs if k == "telemetry"] == [r.ts for r in _readings(15)]
    assert "dead_letter" not in [k for k, _ in pairs]
    flushed, _ = logic.on_eof()
    one_minute = [r for k, r in flatten_outputs(flushed) if k == "rollup" and r.tier == "1m"]
    assert [r.count for r in one_minute] == [15]


def test_another_value_for_a_seen_instant_is_a_dead_letter() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    first = _readings(3)
    contradiction = Reading("pump-1", "pressure", first[1].ts, 99.0)
    out, _ = logic.on_batch([[*first, contradiction]])
    pairs = flatten_outputs(out)
    assert [r.value for k, r in pairs if k == "telemetry"] == [2.0, 3.0, 4.0]
    (dead,) = [d for k, d in pairs if k == "dead_letter"]
    assert "already has another value" in dead.reason and dead.step == "series"


def test_a_late_reading_never_seen_is_not_a_duplicate() -> None:
    """Out of order is not the same as repeated: an older instant not yet seen is processed."""
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    readings = _readings(6)
    out, _ = logic.on_batch([[*readings[:2], *readings[3:], readings[2]]])
    telemetry = [r.ts for k, r in flatten_outputs(out) if k == "telemetry"]
    assert sorted(telemetry) == [r.ts for r in readings]


def test_duplicates_are_recognised_after_a_restore() -> None:
    logic = SeriesBucketLogic(series_processor(PipelineConfig()), None)
    logic.on_batch([_readings(5)])
    restored = SeriesBucketLogic(series_processor(PipelineConfig()), pickle.loads(
        pickle.dumps(logic.snapshot())))  # fmt: skip
    out, _ = restored.on_batch([_readings(3, start=3)])
    assert [r.ts for k, r in flatten_outputs(out) if k == "telemetry"] == [_readings(1, 5)[0].ts]
