"""The whole ingest dataflow, driven by bytewax.testing (no servers)."""

from __future__ import annotations

import collections
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from connectors.simulator.config import SimulatorSourceConfig
from connectors.stdout.sink import StdoutSink
from flows.config import PipelineConfig
from flows.ingest import build_flow
from schemas.config import ThresholdAlarmRule
from schemas.models import Alarm, DeadLetter, RawMessage, Reading

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _run(config: PipelineConfig, items: list[Any] | None = None) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    sources = None if items is None else [TestingSource(items)]
    run_main(build_flow(config, sources=sources, sinks=[TestingSink(out)]))
    return out


def test_default_pipeline_on_the_simulator_produces_every_kind() -> None:
    sim = SimulatorSourceConfig(rate=0, start=T0, limit=20_000, devices=10)
    out = _run(PipelineConfig(sources=[sim]))
    kinds = collections.Counter(kind for kind, _ in out)
    # 10 devices x 5 metrics; state.running is an event series, the rest telemetry.
    assert kinds["telemetry"] == 16_000
    assert kinds["anomaly_score"] == 0  # the scores ride on the telemetry records
    assert all(r.score is not None for k, r in out if k == "telemetry" and r.quality != "bad")
    assert kinds["event"] > 0
    assert kinds["rollup"] > 0
    threshold_alarms = [r for k, r in out if k == "alarm" and r.rule == "high_temperature"]
    assert any(a.transition == "raised" for a in threshold_alarms)
    # End of input flushes every open window: the last minute of each series is there.
    last_minute = max(r.window_start for k, r in out if k == "rollup" and r.tier == "1m")
    steps = 20_000 // 50
    assert last_minute == T0 + timedelta(seconds=(steps - 1) // 60 * 60)


def test_raw_payloads_become_readings_or_dead_letters_and_the_flow_keeps_running() -> None:
    now = datetime.now(UTC)
    good = json.dumps([{"device": "d1", "metric": "m", "value": 1.5}]).encode()
    items = [
        RawMessage(good, "mqtt", now, origin="plant/d1"),
        RawMessage(b"{not json", "mqtt", now, origin="plant/d2"),
        RawMessage(b"\xff\xfe", "mqtt", now, origin="plant/d3"),
        RawMessage(b"42", "mqtt", now, origin="plant/d4", defaults={"device": "d4", "metric": "t"}),
    ]
    out = _run(PipelineConfig(), items)
    telemetry = [r for k, r in out if k == "telemetry"]
    dead = [r for k, r in out if k == "dead_letter"]
    assert sorted((r.device, r.value) for r in telemetry) == [("d1", 1.5), ("d4", 42)]
    assert all(r.source == "mqtt" for r in telemetry)
    assert sorted(d.origin for d in dead if isinstance(d, DeadLetter)) == ["plant/d2", "plant/d3"]
    assert all(d.reason for d in dead)


def _temperature(i: int, value: float) -> Reading:
    return Reading("oven-1", "temperature", T0 + timedelta(seconds=i), value, source="modbus")


def test_alarm_state_survives_a_crash_and_resume(tmp_path: Path) -> None:
    rule = ThresholdAlarmRule(
        name="hot", metric="temperature", levels={"warning": 80, "critical": 95}, clear_at=75
    )
    config = PipelineConfig(alarms=[rule], sinks=[{"type": "null"}])  # type: ignore[list-item]
    config.anomaly.enabled = False
    values = [70, 85, 86, 97, 98, 90, 88, 78, 76, 70, 69]
    items: list[Any] = [_temperature(i, v) for i, v in enumerate(values)]
    items.insert(5, TestingSource.ABORT())  # crash after escalation to critical

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    out: list[tuple[str, Any]] = []
    flow = build_flow(config, sources=[TestingSource(items)], sinks=[TestingSink(out)])
    try:
        run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)
    except Exception as exc:  # the abort
        assert "abort" in repr(exc).lower()
    before_crash = len(out)
    assert before_crash > 0
    run_main(flow, epoch_interval=timedelta(0), recovery_config=recovery)

    alarms = [r for k, r in out if k == "alarm" and isinstance(r, Alarm)]
    transitions = {(a.id, a.seq): a.transition for a in alarms}  # sinks upsert on (id, seq)
    assert sorted(transitions.values()) == sorted(["raised", "escalated", "deescalated", "cleared"])
    assert len({a.id for a in alarms}) == 1  # one alarm, not a second raise after resume
    assert sorted(seq for _, seq in transitions) == [1, 2, 3, 4]
    cleared = next(a for a in alarms if a.transition == "cleared")
    assert cleared.ts == T0 + timedelta(seconds=9)  # 70 < clear_at 75; 76 kept it active


def test_stdout_sink_highlights_alarms_and_events(capsys: Any) -> None:
    rule = ThresholdAlarmRule(name="hot", metric="temperature", levels={"warning": 80})
    config = PipelineConfig(alarms=[rule])
    items = [_temperature(0, 70), _temperature(1, 85)]
    items.append(Reading("oven-1", "state.running", T0, True))
    run_main(build_flow(config, sources=[TestingSource(items)], sinks=[StdoutSink("text")]))
    printed = capsys.readouterr().out
    assert "*** ALARM RAISED *** [warning] default/oven-1 rule=hot" in printed
    assert ">>> EVENT default/oven-1 state.running: None -> True" in printed
    assert "temperature=70" in printed


def test_flow_processes_collect_garbage_less_often() -> None:
    import gc

    from flows.ingest import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.set_threshold(*before)


def test_kafka_sinks_are_attached_before_the_others() -> None:
    # A worker runs its outputs in the order they were attached: Kafka first,
    # so alarms do not wait for a batch's database rows. Step ids keep the
    # config's numbering (recovery state is stored under them).
    config = PipelineConfig.model_validate(
        {"sinks": [{"type": "null"}, {"type": "stdout"}, {"type": "kafka"}]}
    )
    steps = [s.step_id.split(".", 1)[1] for s in build_flow(config).substeps]
    sinks = [s for s in steps if s.startswith("sink_")]
    assert sinks == ["sink_2_kafka", "sink_0_null", "sink_1_stdout"]
