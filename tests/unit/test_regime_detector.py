"""The detector before issue 18, kept so that recovery snapshots holding it still run."""

from __future__ import annotations

import pickle
import random

from flows.anomaly import RegimeDetector


def test_old_snapshots_keep_running_through_the_series_steps_call() -> None:
    values = [random.Random(1).gauss(0, 1) for _ in range(800)]
    live = RegimeDetector()
    for i, x in enumerate(values[:400]):
        live.score_one(float(i), x)
    restored = pickle.loads(pickle.dumps(live))
    for i, x in enumerate(values[400:], start=400):
        assert restored.score_learn_one(float(i), x) == live.score_one(float(i), x)


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
