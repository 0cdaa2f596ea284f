"""Online anomaly detectors for one time series: a score in [0, 1] per value.

>>> det = build_detector(None)                   # StreamForge's default detector
>>> import math
>>> scores = [det.score_learn_one(float(t), 20.0 + math.sin(t / 5)) for t in range(500)]
>>> max(scores[100:]) < 0.5                       # a smooth signal is normal
True
>>> det.score_one({"value": 35.0}) > 0.9          # a spike is not: score it...
True
>>> det.learn_one({"value": 35.0})                # ...then learn from it

Every detector is a river anomaly detector (``river.base.AnomalyDetector``)
with the two verbs of river: ``score_one(x)`` scores a value without
learning, ``learn_one(x)`` learns from it. ``x`` is a dict holding the value
under ``"value"`` (or as its only entry, so a river pipeline's single
feature works too, e.g. ``preprocessing.StandardScaler() | det``); other
keys, such as ``"ts"``, are ignored. The score is 0 for normal, 1 for
certainly anomalous; 0.9 is the default alarm threshold.

The hot path (the series step, :mod:`flows.kernels.series`) calls
``score_learn_one(ts, value)`` instead: score, then learn, in one call (for
the default detector about 4x cheaper than the two verbs). ``ts`` is a
``datetime`` or epoch seconds; no detector here uses it. For the old
callers, ``score_one(ts, value)`` with two arguments does the same (score,
then learn). Detectors are plain picklable objects, one per series, so
Bytewax recovery resumes them exactly.

``build_detector(DetectorConfig(type=...))`` selects one:

- ``default``: :class:`SurpriseDetector`, StreamForge's own (the method is
  in :mod:`flows.kernels.surprise_detector`): deviations in units of their
  own learned sizes, discounted when the series has shown the same pattern
  before (so a recurring on/off cycle or machine start becomes normal), and
  habituating (the score rises at the onset of a change and falls back while
  it persists). About 0.5 µs per value compiled (5 µs as Python), about
  700 bytes pickled.
- ``halfspacetrees``: river's ``HalfSpaceTrees`` on min-max scaled values
  (``n_trees=10, height=8, window_size=250``): much slower per value,
  and its trees make the state per series far larger.
- ``gaussian``: river's ``GaussianScorer`` (``2 * |CDF(y) - 0.5|``; a small state).
- ``zscore``: river's ``StandardAbsoluteDeviation``, its ``|z|`` mapped to
  [0, 1] so that ``|z| = 4`` scores 0.9.

The detector of StreamForge before this one, :class:`RegimeDetector`, is
kept so that recovery snapshots holding it still load and run (it has
``score_learn_one`` too); it is no longer selectable: a series restored from
such a snapshot keeps it, new series get the default.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from river.base import AnomalyDetector

from flows.kernels.regime_detector import RegimeDetector
from flows.kernels.surprise_detector import SurpriseKernel, alarm_units_to_score
from schemas.config import DetectorConfig

__all__ = [
    "Detector",
    "GaussianDetector",
    "HalfSpaceTreesDetector",
    "RegimeDetector",
    "SurpriseDetector",
    "ZScoreDetector",
    "alarm_units_to_score",
    "build_detector",
]


class Detector(Protocol):
    """What the series step needs from a detector."""

    name: str

    def score_learn_one(self, ts: datetime | float | None, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it."""
        ...


def _value(x: dict[Any, Any]) -> float:
    """The value of a river feature dict: ``x["value"]``, or its only entry."""
    if "value" in x:
        return float(x["value"])
    if len(x) == 1:
        return float(next(iter(x.values())))
    raise ValueError("a detector scores one series: give the value as x['value']")


class SurpriseDetector(SurpriseKernel, AnomalyDetector):
    """StreamForge's default detector: the kernel plus river's verbs.

    ``SurpriseDetector(sensitivity=1.0, warmup=300)``; see
    :mod:`flows.kernels.surprise_detector` for the method.

    >>> det = SurpriseDetector()
    >>> for i in range(200):
    ...     det.learn_one({"value": 10.0 + (i % 5) * 0.1})
    >>> det.score_one({"value": 10.2}) < 0.5 < det.score_one({"value": 30.0})
    True
    """

    name = "default"

    def score_one(self, x: Any, value: Any = None) -> float:
        """The score of ``x["value"]`` in [0, 1], learning nothing.

        (Called the old way, ``score_one(ts, value)``, it also learns.)
        """
        if value is not None:
            return self._step(float(value), True)
        return self._step(_value(x), False)

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Learn from ``x["value"]``."""
        self._step(_value(x), True)


class _RiverDetector(AnomalyDetector):
    """Common part of the river wrappers: clamp to [0, 1], both verbs and the fast one."""

    name = "river"

    def _score(self, x: float) -> float:
        """The raw score of ``x``, learning nothing."""
        raise NotImplementedError

    def _learn(self, x: float) -> None:
        raise NotImplementedError

    @staticmethod
    def _clamp(s: float) -> float:
        if s != s:  # NaN from a degenerate distribution
            return 0.0
        return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s

    def score_learn_one(self, ts: datetime | float | None, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it."""
        x = float(value)
        s = self._score(x)
        self._learn(x)
        return self._clamp(s)

    def score_one(self, x: Any, value: Any = None) -> float:
        """The score of ``x["value"]`` in [0, 1], learning nothing.

        (Called the old way, ``score_one(ts, value)``, it also learns.)
        """
        if value is not None:
            return self.score_learn_one(x, value)
        return self._clamp(self._score(_value(x)))

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Learn from ``x["value"]``."""
        self._learn(_value(x))


class HalfSpaceTreesDetector(_RiverDetector):
    """river ``HalfSpaceTrees`` on values min-max scaled to [0, 1].

    Small sane defaults (``n_trees=10, height=8, window_size=250``); other
    ``params`` go to ``HalfSpaceTrees``. Scores 0 during the first window.
    """

    name = "halfspacetrees"

    def __init__(self, **params: Any) -> None:
        options: dict[str, Any] = {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42}
        options.update(params)
        from river import anomaly, preprocessing  # river's models are slow to import

        self.params = params
        self.scaler = preprocessing.MinMaxScaler()
        self.model = anomaly.HalfSpaceTrees(**options)

    def _get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def _scaled(self, x: float) -> dict[str, float]:
        scaled = self.scaler.transform_one({"x": x})
        v = scaled["x"]
        return {"x": 0.0 if v < 0.0 else 1.0 if v > 1.0 else v}

    def _score(self, x: float) -> float:
        return float(self.model.score_one(self._scaled(x)))

    def _learn(self, x: float) -> None:
        self.scaler.learn_one({"x": x})
        self.model.learn_one(self._scaled(x))

    def score_learn_one(self, ts: datetime | float | None, value: float) -> float:
        """Score ``value`` in [0, 1], then learn from it (scaled once, by the updated scaler)."""
        features = {"x": float(value)}
        self.scaler.learn_one(features)
        scaled = self._scaled(features["x"])
        s = float(self.model.score_one(scaled))
        self.model.learn_one(scaled)
        return self._clamp(s)


class GaussianDetector(_RiverDetector):
    """river ``GaussianScorer``: ``2 * |CDF(value) - 0.5|`` of a fitted Gaussian.

    ``params``: ``window_size`` (None: all history) and ``grace_period``.
    """

    name = "gaussian"

    def __init__(self, window_size: int | None = None, grace_period: int = 100) -> None:
        from river import anomaly

        self.window_size = window_size
        self.grace_period = grace_period
        self.model = anomaly.GaussianScorer(window_size=window_size, grace_period=grace_period)

    def _score(self, x: float) -> float:
        return float(self.model.score_one(None, x))

    def _learn(self, x: float) -> None:
        self.model.learn_one(None, x)


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
        return alarm_units_to_score(z / self.alarm_z)

    def _learn(self, x: float) -> None:
        self.model.learn_one(None, x)
        self.seen += 1


_DETECTORS: dict[str, Any] = {
    "default": SurpriseDetector,
    "halfspacetrees": HalfSpaceTreesDetector,
    "gaussian": GaussianDetector,
    "zscore": ZScoreDetector,
}


def build_detector(config: DetectorConfig | None) -> Detector:
    """A fresh detector for one series: the default one for ``None``."""
    if config is None:
        return SurpriseDetector()
    cls = _DETECTORS[config.type]
    detector: Detector = cls(**config.params)
    return detector
