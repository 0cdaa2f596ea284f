"""Online anomaly detectors for one time series: a score in [0, 1] per value.

>>> det = build_detector(None)                 # StreamForge's default detector
>>> import math
>>> scores = [det.score_one(float(t), 20.0 + math.sin(t / 5)) for t in range(500)]
>>> max(scores[100:]) < 0.5                     # a smooth signal is normal
True
>>> det.score_one(500.0, 35.0) > 0.9            # a spike is not
True

Every detector has ``name`` and ``score_one(ts, value) -> float``: it scores
the value (0 normal, 1 certainly anomalous; 0.9 is the default alarm
threshold) and then learns from it. ``ts`` is a ``datetime`` or epoch
seconds. Detectors are plain picklable objects, one per series, so Bytewax
recovery resumes them exactly.

``build_detector(DetectorConfig(type=...))`` selects one:

- ``default``: :class:`~flows.kernels.regime_detector.RegimeDetector`, StreamForge's
  own: the cheapest per value, with a small pickled state per series.
- ``halfspacetrees``: river's ``HalfSpaceTrees`` on min-max scaled values
  (``n_trees=10, height=8, window_size=250``): much slower per value,
  and its trees make the state per series far larger.
- ``gaussian``: river's ``GaussianScorer`` (``2 * |CDF(y) - 0.5|``; a small state).
- ``zscore``: river's ``StandardAbsoluteDeviation``, its ``|z|`` mapped to
  [0, 1] so that ``|z| = 4`` scores 0.9.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from flows.kernels.regime_detector import RegimeDetector, alarm_units_to_score
from schemas.config import DetectorConfig

__all__ = [
    "Detector",
    "GaussianDetector",
    "HalfSpaceTreesDetector",
    "RegimeDetector",
    "ZScoreDetector",
    "alarm_units_to_score",
    "build_detector",
]


class Detector(Protocol):
    """What the series step needs from a detector."""

    name: str

    def score_one(self, ts: datetime | float, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it."""
        ...


class _RiverDetector:
    """Common part of the river wrappers: score, then learn, clamp to [0, 1]."""

    name = "river"

    def _score(self, x: float) -> float:
        raise NotImplementedError

    def score_one(self, ts: datetime | float, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it."""
        s = self._score(float(value))
        if s != s:  # NaN from a degenerate distribution
            return 0.0
        return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s


class HalfSpaceTreesDetector(_RiverDetector):
    """river ``HalfSpaceTrees`` on values min-max scaled to [0, 1].

    Small sane defaults (``n_trees=10, height=8, window_size=250``); other
    ``params`` go to ``HalfSpaceTrees``. Scores 0 during the first window.
    """

    name = "halfspacetrees"

    def __init__(self, **params: Any) -> None:
        options: dict[str, Any] = {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42}
        options.update(params)
        from river import anomaly, preprocessing  # river is slow to import: only when used

        self.scaler = preprocessing.MinMaxScaler()
        self.model = anomaly.HalfSpaceTrees(**options)

    def _score(self, x: float) -> float:
        features = {"x": x}
        self.scaler.learn_one(features)
        scaled = self.scaler.transform_one(features)
        v = scaled["x"]
        scaled["x"] = 0.0 if v < 0.0 else 1.0 if v > 1.0 else v
        s = float(self.model.score_one(scaled))
        self.model.learn_one(scaled)
        return s


class GaussianDetector(_RiverDetector):
    """river ``GaussianScorer``: ``2 * |CDF(value) - 0.5|`` of a fitted Gaussian.

    ``params``: ``window_size`` (None: all history) and ``grace_period``.
    """

    name = "gaussian"

    def __init__(self, **params: Any) -> None:
        options: dict[str, Any] = {"window_size": None, "grace_period": 100}
        options.update(params)
        from river import anomaly

        self.model = anomaly.GaussianScorer(**options)

    def _score(self, x: float) -> float:
        s = float(self.model.score_one(None, x))
        self.model.learn_one(None, x)
        return s


class ZScoreDetector(_RiverDetector):
    """river ``StandardAbsoluteDeviation``: ``|value - mean| / std``, mapped to [0, 1].

    ``params``: ``alarm_z`` (the ``|z|`` that scores 0.9, default 4) and
    ``grace_period`` (values scored 0 at the start, default 30).
    """

    name = "zscore"

    def __init__(self, alarm_z: float = 4.0, grace_period: int = 30) -> None:
        self.alarm_z = float(alarm_z)
        self.grace_period = int(grace_period)
        self.seen = 0
        from river import anomaly

        self.model = anomaly.StandardAbsoluteDeviation()

    def _score(self, x: float) -> float:
        z = float(self.model.score_one(None, x)) if self.seen >= self.grace_period else 0.0
        self.model.learn_one(None, x)
        self.seen += 1
        return alarm_units_to_score(z / self.alarm_z)


_DETECTORS: dict[str, Any] = {
    "default": RegimeDetector,
    "halfspacetrees": HalfSpaceTreesDetector,
    "gaussian": GaussianDetector,
    "zscore": ZScoreDetector,
}


def build_detector(config: DetectorConfig | None) -> Detector:
    """A fresh detector for one series: the default one for ``None``."""
    if config is None:
        return RegimeDetector()
    cls = _DETECTORS[config.type]
    detector: Detector = cls(**config.params)
    return detector
