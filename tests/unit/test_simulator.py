"""The plant simulator: determinism, partitions, resume, limits, anomalies, ground truth."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, run_main

from connectors.simulator.config import SimulatorSourceConfig
from connectors.simulator.model import metric_spec
from connectors.simulator.source import (
    BATCH_READINGS,
    CATALOGUE,
    PlantSimulator,
    SimulatorPartition,
    SimulatorSource,
    partition_devices,
    partition_quota,
)
from schemas.models import Reading, is_number

START = datetime(2026, 1, 1, tzinfo=UTC)


def replay(**fields) -> SimulatorSourceConfig:
    return SimulatorSourceConfig(start=START, rate=0, **fields)


def key(r: Reading) -> tuple:
    return (r.ts, r.device, r.metric)


def by_series(readings: list[Reading]) -> dict[tuple[str, str], list[Reading]]:
    series: dict[tuple[str, str], list[Reading]] = {}
    for r in readings:
        series.setdefault((r.device, r.metric), []).append(r)
    return series


def numbers(readings: list[Reading]) -> list[float]:
    return [float(r.value) for r in readings]


def drain(partition: SimulatorPartition, batches: int | None = None) -> list[Reading]:
    out: list[Reading] = []
    n = 0
    while batches is None or n < batches:
        try:
            out += partition.next_batch()
        except StopIteration:
            break
        n += 1
    return out


# ---------------------------------------------------------------- determinism


def test_same_seed_and_config_give_the_same_stream() -> None:
    config = replay(devices=4, metrics=16, seed=7)
    first = list(PlantSimulator(config).readings(20_000))
    second = list(PlantSimulator(config).readings(20_000))
    assert first == second
    other = list(PlantSimulator(config.model_copy(update={"seed": 8})).readings(20_000))
    assert [r.value for r in other] != [r.value for r in first]


def test_any_batching_and_any_step_give_the_same_readings() -> None:
    plant = PlantSimulator(replay(devices=3, metrics=20, anomaly_rate=1e-3))
    whole = list(plant.readings(plant.width * 1100))  # across an anomaly block boundary
    rng = random.Random(3)
    pieces: list[Reading] = []
    pos = 0
    while pos < len(whole):
        size = rng.randint(1, 1500)
        pieces += plant.readings_range(pos, min(pos + size, len(whole)))
        pos += size
    assert pieces == whole
    for step in (0, 63, 64, 999, 1000, 1099):
        assert plant.step_readings(step) == whole[step * plant.width : (step + 1) * plant.width]


def test_a_step_holds_every_series_device_major_with_typed_values() -> None:
    plant = PlantSimulator(replay(devices=2, metrics=17))
    specs = plant.series()
    step = plant.step_readings(5)
    assert [(r.device, r.metric, r.unit) for r in step] == [
        (s.device, s.metric, s.unit) for s in specs
    ]
    assert [s.metric for s in specs[:5]] == [
        "temperature",
        "pressure",
        "vibration",
        "power",
        "state.running",
    ]
    assert specs[16].metric == "temperature_2" and specs[17].device == "dev-001"
    kinds = {s.metric: s.kind for s in specs}
    assert kinds["state.running"] == "event" and kinds["alarm.overheat"] == "alarm"
    assert kinds["log.message"] == "log" and kinds["temperature"] == "telemetry"
    for r, s in zip(step, specs, strict=True):
        assert r.source == "simulator" and r.tenant == "default" and r.quality == "good"
        if s.value_type == "float":
            assert is_number(r.value)
        else:
            assert type(r.value).__name__ == s.value_type


# ---------------------------------------------------------------- timestamps


def test_replayed_timestamps_are_exact() -> None:
    plant = PlantSimulator(replay(devices=2, metrics=3, interval_s=0.25))
    readings = list(plant.readings(6 * 4000))
    for i, r in enumerate(readings):
        assert r.ts == START + timedelta(microseconds=250_000 * (i // 6))
    assert plant.timestamp(4000) == START + timedelta(seconds=1000)


def test_live_timestamps_follow_the_clock_and_never_repeat() -> None:
    before = datetime.now(UTC)
    readings = list(PlantSimulator(SimulatorSourceConfig(devices=2, metrics=2)).readings(400))
    after = datetime.now(UTC)
    stamps = [r.ts for r in readings[::4]]
    assert all(before <= ts <= after + timedelta(seconds=1) for ts in stamps)
    assert all(a < b for a, b in itertools.pairwise(stamps))


# ---------------------------------------------------------------- behaviour


def test_default_plant_overheats_now_and_then_and_only_in_excursions() -> None:
    config = replay(anomalies=False)  # the default plant: 10 devices x 5 metrics
    plant = PlantSimulator(config)
    steps = 3600  # one hour at one reading per series per second
    readings = list(plant.readings(plant.width * steps))
    temps = {d: numbers(rs) for (d, m), rs in by_series(readings).items() if m == "temperature"}
    breaches = critical = 0
    for values in temps.values():
        run = 0
        for v in values:
            run = run + 1 if v >= 80 else 0
            breaches += run == 3  # held for 3 s: the default rule's min_duration
        critical += any(v >= 95 for v in values)
    assert 10 <= breaches <= 90  # a high_temperature alarm every minute or two
    assert critical >= 1
    overheating: set[tuple[str, int]] = set()
    for e in plant.excursions(steps):
        if e.kind == "overheat":
            overheating.update((e.device, k) for k in range(e.start_step, e.end_step + 1))
    for device, values in temps.items():
        for k, v in enumerate(values):
            if (device, k) not in overheating:
                assert v < 75, (device, k, v)  # below the rule's clear_at outside episodes


def test_machines_start_and_stop_every_few_minutes_as_excursions_say() -> None:
    plant = PlantSimulator(replay(devices=6, metrics=5, anomalies=False))
    steps = 3600
    readings = list(plant.readings(plant.width * steps))
    series = by_series(readings)
    changes = set()
    for (device, metric), rs in series.items():
        if metric == "state.running":
            changes |= {
                (device, k, "start" if rs[k].value else "stop")
                for k in range(1, steps)
                if rs[k].value != rs[k - 1].value
            }
    switches = {
        (e.device, e.start_step, e.kind)
        for e in plant.excursions(steps)
        if e.kind in ("start", "stop")
    }
    assert changes == switches
    assert 6 * 2 <= len(changes) <= 6 * 20  # every few minutes per machine over an hour
    power = {d: numbers(rs) for (d, m), rs in series.items() if m == "power"}
    running = {d: [r.value for r in rs] for (d, m), rs in series.items() if m == "state.running"}
    for device, values in power.items():
        for v, on in zip(values, running[device], strict=True):
            assert (v > 40) if on else (v < 1)


# ---------------------------------------------------------------- anomalies


@pytest.fixture(scope="module")
def anomalous() -> tuple[PlantSimulator, list[Reading], list[Reading]]:
    config = replay(devices=3, metrics=14, anomaly_rate=1e-3)
    plant = PlantSimulator(config)
    n = plant.width * 3000
    clean = PlantSimulator(config.model_copy(update={"anomalies": False}))
    return plant, list(plant.readings(n)), list(clean.readings(n))


def test_ground_truth_has_every_kind_and_matches_the_changed_values(anomalous) -> None:
    plant, readings, clean = anomalous
    truth = plant.ground_truth(3000)
    assert set(Counter(a.kind for a in truth)) == {"spike", "level_shift", "drift", "stuck"}
    windows: set[tuple] = set()
    for a in truth:
        assert a.start == plant.timestamp(a.start_step) and a.end == plant.timestamp(a.end_step)
        windows.update(
            (plant.timestamp(k), a.device, a.metric) for k in range(a.start_step, a.end_step + 1)
        )
    changed = {key(r) for r, c in zip(readings, clean, strict=True) if r.value != c.value}
    assert changed <= windows  # nothing changes outside the ground truth
    assert len(changed) > 0.8 * len(windows)


def test_stuck_sensors_repeat_one_value_and_spikes_stand_far_out(anomalous) -> None:
    plant, readings, clean = anomalous
    values = {key(r): r.value for r in readings}
    normal = {key(r): r.value for r in clean}
    for a in plant.ground_truth(3000):
        stamps = [plant.timestamp(k) for k in range(a.start_step, a.end_step + 1)]
        got = [values[(ts, a.device, a.metric)] for ts in stamps]
        base = [normal[(ts, a.device, a.metric)] for ts in stamps]
        scale = next(s.scale for s in CATALOGUE if a.metric.startswith(s.name))
        if a.kind == "stuck":
            assert len(got) >= 2 and len(set(got)) == 1 and got[0] == base[0]
        elif a.kind == "spike":
            assert len(got) == 1 and abs(got[0] - base[0]) >= 6 * scale - 1e-3
        elif a.kind == "level_shift":
            assert all(abs((g - b) - a.magnitude) < 2e-3 for g, b in zip(got, base, strict=True))
            assert abs(a.magnitude) >= 3 * scale
        else:  # drift: a ramp that reaches the magnitude on its last step
            offsets = [g - b for g, b in zip(got, base, strict=True)]
            assert abs(offsets[-1] - a.magnitude) < 2e-3
            assert abs(offsets[len(offsets) // 2]) < abs(offsets[-1])


def test_anomalies_are_rare_at_the_default_rate() -> None:
    plant = PlantSimulator(replay(devices=10, metrics=5))
    numeric_series = 10 * 4
    count = len(plant.ground_truth(20_000))
    expected = numeric_series * 20_000 * 3e-4  # 240
    assert 0.6 * expected < count < 1.4 * expected


# ---------------------------------------------------------------- Bytewax source


def test_partitions_split_the_devices_exactly_once() -> None:
    config = replay(devices=11, metrics=5, partitions=4)
    owned = [partition_devices(config, i) for i in range(4)]
    assert sorted(d for devices in owned for d in devices) == list(range(11))
    assert owned[1] == [1, 5, 9]
    whole = list(PlantSimulator(config).readings(config.devices * 5 * 300))
    parts = [
        r
        for devices in owned
        for r in PlantSimulator(config, devices).readings(len(devices) * 5 * 300)
    ]
    assert sorted(parts, key=key) == sorted(whole, key=key)


@pytest.mark.parametrize(
    ("partitions", "limit"), [(1, 1001), (3, 1001), (4, 37), (3, 0), (2, 5 * 7 * 40), (9, 123)]
)
def test_the_flow_emits_exactly_the_first_limit_readings(partitions: int, limit: int) -> None:
    config = replay(devices=7, metrics=5, partitions=partitions, limit=limit)
    quotas = [partition_quota(config, partition_devices(config, i)) for i in range(partitions)]
    assert sum(q or 0 for q in quotas) == limit
    out: list[Reading] = []
    flow = Dataflow("simulator-limit")
    op.output("out", op.input("in", flow, SimulatorSource(config)), TestingSink(out))
    run_main(flow)
    assert len(out) == limit
    assert sorted(out, key=key) == sorted(PlantSimulator(config).readings(limit), key=key)


@pytest.mark.parametrize(("devices", "metrics"), [(6, 5), (40, 60)])  # small and > 1 batch steps
def test_a_resumed_partition_continues_exactly(devices: int, metrics: int) -> None:
    config = replay(devices=devices, metrics=metrics, partitions=2, limit=devices * metrics * 12)
    owned = partition_devices(config, 1)
    uninterrupted = drain(SimulatorPartition(config, owned))
    for cut in (1, 2, 5):
        first = SimulatorPartition(config, owned)
        head = drain(first, cut)
        snapshot = first.snapshot()
        resumed = SimulatorPartition(config, owned, resume_state=snapshot)
        assert head + drain(resumed) == uninterrupted
    assert len(uninterrupted) == partition_quota(config, owned)
    if len(owned) * metrics > BATCH_READINGS:
        first = SimulatorPartition(config, owned)
        drain(first, 1)
        assert first.snapshot()[1] != 0  # mid-step snapshots happen with large steps


def test_a_paced_partition_waits_for_the_next_step() -> None:
    config = SimulatorSourceConfig(devices=2, metrics=5, rate=1.0, start=START)  # 10 s per step
    partition = SimulatorPartition(config, [0, 1])
    assert len(partition.next_batch()) == 10  # step 0 is due at once
    awake = partition.next_awake()
    assert awake is not None and awake > datetime.now(UTC) + timedelta(seconds=5)
    assert partition.next_batch() == []  # step 1 is not due yet
    assert partition.snapshot() == (1, 0)


def test_metric_catalogue_cycles_with_suffixes() -> None:
    assert metric_spec(len(CATALOGUE)).name == "temperature"
    plant = PlantSimulator(replay(devices=1, metrics=100))
    names = [s.metric for s in plant.series()]
    assert len(set(names)) == 100 and "log.message_6" in names
