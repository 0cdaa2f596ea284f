"""The anomaly detectors: range, pickling, what the default one catches and ignores."""

from __future__ import annotations

import math
import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest

from flows.anomaly import RegimeDetector, alarm_units_to_score, build_detector
from schemas.config import DetectorConfig

TYPES = ["default", "halfspacetrees", "gaussian", "zscore"]
ALARM = 0.9


def noise(n: int, seed: int, level: float = 50.0, sigma: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sigma) for _ in range(n)]


def scores(values: list[float], detector=None) -> list[float]:
    det = detector or build_detector(None)
    return [det.score_one(float(i), v) for i, v in enumerate(values)]


def first_alarm(s: list[float], start: int) -> int | None:
    return next((i - start for i in range(start, len(s)) if s[i] >= ALARM), None)


@pytest.mark.parametrize("kind", TYPES)
def test_every_detector_scores_in_unit_interval_and_has_a_name(kind):
    det = build_detector(DetectorConfig.model_validate({"type": kind}))
    assert det.name == kind
    values = noise(600, 1) + [1e9, -1e9, 0.0, 5, 5, 5] + noise(100, 2) + [50.0] * 50
    got = [det.score_one(float(i), v) for i, v in enumerate(values)]
    assert all(0.0 <= s <= 1.0 for s in got)
    assert max(got[600:602]) > 0.5  # the absurd values stand out for every detector


def test_build_detector_none_is_the_default_and_params_pass_through():
    assert isinstance(build_detector(None), RegimeDetector)
    det = build_detector(DetectorConfig(type="default", params={"accept_after": 30}))
    assert isinstance(det, RegimeDetector) and det.name == "default"
    hst = build_detector(DetectorConfig(type="halfspacetrees", params={"n_trees": 3}))
    assert hst.model.n_trees == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        RegimeDetector(max_regimes=0)


def test_timestamps_may_be_datetimes_or_epoch_seconds():
    a, b = build_detector(None), build_detector(None)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i, v in enumerate(noise(300, 3)):
        assert a.score_one(t0 + timedelta(seconds=i), v) == b.score_one(t0.timestamp() + i, v)


@pytest.mark.parametrize("kind", TYPES)
def test_pickle_round_trip_continues_identically(kind):
    config = DetectorConfig.model_validate({"type": kind})
    det = build_detector(config)
    values = [*noise(700, 4), 80.0, *noise(300, 5, level=60.0)]
    for i, v in enumerate(values[:500]):
        det.score_one(float(i), v)
    copy = pickle.loads(pickle.dumps(det))
    rest = list(enumerate(values[500:], start=500))
    assert [det.score_one(float(i), v) for i, v in rest] == [
        copy.score_one(float(i), v) for i, v in rest
    ]


def test_default_state_is_small():
    det = build_detector(None)
    rng = random.Random(6)
    on = False
    for i in range(20_000):  # a machine switching on and off, with a daily shape
        if i % 300 == 0:
            on = not on
        base = 50.0 if on else 0.0
        det.score_one(float(i), base + 3 * math.sin(i / 200) + rng.gauss(0, 1))
    assert len(pickle.dumps(det)) < 2048


def test_spike_is_flagged_on_the_spot():
    values = noise(2000, 7)
    values[1500] += 10.0
    s = scores(values)
    assert s[1500] >= ALARM
    assert max(s[1502:1600]) < 0.5  # and the spike did not disturb what follows


def test_level_shift_is_flagged_quickly_then_accepted():
    values = noise(2000, 8) + noise(1500, 9, level=56.0)
    s = scores(values)
    delay = first_alarm(s, 2000)
    assert delay is not None and delay <= 3
    # A permanent shift becomes the new normal after a while.
    assert max(s[2600:]) < ALARM


def test_small_level_shift_is_flagged_by_the_short_term_level():
    values = noise(2000, 10) + noise(600, 11, level=53.0)  # 3 sigma: no value stands out
    s = scores(values)
    delay = first_alarm(s, 2000)
    assert delay is not None and delay <= 25


def test_slow_drift_is_flagged_before_it_gets_large():
    values = noise(2500, 12)
    for i in range(1500, 2500):
        values[i] += 0.02 * (i - 1500)  # 0.02 sigma per value: no step stands out
    s = scores(values)
    delay = first_alarm(s, 1500)
    assert delay is not None and delay <= 400  # before the drift reaches 8 sigma


def test_stuck_sensor_is_flagged_as_too_constant():
    values = noise(2000, 13)
    values[1500:1700] = [values[1499]] * 200
    s = scores(values)
    delay = first_alarm(s, 1500)
    assert delay is not None and delay <= 5
    # A quantised sensor repeats values all the time: repeats alone are not alarming.
    quantised = [float(round(v)) for v in noise(3000, 14, sigma=0.8)]
    assert sum(x >= ALARM for x in scores(quantised)[300:]) <= 2


def test_quiet_on_noise_daily_shape_and_on_off_regimes():
    total = 0
    for seed in range(3):
        rng = random.Random(100 + seed)
        daily = [
            20.0 + 8.0 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 0.5) for i in range(4000)
        ]
        onoff: list[float] = []
        on, left = False, 0
        while len(onoff) < 4000:
            if left == 0:
                on, left = not on, rng.randint(30, 400)
            onoff.append(50.0 + rng.gauss(0, 1.5) if on else abs(rng.gauss(0, 0.1)))
            left -= 1
        for series in (noise(4000, 200 + seed), daily, onoff):
            total += sum(x >= ALARM for x in scores(series)[600:])
    assert total <= 9, total  # at most ~1 flagged value per 10,000


def test_anomalies_do_not_poison_what_is_learned():
    values = noise(1500, 15)
    values[1000:1030] = noise(30, 16, level=80.0)  # a long excursion (shorter than accept_after)
    values += noise(200, 17)
    values[1600] += 9.0
    s = scores(values)
    assert first_alarm(s, 1000) == 0
    assert max(s[1035:1600]) < ALARM  # back to normal: recognised as normal at once
    assert s[1600] >= ALARM  # and its idea of normal noise did not widen


def test_known_regime_switch_is_not_an_anomaly_but_an_unknown_level_is():
    rng = random.Random(18)
    values = []
    for block in range(12):
        level = 50.0 if block % 2 else 0.0
        values += [level + rng.gauss(0, 1.0 if level else 0.05) for _ in range(250)]
    values += [25.0 + rng.gauss(0, 1.0) for _ in range(20)]  # never seen before
    s = scores(values)
    assert sum(x >= ALARM for x in s[1000:3000]) <= 2
    delay = first_alarm(s, 3000)
    assert delay is not None and delay <= 2


def test_constant_series_never_divides_by_zero():
    det = build_detector(None)
    s = [det.score_one(float(i), 7.0) for i in range(100_000)]
    assert max(s) == 0.0
    assert det.score_one(1e5, 8.0) >= ALARM  # any change of a constant is news


def test_alarm_units_mapping():
    assert alarm_units_to_score(0.0) == 0.0
    assert alarm_units_to_score(1.0) == pytest.approx(0.9)
    assert 0.1 < alarm_units_to_score(0.5) < 0.2
    assert alarm_units_to_score(3.0) == pytest.approx(1.0)


def test_snapshot_with_list_regimes_still_loads() -> None:
    """Snapshots of earlier versions hold each regime as a list of its fields."""
    rng = random.Random(9)
    values = [rng.gauss(0, 1) + (40 if (i // 150) % 2 else 0) for i in range(1200)]
    live = RegimeDetector()
    for i, x in enumerate(values[:600]):
        live.score_one(float(i), x)
    slots = RegimeDetector.__slots__
    state = list(live.__getstate__())
    modes = state[slots.index("_modes")]
    assert len(modes) >= 2  # the test covers several regimes
    state[slots.index("_modes")] = [list(m.fields()) for m in modes]
    old = RegimeDetector.__new__(RegimeDetector)
    old.__setstate__(pickle.loads(pickle.dumps(tuple(state))))
    for i, x in enumerate(values[600:], start=600):
        assert old.score_one(float(i), x) == live.score_one(float(i), x)
